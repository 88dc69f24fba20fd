//! Alerting end to end: a real agent tails an auth log, the real collector detects,
//! groups matches into alerts and delivers them to real HTTP receivers on loopback
//! standing in for PagerDuty (Events API v2), Slack (incoming webhook) and a signed
//! webhook consumer. The bodies are checked against those receivers' documented formats.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use yagura_e2e::receiver::{Behaviour, Receiver};
use yagura_e2e::{Agent, Collector, append_lines, binaries};

const RULES: &str = r#"title: SSH login failed (alerting e2e)
id: 5e0c2f1a-1d7b-4c55-9a43-000000000001
logsource:
    product: linux
    service: sshd
detection:
    selection:
        event.action: ssh_login
        event.outcome: failure
    condition: selection
level: high
tags:
    - attack.credential_access
    - attack.t1110
"#;

const SECRET: &str = "e2e-webhook-secret";
const ROUTING_KEY: &str = "R0UTINGKEYE2E00000000000000000000";

fn failure(i: usize, ip: &str) -> String {
    format!(
        "Nov 25 10:{:02}:{:02} web-1 sshd[4242]: Failed password for root from {ip} port {} ssh2",
        (i / 60) % 60,
        i % 60,
        40_000 + i
    )
}

/// `[alert]` sending to `receiver`: PagerDuty, Slack and a signed webhook.
fn alert_config(receiver: &str, resolve_after: &str, update_interval: &str) -> String {
    format!(
        r#"
[[alert.policy]]
name = "ssh-failures"
rules = ["SSH login failed*"]
by = ["source.ip"]
for = "1h"
resolve_after = "{resolve_after}"
update_interval = "{update_interval}"

[alert.retry]
initial_delay_ms = 200
max_delay_ms = 1000

[alert.destinations.pager]
type = "pagerduty"
url = "{receiver}/v2/enqueue"
routing_key = "{ROUTING_KEY}"

[alert.destinations.chat]
type = "slack"
url = "{receiver}/slack"

[alert.destinations.hook]
type = "webhook"
url = "{receiver}/hook"
secret = "{SECRET}"
"#
    )
}

struct Running {
    collector: Collector,
    _agent: Agent,
    log: PathBuf,
}

fn start(dir: &Path, alert_toml: &str) -> anyhow::Result<Running> {
    let rules = dir.join("rules");
    std::fs::create_dir_all(rules.join("runbooks"))?;
    std::fs::write(rules.join("ssh.yml"), RULES)?;
    std::fs::write(
        rules
            .join("runbooks")
            .join("5e0c2f1a-1d7b-4c55-9a43-000000000001.md"),
        "# SSH login failures\nBlock the source if it is not ours.\n",
    )?;
    let collector = Collector::start(
        &dir.join("collector"),
        &format!("[detect]\nrules = [\"{}\"]\n{alert_toml}", rules.display()),
    )?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("auth.log");
    std::fs::write(&log, "")?;
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
        _agent: agent,
        log,
    })
}

