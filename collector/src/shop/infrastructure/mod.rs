//! What the shop's ports are made of: the SQL database and repository, password
//! hashing, TOTP and recovery codes, field encryption, and the hash-chained audit trail.

pub mod audit_chain;
pub mod audit_forwarder;
pub mod audit_trail;
pub mod database;
pub mod field_cipher;
pub mod password_hash;
pub mod sql_repository;
pub mod totp;
