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

/// A collector running `RULES` from `dir/rules`, and an agent shipping `dir/logs/auth.log`
/// through the linux-auth parser.
struct Running {
    collector: Collector,
    agent: Agent,
    rules: std::path::PathBuf,
    log: std::path::PathBuf,
}

fn start(dir: &std::path::Path) -> anyhow::Result<Running> {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(rules.join("ssh.yml"), RULES)?;
    let collector = Collector::start(
        &dir.join("collector"),
        &format!(
            "[detect]\nrules = [\"{}\"]\ncommit_interval_ms = 100\n",
            rules.display()
        ),
    )?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("auth.log");
    let mut agent = Agent::enroll(
        &dir.join("agent"),
        &collector,
        "web-1",
        &format!(
            "[[sources]]\npaths = [\"{}\"]\ndataset = \"system.auth\"\nparser = \"linux-auth\"\n",
            log.display()
        ),
    )?;
    agent.start()?;
    Ok(Running {
        collector,
        agent,
        rules,
        log,
    })
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
    let Running {
        mut collector,
        mut agent,
        log,
        ..
    } = start(tmp.path())?;

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

    // The same rules replayed over the stored events from the command line.
    let backtest = std::process::Command::new(&yagura_e2e::binaries().collector)
        .args(["rules", "backtest"])
        .arg(tmp.path().join("rules"))
        .args(["--since", "3650d", "--query", "event.dataset:system.auth"])
        .args(["--url", &collector.url, "--token", &collector.api_token])
        .args(["--fingerprint", &collector.fingerprint])
        .output()?;
    let table = String::from_utf8_lossy(&backtest.stdout);
    assert!(
        backtest.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&backtest.stderr)
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("SSH brute force (e2e)"))
        .unwrap_or_default();
    assert!(row.contains(" high "), "{table}");
    assert!(table.contains("6 events replayed"), "{table}");
    agent.kill_hard();
    Ok(())
}

/// A rule file added to the running collector's rule directory is in force within two
/// seconds; a broken one is refused (reported with its file and line as a collector
/// event) and the rules before it keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_changes_take_effect_within_two_seconds_and_broken_ones_are_refused()
-> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let Running {
        collector,
        mut agent,
        rules,
        log,
    } = start(tmp.path())?;
    let sudo = |i: usize| {
        format!(
            "Nov 25 10:01:{i:02} web-1 sudo:    mallory : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/mallory ; USER=root ; COMMAND=/bin/bash"
        )
    };
    append_lines(&log, 0..1, sudo)?;
    collector
        .wait_for_total("event.action:sudo_auth_failure", 1, Duration::from_secs(60))
        .await?;

    std::fs::write(
        rules.join("sudo.yml"),
        "title: sudo password failures (e2e)\nid: 9d1f3c2a-7b55-4e0e-9d7e-000000000003\nlogsource:\n    product: linux\n    service: sudo\ndetection:\n    selection:\n        event.action: sudo_auth_failure\n    condition: selection\nlevel: medium\n",
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    append_lines(&log, 1..2, sudo)?;
    collector
        .wait_for_total("event.action:sudo_auth_failure", 2, Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let found = detections(&collector).await?;
    assert_eq!(found.len(), 1, "only the line after the change: {found:#?}");
    assert_eq!(found[0]["rule"]["title"], "sudo password failures (e2e)");

    let broken = rules.join("broken.yml");
    std::fs::write(
        &broken,
        "title: broken\nlogsource:\n    product: linux\ndetection:\n    sel:\n        a: b\n    condition: sel and\n",
    )?;
    let refused = collector
        .wait_for_at_least(
            "event.dataset:yagura.collector.detect AND event.action:rules_refused",
            1,
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(refused, 1);
    let event =
        collector.search("event.action:rules_refused", 1).await?["hits"][0]["event"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    assert!(
        event.contains(&format!("{}:7:", broken.display())),
        "{event}"
    );
    append_lines(&log, 2..3, sudo)?;
    collector
        .wait_for_total("event.action:sudo_auth_failure", 3, Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        detections(&collector).await?.len(),
        2,
        "the running rules stay"
    );
    agent.kill_hard();
    Ok(())
}
