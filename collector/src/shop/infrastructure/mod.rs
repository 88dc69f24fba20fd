//! What the shop's ports are made of: password hashing, TOTP and recovery codes, and
//! the hash-chained audit record.

pub mod audit_chain;
pub mod password_hash;
pub mod totp;
