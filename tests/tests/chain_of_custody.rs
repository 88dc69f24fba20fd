//! Acceptance of the hardened ingest and the chain of custody, with the real binaries:
//! twelve kinds of bad batch, a torn archive tail, provenance and `archive verify`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use uuid::Uuid;
use yagura_e2e::{Agent, Collector, append_lines, binaries};
use yagura_shared::{AgentKey, Event, SignedBatch, encode_bundle};

fn events(marker: &str, agent: Uuid, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = Event::new(chrono::Utc::now());
            e.set_str("message", format!("{marker} {i}"));
            e.set_str("agent.id", agent.to_string());
            e.set_str("event.dataset", "e2e.custody");
            e
        })
        .collect()
}

/// A correctly hashed and signed batch around an arbitrary payload (what a compromised
/// agent could send), built byte by byte from the documented layout.
fn forge(key: &AgentKey, agent: Uuid, sequence: u64, count: u32, payload: &[u8]) -> Vec<u8> {
    let seed = base64::engine::general_purpose::STANDARD
        .decode(key.to_file_text().trim())
        .expect("seed");
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed.try_into().expect("32 bytes"));
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"YGB1");
    bytes.extend_from_slice(agent.as_bytes());
    bytes.extend_from_slice(&sequence.to_be_bytes());
    bytes.extend_from_slice(&chrono::Utc::now().timestamp_millis().to_be_bytes());
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes.extend_from_slice(&sha2::Sha256::digest(payload));
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    let mut message = b"yagura signed batch header v1\0".to_vec();
    message.extend_from_slice(&bytes);
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&signing.sign(&message).to_bytes());
    bytes
}

async fn enroll_key(collector: &Collector, key: &AgentKey, host: &str) -> anyhow::Result<Uuid> {
    let enrolled: Value = collector
        .client()?
        .post(format!("{}/api/v1/enroll", collector.url))
        .json(&json!({
            "token": collector.enrollment_token(1)?,
            "public_key": key.public_key_base64(),
            "hostname": host,
            "version": "test",
        }))
        .send()
        .await?
        .json()
        .await?;
    Ok(enrolled["agent_id"].as_str().unwrap_or_default().parse()?)
}

fn yagura(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(&binaries().collector).args(args).output()?)
}

fn remote_args(collector: &Collector) -> Vec<String> {
    vec![
        "--url".into(),
        collector.url.clone(),
        "--token".into(),
        collector.api_token.clone(),
        "--fingerprint".into(),
        collector.fingerprint.clone(),
    ]
}

