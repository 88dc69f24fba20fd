//! `yagura export`: a query's whole result as NDJSON or CSV on standard output, streamed
//! from `GET /api/v1/export` (constant memory whatever the size).

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The query (docs/query-language.md); `*` for everything.
    query: String,
    /// Only events newer than this (e.g. 15m, 1h, 7d, or an RFC 3339 time).
    #[arg(long)]
    since: Option<String>,
    /// ndjson (default) or csv.
    #[arg(long, default_value = "ndjson")]
    format: String,
    /// Dotted fields to write, comma-separated (CSV columns; all fields in NDJSON when
    /// absent, a standard set of columns in CSV).
    #[arg(long)]
    fields: Option<String>,
    /// Oldest first instead of newest first.
    #[arg(long)]
    oldest_first: bool,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let client = args.remote.client()?;
    let mut query: Vec<(&str, String)> = vec![
        ("q", args.query.clone()),
        ("format", args.format.clone()),
        (
            "order",
            if args.oldest_first { "asc" } else { "desc" }.to_string(),
        ),
    ];
    if let Some(since) = &args.since {
        query.push(("since", since.clone()));
    }
    if let Some(fields) = &args.fields {
        query.push(("fields", fields.clone()));
    }
    let url = format!("{}/api/v1/export", args.remote.url.trim_end_matches('/'));
    let mut response = client
        .get(&url)
        .bearer_auth(&args.remote.token)
        .query(&query)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let detail = body["detail"].as_str().unwrap_or("no detail");
        anyhow::bail!("{status}: {detail}");
    }
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = response.chunk().await.context("reading the export")? {
        out.write_all(&chunk)
            .context("writing to standard output")?;
    }
    out.flush()?;
    Ok(())
}
