//! Delivery of the collector's signed allowlist policy to its agents.
//!
//! An agent that enforces an allowlist names the policy it holds in every ingest request
//! (the `x-yagura-allowlist` header: the SHA-256 of the policy text, or `none`). When
//! the collector has assigned that agent a different policy (chosen by the agent's
//! labels), the answer to the request carries it. Riding on ingest costs no extra
//! connection and no extra authentication: the collector answers only a request whose
//! batch it has verified as the agent's, and idle agents still send heartbeats.
//!
//! The delivery is not what the agent trusts: the policy carries the collector's detached
//! signature, which the agent checks against the key in its own configuration before it
//! takes the policy — exactly as for a policy placed on disk by hand.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Request header naming the policy an agent holds.
pub const ALLOWLIST_HEADER: &str = "x-yagura-allowlist";
/// The header's value when the agent holds no policy.
pub const NO_POLICY: &str = "none";
/// Largest policy the collector hands out (a policy is a few kilobytes; this bounds what
/// an ingest answer can grow by).
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// A signed policy as the collector hands it to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredPolicy {
    /// The assignment's name on the collector (for the agent's events).
    pub name: String,
    /// SHA-256 of `policy`, hex.
    pub sha256: String,
    /// The policy (TOML), byte for byte as signed.
    pub policy: String,
    /// The collector's detached signature of `policy` (as `yagura allowlist sign` writes
    /// it beside a file).
    pub signature: String,
}

/// The hex SHA-256 a policy is named by in [`ALLOWLIST_HEADER`].
pub fn policy_sha256(policy: &str) -> String {
    hex::encode(Sha256::digest(policy.as_bytes()))
}

/// Whether `value` is a well-formed [`ALLOWLIST_HEADER`] value.
pub fn is_policy_reference(value: &str) -> bool {
    value == NO_POLICY || (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_a_hash_or_none() {
        let hash = policy_sha256("[usb]\nmode = \"audit\"\n");
        assert!(is_policy_reference(&hash));
        assert!(is_policy_reference(NO_POLICY));
        assert!(!is_policy_reference("zz"));
        assert!(!is_policy_reference(&"g".repeat(64)));
        assert!(!is_policy_reference(&format!("{hash}0")));
    }
}
