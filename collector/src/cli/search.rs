//! `yagura search`: the analyst's query from a terminal, through the HTTPS API.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Collector API URL.
    #[arg(long, env = "YAGURA_URL", default_value = "https://127.0.0.1:8443")]
    url: String,
    /// API token (printed at the collector's first start, or `yagura api-token create`).
    #[arg(long, env = "YAGURA_TOKEN", hide_env_values = true)]
    token: String,
    /// SHA-256 fingerprint of the collector certificate; read from the data directory
    /// when not given.
    #[arg(long, env = "YAGURA_FINGERPRINT")]
    fingerprint: Option<String>,
    /// The collector data directory, to read the certificate from.
    #[arg(long, default_value = super::up::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let fingerprint = match args.fingerprint {
        Some(f) => f,
        None => {
            let cert = args.data_dir.join("tls").join("collector.crt");
            yagura_collector::tls::fingerprint_of_pem_file(&cert).with_context(|| {
                format!(
                    "no --fingerprint given and {} is not readable",
                    cert.display()
                )
            })?
        }
    };
    let (client, _) = yagura_agent::tls::pinned_client(Some(&fingerprint), Duration::from_secs(60))
        .context("building the HTTPS client")?;
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
    let url = format!("{}/api/v1/search", args.url.trim_end_matches('/'));
    let response = client
        .get(&url)
        .bearer_auth(&args.token)
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
