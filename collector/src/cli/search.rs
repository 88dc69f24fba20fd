//! `yagura search`: the analyst's query from a terminal, through the HTTPS API.

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The query (tantivy syntax: `field:value`, quoted phrases, AND/OR/NOT; `*` for all).
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
    Ok(())
}
