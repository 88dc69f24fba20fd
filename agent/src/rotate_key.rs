//! Rotating the agent's signing key while it runs, without losing or orphaning a batch.
//!
//! `yagura-agent rotate-key` leaves a request file in the state directory; the running
//! agent (or the next one to start) takes it between two seals: it waits for the batch
//! being sealed, takes the next sequence number S, and asks the collector to move it to a
//! new key from S on ([`KeyRotation`], signed by the old key and the new one). Batches
//! before S — already in the spool, still to be shipped — stay signed with the old key,
//! which the collector keeps for exactly those sequence numbers; batches from S on are
//! sealed with the new key. Nothing is sealed while the question is open.
//!
//! Crash safety: the new key and S are written (`agent.key.pending`, fsync'd) before the
//! request goes out, and `agent.key` is replaced only after the collector said yes. A
//! rotation left pending by a crash is asked again at start — the collector answers a
//! rotation it already did with 200 — before anything is sealed, so the agent never
//! seals with a key the collector no longer takes for that sequence.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use yagura_shared::AgentKey;
use yagura_shared::key_rotation::KeyRotation;

use crate::enroll::{AGENT_KEY_FILE, Enrollment};
use crate::{Error, durable};

/// Left by `yagura-agent rotate-key`, taken by the running agent.
pub const REQUEST_FILE: &str = "rotate-key.request";
/// What the agent did with the request.
pub const RESULT_FILE: &str = "rotate-key.result";
/// A new key and its first sequence number, asked for but not yet confirmed.
const PENDING_FILE: &str = "agent.key.pending";

#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    /// The new key, as `agent.key` holds it.
    key: String,
    from_sequence: u64,
}

/// The outcome the CLI reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationResult {
    pub ok: bool,
    pub public_key: Option<String>,
    pub from_sequence: Option<u64>,
    pub error: Option<String>,
    pub at: String,
}

/// How a rotation attempt ended.
#[derive(Debug)]
pub enum Settled {
    /// The collector took the new key: seal with it from now on.
    Rotated(Box<AgentKey>, u64),
    /// The collector refused, or never got the request: the old key stays.
    Refused(String),
    /// Unknown whether the collector took it (a timeout, a 5xx): ask again before sealing.
    InDoubt(String),
}

/// Asks the running agent (or the next one to start) to rotate its key.
pub fn request(state_dir: &Path) -> Result<(), Error> {
    let _ = std::fs::remove_file(state_dir.join(RESULT_FILE));
    durable::write_atomic(&state_dir.join(REQUEST_FILE), b"rotate\n", 0o600)
        .map_err(|e| Error::io("writing the rotation request", e))
}

