//! The inventory and the allowlist through the real binaries: an agent with the inventory
//! on reports its host, `yagura inventory` answers what ran there before and after a
//! process started, and an allowlist policy assigned by label on the collector reaches the
//! agent with that label (not the fleet default), is verified and taken there, and a new
//! version replaces it.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use yagura_e2e::{Agent, Collector, binaries};
use yagura_shared::policy_delivery::ALLOWLIST_HEADER;
use yagura_shared::{AgentKey, Event, SignedBatch};

fn collector_cli(collector: &Collector, args: &[&str]) -> anyhow::Result<String> {
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

/// `yagura inventory AGENT --json [--at AT]` as an analyst runs it.
fn inventory(collector: &Collector, agent: &str, at: Option<&str>) -> anyhow::Result<Value> {
    let mut command = Command::new(&binaries().collector);
    command
        .args(["inventory", agent, "--json", "--kinds", "process", "--url"])
        .arg(&collector.url)
        .args(["--token", &collector.api_token])
        .args(["--fingerprint", &collector.fingerprint]);
    if let Some(at) = at {
        command.args(["--at", at]);
    }
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "yagura inventory: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout)?;
    anyhow::ensure!(answer["items"].is_object(), "no items in {answer}");
    Ok(answer)
}

fn has_process(answer: &Value, pid: u32) -> anyhow::Result<bool> {
    let items = answer["items"]["process"]
        .as_array()
        .with_context(|| format!("no processes in {}", truncated(answer)))?;
    Ok(items.iter().any(|item| {
        item["key"]
            .as_str()
            .is_some_and(|k| k.starts_with(&format!("{pid}:")))
    }))
}

fn truncated(value: &Value) -> String {
    let text = value.to_string();
    text.chars().take(1500).collect()
}

/// Polls `done` until it says yes; the error names the last answer it gave.
async fn wait_until<F: FnMut() -> anyhow::Result<bool>>(
    what: &str,
    timeout: Duration,
    mut done: F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match done() {
            Ok(true) => return Ok(()),
            Ok(false) => last = "not yet".into(),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("{what}: not within {timeout:?} ({last})")
}

#[tokio::test]
async fn inventory_history_and_allowlists_assigned_by_label() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let collector = Collector::start(&tmp.path().join("collector"), "")?;
    let signer = collector_cli(&collector, &["allowlist", "key"])?;
    let signer = signer.trim();

    // A fleet default and a policy for env=prod; the agent is enrolled with env=prod.
    let default_policy = tmp.path().join("default.toml");
    std::fs::write(&default_policy, "[usb]\nmode = \"learn\"\nallow = []\n")?;
    let prod_policy = tmp.path().join("prod.toml");
    let prod_v1 = "[usb]\nmode = \"audit\"\nallow = [\"1d6b:0002\"]\n";
    std::fs::write(&prod_policy, prod_v1)?;
    let prod = prod_policy.display().to_string();
    let assign_prod = || {
        collector_cli(
            &collector,
            &[
                "allowlist",
                "assign",
                &prod,
                "--name",
                "prod",
                "--labels",
                "env=prod",
            ],
        )
    };
    collector_cli(
        &collector,
        &[
            "allowlist",
            "assign",
            &default_policy.display().to_string(),
            "--name",
            "default",
        ],
    )?;
    let said = assign_prod()?;
    assert!(said.contains("env=prod"), "{said}");
    let listed = collector_cli(&collector, &["allowlist", "assignments"])?;
    assert!(
        listed.contains("every agent") && listed.contains("prod"),
        "{listed}"
    );

    // The ingest answer hands the policy only to the sender of a batch archived just
    // now: a replay of the same signed batch (anyone may have seen it) gets nothing.
    let key = AgentKey::generate()?;
    let enrolled: Value = collector
        .client()?
        .post(format!("{}/api/v1/enroll", collector.url))
        .json(&serde_json::json!({
            "token": collector.labelled_enrollment_token(1, "env=prod")?,
            "public_key": key.public_key_base64(),
            "hostname": "replayed",
            "version": "test",
        }))
        .send()
        .await?
        .json()
        .await?;
    let replayed_id: uuid::Uuid = enrolled["agent_id"].as_str().context("agent_id")?.parse()?;
    let mut event = Event::new(chrono::Utc::now());
    event.set_str("message", "one line");
    event.set_str("agent.id", replayed_id.to_string());
    let batch = SignedBatch::seal(&key, replayed_id, 1, chrono::Utc::now(), &[event])?.into_bytes();
    let send = |bytes: Vec<u8>| {
        let client = collector.client();
        let url = format!("{}/api/v1/ingest", collector.url);
        async move {
            let answer: Value = client?
                .post(url)
                .header("content-type", "application/octet-stream")
                .header(ALLOWLIST_HEADER, "none")
                .body(bytes)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(answer)
        }
    };
    let first = send(batch.clone()).await?;
    assert_eq!(first["status"], "accepted", "{first}");
    assert_eq!(first["allowlist"]["name"], "prod", "{first}");
    assert_eq!(first["allowlist"]["policy"], prod_v1);
    let replay = send(batch).await?;
    assert_eq!(replay["status"], "duplicate", "{replay}");
    assert!(replay.get("allowlist").is_none(), "{replay}");

    let agent_dir = tmp.path().join("agent");
    let held = agent_dir.join("allowlist.toml");
    let mut agent = Agent::enroll_labelled(
        &agent_dir,
        &collector,
        "inventory-host",
        &format!(
            "[inventory]\nenabled = true\ndiff_interval_seconds = 1\n[allowlist]\npolicy = \"{}\"\nsigner = \"{signer}\"\n",
            held.display()
        ),
        "env=prod,site=osaka",
    )?;
    // Heartbeats every second keep an idle agent asking (the answer carries the policy).
    let config = std::fs::read_to_string(&agent.config)?;
    std::fs::write(
        &agent.config,
        format!("heartbeat_interval_seconds = 1\n{config}"),
    )?;
    agent.start()?;
    let agent_id = agent.id()?;
    let agent_pid = agent.process.as_ref().context("agent process")?.pid();

    // The assignment for its label arrives, is verified and taken; not the default.
    wait_until(
        "the prod policy on the agent",
        Duration::from_secs(60),
        || Ok(std::fs::read_to_string(&held).is_ok_and(|text| text == prod_v1)),
    )
    .await?;
    let loaded = format!(
        "event.dataset:yagura.allowlist AND event.action:policy_loaded AND agent.id:{agent_id}"
    );
    collector
        .wait_for_at_least(&loaded, 1, Duration::from_secs(30))
        .await?;
    let received = collector
        .search(
            &format!("event.action:policy_received AND agent.id:{agent_id}"),
            10,
        )
        .await?;
    let hits = received["hits"].as_array().context("hits")?;
    assert_eq!(hits.len(), 1, "{received}");
    assert_eq!(
        hits[0]["event"]["yagura"]["allowlist"]["assignment"],
        "prod"
    );

    // A new version of the assignment replaces the policy on the agent.
    let prod_v2 = "[usb]\nmode = \"enforce\"\nallow = [\"1d6b:0002\", \"1d6b:0003\"]\n";
    std::fs::write(&prod_policy, prod_v2)?;
    assign_prod()?;
    wait_until(
        "the new prod policy on the agent",
        Duration::from_secs(60),
        || Ok(std::fs::read_to_string(&held).is_ok_and(|text| text == prod_v2)),
    )
    .await?;
    collector
        .wait_for_at_least(&loaded, 2, Duration::from_secs(30))
        .await?;

    // Inventory through the pipeline: the agent itself is in the snapshot.
    wait_until(
        "the agent's process in its inventory",
        Duration::from_secs(60),
        || inventory(&collector, &agent_id, None).and_then(|a| has_process(&a, agent_pid)),
    )
    .await?;
    // A process started afterwards appears through the diff; the inventory before its
    // start does not have it.
    let before = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut sleeper = Command::new("sleep").arg("300").spawn()?;
    let sleeper_pid = sleeper.id();
    let seen = wait_until(
        "the new process in the inventory",
        Duration::from_secs(60),
        || inventory(&collector, &agent_id, None).and_then(|a| has_process(&a, sleeper_pid)),
    )
    .await;
    let earlier = inventory(
        &collector,
        &agent_id,
        Some(&before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    seen?;
    let earlier = earlier?;
    assert!(has_process(&earlier, agent_pid)?, "{earlier}");
    assert!(!has_process(&earlier, sleeper_pid)?, "{earlier}");

    // Removing the assignment leaves the agent's policy in force.
    collector_cli(&collector, &["allowlist", "unassign", "prod"])?;
    assert_eq!(std::fs::read_to_string(&held)?, prod_v2);
    agent.kill_hard();
    Ok(())
}
