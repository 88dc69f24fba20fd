//! Agent signing-key rotation with the agent sending throughout.
//!
//! A writer appends numbered lines in bursts while `yagura-agent rotate-key` is run twice
//! against the running agent. Every line must be indexed exactly once, every archived
//! batch must still verify (the collector keeps each retired key for the sequences it
//! signed), the agent on record must hold the last key, and both rotations must be
//! recorded as events. Then the refusals: a batch signed with a retired key after its
//! range, a rotation not signed by the current key, and one that would claim batches
//! already archived.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use yagura_e2e::{Agent, Collector, append_in_bursts, append_lines, binaries};
use yagura_shared::key_rotation::KeyRotation;
use yagura_shared::{AgentKey, Event, SignedBatch};

const LINES: usize = 20_000;
const BURSTS: usize = 40;

fn line(i: usize) -> String {
    format!("2026-11-26T10:00:00.000000+00:00 rotate-host app[9]: rotation line {i:06}")
}

fn agent_key(agent: &Agent) -> anyhow::Result<AgentKey> {
    let text = std::fs::read_to_string(agent.dir.join("state").join("agent.key"))?;
    Ok(AgentKey::from_file_text(&text)?)
}

fn rotate(agent: &Agent) -> anyhow::Result<(String, u64)> {
    let output = Command::new(&binaries().agent)
        .args(["rotate-key", "--config"])
        .arg(&agent.config)
        .args(["--timeout-seconds", "60"])
        .output()?;
    let stdout = String::from_utf8(output.stdout)?;
    anyhow::ensure!(
        output.status.success(),
        "rotate-key: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "rotated: public key K signs from batch S on"
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let key = words.get(3).context("key")?.to_string();
    let from = words.get(7).context("sequence")?.parse()?;
    Ok((key, from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_while_the_agent_sends_and_nothing_is_lost() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let collector = Collector::start(&tmp.path().join("collector"), "")?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("app.log");
    std::fs::write(&log, "")?;
    let mut agent = Agent::enroll(
        &tmp.path().join("agent"),
        &collector,
        "rotate-host",
        &format!(
            "[[sources]]\npaths = [\"{}\"]\ndataset = \"e2e.rotation\"\n",
            log.display()
        ),
    )?;
    let agent_id = agent.id()?;
    let first_key = agent_key(&agent)?;
    agent.start()?;

    // The writer: bursts of lines over a few seconds.
    let writer = append_in_bursts(&log, LINES, BURSTS, Duration::from_millis(150), line);
    // Two rotations while it writes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (second_key, first_switch) = tokio::task::block_in_place(|| rotate(&agent))?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (third_key, second_switch) = tokio::task::block_in_place(|| rotate(&agent))?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    assert_ne!(second_key, third_key);
    assert_ne!(second_key, first_key.public_key_base64());
    assert!(
        first_switch > 1 && second_switch > first_switch,
        "{first_switch} {second_switch}"
    );
    assert_eq!(
        agent_key(&agent)?.public_key_base64(),
        third_key,
        "the agent keeps the new key"
    );

    // Every line, once.
    let query = "event.dataset:e2e.rotation";
    collector
        .wait_for_total(query, LINES as u64, Duration::from_secs(120))
        .await?;
    let found = collector.search(query, LINES).await?;
    let messages: BTreeSet<String> = found["hits"]
        .as_array()
        .context("hits")?
        .iter()
        .filter_map(|h| h["event"]["message"].as_str().map(str::to_string))
        .collect();
    assert_eq!(messages.len(), LINES, "each line exactly once");

    // The collector holds the last key and both retired ones, and says so.
    let record = collector
        .get_json(&format!("/api/v1/agents/{agent_id}"))
        .await?;
    assert_eq!(
        record["public_key"],
        Value::String(third_key.clone()),
        "{record}"
    );
    collector
        .wait_for_total(
            "event.dataset:yagura.collector.key_rotation",
            2,
            Duration::from_secs(30),
        )
        .await?;

    // Every archived batch verifies with the key of its sequence.
    let verify = Command::new(&binaries().collector)
        .args(["archive", "verify", "--config"])
        .arg(&collector.config)
        .output()?;
    assert!(
        verify.status.success(),
        "archive verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // A batch signed with the first key for a sequence after its range is refused.
    let id: uuid::Uuid = agent_id.parse()?;
    let mut event = Event::new(chrono::Utc::now());
    event.set_str("message", "forged with a retired key");
    let forged = SignedBatch::seal(&first_key, id, 1_000_000, chrono::Utc::now(), &[event])?;
    let (status, body, _) = collector.post_ingest(forged.into_bytes()).await?;
    assert_eq!(status, 401, "{body}");

    // Rotations the collector must refuse.
    let client = collector.client()?;
    let url = format!("{}/api/v1/agents/{agent_id}/key", collector.url);
    let stranger = AgentKey::generate()?;
    let unsigned = KeyRotation::sign(&stranger, &AgentKey::generate()?, id, 2_000_000);
    let refused = client.post(&url).json(&unsigned).send().await?;
    assert_eq!(refused.status().as_u16(), 401, "{}", refused.text().await?);
    let current = agent_key(&agent)?;
    let backwards = KeyRotation::sign(&current, &AgentKey::generate()?, id, 2);
    let refused = client.post(&url).json(&backwards).send().await?;
    assert_eq!(refused.status().as_u16(), 409, "{}", refused.text().await?);
    // The agent still ships with its key afterwards.
    append_lines(&log, LINES..LINES + 10, line)?;
    collector
        .wait_for_total(query, LINES as u64 + 10, Duration::from_secs(60))
        .await?;
    agent.kill_hard();
    Ok(())
}
