//! The audit trail's tamper evidence: each record holds the hash of the one before, so
//! changing, removing or reordering any record breaks every link after it, and
//! `yagura shop audit verify` finds the first broken one.
//!
//! `hash = SHA-256(previous hash ‖ sequence ‖ time ‖ event)`, each field length-prefixed
//! so no two different records hash alike; the first record's previous hash is
//! [`GENESIS`].

use sha2::{Digest as _, Sha256};

/// The previous hash of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One record of the chain as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedRecord {
    pub sequence: u64,
    pub at: String,
    /// The audit event, as the JSON it was recorded as.
    pub event: String,
    pub previous_hash: String,
    pub hash: String,
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {sequence}: {problem}")]
pub struct ChainBreak {
    pub sequence: u64,
    pub problem: String,
}

fn field(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_be_bytes());
    hash.update(bytes);
}

/// The hash of a record.
pub fn link_hash(previous_hash: &str, sequence: u64, at: &str, event: &str) -> String {
    let mut hash = Sha256::new();
    field(&mut hash, previous_hash.as_bytes());
    hash.update(sequence.to_be_bytes());
    field(&mut hash, at.as_bytes());
    field(&mut hash, event.as_bytes());
    hex::encode(hash.finalize())
}

/// The next record after `previous` (or the first, with `None`).
pub fn append(previous: Option<&ChainedRecord>, at: String, event: String) -> ChainedRecord {
    let (sequence, previous_hash) = match previous {
        Some(p) => (p.sequence + 1, p.hash.clone()),
        None => (1, GENESIS.to_string()),
    };
    let hash = link_hash(&previous_hash, sequence, &at, &event);
    ChainedRecord {
        sequence,
        at,
        event,
        previous_hash,
        hash,
    }
}

/// Checks records in order from the first: sequences 1, 2, 3…, each link to the record
/// before, each hash over its own content. Returns how many records hold.
pub fn verify<'a>(records: impl IntoIterator<Item = &'a ChainedRecord>) -> Result<u64, ChainBreak> {
    verify_after(None, records)
}

/// [`verify`] for records that continue after `previous` (already verified), so a long
/// trail can be checked page by page. Returns the last sequence that holds.
pub fn verify_after<'a>(
    previous: Option<&ChainedRecord>,
    records: impl IntoIterator<Item = &'a ChainedRecord>,
) -> Result<u64, ChainBreak> {
    let (mut expected_sequence, mut expected_previous) = match previous {
        Some(p) => (p.sequence + 1, p.hash.clone()),
        None => (1, GENESIS.to_string()),
    };
    for record in records {
        let broken = |problem: &str| ChainBreak {
            sequence: record.sequence,
            problem: problem.to_string(),
        };
        if record.sequence != expected_sequence {
            return Err(ChainBreak {
                sequence: expected_sequence,
                problem: format!("missing (found record {} in its place)", record.sequence),
            });
        }
        if record.previous_hash != expected_previous {
            return Err(broken("does not link to the record before it"));
        }
        if link_hash(
            &record.previous_hash,
            record.sequence,
            &record.at,
            &record.event,
        ) != record.hash
        {
            return Err(broken("its content does not match its hash (changed)"));
        }
        expected_previous = record.hash.clone();
        expected_sequence += 1;
    }
    Ok(expected_sequence - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<ChainedRecord> {
        let mut records: Vec<ChainedRecord> = Vec::new();
        for i in 0..n {
            let next = append(
                records.last(),
                format!("2026-11-25T10:00:{i:02}.000Z"),
                format!(r#"{{"event":{{"action":"login","outcome":"success"}},"i":{i}}}"#),
            );
            records.push(next);
        }
        records
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(10)), Ok(10));
        assert_eq!(verify(&chain(0)), Ok(0));
    }

    #[test]
    fn tampering_is_found_at_the_first_broken_record() {
        let mut changed = chain(10);
        changed[4].event = changed[4].event.replace("success", "failure");
        assert_eq!(verify(&changed).map_err(|b| b.sequence), Err(5));

        let mut rehashed = chain(10);
        rehashed[4].event = rehashed[4].event.replace("success", "failure");
        rehashed[4].hash = link_hash(
            &rehashed[4].previous_hash,
            5,
            &rehashed[4].at,
            &rehashed[4].event,
        );
        assert_eq!(
            verify(&rehashed).map_err(|b| b.sequence),
            Err(6),
            "a forger who rehashes one record breaks the next link"
        );

        let mut removed = chain(10);
        removed.remove(3);
        let broken = verify(&removed).expect_err("a gap");
        assert_eq!(broken.sequence, 4);

        let mut reordered = chain(10);
        reordered.swap(2, 3);
        assert!(verify(&reordered).is_err());
    }

    #[test]
    fn fields_cannot_be_shifted_into_each_other() {
        assert_ne!(
            link_hash(GENESIS, 1, "ab", "c"),
            link_hash(GENESIS, 1, "a", "bc")
        );
    }
}