/// Polls until the security events include every action in `expected`.
async fn security_actions(
    collector: &Collector,
    expected: &BTreeSet<&str>,
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = collector
            .search("event.dataset:yagura.collector.security", 1000)
            .await?;
        let hits = found["hits"].as_array().cloned().unwrap_or_default();
        let actions: BTreeSet<String> = hits
            .iter()
            .filter_map(|h| h["event"]["event"]["action"].as_str().map(str::to_string))
            .collect();
        if expected.iter().all(|a| actions.contains(*a)) {
            return Ok(hits);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "security events {actions:?} lack some of {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Twelve kinds of bad batch each get their own status and a problem document, none of
/// their events is indexed, and each attack is a `yagura.collector.security` event
/// (collector-signed, itself verifiable). A sequence gap is a `yagura.collector.gap` event.
///
/// The "flipped header byte" is byte 27, the low byte of the sequence number: the header
/// still parses and names the same (known) agent, so the answer is always 401 (signature).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_kinds_of_bad_batch_are_refused_and_raise_security_events() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let collector = Collector::start(
        &tmp.path().join("collector"),
        "[ingest]\nmax_body_bytes = 1048576\nmax_decompressed_bytes = 16777216\n",
    )?;
    let key = AgentKey::generate()?;
    let agent = enroll_key(&collector, &key, "custody-client").await?;
    let doomed_key = AgentKey::generate()?;
    let doomed = enroll_key(&collector, &doomed_key, "doomed-client").await?;
    let now = chrono::Utc::now();

    // Good traffic first: sequences 1 and 2 of the client, and one batch of the agent
    // that is revoked below (so its key is cached by the running collector).
    for seq in 1..=2 {
        let good = SignedBatch::seal(&key, agent, seq, now, &events("good-batch", agent, 3))?;
        let (status, ack, _) = collector.post_ingest(good.into_bytes()).await?;
        assert_eq!((status, &ack["status"]), (200, &json!("accepted")), "{ack}");
    }
    let before = SignedBatch::seal(
        &doomed_key,
        doomed,
        1,
        now,
        &events("good-doomed", doomed, 2),
    )?;
    assert_eq!(collector.post_ingest(before.into_bytes()).await?.0, 200);
    let revoke = {
        let mut args = vec!["agents".to_string(), "revoke".into(), doomed.to_string()];
        args.extend(remote_args(&collector));
        yagura(&args.iter().map(String::as_str).collect::<Vec<_>>())?
    };
    assert!(
        revoke.status.success(),
        "revoke: {}",
        String::from_utf8_lossy(&revoke.stderr)
    );

    let other_key = AgentKey::generate()?;
    let stranger = Uuid::now_v7();
    let wrong_key = SignedBatch::seal(
        &other_key,
        agent,
        3,
        now,
        &events("evil-wrongkey", agent, 3),
    )?;
    let mut flipped_payload =
        SignedBatch::seal(&key, agent, 3, now, &events("evil-payload", agent, 3))?.into_bytes();
    flipped_payload[76 + 5] ^= 0x01;
    let mut flipped_header =
        SignedBatch::seal(&key, agent, 5, now, &events("evil-header", agent, 3))?.into_bytes();
    flipped_header[27] ^= 0x01;
    let unknown = SignedBatch::seal(
        &other_key,
        stranger,
        1,
        now,
        &events("evil-unknown", stranger, 3),
    )?;
    let revoked = SignedBatch::seal(
        &doomed_key,
        doomed,
        2,
        now,
        &events("evil-revoked", doomed, 3),
    )?;
    let replay = SignedBatch::seal(&key, agent, 1, now, &events("evil-replay", agent, 3))?;
    let old = SignedBatch::seal(
        &key,
        agent,
        3,
        now - chrono::Duration::days(30),
        &events("evil-old", agent, 3),
    )?;
    let full =
        SignedBatch::seal(&key, agent, 3, now, &events("evil-truncated", agent, 3))?.into_bytes();
    let truncated = full[..full.len() / 2].to_vec();
    let invalid_zstd = forge(
        &key,
        agent,
        3,
        3,
        b"evil-zstd: this is not a zstd frame at all",
    );
    let mut bomb = Event::new(now);
    bomb.set_str("message", format!("evil-bomb {}", "A".repeat(8 << 20)));
    bomb.set_str("agent.id", agent.to_string());
    let bomb = SignedBatch::seal(&key, agent, 3, now, &[bomb])?;
    assert!(
        bomb.as_bytes().len() < 64 * 1024,
        "a bomb is small on the wire"
    );
    let noise = yagura_e2e::incompressible_text(3_000_000);
    let mut big = Event::new(now);
    big.set_str("message", format!("evil-oversized {noise}"));
    big.set_str("agent.id", agent.to_string());
    let oversized = SignedBatch::seal(&key, agent, 3, now, &[big])?;
    assert!(oversized.as_bytes().len() > 1_048_576);
    let garbage: Vec<u8> = (0..600u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("wrong key", wrong_key.into_bytes(), 401),
        ("flipped payload byte", flipped_payload, 401),
        ("flipped header byte (sequence)", flipped_header, 401),
        ("unknown agent", unknown.into_bytes(), 401),
        ("revoked agent", revoked.into_bytes(), 401),
        ("replay", replay.into_bytes(), 200),
        ("old timestamp", old.into_bytes(), 400),
        ("truncated body", truncated, 400),
        ("invalid zstd", invalid_zstd, 400),
        ("decompression bomb", bomb.into_bytes(), 413),
        ("oversized body", oversized.into_bytes(), 413),
        ("garbage bytes", garbage, 400),
    ];
    for (name, body, expected) in cases {
        let (status, answer, content_type) = collector.post_ingest(body).await?;
        assert_eq!(status, expected, "{name}: {answer}");
        if expected == 200 {
            assert_eq!(answer["status"], json!("duplicate"), "{name}: {answer}");
            continue;
        }
        assert_eq!(content_type, "application/problem+json", "{name}");
        assert_eq!(answer["status"], json!(expected), "{name}: {answer}");
        assert!(
            answer["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}: {answer}"
        );
        if name == "old timestamp" {
            let detail = answer["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("behind"), "skew in the detail: {detail}");
        }
    }

    // A jump from 2 to 5 is accepted and recorded as a gap of 3..=4.
    let jump = SignedBatch::seal(&key, agent, 5, now, &events("good-after-gap", agent, 2))?;
    assert_eq!(collector.post_ingest(jump.into_bytes()).await?.0, 200);

    let expected: BTreeSet<&str> = [
        "bad_signature",
        "payload_hash_mismatch",
        "unknown_agent",
        "revoked_agent",
        "replay",
        "clock_skew",
        "malformed_batch",
        "invalid_payload",
        "decompression_bomb",
        "oversized_body",
    ]
    .into();
    let security = security_actions(&collector, &expected).await?;
    for hit in &security {
        let event = &hit["event"];
        assert_eq!(event["source"]["ip"], json!("127.0.0.1"), "{event}");
        assert_eq!(event["event"]["kind"], json!("alert"));
    }
    let revoked_event = security
        .iter()
        .find(|h| h["event"]["event"]["action"] == json!("revoked_agent"))
        .expect("revoked_agent event");
    assert_eq!(
        revoked_event["event"]["yagura"]["claimed_agent_id"],
        json!(doomed.to_string())
    );
    let gap = collector
        .wait_for_total(
            "event.dataset:yagura.collector.gap",
            1,
            Duration::from_secs(30),
        )
        .await?;
    let gap_event = &gap["hits"][0]["event"]["yagura"]["gap"];
    assert_eq!(gap_event["first_missing"], json!(3), "{gap}");
    assert_eq!(gap_event["last_missing"], json!(4), "{gap}");

    // The collector's own events are signed and verify like any agent's.
    let security_id = security[0]["event"]["event"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut args = vec!["provenance".to_string(), security_id, "--json".into()];
    args.extend(remote_args(&collector));
    let output = yagura(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Only the good events were indexed, each once; none of the bad ones.
    collector
        .wait_for_total("message:\"good-batch\"", 6, Duration::from_secs(30))
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        collector.search("message:\"good-batch\"", 10).await?["total"],
        json!(6)
    );
    assert_eq!(
        collector.search("message:\"good-after-gap\"", 10).await?["total"],
        json!(2)
    );
    assert_eq!(
        collector.search("event.dataset:e2e.custody", 100).await?["total"],
        json!(10)
    );
    for marker in [
        "evil-wrongkey",
        "evil-payload",
        "evil-header",
        "evil-unknown",
        "evil-revoked",
        "evil-replay",
        "evil-old",
        "evil-truncated",
        "evil-bomb",
        "evil-oversized",
    ] {
        let found = collector
            .search(&format!("message:\"{marker}\""), 10)
            .await?;
        assert_eq!(found["total"], json!(0), "{marker} must not be indexed");
    }

    // The fleet view shows the revoked agent and the client's last sequence.
    let agents: Value = collector
        .client()?
        .get(format!("{}/api/v1/agents", collector.url))
        .bearer_auth(&collector.api_token)
        .send()
        .await?
        .json()
        .await?;
    let list = agents.as_array().cloned().unwrap_or_default();
    let find = |id: Uuid| {
        list.iter()
            .find(|a| a["id"] == json!(id.to_string()))
            .cloned()
    };
    assert_eq!(find(doomed).expect("doomed")["status"], json!("revoked"));
    let client = find(agent).expect("client");
    assert_eq!(client["connectivity"], json!("online"));
    assert_eq!(client["last_sequence"], json!(5));
    assert!(list.iter().any(|a| a["kind"] == json!("collector")));
    Ok(())
}

fn segment_files(archive: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(archive)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    Ok(files)
}

/// A torn last record (the test cuts a record in half) is cut at start and reported;
/// everything before it is still there, and the sequence after it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_archive_tail_is_recovered_with_a_report() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut collector = Collector::start(&tmp.path().join("collector"), "")?;
    let key = AgentKey::generate()?;
    let agent = enroll_key(&collector, &key, "torn-client").await?;
    for seq in 1..=5 {
        let batch = SignedBatch::seal(
            &key,
            agent,
            seq,
            chrono::Utc::now(),
            &events("torn-kept", agent, 4),
        )?;
        assert_eq!(collector.post_ingest(batch.into_bytes()).await?.0, 200);
    }
    collector
        .wait_for_total("message:\"torn-kept\"", 20, Duration::from_secs(30))
        .await?;
    collector.process.kill_hard();

    // Half of a sixth record at the end of the newest segment, as a crash mid-write
    // leaves it (the record framing is [len][crc][version][received_at][batch]).
    let archive = collector.dir.join("data").join("archive");
    let last = segment_files(&archive)?.pop().expect("a segment");
    let size_before = std::fs::metadata(&last)?.len();
    let sixth = SignedBatch::seal(
        &key,
        agent,
        6,
        chrono::Utc::now(),
        &events("torn-lost", agent, 4),
    )?
    .into_bytes();
    let mut record = Vec::new();
    record.extend_from_slice(&((9 + sixth.len()) as u32).to_be_bytes());
    record.extend_from_slice(&[0xAB; 4]);
    record.push(1);
    record.extend_from_slice(&0i64.to_be_bytes());
    record.extend_from_slice(&sixth);
    let torn = &record[..record.len() / 2];
    let mut file = std::fs::OpenOptions::new().append(true).open(&last)?;
    std::io::Write::write_all(&mut file, torn)?;
    drop(file);

    collector.restart()?;
    // The log is written with terminal colours; drop the escape sequences.
    let raw = std::fs::read_to_string(collector.dir.join("collector.log"))?;
    let mut log = String::with_capacity(raw.len());
    let mut in_escape = false;
    for c in raw.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => log.push(c),
        }
    }
    assert!(
        log.contains("torn archive tail cut"),
        "recovery is reported:\n{log}"
    );
    assert!(
        log.contains(&format!("truncated_bytes={}", torn.len())),
        "the report gives the bytes cut:\n{log}"
    );
    assert_eq!(
        std::fs::metadata(&last)?.len(),
        size_before,
        "cut exactly the torn part"
    );
    // Nothing before it is lost, and the batch that was never acknowledged is welcome.
    collector
        .wait_for_total("message:\"torn-kept\"", 20, Duration::from_secs(30))
        .await?;
    let (status, ack, _) = collector.post_ingest(sixth).await?;
    assert_eq!((status, &ack["status"]), (200, &json!("accepted")), "{ack}");
    collector
        .wait_for_total("message:\"torn-lost\"", 4, Duration::from_secs(30))
        .await?;
    let config = collector.config.display().to_string();
    let verify = yagura(&["archive", "verify", "--config", &config])?;
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    Ok(())
}

