//! The signed batch envelope: what an agent sends and what the collector archives.
//!
//! The encoding is a fixed binary layout, so there is exactly one byte string for a given
//! batch and the signature covers all of it:
//!
//! ```text
//! offset  size  field
//!      0     4  magic "YGB1" (format and version)
//!      4    16  agent id (UUID, big-endian bytes)
//!     20     8  sequence number, u64 big-endian (per agent, starts at 1)
//!     28     8  creation time, i64 big-endian, Unix milliseconds
//!     36     4  event count, u32 big-endian
//!     40    32  SHA-256 of the payload
//!     72     4  payload length n, u32 big-endian
//!     76     n  payload: zstd-compressed NDJSON, one event per line
//!   76+n    64  Ed25519 signature over CONTEXT || bytes[0 .. 76]
//! ```
//!
//! The signature covers the header, and through the header's SHA-256 the payload: the
//! same guarantee as signing every byte (a forger would need a SHA-256 second preimage),
//! while Ed25519's two SHA-512 passes run over 76 bytes instead of the whole payload, on
//! the agent and again at ingest.
//!
//! Parsing ([`SignedBatch::from_bytes`]) checks only the structure; [`SignedBatch::verify`]
//! checks the payload hash and the signature; [`SignedBatch::events`] decompresses with a
//! hard limit (a decompression bomb is an error, not an allocation) and validates every
//! event. Nothing here panics on hostile input.

use std::io::Read;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, TimeZone, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::{Event, EventError};

const MAGIC: &[u8; 4] = b"YGB1";
/// Domain separation: a signature made for a batch is never valid for anything else.
const SIGNING_CONTEXT: &[u8] = b"yagura signed batch header v1\0";
/// The first agents signed every byte before the signature under this context. Their
/// batches still verify, so spools sealed before an upgrade ship, and archives written
/// before it re-verify; nothing seals this way any more.
const LEGACY_SIGNING_CONTEXT: &[u8] = b"yagura signed batch v1\0";
/// zstd level of sealed payloads. Level 1 compresses this NDJSON (repetitive keys, one
/// host, one agent) faster than level 3 and, measured on the agent benchmark's batches,
/// also smaller: 19.7× against 16.7×.
const ZSTD_LEVEL: i32 = 1;
const HEADER_LEN: usize = 76;
const SIGNATURE_LEN: usize = 64;
/// Smallest possible encoded batch (empty payload).
pub const MIN_BATCH_LEN: usize = HEADER_LEN + SIGNATURE_LEN;

/// Why a batch was rejected. The variants map onto distinct HTTP statuses at ingest.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("malformed batch: {0}")]
    Malformed(String),
    #[error("payload hash does not match the header")]
    PayloadHashMismatch,
    #[error("signature does not verify")]
    BadSignature,
    #[error("payload decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("event on payload line {line}: {source}")]
    BadEvent { line: usize, source: EventError },
    #[error("header says {declared} events, payload has {actual}")]
    CountMismatch { declared: u32, actual: usize },
    #[error("compression failed: {0}")]
    Compression(String),
}

/// The signed, fixed-width fields of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHeader {
    pub agent_id: Uuid,
    pub sequence: u64,
    pub created_at_ms: i64,
    pub event_count: u32,
    pub payload_sha256: [u8; 32],
}

impl BatchHeader {
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        Utc.timestamp_millis_opt(self.created_at_ms).single()
    }

    pub fn payload_sha256_hex(&self) -> String {
        hex::encode(self.payload_sha256)
    }
}

