//! The Yagura collector: verifies, archives, indexes and searches signed event batches.
//!
//! Data path: [`ingest`] checks each signed batch and appends it to the [`archive`] (the
//! source of truth; fsync before ack); the [`index`] follows the archive into tantivy;
//! the [`api`] serves enrollment, ingest and search over HTTPS ([`tls`]); [`fleet`] and
//! [`store`] keep agents and tokens. [`server`] wires them together; `yagura up` adds a
//! local agent.

pub mod api;
pub mod archive;
pub mod config;
pub mod fleet;
pub mod index;
pub mod ingest;
pub mod server;
pub mod store;
pub mod tls;
