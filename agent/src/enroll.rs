//! Enrollment: the one-time registration of this agent with a collector.
//!
//! [`enroll`] generates the agent's Ed25519 key, registers its public half with the
//! collector (authorised by a one-time enrollment token, which is never logged) and
//! records the agent id, the collector URL and the collector's certificate fingerprint.
//!
//! Files written in the state directory:
//!
//! * `agent.key`: the key seed, mode 0600, fsync'd. Replaced only once the collector has
//!   accepted the new key, so a failed re-enrollment keeps the old identity working.
//! * `enrollment.json`: `{"agent_id", "collector_url", "fingerprint"}`, written atomically.
//!
//! TLS: with a fingerprint, the collector must present exactly that certificate. Without
//! one, the certificate presented is trusted on first use, and its fingerprint is logged
//! and pinned from then on.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use yagura_shared::AgentKey;

use crate::{Error, durable, ship, spool, tls};

/// The enrollment record in the state directory.
pub const ENROLLMENT_FILE: &str = "enrollment.json";
/// The agent's private key in the state directory.
pub const AGENT_KEY_FILE: &str = "agent.key";
const NEW_KEY_FILE: &str = "agent.key.new";
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

/// What enrollment established, as stored in `enrollment.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub agent_id: Uuid,
    /// Base URL, without a trailing slash.
    pub collector_url: String,
    /// SHA-256 of the collector's certificate (lowercase hex); `None` for plain http.
    pub fingerprint: Option<String>,
    /// The certificate a verified hand-over names as the next one: accepted besides
    /// `fingerprint` until the collector presents it, then it takes its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fingerprint: Option<String>,
}

impl Enrollment {
    /// Writes `enrollment.json` (atomically, fsync'd).
    pub fn save(&self, state_dir: &Path) -> Result<(), Error> {
        let path = state_dir.join(ENROLLMENT_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::BadStateFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        durable::write_atomic(&path, &json, 0o600)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    }

    /// The certificate fingerprints accepted now.
    pub fn pins(&self) -> Vec<String> {
        self.fingerprint
            .iter()
            .chain(self.next_fingerprint.iter())
            .cloned()
            .collect()
    }

    /// Reads `enrollment.json`; [`Error::NotEnrolled`] when there is none.
    pub fn load(state_dir: &Path) -> Result<Enrollment, Error> {
        let path = state_dir.join(ENROLLMENT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotEnrolled {
                    state_dir: state_dir.to_path_buf(),
                });
            }
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        let enrollment: Enrollment =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadStateFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        Ok(enrollment)
    }
}

/// Reads the agent's key from `agent.key`.
pub fn load_key(state_dir: &Path) -> Result<AgentKey, Error> {
    use std::os::unix::fs::PermissionsExt;
    let path = state_dir.join(AGENT_KEY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NotEnrolled {
                state_dir: state_dir.to_path_buf(),
            });
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    if let Ok(meta) = std::fs::metadata(&path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "agent key is readable by other users; chmod 600 it");
    }
    AgentKey::from_file_text(&text).map_err(|e| Error::BadStateFile {
        path,
        reason: e.to_string(),
    })
}

#[derive(Serialize)]
struct EnrollRequest<'a> {
    token: &'a str,
    public_key: String,
    hostname: &'a str,
    version: &'a str,
}

#[derive(Deserialize)]
struct EnrollAnswer {
    agent_id: Uuid,
}