/// `yagura provenance` on a random indexed event re-verifies it against the agent key;
/// after one byte of the archive is changed, `yagura archive verify` names that batch
/// (agent, sequence, offset) and fails, and provenance no longer verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_verifies_and_archive_verify_names_an_edited_batch() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let collector = Collector::start(&tmp.path().join("collector"), "")?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let sources = format!(
        "[[sources]]\npaths = [\"{}/*.log\"]\ndataset = \"e2e.provenance\"\n",
        logs.display()
    );
    let mut agent = Agent::enroll(&tmp.path().join("agent"), &collector, "prov-host", &sources)?;
    let agent_id = agent.id()?;
    agent.start()?;
    for chunk in 0..4 {
        append_lines(&logs.join("app.log"), chunk * 250..(chunk + 1) * 250, |i| {
            format!("provenance line {i:04} for the chain of custody")
        })?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    collector
        .wait_for_total(
            "event.dataset:e2e.provenance",
            1000,
            Duration::from_secs(60),
        )
        .await?;
    let all = collector
        .search("event.dataset:e2e.provenance", 1000)
        .await?;
    let hits = all["hits"].as_array().cloned().unwrap_or_default();
    let pick = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos() as usize)
        % hits.len();
    let hit = &hits[pick];
    let event_id = hit["event"]["event"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let offset = hit["provenance"]["archive_offset"]
        .as_u64()
        .expect("offset");
    let sequence = hit["provenance"]["batch_sequence"]
        .as_u64()
        .expect("sequence");
    assert_eq!(hit["provenance"]["agent_id"], json!(agent_id));

    let mut args = vec!["provenance".to_string(), event_id.clone()];
    args.extend(remote_args(&collector));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = yagura(&args)?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("signature      ok"), "{text}");
    assert!(text.contains("event in batch ok"), "{text}");
    assert!(text.contains(&format!("archive offset {offset}")), "{text}");
    let config = collector.config.display().to_string();
    let clean = yagura(&["archive", "verify", "--config", &config])?;
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );

    // One byte inside that batch's payload (record prefix 8 + meta 9 + header 76 + 10).
    let archive = collector.dir.join("data").join("archive");
    let segment = segment_files(&archive)?
        .into_iter()
        .rfind(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|base| base <= offset)
        })
        .expect("segment of the offset");
    let base: u64 = segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base");
    let mut bytes = std::fs::read(&segment)?;
    let at = (offset - base) as usize + 8 + 9 + 76 + 10;
    bytes[at] ^= 0x01;
    std::fs::write(&segment, bytes)?;

    let edited = yagura(&["archive", "verify", "--config", &config])?;
    let report = String::from_utf8_lossy(&edited.stdout).to_string();
    assert!(!edited.status.success(), "verify must fail: {report}");
    let name = format!("MISMATCH agent {agent_id} sequence {sequence} at archive offset {offset}");
    assert!(
        report.contains(&name),
        "names the batch ({name}):\n{report}"
    );
    assert_eq!(report.matches("MISMATCH").count(), 1, "{report}");
    let output = yagura(&args)?;
    assert!(!output.status.success(), "provenance must fail now");
    assert!(String::from_utf8_lossy(&output.stdout).contains("verified       NO"));
    Ok(())
}

