//! A bundle: several signed batches of one agent in one request, acknowledged in order.
//!
//! An agent with a backlog sends its oldest unacknowledged batches together instead of
//! one round trip each. The collector takes them strictly in the order they come — each
//! with every check a single batch gets — and stops at the first one it cannot take for
//! now, so a batch is never archived before an earlier one that will be retried. The
//! answer lists one result per batch it looked at, in order; the batches after the last
//! result were not looked at and are sent again.
//!
//! ```text
//! "YGN1"  then, per batch:  u32 big-endian length n, n bytes of the signed batch
//! ```

use serde::{Deserialize, Serialize};

use crate::batch::BatchError;

const MAGIC: &[u8; 4] = b"YGN1";
/// Most batches one bundle may carry.
pub const MAX_BUNDLE_BATCHES: usize = 64;
/// The request's content type.
pub const BUNDLE_CONTENT_TYPE: &str = "application/vnd.yagura.bundle";

/// Frames `batches` (each a signed batch's bytes) as one bundle.
pub fn encode_bundle<'a>(batches: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for batch in batches {
        // A batch is far below 4 GiB (the collector refuses much less).
        out.extend_from_slice(&(batch.len().min(u32::MAX as usize) as u32).to_be_bytes());
        out.extend_from_slice(batch);
    }
    out
}

/// The batches of a bundle, in order. Only the framing is checked here.
pub fn decode_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
    let malformed = |why: &str| BatchError::Malformed(format!("bundle: {why}"));
    let mut rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| malformed("bad magic"))?;
    let mut batches = Vec::new();
    while !rest.is_empty() {
        if batches.len() == MAX_BUNDLE_BATCHES {
            return Err(malformed(&format!(
                "more than {MAX_BUNDLE_BATCHES} batches"
            )));
        }
        let (length, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("truncated length"))?;
        let length = u32::from_be_bytes(*length) as usize;
        if length > tail.len() {
            return Err(malformed("batch longer than the bundle"));
        }
        let (batch, tail) = tail.split_at(length);
        batches.push(batch);
        rest = tail;
    }
    if batches.is_empty() {
        return Err(malformed("no batch"));
    }
    Ok(batches)
}

/// The collector's answer to a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleAnswer {
    /// One per batch looked at, in the bundle's order.
    pub results: Vec<BatchResult>,
    /// The allowlist policy the collector assigns this agent, when it differs from the
    /// one the agent named (see [`crate::policy_delivery`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<crate::policy_delivery::DeliveredPolicy>,
}

/// What became of one batch of a bundle: the status it would have had alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The HTTP status a single upload of this batch would have got.
    pub status: u16,
    /// The batch's sequence, when it was read that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// On success: `accepted` or `duplicate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// On failure: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// On 429/503: when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_keeps_order_and_bytes() {
        let batches: Vec<Vec<u8>> = vec![b"one".to_vec(), Vec::new(), b"three".to_vec()];
        let bundle = encode_bundle(batches.iter().map(Vec::as_slice));
        let back = decode_bundle(&bundle).expect("decodes");
        assert_eq!(back, vec![&b"one"[..], &b""[..], &b"three"[..]]);
    }

    #[test]
    fn bad_framing_is_an_error() {
        for bad in [
            &b""[..],
            b"YGN1",
            b"YGB1\0\0\0\0",
            b"YGN1\0\0\0",
            b"YGN1\0\0\0\x05abc",
        ] {
            assert!(decode_bundle(bad).is_err(), "{bad:?}");
        }
        let too_many = encode_bundle(std::iter::repeat_n(&b"x"[..], MAX_BUNDLE_BATCHES + 1));
        assert!(decode_bundle(&too_many).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode_bundle(&framed);
            let _ = decode_bundle(&bytes);
        }
    }
}
