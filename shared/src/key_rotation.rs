//! An agent's signing-key rotation, as the agent asks for it and the collector checks it.
//!
//! The request names the new public key and the first batch sequence number it signs;
//! the batches before that number stay signed — and verifiable — with the old key. It is
//! signed twice: by the key being retired (only the agent may move its identity) and by
//! the new key (the agent holds what it names). Replaying a request is harmless: it names
//! the key it moves from, so once done it is either acknowledged again or refused.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use ed25519_dalek::VerifyingKey;

use crate::batch::{AgentKey, BatchError, verify_document, verifying_key_from_base64};

/// Signature purpose: a rotation signature is valid for nothing else.
pub const PURPOSE: &str = "yagura-agent-key-rotation-v1";

/// `POST /api/v1/agents/{id}/key` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotation {
    /// The new Ed25519 public key, base64.
    pub public_key: String,
    /// The first sequence number the new key signs.
    pub from_sequence: u64,
    /// By the key being retired, over [`KeyRotation::document`].
    pub signature: String,
    /// By the new key, over the same document.
    pub proof: String,
}

impl KeyRotation {
    /// The signed text: agent, new key and first sequence, one per line.
    pub fn document(agent_id: Uuid, public_key: &str, from_sequence: u64) -> Vec<u8> {
        format!("agent {agent_id}\nnew key {public_key}\nfrom sequence {from_sequence}\n")
            .into_bytes()
    }

    /// The request to move `agent_id` from `old` to `new` at `from_sequence`.
    pub fn sign(old: &AgentKey, new: &AgentKey, agent_id: Uuid, from_sequence: u64) -> Self {
        let public_key = new.public_key_base64();
        let document = Self::document(agent_id, &public_key, from_sequence);
        KeyRotation {
            signature: old.sign_document(PURPOSE, &document),
            proof: new.sign_document(PURPOSE, &document),
            public_key,
            from_sequence,
        }
    }

    /// Checks both signatures, the old one against `current` (the key on record); returns
    /// the new key.
    pub fn verify(
        &self,
        agent_id: Uuid,
        current: &VerifyingKey,
    ) -> Result<VerifyingKey, BatchError> {
        if self.from_sequence == 0 {
            return Err(BatchError::Malformed("from_sequence starts at 1".into()));
        }
        let new = verifying_key_from_base64(&self.public_key)?;
        let document = Self::document(agent_id, &self.public_key, self.from_sequence);
        verify_document(current, PURPOSE, &document, &self.signature)?;
        verify_document(&new, PURPOSE, &document, &self.proof)?;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_signatures_are_needed_and_bound_to_the_request() {
        let old = AgentKey::generate().expect("key");
        let new = AgentKey::generate().expect("key");
        let agent = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let request = KeyRotation::sign(&old, &new, agent, 42);
        let verified = request.verify(agent, &old.verifying_key()).expect("valid");
        assert_eq!(verified, new.verifying_key());

        let stranger = AgentKey::generate().expect("key");
        assert!(
            request.verify(agent, &stranger.verifying_key()).is_err(),
            "not the key on record"
        );
        assert!(
            request
                .verify(Uuid::from_u128(7), &old.verifying_key())
                .is_err(),
            "another agent"
        );
        let mut moved = request.clone();
        moved.from_sequence = 41;
        assert!(
            moved.verify(agent, &old.verifying_key()).is_err(),
            "another sequence"
        );
        let mut swapped = request.clone();
        swapped.public_key = stranger.public_key_base64();
        assert!(
            swapped.verify(agent, &old.verifying_key()).is_err(),
            "another key"
        );
        // Signed by the old key alone (a key the agent does not hold): refused.
        let mut unproven = KeyRotation::sign(&old, &new, agent, 42);
        unproven.public_key = stranger.public_key_base64();
        unproven.signature = old.sign_document(
            PURPOSE,
            &KeyRotation::document(agent, &unproven.public_key, 42),
        );
        assert!(
            unproven.verify(agent, &old.verifying_key()).is_err(),
            "no proof of possession"
        );
        let zero = KeyRotation::sign(&old, &new, agent, 0);
        assert!(zero.verify(agent, &old.verifying_key()).is_err());
    }
}