/// Where the lines of an NDJSON payload are: the byte ranges that
/// `payload.split(|b| *b == b'\n')` would yield, empty lines included, so that the n-th
/// range is line n + 1 of the payload (as error messages and provenance count them).
///
/// Every stage that reads a batch (the ingest checks, the indexer, the detector) walks
/// its payload this way; newlines are found with `memchr`'s vectorised search instead of
/// a byte-at-a-time loop (the split was 1.8 % of the samples of an ingest-only
/// `yagura bench agent` run under `perf`; see docs/benchmarks.md). Ranges rather than
/// slices let a caller holding the payload as `&str` cut it without checking UTF-8 again
/// (`'\n'` is ASCII, so every range falls on character boundaries).
pub fn payload_line_ranges(payload: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut next = Some(0);
    std::iter::from_fn(move || {
        let start = next?;
        let rest = payload.get(start..)?;
        match memchr::memchr(b'\n', rest) {
            Some(at) => {
                next = Some(start + at + 1);
                Some(start..start + at)
            }
            None => {
                next = None;
                Some(start..payload.len())
            }
        }
    })
}

/// The lines of an NDJSON payload, as [`payload_line_ranges`] finds them.
pub fn payload_lines(payload: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    payload_line_ranges(payload).map(move |range| &payload[range])
}

/// The events of a batch being gathered, already written as NDJSON lines: the agent
/// serializes each event once, as it is made, and keeps only these bytes until it seals.
#[derive(Debug, Clone, Default)]
pub struct EventLines {
    ndjson: Vec<u8>,
    count: usize,
}

impl EventLines {
    pub fn push_event(&mut self, event: &Event) {
        // Writing a map of JSON values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.ndjson, event.as_map());
        self.ndjson.push(b'\n');
        self.count += 1;
    }

    pub fn push_flat(&mut self, event: &mut crate::flat::FlatEvent) {
        event.write_json_line(&mut self.ndjson);
        self.count += 1;
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the NDJSON so far.
    pub fn bytes(&self) -> usize {
        self.ndjson.len()
    }

    /// Empties the lines; a buffer grown far beyond a usual batch is given back.
    pub fn clear(&mut self) {
        self.ndjson.clear();
        self.count = 0;
        if self.ndjson.capacity() > 16 << 20 {
            self.ndjson.shrink_to(1 << 20);
        }
    }
}

/// A batch in its wire form, with its header parsed. Holding one says nothing about its
/// authenticity until [`SignedBatch::verify`] succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBatch {
    header: BatchHeader,
    bytes: Vec<u8>,
}

impl SignedBatch {
    /// Encodes, compresses, hashes and signs `events` as batch `sequence` of `agent_id`.
    pub fn seal(
        key: &AgentKey,
        agent_id: Uuid,
        sequence: u64,
        created_at: DateTime<Utc>,
        events: &[Event],
    ) -> Result<Self, BatchError> {
        let mut lines = EventLines::default();
        for event in events {
            lines.push_event(event);
        }
        SignedBatch::seal_lines(key, agent_id, sequence, created_at, &lines)
    }

    /// Compresses, hashes and signs events already written as NDJSON.
    pub fn seal_lines(
        key: &AgentKey,
        agent_id: Uuid,
        sequence: u64,
        created_at: DateTime<Utc>,
        lines: &EventLines,
    ) -> Result<Self, BatchError> {
        let payload = zstd::bulk::compress(&lines.ndjson, ZSTD_LEVEL)
            .map_err(|e| BatchError::Compression(e.to_string()))?;
        let payload_len = u32::try_from(payload.len())
            .map_err(|_| BatchError::Compression("payload larger than 4 GiB".into()))?;
        let event_count = u32::try_from(lines.count)
            .map_err(|_| BatchError::Compression("more than 2^32 events".into()))?;
        let payload_sha256: [u8; 32] = Sha256::digest(&payload).into();
        let header = BatchHeader {
            agent_id,
            sequence,
            created_at_ms: created_at.timestamp_millis(),
            event_count,
            payload_sha256,
        };
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + SIGNATURE_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(agent_id.as_bytes());
        bytes.extend_from_slice(&sequence.to_be_bytes());
        bytes.extend_from_slice(&header.created_at_ms.to_be_bytes());
        bytes.extend_from_slice(&event_count.to_be_bytes());
        bytes.extend_from_slice(&payload_sha256);
        bytes.extend_from_slice(&payload_len.to_be_bytes());
        let signature = key.0.sign(&signing_message(&bytes));
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(SignedBatch { header, bytes })
    }