/// Enrolls this agent with the collector at `collector_url` (`https://host:port`).
///
/// `fingerprint` pins the collector's certificate (hex, colons and case ignored); without
/// it the presented certificate is trusted on first use. Refuses when `state_dir` already
/// holds an enrollment, unless `force`; a forced re-enrollment moves unshipped batches of
/// the old identity to `retired/` and keeps the file checkpoints.
pub async fn enroll(
    state_dir: &Path,
    collector_url: &str,
    token: &str,
    fingerprint: Option<&str>,
    host_name: &str,
    force: bool,
) -> Result<Enrollment, Error> {
    crate::install_crypto_provider();
    let pin = fingerprint.map(tls::normalize_fingerprint).transpose()?;
    let collector_url = normalize_url(collector_url)?;
    let https = collector_url.starts_with("https://");
    if !https {
        tracing::warn!(collector = %collector_url, "plain http: the collector is not authenticated");
    }
    let enrollment_path = state_dir.join(ENROLLMENT_FILE);
    let previous = match Enrollment::load(state_dir) {
        Ok(e) => Some(e),
        Err(Error::NotEnrolled { .. }) => None,
        Err(Error::BadStateFile { .. }) if force => None,
        Err(e) => return Err(e),
    };
    if let Some(previous) = &previous
        && !force
    {
        return Err(Error::AlreadyEnrolled {
            path: enrollment_path,
            agent_id: previous.agent_id.to_string(),
        });
    }
    durable::create_private_dir(state_dir)
        .map_err(|e| Error::io(format!("cannot create {}", state_dir.display()), e))?;
    // A running agent owns the spool that a forced enrollment retires.
    let _state_lock = crate::state_lock::acquire(state_dir)?;

    let key = AgentKey::generate().map_err(|e| Error::KeyGeneration(e.to_string()))?;
    let new_key_path = state_dir.join(NEW_KEY_FILE);
    remove_if_present(&new_key_path)?;
    durable::write_new_file(&new_key_path, key.to_file_text().as_bytes(), 0o600)
        .map_err(|e| Error::io(format!("cannot write {}", new_key_path.display()), e))?;

    let registered = register(&collector_url, token, pin.as_deref(), &key, host_name).await;
    let (agent_id, fingerprint) = match registered {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&new_key_path);
            return Err(e);
        }
    };

    let key_path = state_dir.join(AGENT_KEY_FILE);
    durable::rename_durable(&new_key_path, &key_path)
        .map_err(|e| Error::io(format!("cannot install {}", key_path.display()), e))?;
    let moved = spool::retire_for_new_identity(state_dir)?;
    if moved > 0 {
        tracing::warn!(
            batches = moved,
            "unshipped batches of the previous enrollment were moved to {}/retired/",
            state_dir.display()
        );
    }
    let enrollment = Enrollment {
        agent_id,
        collector_url,
        fingerprint,
        next_fingerprint: None,
    };
    let json = serde_json::to_vec_pretty(&enrollment).map_err(|e| Error::BadStateFile {
        path: enrollment_path.clone(),
        reason: e.to_string(),
    })?;
    durable::write_atomic(&enrollment_path, &json, 0o600)
        .map_err(|e| Error::io(format!("cannot write {}", enrollment_path.display()), e))?;
    tracing::info!(agent_id = %enrollment.agent_id, collector = %enrollment.collector_url, "enrolled");
    Ok(enrollment)
}

/// POSTs the public key to the collector; returns the agent id and the fingerprint of
/// the certificate the collector presented (`None` over plain http).
async fn register(
    collector_url: &str,
    token: &str,
    pin: Option<&str>,
    key: &AgentKey,
    host_name: &str,
) -> Result<(Uuid, Option<String>), Error> {
    let https = collector_url.starts_with("https://");
    let (client, seen) = tls::pinned_client(pin, ENROLL_TIMEOUT)?;
    let url = format!("{collector_url}/api/v1/enroll");
    let request = EnrollRequest {
        token,
        public_key: key.public_key_base64(),
        hostname: host_name,
        version: crate::VERSION,
    };
    let sent = client.post(&url).json(&request).send().await;
    let seen_fingerprint = || seen.lock().ok().and_then(|s| s.clone());
    let response = match sent {
        Ok(r) => r,
        Err(cause) => {
            if let (Some(expected), Some(actual)) = (pin, seen_fingerprint())
                && expected != actual
            {
                return Err(Error::FingerprintMismatch {
                    expected: expected.to_string(),
                    actual,
                });
            }
            return Err(Error::Request { url, cause });
        }
    };
    let status = response.status();
    let body = response.text().await.map_err(|cause| Error::Request {
        url: url.clone(),
        cause,
    })?;
    if !status.is_success() {
        return Err(Error::EnrollmentRefused {
            status: status.as_u16(),
            message: ship::problem_text(status, &body),
        });
    }
    let answer: EnrollAnswer =
        serde_json::from_str(&body).map_err(|e| Error::BadEnrollmentAnswer(e.to_string()))?;

    let fingerprint = if https {
        let seen = seen_fingerprint().ok_or_else(|| {
            Error::Client("TLS connection made but no certificate was seen".into())
        })?;
        if pin.is_none() {
            tracing::warn!(
                fingerprint = %seen,
                "collector certificate NOT verified (trust on first use); it is pinned from now on. \
                 Compare it with the fingerprint the collector printed at start."
            );
        }
        Some(seen)
    } else {
        None
    };
    Ok((answer.agent_id, fingerprint))
}

fn remove_if_present(path: &PathBuf) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
    }
}

/// Checks the scheme and host and drops a trailing slash.
fn normalize_url(input: &str) -> Result<String, Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: input.to_string(),
        reason,
    };
    let url = reqwest::Url::parse(input.trim()).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid("the scheme must be https (or http)".into()));
    }
    if url.host_str().is_none() {
        return Err(invalid("no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("no query or fragment allowed".into()));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised() {
        assert_eq!(
            normalize_url("https://c.example:8443/").expect("ok"),
            "https://c.example:8443"
        );
        assert_eq!(
            normalize_url("http://127.0.0.1:1").expect("ok"),
            "http://127.0.0.1:1"
        );
        assert!(normalize_url("ftp://x").is_err());
        assert!(normalize_url("not a url").is_err());
        assert!(normalize_url("https://x/?a=b").is_err());
    }

    #[test]
    fn missing_enrollment_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = Enrollment::load(dir.path()).expect_err("none");
        assert!(
            err.to_string().contains("run `yagura-agent enroll` first"),
            "{err}"
        );
        let err = load_key(dir.path()).expect_err("none");
        assert!(matches!(err, Error::NotEnrolled { .. }));
    }
}

