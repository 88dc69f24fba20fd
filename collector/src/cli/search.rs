//! `yagura search`: the analyst's query from a terminal, through the HTTPS API.

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

/// What `yagura search` and `yagura export` share: the query and its scope.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query (docs/query-language.md): `field:value`, "phrases", AND/OR/NOT and
    /// parentheses, wildcards, /regex/, ranges, CIDR blocks on IP fields; `*` for all.
    pub query: String,
    /// Only events newer than this (e.g. 15m, 1h, 7d, or an RFC 3339 time).
    #[arg(long, conflicts_with = "from")]
    pub since: Option<String>,
    /// Only events at or after this time (RFC 3339, `now-2h`, or `2h` ago).
    #[arg(long)]
    pub from: Option<String>,
    /// Only events at or before this time (RFC 3339, `now-1h`, or `1h` ago).
    #[arg(long)]
    pub to: Option<String>,
    /// Oldest first instead of newest first.
    #[arg(long)]
    pub oldest_first: bool,
    /// Only these dotted fields of each event, comma-separated (CSV columns in exports).
    #[arg(long)]
    pub fields: Option<String>,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

impl QueryArgs {
    /// Sends `GET path` with the query parameters plus `extra`; a refusal is an error
    /// with the collector's detail (and a caret under a query error's column).
    pub async fn get(
        &self,
        path: &str,
        extra: Vec<(&str, String)>,
    ) -> anyhow::Result<reqwest::Response> {
        let client = self.remote.client()?;
        let mut query: Vec<(&str, String)> = vec![
            ("q", self.query.clone()),
            (
                "order",
                if self.oldest_first { "asc" } else { "desc" }.to_string(),
            ),
        ];
        if let Some(since) = self.since.as_ref().or(self.from.as_ref()) {
            query.push(("since", since.clone()));
        }
        if let Some(to) = &self.to {
            query.push(("to", to.clone()));
        }
        if let Some(fields) = &self.fields {
            query.push(("fields", fields.clone()));
        }
        query.extend(extra);
        let url = format!("{}{path}", self.remote.url.trim_end_matches('/'));
        let response = client
            .get(&url)
            .bearer_auth(&self.remote.token)
            .query(&query)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let detail = body["detail"].as_str().unwrap_or("no detail");
        if let Some(column) = body["column"].as_u64() {
            anyhow::bail!("{status}: {detail}\n{}", point_at(&self.query, column));
        }
        anyhow::bail!("{status}: {detail}");
    }
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    scope: QueryArgs,
    /// How many events to show.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print each event as one JSON line.
    #[arg(long)]
    json: bool,
    /// An aggregation over every matching event (repeatable): terms:FIELD[:N],
    /// date_histogram:@timestamp[:INTERVAL], cardinality:FIELD, min:/max:/avg:/
    /// percentiles:FIELD, nested with `>` (terms:source.ip>date_histogram:@timestamp).
    #[arg(long = "agg", value_name = "SPEC")]
    aggs: Vec<String>,
    /// Continue after this cursor (printed at the end of the previous page).
    #[arg(long)]
    after: Option<String>,
}

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let mut extra: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    if !args.aggs.is_empty() {
        extra.push(("agg", args.aggs.join(",")));
    }
    if let Some(after) = &args.after {
        extra.push(("after", after.clone()));
    }
    let response = args.scope.get("/api/v1/search", extra).await?;
    let body: Value = response.json().await.context("reading the response")?;
    let hits = body["hits"].as_array().cloned().unwrap_or_default();
    for hit in &hits {
        let event = &hit["event"];
        if args.json {
            println!("{event}");
        } else {
            println!(
                "{}  {}  {}  {}",
                event["@timestamp"].as_str().unwrap_or("-"),
                event["host"]["name"].as_str().unwrap_or("-"),
                event["event"]["dataset"].as_str().unwrap_or("-"),
                event["message"].as_str().unwrap_or("-"),
            );
        }
    }
    eprintln!("{} of {} matching events", hits.len(), body["total"]);
    if let Some(cursor) = body["next_cursor"].as_str() {
        eprintln!("next page: --after {cursor}");
    }
    for spec in &args.aggs {
        let result = &body["aggregations"][spec.trim()];
        if args.json {
            println!("{}", serde_json::json!({ spec.trim(): result }));
        } else {
            println!("\n{}", spec.trim());
            print_aggregation(result, 1);
        }
    }
    Ok(())
}

/// An aggregation result as indented `key  count` lines (nested buckets one level in),
/// or its value(s).
fn print_aggregation(result: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    if let Some(buckets) = result["buckets"].as_array() {
        for bucket in buckets {
            let key = bucket["key_as_string"]
                .as_str()
                .map(str::to_string)
                .or_else(|| bucket["key"].as_str().map(str::to_string))
                .unwrap_or_else(|| bucket["key"].to_string());
            println!("{pad}{key}  {}", bucket["doc_count"]);
            if let Some(object) = bucket.as_object() {
                for nested in object.values() {
                    if nested.get("buckets").is_some() {
                        print_aggregation(nested, depth + 1);
                    }
                }
            }
        }
    } else if let Some(values) = result["values"].as_object() {
        for (percent, value) in values {
            println!("{pad}p{percent}  {value}");
        }
    } else {
        println!("{pad}{}", result["value"]);
    }
}

/// The query with a caret under a 1-based character column.
fn point_at(query: &str, column: u64) -> String {
    let pad = usize::try_from(column.saturating_sub(1)).unwrap_or(0);
    format!(
        "  {query}\n  {}^",
        " ".repeat(pad.min(query.chars().count()))
    )
}

#[cfg(test)]
mod tests {
    use super::point_at;

    #[test]
    fn the_caret_sits_under_the_column() {
        assert_eq!(point_at("user.name:", 11), "  user.name:\n            ^");
        assert_eq!(point_at("é(", 2), "  é(\n   ^");
    }
}
