//! The README's run command: `yagura up` starts collector and local agent, the demo log
//! becomes searchable, and Ctrl-C stops everything cleanly.

use std::time::Duration;

use serde_json::Value;
use yagura_e2e::{Up, binaries};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_searchable_demo_events_and_stops_cleanly_on_ctrl_c() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let Up {
        process: mut up,
        url,
        fingerprint,
        token,
        data_arg,
        ..
    } = Up::start(tmp.path())?;
    assert!(
        token.starts_with("ygt_"),
        "first run prints the API token: {token}"
    );

    let (client, _) =
        yagura_agent::tls::pinned_client(Some(&fingerprint), Duration::from_secs(10))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut total = 0;
    while std::time::Instant::now() < deadline && total == 0 {
        let body: Value = client
            .get(format!("{url}/api/v1/search"))
            .bearer_auth(&token)
            .query(&[("q", "event.dataset:yagura.demo"), ("limit", "5")])
            .send()
            .await?
            .json()
            .await?;
        total = body["total"].as_u64().unwrap_or(0);
        if total == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert!(total > 0, "demo events become searchable");

    // The analyst CLI, as in the README: token from the environment, certificate
    // fingerprint read from the data directory.
    let cli = |args: &[&str]| {
        std::process::Command::new(&binaries().collector)
            .args(args)
            .args(["--url", &url, "--data-dir", &data_arg])
            .env("YAGURA_TOKEN", &token)
            .output()
    };
    let output = cli(&[
        "search",
        "event.dataset:yagura.demo",
        "--since",
        "1h",
        "--json",
        "--limit",
        "3",
    ])?;
    assert!(
        output.status.success(),
        "search CLI: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let events: Vec<Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(!events.is_empty() && events.len() <= 3, "{stdout}");
    for event in &events {
        assert_eq!(event["event"]["dataset"], "yagura.demo");
        assert!(
            event["message"]
                .as_str()
                .is_some_and(|m| m.contains("sshd") || m.contains("from")),
            "{event}"
        );
    }
    // Aggregations through the CLI (docs/query-language.md): counted over every match.
    let output = cli(&[
        "search",
        "event.dataset:yagura.demo",
        "--limit",
        "1",
        "--json",
        "--agg",
        "terms:event.dataset",
    ])?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let aggregation: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("terms:event.dataset").is_some())
        .ok_or_else(|| anyhow::anyhow!("no aggregation line in {stdout}"))?;
    let buckets = &aggregation["terms:event.dataset"]["buckets"];
    assert_eq!(buckets[0]["key"], "yagura.demo", "{aggregation}");
    assert!(buckets[0]["doc_count"].as_u64().unwrap_or(0) >= 1);

    // Export: every match, streamed, as CSV with the chosen columns.
    let output = cli(&[
        "export",
        "event.dataset:yagura.demo",
        "--format",
        "csv",
        "--fields",
        "event.dataset,message",
    ])?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv_text = String::from_utf8(output.stdout)?;
    let mut rows = csv_text.lines();
    assert_eq!(rows.next(), Some("event.dataset,message"), "{csv_text}");
    assert!(
        rows.clone().count() >= 1 && rows.all(|r| r.starts_with("yagura.demo,")),
        "{csv_text}"
    );

    // A query that does not parse: 400 with the column and what was expected there, in
    // the API's problem document and under a caret in the CLI.
    let problem = client
        .get(format!("{url}/api/v1/search"))
        .bearer_auth(&token)
        .query(&[("q", "user.name:admin AND (source.ip:10.0.0.0/8")])
        .send()
        .await?;
    assert_eq!(problem.status().as_u16(), 400);
    let problem: Value = problem.json().await?;
    assert_eq!(problem["column"], 42, "{problem}");
    assert_eq!(
        problem["expected"], "`)` to close the `(` at column 21",
        "{problem}"
    );
    let output = cli(&["search", "user.name:"])?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("400")
            && stderr.contains("column 11")
            && stderr.contains("  user.name:\n            ^"),
        "{stderr}"
    );

    // A wrong token is refused with the collector's problem detail.
    let refused = std::process::Command::new(&binaries().collector)
        .args([
            "search",
            "*",
            "--url",
            &url,
            "--data-dir",
            &data_arg,
            "--token",
            "ygt_wrong",
        ])
        .output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    let status = up.stop("INT", Duration::from_secs(30))?;
    assert!(
        status.success(),
        "yagura up exits cleanly on Ctrl-C: {status}"
    );
    Ok(())
}
