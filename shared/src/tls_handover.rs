//! The collector's certificate hand-over: how agents pinned to one certificate learn to
//! trust the next.
//!
//! Agents pin the collector's certificate by its SHA-256. Before the collector serves a
//! new certificate it publishes a hand-over (`GET /api/v1/tls/handover`): the old and the
//! new certificate, and a signature by the old certificate's private key over
//! [`document`] — so only the holder of the pinned key can introduce a successor, however
//! the hand-over reached the agent. The agent then accepts either certificate, and drops
//! the old pin once the collector presents the new one.

use serde::{Deserialize, Serialize};

/// Signed with the hand-over: a signature made for it is valid for nothing else.
pub const CONTEXT: &[u8] = b"yagura collector certificate hand-over v1\0";

/// The published hand-over.
/// Unknown fields are ignored: a later collector may add some (an expiry, say) without
/// older agents refusing every hand-over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// SHA-256 (hex) of the certificate being replaced: what agents pin now.
    pub from_fingerprint: String,
    /// SHA-256 (hex) of the next certificate.
    pub to_fingerprint: String,
    /// The certificate being replaced (PEM); its key made `signature`.
    pub from_certificate: String,
    /// The next certificate (PEM).
    pub to_certificate: String,
    /// The TLS signature scheme of `signature` (its IANA code, e.g. 0x0403 for
    /// ECDSA P-256 SHA-256).
    pub scheme: u16,
    /// Base64 of the signature over [`document`].
    pub signature: String,
}

/// The signed bytes: the context, then both fingerprints.
pub fn document(from_fingerprint: &str, to_fingerprint: &str) -> Vec<u8> {
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(format!("from {from_fingerprint}\nto {to_fingerprint}\n").as_bytes());
    message
}