    /// Parses the structure of a batch. Does not verify anything cryptographic.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, BatchError> {
        let header = parse_header(&bytes)?;
        Ok(SignedBatch { header, bytes })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The exact bytes that were signed and sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The compressed payload.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..self.bytes.len() - SIGNATURE_LEN]
    }

    /// Checks the payload hash against the header, then the signature over the header.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), BatchError> {
        let digest: [u8; 32] = Sha256::digest(self.payload()).into();
        if digest != self.header.payload_sha256 {
            return Err(BatchError::PayloadHashMismatch);
        }
        let split = self.bytes.len() - SIGNATURE_LEN;
        let sig_bytes: [u8; SIGNATURE_LEN] = self.bytes[split..]
            .try_into()
            .map_err(|_| BatchError::Malformed("signature length".into()))?;
        let signature = Signature::from_bytes(&sig_bytes);
        key.verify_strict(&signing_message(&self.bytes[..HEADER_LEN]), &signature)
            .or_else(|_| {
                let mut legacy = LEGACY_SIGNING_CONTEXT.to_vec();
                legacy.extend_from_slice(&self.bytes[..split]);
                key.verify_strict(&legacy, &signature)
            })
            .map_err(|_| BatchError::BadSignature)
    }

    /// Decompresses the payload (refusing to grow past `max_decompressed` bytes) and parses
    /// and validates every event; the count must match the header.
    pub fn events(&self, max_decompressed: usize) -> Result<Vec<Event>, BatchError> {
        let ndjson = self.decompressed_payload(max_decompressed)?;
        // The declared count is untrusted: never size an allocation by it.
        let mut events = Vec::new();
        for (index, line) in payload_lines(&ndjson).enumerate() {
            if line.is_empty() {
                continue;
            }
            let event = Event::from_json_slice(line).map_err(|source| BatchError::BadEvent {
                line: index + 1,
                source,
            })?;
            events.push(event);
        }
        if events.len() != self.header.event_count as usize {
            return Err(BatchError::CountMismatch {
                declared: self.header.event_count,
                actual: events.len(),
            });
        }
        Ok(events)
    }

    /// The NDJSON payload, decompressed with a hard size limit.
    pub fn decompressed_payload(&self, max_decompressed: usize) -> Result<Vec<u8>, BatchError> {
        // One frame that states its size (an agent's payload) is decoded in one call into
        // a buffer of that size, not grown by doubling. Anything else, or any failure,
        // takes the streaming path below, whose verdict counts.
        if let Ok(Some(stated)) = zstd::zstd_safe::get_frame_content_size(self.payload())
            && let Ok(stated) = usize::try_from(stated)
            && stated <= max_decompressed
            && let Ok(out) = zstd::bulk::decompress(self.payload(), stated)
        {
            return Ok(out);
        }
        let decoder = zstd::stream::read::Decoder::new(self.payload())
            .map_err(|e| BatchError::Malformed(format!("zstd: {e}")))?;
        let mut out = Vec::new();
        let limit = u64::try_from(max_decompressed)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        decoder
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| BatchError::Malformed(format!("zstd: {e}")))?;
        if out.len() > max_decompressed {
            return Err(BatchError::TooLarge {
                limit: max_decompressed,
            });
        }
        Ok(out)
    }
}

/// What is signed: the domain separation context, then the 76 header bytes.
fn signing_message(header: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + header.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(header);
    message
}

fn be_u32(bytes: &[u8], at: usize) -> Result<u32, BatchError> {
    bytes
        .get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| BatchError::Malformed("truncated header".into()))
}

fn be_u64(bytes: &[u8], at: usize) -> Result<u64, BatchError> {
    bytes
        .get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| BatchError::Malformed("truncated header".into()))
}