/// Heartbeat events update version, lag and spool depth; an agent silent longer than its
/// interval is marked offline once, with a `yagura.collector.agent_offline` event; both
/// show in `GET /api/v1/agents` and `yagura agents list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_update_fleet_state_and_silence_raises_agent_offline() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let collector = Collector::start(
        &tmp.path().join("collector"),
        "[fleet]\noffline_after_seconds = 2\ncheck_interval_ms = 200\n",
    )?;
    let key = AgentKey::generate()?;
    let agent = enroll_key(&collector, &key, "beating-client").await?;
    let mut beat = Event::new(chrono::Utc::now());
    beat.set_str("event.dataset", "yagura.agent.heartbeat");
    beat.set_str("agent.id", agent.to_string());
    beat.set_str("agent.version", "9.8.7");
    beat.set("yagura.agent.uptime_seconds", json!(3600));
    beat.set("yagura.agent.spool.batches", json!(12));
    beat.set("yagura.agent.spool.bytes", json!(654_321));
    beat.set("yagura.agent.lag_bytes", json!(4096));
    let batch = SignedBatch::seal(&key, agent, 1, chrono::Utc::now(), &[beat])?;
    assert_eq!(collector.post_ingest(batch.into_bytes()).await?.0, 200);

    let view = |list: &Value| {
        list.as_array()
            .into_iter()
            .flatten()
            .find(|a| a["id"] == json!(agent.to_string()))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let agents = |collector: &Collector| {
        let client = collector.client();
        let url = format!("{}/api/v1/agents", collector.url);
        let token = collector.api_token.clone();
        async move {
            let list: Value = client?
                .get(url)
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            Ok::<_, anyhow::Error>(list)
        }
    };
    let now = view(&agents(&collector).await?);
    assert_eq!(now["connectivity"], json!("online"), "{now}");
    assert_eq!(now["version"], json!("9.8.7"), "{now}");
    assert_eq!(now["lag_bytes"], json!(4096), "{now}");
    assert_eq!(now["spool_batches"], json!(12), "{now}");
    assert_eq!(now["spool_bytes"], json!(654_321), "{now}");
    assert_eq!(now["uptime_seconds"], json!(3600), "{now}");

    let offline = collector
        .wait_for_total(
            "event.dataset:yagura.collector.agent_offline",
            1,
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(
        offline["hits"][0]["event"]["yagura"]["subject_agent_id"],
        json!(agent.to_string())
    );
    let later = view(&agents(&collector).await?);
    assert_eq!(later["connectivity"], json!("offline"), "{later}");
    // Once per silence, not at every check.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        collector
            .search("event.dataset:yagura.collector.agent_offline", 10)
            .await?["total"],
        json!(1)
    );
    let config = collector.config.display().to_string();
    let list = yagura(&["agents", "list", "--config", &config])?;
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    let row = text
        .lines()
        .find(|l| l.starts_with(&agent.to_string()))
        .unwrap_or_default();
    assert!(
        row.contains("offline") && row.contains("9.8.7") && row.contains("4096"),
        "{text}"
    );
    Ok(())
}