/// HMAC-SHA256 written out from RFC 2104 (not the collector's implementation): the
/// receiver's side of the documented recipe.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_pad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer_pad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The documented check: `v1=` hex HMAC-SHA256(secret, timestamp "." body).
fn signature_holds(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let mut signed = timestamp.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let expected = format!("v1={}", hex(&hmac_sha256(secret.as_bytes(), &signed)));
    expected == signature
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await? {
            return Ok(found);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn alerts(collector: &Collector) -> anyhow::Result<Vec<Value>> {
    Ok(collector.get_json("/api/v1/alerts").await?["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn pager_events(receiver: &Receiver, action: &str) -> Vec<Value> {
    receiver
        .accepted("/v2/enqueue")
        .iter()
        .map(|r| r.json())
        .filter(|b| b["event_action"] == action)
        .collect()
}

fn cli(collector: &Collector, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(&binaries().collector)
        .args(["alerts"])
        .args(args)
        .args([
            "--url",
            &collector.url,
            "--token",
            &collector.api_token,
            "--fingerprint",
            &collector.fingerprint,
        ])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "yagura alerts {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_matches_page_once_update_the_count_and_resolve_when_quiet()
-> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let tmp = tempfile::tempdir()?;
    // Quiet for 20 s resolves: long enough that the checks and the acknowledgement
    // below come first on a loaded machine (6 s was not, under CI).
    let running = start(tmp.path(), &alert_config(&receiver.url(), "20s", "2s"))?;
    let collector = &running.collector;

    // The console's live stream, open before anything happens.
    let streamed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stream = collector
        .client()?
        .get(format!("{}/api/v1/alerts/stream", collector.url))
        .bearer_auth(&collector.api_token)
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    assert!(
        stream
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let reader = {
        let streamed = std::sync::Arc::clone(&streamed);
        tokio::spawn(async move {
            while let Ok(Some(chunk)) = stream.chunk().await {
                if let Ok(mut text) = streamed.lock() {
                    text.push_str(&String::from_utf8_lossy(&chunk));
                }
            }
        })
    };

    // 500 failed logins from one address over ten seconds.
    for second in 0..10 {
        append_lines(&running.log, second * 50..(second + 1) * 50, |i| {
            failure(i, "203.0.113.9")
        })?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let alert = wait_until(
        "all 500 matches in one alert",
        Duration::from_secs(60),
        async || {
            let all = alerts(collector).await?;
            Ok(all.first().filter(|a| a["event_count"] == 500).cloned())
        },
    )
    .await?;
    let all = alerts(collector).await?;
    assert_eq!(all.len(), 1, "one alert for one group key: {all:#?}");
    let id = alert["id"].as_str().expect("alert id").to_string();
    assert_eq!(alert["status"], "open");
    assert_eq!(alert["host"], "web-1");
    assert_eq!(
        alert["group"],
        serde_json::json!([["source.ip", "203.0.113.9"]])
    );
    assert_eq!(
        alert["rule"]["runbook"],
        "runbooks/5e0c2f1a-1d7b-4c55-9a43-000000000001.md"
    );

    // The live stream told of the new alert, then of matches joining it.
    let text = streamed.lock().map(|t| t.clone()).unwrap_or_default();
    assert!(text.contains("event: alert"), "{text}");
    let changes: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert_eq!(changes[0]["change"], "created", "{changes:#?}");
    assert_eq!(changes[0]["alert"]["id"], id.as_str());
    assert!(changes.iter().any(|c| c["change"] == "updated"));
    reader.abort();

    // PagerDuty: exactly one trigger, in the Events API v2 format.
    let triggers = pager_events(&receiver, "trigger");
    assert_eq!(triggers.len(), 1, "one page: {triggers:#?}");
    let trigger = &triggers[0];
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["dedup_key"], id.as_str());
    assert_eq!(trigger["payload"]["severity"], "error", "high → error");
    assert_eq!(trigger["payload"]["source"], "web-1");
    let summary = trigger["payload"]["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with("[HIGH] SSH login failed (alerting e2e) on web-1"),
        "{summary}"
    );
    assert!(summary.len() <= 1024);
    assert_eq!(
        trigger["payload"]["custom_details"]["source.ip"],
        "203.0.113.9"
    );
    assert!(
        trigger["links"][0]["href"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("/alerts/{id}"))),
        "{trigger:#}"
    );

    // Slack: the page, then count updates (not 500 messages), the last with the total.
    let slack = wait_until(
        "the count update with 500 events",
        Duration::from_secs(60),
        async || {
            let slack: Vec<Value> = receiver
                .accepted("/slack")
                .iter()
                .map(|r| r.json())
                .collect();
            let done = slack
                .iter()
                .filter_map(|m| m["text"].as_str())
                .any(|t| t.contains("update:") && t.ends_with(": 500 events"));
            Ok(done.then_some(slack))
        },
    )
    .await?;
    assert!(
        (2..=12).contains(&slack.len()),
        "a page and a few updates, not one per match: {}",
        slack.len()
    );
    let first = &slack[0];
    assert!(
        first["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("[HIGH] SSH login failed"))
    );
    let blocks = first["blocks"].as_array().expect("Block Kit blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert!(
        blocks.iter().any(|b| b["type"] == "actions"
            && b["elements"][0]["url"]
                .as_str()
                .is_some_and(|u| u.ends_with(&format!("/alerts/{id}")))),
        "a button to the alert: {first:#}"
    );

    // The webhook: signed by the documented recipe; a wrong secret does not verify.
    let hooks = receiver.accepted("/hook");
    assert!(!hooks.is_empty());
    for hook in &hooks {
        let timestamp = hook.header("x-yagura-timestamp").expect("timestamp header");
        let signature = hook.header("x-yagura-signature").expect("signature header");
        assert!(
            signature_holds(SECRET, timestamp, &hook.body, signature),
            "{signature}"
        );
        assert!(!signature_holds(
            "not-the-secret",
            timestamp,
            &hook.body,
            signature
        ));
        let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>()?;
        assert!((0..120).contains(&age), "a fresh timestamp");
        assert!(hook.header("x-yagura-delivery").is_some());
    }
    assert_eq!(hooks[0].json()["type"], "alert.trigger");
    assert_eq!(hooks[0].json()["alert"]["id"], id.as_str());

    // A responder acknowledges with the CLI: PagerDuty hears it, the history says who.
    let said = cli(collector, &["ack", &id])?;
    assert!(said.contains("acknowledged"), "{said}");
    wait_until(
        "the acknowledge at PagerDuty",
        Duration::from_secs(10),
        async || Ok((!pager_events(&receiver, "acknowledge").is_empty()).then_some(())),
    )
    .await?;
    assert_eq!(
        pager_events(&receiver, "acknowledge")[0]["dedup_key"],
        id.as_str()
    );
    let shown = cli(collector, &["show", &id])?;
    assert!(
        shown.contains("acknowledged") && shown.contains("by first-run"),
        "{shown}"
    );
    let listed = cli(collector, &["list", "--status", "acknowledged"])?;
    assert!(listed.contains(&id), "{listed}");
    cli(collector, &["assign", &id, "alice"])?;
    cli(collector, &["note", &id, "blocked 203.0.113.9 at the edge"])?;

    // Quiet for the policy's 20 s: resolved, and PagerDuty gets resolve with the key.
    let resolved = wait_until(
        "the resolve at PagerDuty",
        Duration::from_secs(60),
        async || Ok(pager_events(&receiver, "resolve").first().cloned()),
    )
    .await?;
    assert_eq!(
        resolved,
        serde_json::json!({ "routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": id })
    );
    let detail = collector.get_json(&format!("/api/v1/alerts/{id}")).await?;
    assert_eq!(detail["alert"]["status"], "resolved");
    assert_eq!(detail["alert"]["event_count"], 500);
    let actions: Vec<&str> = detail["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        vec!["created", "acknowledged", "assigned", "note", "resolved"]
    );
    assert_eq!(detail["alert"]["assignee"], "alice");
    assert_eq!(detail["history"][1]["actor"], "first-run");
    assert_eq!(
        detail["history"][3]["detail"],
        "blocked 203.0.113.9 at the edge"
    );
    assert_eq!(detail["history"][4]["actor"], "yagura");
    let samples = detail["samples"].as_array().expect("samples");
    assert!(!samples.is_empty());
    // The host's inventory at alert time is a link away.
    let inventory = detail["inventory"].as_str().expect("inventory link");
    let at_alert_time = collector.get_json(inventory).await?;
    assert_eq!(at_alert_time["agent_id"], detail["alert"]["agent_id"]);
    let provenance = samples[0]["provenance"].as_str().expect("provenance link");
    let checked = collector.get_json(provenance).await?;
    assert_eq!(checked["verified"], true, "{checked:#}");
    assert_eq!(
        pager_events(&receiver, "trigger").len(),
        1,
        "still one page"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_minute_gets_every_notification_once() -> anyhow::Result<()> {
    let mut receiver = Receiver::reserve().await?;
    let tmp = tempfile::tempdir()?;
    let running = start(tmp.path(), &alert_config(&receiver.url(), "0", "1s"))?;
    let collector = &running.collector;

    // Five attackers: five alerts, each paged to three destinations, with updates.
    let ips = [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
        "198.51.100.5",
    ];
    for (n, ip) in ips.iter().enumerate() {
        append_lines(&running.log, n * 10..n * 10 + 3, |i| failure(i, ip))?;
    }
    wait_until("five alerts", Duration::from_secs(60), async || {
        Ok((alerts(collector).await?.len() == 5).then_some(()))
    })
    .await?;

    // 20 s refused, 20 s of 500s, 20 s of 429 with Retry-After, then up.
    tokio::time::sleep(Duration::from_secs(20)).await;
    receiver.set(Behaviour::Fail(500));
    receiver.listen().await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    receiver.set(Behaviour::TooManyRequests {
        retry_after_seconds: 3,
    });
    // More matches while it is down: updates join the queue behind the pages.
    for (n, ip) in ips.iter().enumerate() {
        append_lines(&running.log, n * 10 + 3..n * 10 + 6, |i| failure(i, ip))?;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    receiver.set(Behaviour::Accept);

    let counts = wait_until("an empty outbox", Duration::from_secs(60), async || {
        let outbox = collector.get_json("/api/v1/alerts/outbox").await?;
        let counts = outbox["counts"].clone();
        let pending = counts["pending"].as_u64().unwrap_or(0);
        let sent = counts["sent"].as_u64().unwrap_or(0);
        Ok((pending == 0 && sent >= 15).then_some(counts))
    })
    .await?;
    assert_eq!(counts["failed"].as_u64().unwrap_or(0), 0, "{counts}");
    let metrics = collector
        .client()?
        .get(format!("{}/metrics", collector.url))
        .bearer_auth(&collector.api_token)
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("yagura_alerts{status=\"open\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("yagura_alert_notifications{status=\"failed\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("yagura_alert_notifications{status=\"pending\"} 0"),
        "{metrics}"
    );
    let retries: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("yagura_alert_notification_retries_total "))
        .and_then(|n| n.parse().ok())
        .expect("retries counter");
    assert!(retries > 0, "the outage was retried: {metrics}");

    let received = receiver.received();
    // Each phase was met: 500s and 429s answered, then deliveries.
    assert!(
        received.iter().any(|r| r.status == 500),
        "retried through the 500s"
    );
    assert!(
        received.iter().any(|r| r.status == 429),
        "retried through the 429s"
    );
    // Retry-After was honoured: after a 429, that destination waited ~3 s.
    for path in ["/hook", "/slack", "/v2/enqueue"] {
        let to_path: Vec<_> = received.iter().filter(|r| r.path == path).collect();
        for pair in to_path.windows(2) {
            if pair[0].status == 429 {
                let gap = pair[1].at.duration_since(pair[0].at);
                assert!(
                    gap >= Duration::from_millis(2_900),
                    "{path}: retried {gap:?} after a 429"
                );
            }
        }
    }

    // Every notification arrived, each once.
    let mut by_delivery: BTreeMap<String, usize> = BTreeMap::new();
    for r in received
        .iter()
        .filter(|r| r.accepted() && r.path == "/hook")
    {
        let id = r
            .header("x-yagura-delivery")
            .expect("delivery id")
            .to_string();
        *by_delivery.entry(id).or_default() += 1;
    }
    assert!(by_delivery.values().all(|&n| n == 1), "{by_delivery:?}");
    let alert_ids: BTreeSet<String> = alerts(collector)
        .await?
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect();
    let hook_triggers: BTreeSet<String> = received
        .iter()
        .filter(|r| r.accepted() && r.path == "/hook" && r.json()["type"] == "alert.trigger")
        .filter_map(|r| r.json()["alert"]["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(hook_triggers, alert_ids, "every page reached the webhook");
    let pages: Vec<String> = pager_events(&receiver, "trigger")
        .iter()
        .filter_map(|b| b["dedup_key"].as_str().map(str::to_string))
        .collect();
    assert_eq!(pages.len(), 5, "one PagerDuty trigger per alert: {pages:?}");
    assert_eq!(pages.iter().cloned().collect::<BTreeSet<_>>(), alert_ids);
    let slack_pages = receiver
        .accepted("/slack")
        .iter()
        .filter(|r| !r.json()["text"].as_str().unwrap_or("").contains("update:"))
        .count();
    assert_eq!(slack_pages, 5, "one Slack page per alert");
    let outbox = collector
        .get_json("/api/v1/alerts/outbox?status=sent&limit=1000")
        .await?;
    let sent = outbox["notifications"].as_array().expect("notifications");
    let hook_sent = sent.iter().filter(|n| n["destination"] == "hook").count();
    assert_eq!(
        hook_sent,
        by_delivery.len(),
        "what the outbox sent is what arrived"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_stored_but_not_sent_when_the_collector_is_killed_is_sent_once_after_restart()
-> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.set(Behaviour::Fail(503));
    let tmp = tempfile::tempdir()?;
    let mut running = start(tmp.path(), &alert_config(&receiver.url(), "0", "1h"))?;

    append_lines(&running.log, 0..1, |i| failure(i, "192.0.2.77"))?;
    // Stored, tried, not delivered.
    let id = wait_until(
        "a stored, undelivered page",
        Duration::from_secs(60),
        async || {
            let outbox = running
                .collector
                .get_json("/api/v1/alerts/outbox?status=pending")
                .await?;
            let tried = outbox["notifications"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| {
                    n["destination"] == "pager"
                        && n["kind"] == "trigger"
                        && n["attempts"].as_u64() >= Some(1)
                })
                .and_then(|n| n["alert_id"].as_str().map(str::to_string));
            Ok(tried)
        },
    )
    .await?;
    assert!(pager_events(&receiver, "trigger").is_empty());

    running.collector.process.kill_hard();
    receiver.set(Behaviour::Accept);
    running.collector.restart()?;

    wait_until(
        "the page after the restart",
        Duration::from_secs(30),
        async || Ok((!pager_events(&receiver, "trigger").is_empty()).then_some(())),
    )
    .await?;
    // Killed again once delivered: nothing is sent twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.collector.process.kill_hard();
    running.collector.restart()?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let triggers = pager_events(&receiver, "trigger");
    assert_eq!(triggers.len(), 1, "sent exactly once: {triggers:#?}");
    assert_eq!(triggers[0]["dedup_key"], id.as_str());
    let hooks: Vec<_> = receiver
        .accepted("/hook")
        .into_iter()
        .filter(|r| r.json()["type"] == "alert.trigger")
        .collect();
    assert_eq!(hooks.len(), 1, "the webhook once too");
    let all = alerts(&running.collector).await?;
    assert_eq!(all.len(), 1, "one alert, not one per start");
    Ok(())
}
