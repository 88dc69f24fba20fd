//! Acceptance of the walking skeleton: the real binaries, end to end.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use yagura_e2e::{Agent, Collector, append_lines};
use yagura_shared::{AgentKey, Event, SignedBatch};

const LINES: usize = 10_000;

fn numbered(i: usize) -> String {
    format!(
        "2026-11-25T08:00:00.000000+00:00 e2e-host app[42]: line {i:05} payload for the walking skeleton"
    )
}

/// 10,000 lines through agent → collector → archive → index → search, with the agent
/// and then the collector killed with SIGKILL mid-stream and restarted: every line is
/// found exactly once, with its file path, host, agent id and original text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_lines_arrive_exactly_once_through_sigkills() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut collector = Collector::start(&tmp.path().join("collector"), "")?;
    let log_dir = tmp.path().join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let watched = log_dir.join("app.log");
    let sources = format!(
        "[[sources]]\npaths = [\"{}/*.log\"]\ndataset = \"e2e.app\"\n",
        log_dir.display()
    );
    let mut agent = Agent::enroll(&tmp.path().join("agent"), &collector, "e2e-host", &sources)?;
    let agent_id = agent.id()?;
    agent.start()?;

    let query = format!("log.file.path:\"{}\"", watched.display());
    // Write in 40 chunks of 250 lines, with the kills in between chunks, each once the
    // stream is demonstrably flowing (some lines indexed) and far from finished.
    let chunk = LINES / 40;
    for step in 0..40 {
        append_lines(&watched, step * chunk..(step + 1) * chunk, numbered)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if step == 12 || step == 24 {
            let indexed = collector
                .wait_for_at_least(&query, 1, Duration::from_secs(60))
                .await?;
            assert!(indexed < LINES as u64, "kill at step {step} is mid-stream");
        }
        if step == 12 {
            agent.kill_hard();
            tokio::time::sleep(Duration::from_millis(200)).await;
            agent.start()?;
        }
        if step == 24 {
            collector.process.kill_hard();
            tokio::time::sleep(Duration::from_millis(300)).await;
            collector.restart()?;
        }
    }

    collector
        .wait_for_total(&query, LINES as u64, Duration::from_secs(120))
        .await?;
    // Give any late duplicate a chance to show up before counting for good.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let result = collector.search(&query, LINES + 1).await?;
    assert_eq!(result["total"], json!(LINES), "total after settling");
    let hits = result["hits"].as_array().cloned().unwrap_or_default();
    assert_eq!(hits.len(), LINES);
    let mut originals = HashSet::new();
    let mut ids = HashSet::new();
    for hit in &hits {
        let event = &hit["event"];
        assert_eq!(
            event["log"]["file"]["path"],
            json!(watched.display().to_string())
        );
        assert_eq!(event["host"]["name"], json!("e2e-host"));
        assert_eq!(event["agent"]["id"], json!(agent_id));
        assert!(
            hit["provenance"]["batch_sequence"]
                .as_u64()
                .is_some_and(|s| s > 0)
        );
        ids.insert(
            event["event"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        originals.insert(
            event["event"]["original"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let expected: HashSet<String> = (0..LINES).map(numbered).collect();
    assert_eq!(originals, expected, "every line exactly once");
    assert_eq!(ids.len(), LINES, "event ids are unique");
    Ok(())
}

fn events(marker: &str, agent: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = Event::new(chrono::Utc::now());
            e.set_str("message", format!("{marker} {i}"));
            e.set_str("agent.id", agent);
            e.set_str("event.dataset", "e2e.forged");
            e
        })
        .collect()
}

/// Forged, tampered, unknown-agent, malformed and oversized batches are refused with
/// 401/401/401/400/413 and a problem document, and none of their events is indexed; a
/// replayed batch is acknowledged again but indexed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_and_never_indexed() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let collector = Collector::start(
        &tmp.path().join("collector"),
        "[ingest]\nmax_body_bytes = 1048576\n",
    )?;
    let key = AgentKey::generate()?;
    let enrolled: Value = collector
        .client()?
        .post(format!("{}/api/v1/enroll", collector.url))
        .json(&json!({
            "token": collector.enrollment_token(1)?,
            "public_key": key.public_key_base64(),
            "hostname": "e2e-test-client",
            "version": "test",
        }))
        .send()
        .await?
        .json()
        .await?;
    let agent: uuid::Uuid = enrolled["agent_id"].as_str().unwrap_or_default().parse()?;
    let agent_str = agent.to_string();
    let now = chrono::Utc::now();

    let other_key = AgentKey::generate()?;
    let forged = SignedBatch::seal(
        &other_key,
        agent,
        1,
        now,
        &events("evil-forged", &agent_str, 3),
    )?;
    let mut tampered =
        SignedBatch::seal(&key, agent, 1, now, &events("evil-tampered", &agent_str, 3))?
            .into_bytes();
    let payload_byte = 76 + 5;
    tampered[payload_byte] ^= 0x01;
    let stranger = uuid::Uuid::now_v7();
    let unknown = SignedBatch::seal(
        &other_key,
        stranger,
        1,
        now,
        &events("evil-unknown", &stranger.to_string(), 3),
    )?;
    let malformed = b"{\"message\":\"evil-malformed\"}".to_vec();
    let mut big = Event::new(now);
    // Random-looking text does not compress, so the body really is over the limit.
    let noise = yagura_e2e::incompressible_text(3_000_000);
    big.set_str("message", format!("evil-oversized {noise}"));
    big.set_str("agent.id", &agent_str);
    let oversized = SignedBatch::seal(&key, agent, 1, now, &[big])?;
    assert!(oversized.as_bytes().len() > 1_048_576);

    let cases = [
        ("forged", forged.into_bytes(), 401),
        ("tampered", tampered, 401),
        ("unknown agent", unknown.into_bytes(), 401),
        ("malformed", malformed, 400),
        ("oversized", oversized.into_bytes(), 413),
    ];
    for (name, body, expected) in cases {
        let (status, problem, content_type) = collector.post_ingest(body).await?;
        assert_eq!(status, expected, "{name}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{name}");
        assert_eq!(problem["status"], json!(expected), "{name}: {problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}: {problem}"
        );
    }

    // A good batch, then its exact replay: both acknowledged, indexed once.
    let good = SignedBatch::seal(&key, agent, 1, now, &events("good-batch", &agent_str, 3))?;
    let (status, ack, _) = collector.post_ingest(good.as_bytes().to_vec()).await?;
    assert_eq!((status, &ack["status"]), (200, &json!("accepted")), "{ack}");
    let (status, ack, _) = collector.post_ingest(good.as_bytes().to_vec()).await?;
    assert_eq!(
        (status, &ack["status"]),
        (200, &json!("duplicate")),
        "{ack}"
    );
    collector
        .wait_for_total("message:\"good-batch\"", 3, Duration::from_secs(30))
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        collector.search("message:\"good-batch\"", 10).await?["total"],
        json!(3)
    );
    for marker in [
        "evil-forged",
        "evil-tampered",
        "evil-unknown",
        "evil-malformed",
        "evil-oversized",
    ] {
        let found = collector
            .search(&format!("message:\"{marker}\""), 10)
            .await?;
        assert_eq!(found["total"], json!(0), "{marker} must not be indexed");
    }
    // The collector's own security events about the refusals are indexed too.
    assert_eq!(
        collector.search("event.dataset:e2e.forged", 10).await?["total"],
        json!(3)
    );

    // The API refuses requests without the token, with a problem document.
    for path in [
        "/api/v1/search?q=*",
        "/api/v1/alerts",
        "/api/v1/alerts/stream",
        "/api/v1/alerts/outbox",
        "/metrics",
    ] {
        let anonymous = collector
            .client()?
            .get(format!("{}{path}", collector.url))
            .send()
            .await?;
        assert_eq!(anonymous.status().as_u16(), 401, "{path}");
        let problem: serde_json::Value = anonymous.json().await?;
        assert_eq!(problem["status"], 401, "{path}");
    }
    let anonymous_ack = collector
        .client()?
        .post(format!("{}/api/v1/alerts/0123abcd/ack", collector.url))
        .send()
        .await?;
    assert_eq!(anonymous_ack.status().as_u16(), 401);

    // Probes answer anyone, with pass/fail per check and nothing else.
    let live = collector
        .client()?
        .get(format!("{}/health/live", collector.url))
        .send()
        .await?;
    assert_eq!(live.status().as_u16(), 200);
    let ready = collector
        .client()?
        .get(format!("{}/health/ready", collector.url))
        .send()
        .await?;
    assert_eq!(ready.status().as_u16(), 200);
    let ready: serde_json::Value = ready.json().await?;
    assert_eq!(ready["status"], "ready", "{ready}");
    let checks: Vec<&str> = ready["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for expected in ["database", "archive", "index", "indexer_lag"] {
        assert!(checks.contains(&expected), "{expected} in {ready}");
    }
    Ok(())
}
