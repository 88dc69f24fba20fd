//! The Yagura collector: verifies, archives, indexes and searches signed event batches.
//!
//! Data path: [`ingest`] checks each signed batch and appends it to the [`archive`] (the
//! source of truth; fsync before ack); the [`index`] follows the archive into tantivy;
//! the [`api`] serves enrollment, ingest, search and provenance over HTTPS ([`tls`]), on
//! one listener or one per network segment ([`listeners`]);
//! [`fleet`] and [`store`] keep agents, tokens and fleet state; [`collector_events`] turns
//! what the collector itself sees (refused batches, gaps, silent agents) into
//! collector-signed batches in the archive; [`custody`] traces an event back to its signed
//! batch and re-verifies it. [`detect`] runs the Sigma rules on the archive stream and
//! [`alert`] turns their matches into alerts, pages and their lifecycle. [`server`] wires
//! them together; `yagura up` adds a local agent.

pub mod alert;
pub mod api;
pub mod archive;
pub mod backup;
pub mod cluster;
pub mod collector_events;
pub mod config;
pub mod console;
pub mod custody;
pub mod detect;
pub mod fleet;
pub mod index;
pub mod ingest;
pub mod listeners;
pub mod search;
pub mod server;
pub mod shop;
pub mod store;
pub mod tls;
