//! `yagura search`: the analyst's query from a terminal, through the HTTPS API.

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The query (docs/query-language.md): `field:value`, "phrases", AND/OR/NOT and
    /// parentheses, wildcards, /regex/, ranges, CIDR blocks on IP fields; `*` for all.
    query: String,
    /// Only events newer than this (e.g. 15m, 1h, 7d, or an RFC 3339 time).
    #[arg(long)]
    since: Option<String>,
    /// How many events to show.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Oldest first instead of newest first.
    #[arg(long)]
    oldest_first: bool,
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
    /// Only these dotted fields of each event, comma-separated (with --json).
    #[arg(long)]
    fields: Option<String>,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
}

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let client = args.remote.client()?;
    let mut query: Vec<(&str, String)> = vec![
        ("q", args.query.clone()),
        ("limit", args.limit.to_string()),
        (
            "order",
            if args.oldest_first { "asc" } else { "desc" }.to_string(),
        ),
    ];
    if let Some(since) = &args.since {
        query.push(("since", since.clone()));
    }
    if !args.aggs.is_empty() {
        query.push(("agg", args.aggs.join(",")));
    }
    if let Some(after) = &args.after {
        query.push(("after", after.clone()));
    }
    if let Some(fields) = &args.fields {
        query.push(("fields", fields.clone()));
    }
    let url = format!("{}/api/v1/search", args.remote.url.trim_end_matches('/'));
    let response = client
        .get(&url)
        .bearer_auth(&args.remote.token)
        .query(&query)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.context("reading the response")?;
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or("no detail");
        if let Some(column) = body["column"].as_u64() {
            anyhow::bail!("{status}: {detail}\n{}", point_at(&args.query, column));
        }
        anyhow::bail!("{status}: {detail}");
    }
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