/// How many leading bytes of a batch [`peek_event_count`] needs: the header up to and
/// including the event count.
pub const EVENT_COUNT_PREFIX_LEN: usize = 40;

/// The event count a batch's header declares, read from its first
/// [`EVENT_COUNT_PREFIX_LEN`] bytes alone (the magic checked, nothing else): what a scan
/// of the archive needs to count events without reading, let alone decompressing, the
/// payloads. `None` when the bytes are too short or are not a batch. Unverified: for
/// figures such as a consumer's lag, never for a decision about the batch.
pub fn peek_event_count(prefix: &[u8]) -> Option<u32> {
    if prefix.get(..4)? != MAGIC {
        return None;
    }
    be_u32(prefix, 36).ok()
}

/// Parses the fixed header and checks the declared lengths against the actual size.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < MIN_BATCH_LEN {
        return Err(BatchError::Malformed(format!(
            "{} bytes is shorter than the minimum of {MIN_BATCH_LEN}",
            bytes.len()
        )));
    }
    if &bytes[..4] != MAGIC {
        return Err(BatchError::Malformed(
            "bad magic (not a Yagura v1 batch)".into(),
        ));
    }
    let agent_bytes: [u8; 16] = bytes[4..20]
        .try_into()
        .map_err(|_| BatchError::Malformed("truncated header".into()))?;
    let sequence = be_u64(bytes, 20)?;
    if sequence == 0 {
        return Err(BatchError::Malformed("sequence numbers start at 1".into()));
    }
    let created_at_ms = be_u64(bytes, 28)? as i64;
    let event_count = be_u32(bytes, 36)?;
    let payload_sha256: [u8; 32] = bytes[40..72]
        .try_into()
        .map_err(|_| BatchError::Malformed("truncated header".into()))?;
    let payload_len = be_u32(bytes, 72)? as usize;
    let expected = HEADER_LEN + payload_len + SIGNATURE_LEN;
    if bytes.len() != expected {
        return Err(BatchError::Malformed(format!(
            "declared payload of {payload_len} bytes needs {expected} bytes in all, got {}",
            bytes.len()
        )));
    }
    Ok(BatchHeader {
        agent_id: Uuid::from_bytes(agent_bytes),
        sequence,
        created_at_ms,
        event_count,
        payload_sha256,
    })
}

/// An agent's Ed25519 signing key. Never printed: `Debug` shows only the public half.
pub struct AgentKey(SigningKey);

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentKey(public={})", self.public_key_base64())
    }
}

impl AgentKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(AgentKey(SigningKey::from_bytes(&seed)))
    }

    /// The key file's text: the 32-byte seed in base64.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", B64.encode(self.0.to_bytes()))
    }

    pub fn from_file_text(text: &str) -> Result<Self, BatchError> {
        let raw = B64
            .decode(text.trim())
            .map_err(|e| BatchError::Malformed(format!("key file: {e}")))?;
        let seed: [u8; 32] = raw
            .try_into()
            .map_err(|_| BatchError::Malformed("key file: seed is not 32 bytes".into()))?;
        Ok(AgentKey(SigningKey::from_bytes(&seed)))
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    pub fn public_key_base64(&self) -> String {
        B64.encode(self.0.verifying_key().as_bytes())
    }

    /// A detached signature (base64) over `document` for `purpose` (e.g.
    /// `yagura-allowlist-v1`): the purpose is signed with it, so a signature made for one
    /// kind of document is never valid for another.
    pub fn sign_document(&self, purpose: &str, document: &[u8]) -> String {
        B64.encode(self.0.sign(&document_message(purpose, document)).to_bytes())
    }
}

fn document_message(purpose: &str, document: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(purpose.len() + 1 + document.len());
    message.extend_from_slice(purpose.as_bytes());
    message.push(0);
    message.extend_from_slice(document);
    message
}

