//! The live detector through SIGKILLs: a collector running an event_count rule (five
//! failed SSH logins from one address within ten minutes) is killed in the middle of the
//! window and again after the match; the correlation is recorded exactly once, when the
//! fifth failure arrives.

use std::time::{Duration, Instant};

use serde_json::Value;
use yagura_e2e::{Agent, Collector, append_lines};

const RULES: &str = r#"title: SSH login failed (e2e)
id: 9d1f3c2a-7b55-4e0e-9d7e-000000000001
name: e2e_ssh_login_failed
logsource:
    product: linux
    service: sshd
detection:
    selection:
        event.action: ssh_login
        event.outcome: failure
    condition: selection
level: low
---
title: SSH brute force (e2e)
id: 9d1f3c2a-7b55-4e0e-9d7e-000000000002
correlation:
    type: event_count
    rules:
        - e2e_ssh_login_failed
    group-by:
        - source.ip
    timespan: 10m
    condition:
        gte: 5
level: high
"#;

fn failure(i: usize) -> String {
    format!(
        "Nov 25 10:00:{i:02} web-1 sshd[4242]: Failed password for root from 203.0.113.9 port {} ssh2",
        40_000 + i
    )
}

async fn detections(collector: &Collector) -> anyhow::Result<Vec<Value>> {
    Ok(
        collector.get_json("/api/v1/detections").await?["detections"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_count_fires_exactly_once_through_collector_sigkills() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let rules = tmp.path().join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(rules.join("ssh.yml"), RULES)?;
    let mut collector = Collector::start(
        &tmp.path().join("collector"),
        &format!(
            "[detect]\nrules = [\"{}\"]\ncommit_interval_ms = 100\n",
            rules.display()
        ),
    )?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("auth.log");
    let mut agent = Agent::enroll(
        &tmp.path().join("agent"),
        &collector,
        "web-1",
        &format!(
            "[[sources]]\npaths = [\"{}\"]\ndataset = \"system.auth\"\nparser = \"linux-auth\"\n",
            log.display()
        ),
    )?;
    agent.start()?;

    // Three of five failures, searchable (so archived, so seen by the detector).
    append_lines(&log, 0..3, failure)?;
    collector
        .wait_for_total("event.action:ssh_login", 3, Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(detections(&collector).await?.is_empty(), "not yet");

    // Killed mid-window; the window survives in the recorded state.
    collector.process.kill_hard();
    collector.restart()?;
    append_lines(&log, 3..5, failure)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let found = detections(&collector).await?;
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["kind"], "correlation");
    assert_eq!(found[0]["rule"]["title"], "SSH brute force (e2e)");
    assert_eq!(
        found[0]["correlation"]["group"],
        serde_json::json!([["source.ip", "203.0.113.9"]])
    );

    // Killed after the match: the replay finds it again and records nothing new; a
    // sixth failure in the same window does not fire a second time either.
    collector.process.kill_hard();
    collector.restart()?;
    append_lines(&log, 5..6, failure)?;
    collector
        .wait_for_total("event.action:ssh_login", 6, Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = detections(&collector).await?;
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(after[0]["id"], found[0]["id"]);
    agent.kill_hard();
    Ok(())
}