/// A bundle is taken strictly in order: a batch refused for good (400) does not stop it,
/// the first batch to be retried (429 here, from the per-agent rate limit) ends it, and
/// nothing after that one is archived, so it can never overtake an earlier batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_taken_in_order_up_to_the_first_batch_to_retry() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let collector = Collector::start(
        &tmp.path().join("collector"),
        "[ingest]\nagent_events_per_second = 1\nagent_burst_events = 10\n",
    )?;
    let key = AgentKey::generate()?;
    let agent = enroll_key(&collector, &key, "bundle-client").await?;
    let now = chrono::Utc::now();
    let batch = |seq: u64, marker: &str| -> anyhow::Result<Vec<u8>> {
        Ok(SignedBatch::seal(&key, agent, seq, now, &events(marker, agent, 3))?.into_bytes())
    };
    let bad_payload = forge(&key, agent, 2, 1, b"not zstd");
    let bundle = encode_bundle([
        batch(1, "bundle-one")?.as_slice(),
        bad_payload.as_slice(),
        batch(2, "bundle-two")?.as_slice(),
        batch(3, "bundle-three")?.as_slice(),
        batch(4, "bundle-four")?.as_slice(),
    ]);
    let (status, answer, _) = collector.post_bundle(bundle).await?;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    let summary: Vec<(u64, u64)> = results
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap_or(0),
                r["sequence"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    // 10 events of burst: batches 1, 2 and 3 (3 events each) and the bad one (which
    // declares 1) fit; 4 is over the limit.
    assert_eq!(
        summary,
        vec![(200, 1), (400, 2), (200, 2), (200, 3), (429, 4)],
        "{answer}"
    );
    assert_eq!(results[0]["outcome"], json!("accepted"));
    assert!(
        results[4]["retry_after_seconds"]
            .as_u64()
            .is_some_and(|s| s >= 1)
    );

    // The first batch to retry being the bundle's first, its error is the answer.
    let (status, answer, content_type) = collector
        .post_bundle(encode_bundle([batch(4, "bundle-four")?.as_slice()]))
        .await?;
    assert_eq!(
        (status, content_type.as_str()),
        (429, "application/problem+json"),
        "{answer}"
    );

    // Framing errors are 400 with a problem body.
    let (status, answer, _) = collector.post_bundle(b"YGN1\0\0\0\x09abc".to_vec()).await?;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .is_some_and(|d| d.contains("bundle")),
        "{answer}"
    );

    for marker in ["bundle-one", "bundle-two", "bundle-three"] {
        collector
            .wait_for_total(&format!("message:\"{marker}\""), 3, Duration::from_secs(30))
            .await?;
    }
    let four = collector.search("message:\"bundle-four\"", 10).await?;
    assert_eq!(
        four["total"],
        json!(0),
        "batch 4 must not be archived: {four}"
    );
    Ok(())
}
