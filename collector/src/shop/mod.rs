//! The reference shop service: accounts with MFA, a cart and a form, built as a defended
//! service should be, and streaming its audit trail into the collector like any source.
//!
//! Onion layers, dependencies pointing inward only:
//! - [`domain`]: entities (users and roles, carts, passwords' rules) and the invariants
//!   that hold whatever stores or serves them; no I/O, no framework types;
//! - `application`: the use cases (register, authenticate, MFA, cart, form), talking to
//!   storage and the audit trail through the domain's ports;
//! - [`infrastructure`]: what the ports are made of — password hashing (Argon2id), TOTP,
//!   the hash-chained audit record, SQL repositories;
//! - `http`: axum routes, extractors and middleware.
//!
//! Built so far: the domain and the authentication primitives of the infrastructure;
//! the use cases, storage and routes come next.

pub mod domain;
pub mod infrastructure;
