//! Contracts shared by the Yagura agent and collector.
//!
//! Two things cross the wire between an endpoint and the collector, and both are defined
//! here so that neither side can drift from the other:
//!
//! * [`Event`]: one ECS-style nested JSON document (Elastic Common Schema names).
//! * [`SignedBatch`]: the envelope an agent ships — agent id, per-agent sequence number,
//!   creation time, zstd-compressed NDJSON payload, the payload's SHA-256 and an Ed25519
//!   signature over a canonical encoding of all of them. The collector archives these
//!   bytes exactly as received, so any event can later be re-verified against the agent
//!   key that signed it.
//!
//! [`FlatEvent`] is the agent's fast way to build an [`Event`]'s JSON line.

pub mod batch;
pub mod bundle;
pub mod config_check;
pub mod event;
pub mod flat;
pub mod key_rotation;
pub mod metrics;
pub mod policy_delivery;
pub mod tls_handover;

pub use batch::{
    AgentKey, BatchError, BatchHeader, EventLines, SignedBatch, parse_header, payload_line_ranges,
    payload_lines, peek_event_count, verify_document, verifying_key_from_base64,
};
pub use bundle::{BatchResult, BundleAnswer, decode_bundle, encode_bundle};
pub use ed25519_dalek::VerifyingKey;
pub use event::{Event, EventError};
pub use flat::{FieldRef, FlatEvent, Mark, Occupant};
