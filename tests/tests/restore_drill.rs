//! The restore drill: run the stack, ingest, raise alerts, add a shop account, back up
//! while it runs, keep working, then lose the data directory and restore it.
//!
//! After the restore every event, alert, agent and shop record of the snapshot is back —
//! compared one by one with what the running collector answered when the snapshot was
//! taken — and what came after the snapshot is gone (that is the RPO). The collector then
//! takes the same agent's next batches (its key and sequence state came back) and records
//! the loss between as a gap. The drill prints the measured RTO (restore, then start
//! until searchable) and RPO (events acknowledged after the last backup).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use yagura_e2e::{Agent, Collector, append_lines, binaries};

const RULE: &str = r#"title: SSH login failed (restore drill)
id: 7d3c1b0e-5f2a-4e8d-9c61-000000000031
logsource:
    product: linux
    service: sshd
detection:
    selection:
        event.action: ssh_login
        event.outcome: failure
    condition: selection
level: high
"#;

const POLICY: &str = r#"
[[alert.policy]]
name = "ssh-failures"
rules = ["SSH login failed*"]
by = ["source.ip"]
for = "1h"
"#;

const BEFORE: usize = 300;
const AFTER: usize = 100;
const PASSWORD: &str = "drill-password-0123456789";

fn auth_line(i: usize) -> String {
    let (minute, second) = ((i / 60) % 60, i % 60);
    if i.is_multiple_of(15) {
        let ip = if i.is_multiple_of(30) {
            "203.0.113.7"
        } else {
            "198.51.100.9"
        };
        format!(
            "Nov 26 09:{minute:02}:{second:02} db-1 sshd[4242]: Failed password for root from {ip} port {} ssh2",
            40_000 + i
        )
    } else {
        format!(
            "Nov 26 09:{minute:02}:{second:02} db-1 sshd[4243]: Accepted publickey for deploy from 10.0.0.5 port {} ssh2",
            40_000 + i
        )
    }
}