/// The result of the last rotation, if any.
pub fn result(state_dir: &Path) -> Option<RotationResult> {
    let bytes = std::fs::read(state_dir.join(RESULT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether a rotation was requested.
pub fn requested(state_dir: &Path) -> bool {
    state_dir.join(REQUEST_FILE).exists()
}

/// Whether a rotation is in doubt (see the module docs).
pub fn pending(state_dir: &Path) -> bool {
    state_dir.join(PENDING_FILE).exists()
}

/// Records how the request ended and removes it.
pub fn finish_request(state_dir: &Path, settled: &Settled) {
    let at = chrono::Utc::now().to_rfc3339();
    let result = match settled {
        Settled::Rotated(key, from) => RotationResult {
            ok: true,
            public_key: Some(key.public_key_base64()),
            from_sequence: Some(*from),
            error: None,
            at,
        },
        Settled::Refused(error) | Settled::InDoubt(error) => RotationResult {
            ok: false,
            public_key: None,
            from_sequence: None,
            error: Some(error.clone()),
            at,
        },
    };
    if let Ok(json) = serde_json::to_vec_pretty(&result) {
        let _ = durable::write_atomic(&state_dir.join(RESULT_FILE), &json, 0o600);
    }
    let _ = std::fs::remove_file(state_dir.join(REQUEST_FILE));
}

/// Starts a rotation at `from_sequence` (the next sequence to seal; nothing may be sealed
/// until this returns something else than [`Settled::InDoubt`]).
pub async fn rotate(
    state_dir: &Path,
    enrollment: &Enrollment,
    old: &AgentKey,
    from_sequence: u64,
) -> Result<Settled, Error> {
    let new = AgentKey::generate().map_err(|e| Error::KeyGeneration(e.to_string()))?;
    let pending = Pending {
        key: new.to_file_text(),
        from_sequence,
    };
    let json = serde_json::to_vec(&pending).map_err(|e| Error::Task(e.to_string()))?;
    durable::write_atomic(&state_dir.join(PENDING_FILE), &json, 0o600)
        .map_err(|e| Error::io("writing the pending key", e))?;
    settle_attempt(state_dir, enrollment, old, from_sequence, true).await
}

/// Asks the collector about the pending rotation (again) and settles it: installs the new
/// key on yes, drops it on a refusal. `next_sequence` is the spool's next sequence number:
/// a pending rotation for another one is stale and dropped.
pub async fn settle(
    state_dir: &Path,
    enrollment: &Enrollment,
    old: &AgentKey,
    next_sequence: u64,
) -> Result<Settled, Error> {
    settle_attempt(state_dir, enrollment, old, next_sequence, false).await
}

/// [`settle`]; `first` when no request for this pending key can have left before (a
/// connection that failed then proves the collector never saw it).
async fn settle_attempt(
    state_dir: &Path,
    enrollment: &Enrollment,
    old: &AgentKey,
    next_sequence: u64,
    first: bool,
) -> Result<Settled, Error> {
    let path = state_dir.join(PENDING_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let drop_pending = |reason: String| {
        let _ = std::fs::remove_file(&path);
        let _ = durable::fsync_dir(state_dir);
        Ok(Settled::Refused(reason))
    };
    let Ok(pending) = serde_json::from_slice::<Pending>(&bytes) else {
        return drop_pending(format!(
            "{} is unreadable; the old key stays",
            path.display()
        ));
    };
    let Ok(new) = AgentKey::from_file_text(&pending.key) else {
        return drop_pending(format!(
            "{} holds no key; the old key stays",
            path.display()
        ));
    };
    // Installed before a crash took the pending file's removal with it: done.
    if new.public_key_base64() == old.public_key_base64() {
        let _ = std::fs::remove_file(&path);
        let _ = durable::fsync_dir(state_dir);
        return Ok(Settled::Rotated(Box::new(new), pending.from_sequence));
    }
    if pending.from_sequence != next_sequence {
        return drop_pending(format!(
            "a pending rotation from sequence {} while the next batch is {next_sequence}; \
             the old key stays",
            pending.from_sequence
        ));
    }
    let request = KeyRotation::sign(old, &new, enrollment.agent_id, pending.from_sequence);
    // The pins as they are now (a certificate hand-over may have moved them).
    let enrollment = Enrollment::load(state_dir).unwrap_or_else(|_| enrollment.clone());
    match post(&enrollment, &request, first).await {
        Answer::Yes => {
            // The collector holds the new key now: failing to install it locally is no
            // reason to seal with the old one. Asked again, it answers yes again.
            if let Err(error) = install(state_dir, &new) {
                return Ok(Settled::InDoubt(error.to_string()));
            }
            let _ = std::fs::remove_file(&path);
            let _ = durable::fsync_dir(state_dir);
            tracing::info!(
                public_key = %new.public_key_base64(),
                from_sequence = pending.from_sequence,
                "agent signing key rotated"
            );
            Ok(Settled::Rotated(Box::new(new), pending.from_sequence))
        }
        Answer::No(reason) => drop_pending(reason),
        Answer::Unknown(reason) => Ok(Settled::InDoubt(reason)),
    }
}

/// Replaces `agent.key` with `key` (atomically, fsync'd).
fn install(state_dir: &Path, key: &AgentKey) -> Result<(), Error> {
    durable::write_atomic(
        &state_dir.join(AGENT_KEY_FILE),
        key.to_file_text().as_bytes(),
        0o600,
    )
    .map_err(|e| Error::io("installing the new agent key", e))
}

enum Answer {
    Yes,
    No(String),
    Unknown(String),
}

/// What the collector said. `first`: no earlier request for this rotation can have
/// reached it, so a refused connection means "not done"; later, only an answer counts.
async fn post(enrollment: &Enrollment, request: &KeyRotation, first: bool) -> Answer {
    let url = format!(
        "{}/api/v1/agents/{}/key",
        enrollment.collector_url, enrollment.agent_id
    );
    let client = match enrollment
        .fingerprint
        .is_some()
        .then(|| crate::tls::Pins::new(&enrollment.pins()))
        .transpose()
        .and_then(|pins| crate::tls::pinned_client_with(pins, Duration::from_secs(30)))
    {
        Ok((client, _)) => client,
        Err(e) if first => return Answer::No(e.to_string()),
        Err(e) => return Answer::Unknown(e.to_string()),
    };
    match client.post(&url).json(request).send().await {
        Ok(response) if response.status().is_success() => Answer::Yes,
        // A proxy's timeout or rate limit says nothing about the rotation.
        Ok(response) if matches!(response.status().as_u16(), 408 | 429) => {
            Answer::Unknown(format!("the collector answered {}", response.status()))
        }
        Ok(response) if response.status().is_client_error() => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            Answer::No(format!(
                "the collector refused the rotation ({status}): {text}"
            ))
        }
        Ok(response) => Answer::Unknown(format!(
            "the collector answered {} to the rotation",
            response.status()
        )),
        // Not connected: the request never left, so nothing can have been done.
        Err(e) if first && e.is_connect() => Answer::No(format!(
            "the collector is unreachable, the rotation was not done: {}",
            crate::ship::ErrorChain(&e)
        )),
        Err(e) => Answer::Unknown(format!(
            "no answer to the rotation: {}",
            crate::ship::ErrorChain(&e)
        )),
    }
}