#[cfg(test)]
mod handshake_tests {
    //! Enrollment against a real TLS server with a self-signed certificate.
    use super::*;
    use crate::test_server::{Response, TestServer};
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn enroll_server(agent_id: Uuid) -> TestServer {
        TestServer::start(move |req| {
            if req.method == "POST" && req.path == "/api/v1/enroll" {
                Response::json(200, json!({ "agent_id": agent_id }))
            } else {
                Response::json(404, json!({"title": "Not Found"}))
            }
        })
    }

    #[tokio::test]
    async fn trust_on_first_use_records_the_fingerprint() {
        let agent_id = Uuid::now_v7();
        let server = enroll_server(agent_id);
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let e = enroll(
            &state,
            &format!("{}/", server.url),
            "s3cret",
            None,
            "web-1",
            false,
        )
        .await
        .expect("enrolls");
        assert_eq!(e.agent_id, agent_id);
        assert_eq!(e.collector_url, server.url);
        assert_eq!(e.fingerprint.as_deref(), Some(server.fingerprint.as_str()));
        assert_eq!(Enrollment::load(&state).expect("stored"), e);

        let key = load_key(&state).expect("key");
        let mode = std::fs::metadata(state.join(AGENT_KEY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(std::fs::metadata(state.join(NEW_KEY_FILE)).is_err());

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let body: serde_json::Value = serde_json::from_slice(&requests[0].body).expect("json");
        assert_eq!(body["token"], "s3cret");
        assert_eq!(body["public_key"], key.public_key_base64());
        assert_eq!(body["hostname"], "web-1");
        assert_eq!(body["version"], crate::VERSION);
    }

    #[tokio::test]
    async fn pinned_fingerprint_must_match() {
        let server = enroll_server(Uuid::now_v7());
        let dir = tempfile::tempdir().expect("tmp");
        let wrong = "ab".repeat(32);
        let err = enroll(dir.path(), &server.url, "t", Some(&wrong), "h", false)
            .await
            .expect_err("mismatch");
        match &err {
            Error::FingerprintMismatch { expected, actual } => {
                assert_eq!(expected, &wrong);
                assert_eq!(actual, &server.fingerprint);
            }
            other => panic!("unexpected error: {other}"),
        }
        assert!(err.to_string().contains(&server.fingerprint));
        assert!(Enrollment::load(dir.path()).is_err());
        assert!(std::fs::metadata(dir.path().join(AGENT_KEY_FILE)).is_err());
        assert!(std::fs::metadata(dir.path().join(NEW_KEY_FILE)).is_err());

        let colons: Vec<String> = server
            .fingerprint
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let e = enroll(
            dir.path(),
            &server.url,
            "t",
            Some(&colons.join(":")),
            "h",
            false,
        )
        .await
        .expect("matching pin enrolls");
        assert_eq!(e.fingerprint.as_deref(), Some(server.fingerprint.as_str()));
    }

    #[tokio::test]
    async fn second_enrollment_needs_force() {
        let server = enroll_server(Uuid::now_v7());
        let dir = tempfile::tempdir().expect("tmp");
        let first = enroll(dir.path(), &server.url, "t", None, "h", false)
            .await
            .expect("first");
        let key_before = std::fs::read(dir.path().join(AGENT_KEY_FILE)).expect("key");
        let err = enroll(dir.path(), &server.url, "t", None, "h", false)
            .await
            .expect_err("refused");
        assert!(matches!(err, Error::AlreadyEnrolled { .. }), "{err}");
        assert!(err.to_string().contains(&first.agent_id.to_string()));
        assert_eq!(
            server.requests().len(),
            1,
            "refused before contacting the collector"
        );
        enroll(dir.path(), &server.url, "t", None, "h", true)
            .await
            .expect("forced");
        let key_after = std::fs::read(dir.path().join(AGENT_KEY_FILE)).expect("key");
        assert_ne!(key_before, key_after, "a new key for the new identity");
    }

    #[tokio::test]
    async fn refusal_shows_the_problem_detail_and_keeps_no_key() {
        let server = TestServer::start(|_| {
            Response::json(
                401,
                json!({"type": "about:blank", "title": "Unauthorized", "status": 401,
                       "detail": "enrollment token expired"}),
            )
        });
        let dir = tempfile::tempdir().expect("tmp");
        let err = enroll(dir.path(), &server.url, "t", None, "h", false)
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("401") && text.contains("enrollment token expired"),
            "{text}"
        );
        assert!(!text.contains("\"t\""));
        assert!(std::fs::metadata(dir.path().join(AGENT_KEY_FILE)).is_err());
        assert!(std::fs::metadata(dir.path().join(NEW_KEY_FILE)).is_err());
    }
}
