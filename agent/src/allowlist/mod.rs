//! Local allowlist enforcement: one declarative policy for networks, processes and USB
//! devices, signed by the collector and verified here, with a mode per rule set —
//! `learn` (record what is seen and propose a policy), `audit` (violations become
//! events), `enforce` (networks through an nftables ruleset, processes killed, USB
//! devices deauthorised). Every action is an event naming the rule set that caused it;
//! enforcement that cannot act (no privilege, no nft) falls back to audit and says so.

pub mod nft;
pub mod policy;
pub mod runtime;