/// Checks a [`AgentKey::sign_document`] signature.
pub fn verify_document(
    key: &VerifyingKey,
    purpose: &str,
    document: &[u8],
    signature_base64: &str,
) -> Result<(), BatchError> {
    let raw = B64
        .decode(signature_base64.trim())
        .map_err(|e| BatchError::Malformed(format!("signature: {e}")))?;
    let bytes: [u8; 64] = raw
        .try_into()
        .map_err(|_| BatchError::Malformed("signature is not 64 bytes".into()))?;
    key.verify_strict(
        &document_message(purpose, document),
        &Signature::from_bytes(&bytes),
    )
    .map_err(|_| BatchError::BadSignature)
}

/// Decodes a base64 public key as sent at enrollment and stored by the collector.
pub fn verifying_key_from_base64(text: &str) -> Result<VerifyingKey, BatchError> {
    let raw = B64
        .decode(text.trim())
        .map_err(|e| BatchError::Malformed(format!("public key: {e}")))?;
    let bytes: [u8; 32] = raw
        .try_into()
        .map_err(|_| BatchError::Malformed("public key is not 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| BatchError::Malformed(format!("public key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut e = Event::new(Utc::now());
                e.set_str("message", format!("line {i}"));
                e
            })
            .collect()
    }

    fn sealed(key: &AgentKey) -> SignedBatch {
        SignedBatch::seal(key, Uuid::now_v7(), 7, Utc::now(), &sample(5)).expect("seal")
    }

    #[test]
    fn round_trip_verifies_and_returns_the_events() {
        let key = AgentKey::generate().expect("key");
        let events = sample(20);
        let agent = Uuid::now_v7();
        let batch = SignedBatch::seal(&key, agent, 3, Utc::now(), &events).expect("seal");
        let parsed = SignedBatch::from_bytes(batch.as_bytes().to_vec()).expect("parse");
        assert_eq!(parsed.header().agent_id, agent);
        assert_eq!(parsed.header().sequence, 3);
        assert_eq!(parsed.header().event_count, 20);
        parsed.verify(&key.verifying_key()).expect("verifies");
        assert_eq!(parsed.events(1 << 20).expect("events"), events);
    }

    #[test]
    fn the_event_count_is_read_from_the_header_prefix_alone() {
        let key = AgentKey::generate().expect("key");
        let batch =
            SignedBatch::seal(&key, Uuid::now_v7(), 1, Utc::now(), &sample(12)).expect("seal");
        let bytes = batch.as_bytes();
        assert_eq!(peek_event_count(&bytes[..EVENT_COUNT_PREFIX_LEN]), Some(12));
        assert_eq!(peek_event_count(bytes), Some(12));
        assert_eq!(peek_event_count(&bytes[..EVENT_COUNT_PREFIX_LEN - 1]), None);
        let mut foreign = bytes[..EVENT_COUNT_PREFIX_LEN].to_vec();
        foreign[0] = b'X';
        assert_eq!(peek_event_count(&foreign), None);
    }

    #[test]
    fn flipping_any_single_byte_fails_verification() {
        let key = AgentKey::generate().expect("key");
        let batch = sealed(&key);
        let bytes = batch.as_bytes();
        for index in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut tampered = bytes.to_vec();
                tampered[index] ^= bit;
                let accepted = SignedBatch::from_bytes(tampered)
                    .and_then(|b| b.verify(&key.verifying_key()).map(|_| b));
                if let Ok(b) = accepted {
                    // A flipped agent id would name another agent whose key differs; a
                    // batch that still verifies under this key must be the original.
                    panic!(
                        "byte {index} bit {bit:#x} flipped yet verified: {:?}",
                        b.header()
                    );
                }
            }
        }
    }

    #[test]
    fn another_key_is_rejected() {
        let key = AgentKey::generate().expect("key");
        let other = AgentKey::generate().expect("key");
        assert!(matches!(
            sealed(&key).verify(&other.verifying_key()),
            Err(BatchError::BadSignature)
        ));
    }

    #[test]
    fn decompression_limit_is_enforced() {
        let key = AgentKey::generate().expect("key");
        let mut e = Event::new(Utc::now());
        e.set_str("message", "A".repeat(1 << 20));
        let batch = SignedBatch::seal(&key, Uuid::now_v7(), 1, Utc::now(), &[e]).expect("seal");
        assert!(batch.as_bytes().len() < 10_000, "compresses well");
        assert!(matches!(
            batch.events(64 * 1024),
            Err(BatchError::TooLarge { .. })
        ));
        assert_eq!(batch.events(2 << 20).expect("fits").len(), 1);
    }

    #[test]
    fn a_huge_declared_event_count_is_an_error_not_an_allocation() {
        // Even a correctly signed batch (a compromised agent) may lie about its count.
        let key = AgentKey::generate().expect("key");
        let mut bytes = sealed(&key).into_bytes();
        bytes[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        let batch = SignedBatch::from_bytes(bytes).expect("structure is fine");
        assert!(matches!(
            batch.events(1 << 20),
            Err(BatchError::CountMismatch {
                declared: u32::MAX,
                actual: 5
            })
        ));
    }

    #[test]
    fn key_file_round_trip_and_debug_hides_secret() {
        let key = AgentKey::generate().expect("key");
        let text = key.to_file_text();
        let back = AgentKey::from_file_text(&text).expect("parse");
        assert_eq!(back.verifying_key(), key.verifying_key());
        assert!(!format!("{key:?}").contains(text.trim()));
        let public = verifying_key_from_base64(&key.public_key_base64()).expect("pk");
        assert_eq!(public, key.verifying_key());
    }

    #[test]
    fn payload_lines_count_empty_lines_and_the_text_after_the_last_newline() {
        let lines: Vec<&[u8]> = payload_lines(b"a\n\nbc\n").collect();
        assert_eq!(lines, [&b"a"[..], b"", b"bc", b""]);
        assert_eq!(payload_lines(b"").collect::<Vec<_>>(), [&b""[..]]);
        assert_eq!(
            payload_line_ranges(b"x\ny").collect::<Vec<_>>(),
            [0..1, 2..3]
        );
    }

    proptest! {
        /// Line numbers in errors and provenance depend on the split being exactly the
        /// byte split's, empty lines and all.
        #[test]
        fn payload_lines_are_the_byte_split(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'{'), any::<u8>()], 0..300)
        ) {
            let ours: Vec<&[u8]> = payload_lines(&bytes).collect();
            let split: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
            prop_assert_eq!(ours, split);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(batch) = SignedBatch::from_bytes(bytes) {
                let _ = batch.events(1 << 16);
            }
        }

        #[test]
        fn parsing_mutated_batches_never_panics(index in 0usize..4096, value in any::<u8>()) {
            let key = AgentKey::generate().expect("key");
            let mut bytes = sealed(&key).into_bytes();
            let i = index % bytes.len();
            bytes[i] = value;
            if let Ok(batch) = SignedBatch::from_bytes(bytes) {
                let _ = batch.verify(&key.verifying_key());
                let _ = batch.events(1 << 16);
            }
        }
    }

    /// A batch sealed by an agent from before the header signature (every byte signed,
    /// the first context) still verifies, and still fails when a byte changes.
    #[test]
    fn batches_signed_the_first_way_still_verify() {
        let key = AgentKey::generate().expect("key");
        let sealed =
            SignedBatch::seal(&key, Uuid::now_v7(), 1, Utc::now(), &sample(3)).expect("seal");
        let mut bytes = sealed.as_bytes()[..sealed.as_bytes().len() - SIGNATURE_LEN].to_vec();
        let mut message = LEGACY_SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(&bytes);
        bytes.extend_from_slice(&key.0.sign(&message).to_bytes());
        let legacy = SignedBatch::from_bytes(bytes.clone()).expect("parse");
        assert!(legacy.verify(&key.verifying_key()).is_ok());
        bytes[30] ^= 1;
        let tampered = SignedBatch::from_bytes(bytes).expect("parse");
        assert!(tampered.verify(&key.verifying_key()).is_err());
    }
}