fn yagura(args: &[&str], config: &Path) -> anyhow::Result<String> {
    let output = Command::new(&binaries().collector)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("YAGURA_SHOP_PASSWORD", PASSWORD)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "yagura {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// What the running collector says it holds.
#[derive(Debug, PartialEq)]
struct Holdings {
    event_ids: BTreeSet<String>,
    alerts: Vec<Value>,
    agents: Vec<Value>,
    shop: String,
}

async fn holdings(collector: &Collector) -> anyhow::Result<Holdings> {
    let found = collector
        .search("event.dataset:system.auth", 10_000)
        .await?;
    let event_ids = found["hits"]
        .as_array()
        .context("hits")?
        .iter()
        .map(|h| h["event"]["event"]["id"].as_str().map(str::to_string))
        .collect::<Option<BTreeSet<_>>>()
        .context("event ids")?;
    // Alerts and agents without the fields that move by themselves (last seen, lag).
    let alerts = collector.get_json("/api/v1/alerts").await?["alerts"]
        .as_array()
        .context("alerts")?
        .iter()
        .map(|a| {
            serde_json::json!({
                "id": a["id"], "rule": a["rule"]["title"], "status": a["status"],
                "policy": a["policy"], "group": a["group"], "events": a["event_count"],
                "created_at": a["created_at"],
            })
        })
        .collect();
    // Agents and the collector's and shop's own signing identities.
    let agents = collector
        .get_json("/api/v1/agents")
        .await?
        .as_array()
        .context("agents")?
        .iter()
        .map(|a| {
            serde_json::json!({
                "id": a["id"], "host": a["hostname"], "kind": a["kind"], "status": a["status"],
                "labels": a["labels"], "key": a["public_key"], "enrolled_at": a["enrolled_at"],
            })
        })
        .collect();
    let shop = yagura(&["shop", "export", "--masked"], &collector.config)?;
    Ok(Holdings {
        event_ids,
        alerts,
        agents,
        shop,
    })
}

async fn wait_for_alerts(collector: &Collector, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let alerts = collector.get_json("/api/v1/alerts").await?;
        let have = alerts["alerts"].as_array().map_or(0, Vec::len);
        if have >= count {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{have} alerts, {count} expected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_brings_back_every_record_and_measures_rto_and_rpo() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let rules = tmp.path().join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(rules.join("ssh.yml"), RULE)?;
    let mut collector = Collector::start(
        &tmp.path().join("collector"),
        &format!("[detect]\nrules = [\"{}\"]\n{POLICY}", rules.display()),
    )?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("auth.log");
    std::fs::write(&log, "")?;
    let mut agent = Agent::enroll(
        &tmp.path().join("agent"),
        &collector,
        "db-1",
        &format!(
            "[[sources]]\npaths = [\"{}\"]\ndataset = \"system.auth\"\nparser = \"linux-auth\"\n",
            log.display()
        ),
    )?;
    agent.start()?;

    // Before the backup: events, two alerts (one per source address), a shop account.
    append_lines(&log, 0..BEFORE, auth_line)?;
    let query = "event.dataset:system.auth";
    collector
        .wait_for_total(query, BEFORE as u64, Duration::from_secs(90))
        .await?;
    wait_for_alerts(&collector, 2).await?;
    yagura(
        &[
            "shop",
            "create-account",
            "drill@example.org",
            "--role",
            "analyst",
        ],
        &collector.config,
    )?;
    // Let the detector and the fleet monitor commit what they have seen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_backup = holdings(&collector).await?;
    assert_eq!(at_backup.event_ids.len(), BEFORE);
    assert_eq!(at_backup.alerts.len(), 2, "{:?}", at_backup.alerts);
    assert_eq!(
        at_backup
            .agents
            .iter()
            .filter(|a| a["kind"] == "agent")
            .count(),
        1,
        "{:?}",
        at_backup.agents
    );
    assert!(at_backup.shop.contains("analyst"), "{}", at_backup.shop);

    // The backup, taken while everything runs.
    let key = tmp.path().join("backup.key");
    let store = tmp.path().join("offsite");
    let made = Command::new(&binaries().collector)
        .args(["backup", "keygen"])
        .arg(&key)
        .output()?;
    anyhow::ensure!(made.status.success(), "keygen: {made:?}");
    let backup_started = Instant::now();
    let created: Value = serde_json::from_str(&yagura(
        &[
            "backup",
            "create",
            "--to",
            &store.display().to_string(),
            "--key-file",
            &key.display().to_string(),
            "--json",
        ],
        &collector.config,
    )?)?;
    let backup_seconds = backup_started.elapsed().as_secs_f64();
    let snapshot_taken = Instant::now();

    // After it: more events and another account — what a restore will not bring back.
    append_lines(&log, BEFORE..BEFORE + AFTER, auth_line)?;
    collector
        .wait_for_total(query, (BEFORE + AFTER) as u64, Duration::from_secs(90))
        .await?;
    yagura(
        &[
            "shop",
            "create-account",
            "late@example.org",
            "--role",
            "customer",
        ],
        &collector.config,
    )?;
    let before_loss = collector.search(query, 1).await?["total"]
        .as_u64()
        .context("total")?;

    // The disaster: the collector stops and its data directory is gone.
    agent.kill_hard();
    collector.process.stop("TERM", Duration::from_secs(30))?;
    let data_dir = collector.dir.join("data");
    let lost_at = Instant::now();
    std::fs::remove_dir_all(&data_dir)?;

    let key_arg = key.display().to_string();
    let store_arg = store.display().to_string();
    let verify = Command::new(&binaries().collector)
        .args([
            "backup",
            "verify",
            "--from",
            &store_arg,
            "--key-file",
            &key_arg,
        ])
        .output()?;
    anyhow::ensure!(verify.status.success(), "verify: {verify:?}");

    let restore_started = Instant::now();
    let restored: Value = serde_json::from_str(&yagura(
        &[
            "backup",
            "restore",
            "--from",
            &store_arg,
            "--key-file",
            &key_arg,
            "--json",
        ],
        &collector.config,
    )?)?;
    let restore_seconds = restore_started.elapsed().as_secs_f64();
    assert_eq!(restored["snapshot"], created["snapshot"]);
    let log_path = collector.dir.join("collector.log");
    let log_before = std::fs::metadata(&log_path)?.len() as usize;
    collector.restart()?;
    collector
        .wait_for_total(query, BEFORE as u64, Duration::from_secs(90))
        .await?;
    let rto = restore_started.elapsed().as_secs_f64();

    // Every record of the snapshot is back; nothing after it is.
    let after_restore = holdings(&collector).await?;
    assert_eq!(after_restore.event_ids, at_backup.event_ids, "events");
    assert_eq!(after_restore.alerts, at_backup.alerts, "alerts");
    assert_eq!(after_restore.agents, at_backup.agents, "agents");
    assert_eq!(after_restore.shop, at_backup.shop, "shop records");
    assert!(
        !after_restore.shop.contains("late@"),
        "the later account is not back"
    );
    // The restored collector found nothing to complain about (index, archive, databases).
    let log_text = std::fs::read_to_string(&log_path)?;
    let since_restore = &log_text[log_before.min(log_text.len())..];
    let complaints: Vec<&str> = since_restore
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains(" WARN "))
        .collect();
    assert!(
        complaints.is_empty(),
        "after the restore:\n{}",
        complaints.join("\n")
    );
    let rpo_events = before_loss - BEFORE as u64;
    assert_eq!(rpo_events, AFTER as u64);

    // The fleet carries on: the same agent's next lines are taken, and the batches it
    // had shipped after the snapshot show as a gap, not as silence.
    agent.start()?;
    append_lines(&log, BEFORE + AFTER..BEFORE + AFTER + 10, auth_line)?;
    collector
        .wait_for_total(query, (BEFORE + 10) as u64, Duration::from_secs(90))
        .await?;
    collector
        .wait_for_at_least(
            "event.dataset:yagura.collector.gap",
            1,
            Duration::from_secs(30),
        )
        .await?;

    println!(
        "restore drill: backup of {} files ({} bytes) took {backup_seconds:.2} s while running; \
         RTO {rto:.2} s (restore {restore_seconds:.2} s, then start until the {BEFORE} events \
         answer {:.2} s); RPO {rpo_events} events acknowledged in the {:.1} s between the \
         snapshot and the loss",
        created["files"],
        created["bytes"],
        rto - restore_seconds,
        lost_at.duration_since(snapshot_taken).as_secs_f64()
    );
    agent.kill_hard();
    Ok(())
}
