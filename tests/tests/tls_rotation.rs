//! The collector's certificate rotated through a signed hand-over, with an agent sending
//! throughout: `yagura tls rotate` publishes the next certificate, the agent takes the
//! hand-over (verified against the certificate it pins), `yagura tls activate` and a
//! restart switch the collector, and the agent goes on shipping to the new certificate
//! and drops the old pin. Every line is indexed exactly once. A client pinned only to the
//! old certificate can no longer connect.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use yagura_e2e::{Agent, Collector, append_in_bursts, binaries};

const LINES: usize = 12_000;
const BURSTS: usize = 60;

fn line(i: usize) -> String {
    format!("2026-11-26T10:30:00.000000+00:00 tls-host app[4]: hand-over line {i:06}")
}

fn yagura(args: &[&str], collector: &Collector) -> anyhow::Result<String> {
    let output = Command::new(&binaries().collector)
        .args(args)
        .arg("--config")
        .arg(&collector.config)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "yagura {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn enrollment(agent: &Agent) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(agent.dir.join("state").join("enrollment.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// Polls the agent's enrollment until `done` holds.
async fn wait_enrollment(agent: &Agent, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = enrollment(agent)?;
        if done(&value) {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "enrollment stayed {value}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_rotates_while_the_agent_sends() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut collector = Collector::start(&tmp.path().join("collector"), "")?;
    let old_fingerprint = collector.fingerprint.clone();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("app.log");
    std::fs::write(&log, "")?;
    let mut agent = Agent::enroll(
        &tmp.path().join("agent"),
        &collector,
        "tls-host",
        &format!(
            "handover_check_seconds = 1\n[[sources]]\npaths = [\"{}\"]\ndataset = \"e2e.tls\"\n",
            log.display()
        ),
    )?;
    agent.start()?;
    let writer = append_in_bursts(&log, LINES, BURSTS, Duration::from_millis(150), line);

    // Before a rotation there is nothing to hand over.
    let none = collector
        .client()?
        .get(format!("{}/api/v1/tls/handover", collector.url))
        .send()
        .await?;
    assert_eq!(none.status().as_u16(), 404);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let staged = yagura(&["tls", "rotate"], &collector)?;
    let new_fingerprint = staged
        .split_whitespace()
        .nth(6)
        .context("new fingerprint")?
        .to_string();
    assert_ne!(new_fingerprint, old_fingerprint, "{staged}");
    // The agent takes the hand-over and trusts both.
    wait_enrollment(&agent, |e| {
        e["next_fingerprint"] == Value::String(new_fingerprint.clone())
    })
    .await?;

    // The switch, while lines keep coming.
    yagura(&["tls", "activate"], &collector)?;
    collector.restart()?;
    collector.fingerprint = new_fingerprint.clone();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;

    let query = "event.dataset:e2e.tls";
    collector
        .wait_for_total(query, LINES as u64, Duration::from_secs(120))
        .await?;
    let found = collector.search(query, LINES).await?;
    let distinct: std::collections::BTreeSet<&str> = found["hits"]
        .as_array()
        .context("hits")?
        .iter()
        .filter_map(|h| h["event"]["message"].as_str())
        .collect();
    assert_eq!(distinct.len(), LINES, "every line exactly once");

    // The agent pins the new certificate alone now.
    let promoted = wait_enrollment(&agent, |e| {
        e["fingerprint"] == Value::String(new_fingerprint.clone())
            && e.get("next_fingerprint").is_none()
    })
    .await?;
    assert_eq!(
        promoted["fingerprint"],
        Value::String(new_fingerprint.clone())
    );

    // A client pinned to the old certificate is refused by its own pin.
    let (old_client, _) =
        yagura_agent::tls::pinned_client(Some(&old_fingerprint), Duration::from_secs(10))?;
    let refused = old_client
        .get(format!("{}/health/live", collector.url))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    agent.kill_hard();
    Ok(())
}
