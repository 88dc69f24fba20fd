//! The allowlist policy: its TOML form, its signature, and how it judges what the
//! inventory observes.
//!
//! ```toml
//! [networks]
//! mode = "enforce"
//! inbound = ["10.0.0.0/8", "192.168.1.0/24"]   # who may open connections to this host
//! outbound = []                                 # empty: outbound not restricted
//!
//! [processes]
//! mode = "audit"
//! allow = [{ path = "/usr/sbin/*" }, { path = "/opt/app/bin/app", sha256 = "9f86…" }]
//!
//! [usb]
//! mode = "enforce"
//! allow = ["1d6b:0002", "0781:5581:4C530001"]   # vendor:product[:serial]
//! ```
//!
//! The policy file is accepted only with a valid detached signature
//! ([`yagura_shared::verify_document`], purpose [`SIGNATURE_PURPOSE`]) by the collector's
//! key: a local edit without one is refused (and reported by the caller), and the
//! previous policy stays in force.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use yagura_shared::VerifyingKey;

use crate::inventory::observe::Observed;

/// What the collector's signature over a policy is for.
pub const SIGNATURE_PURPOSE: &str = "yagura-allowlist-v1";

/// How a rule set acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Record what is seen and propose rules; judge nothing.
    Learn,
    /// Report violations as events.
    Audit,
    /// Report and stop them.
    Enforce,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    pub mode: Mode,
    #[serde(default)]
    pub inbound: Vec<IpNet>,
    #[serde(default)]
    pub outbound: Vec<IpNet>,
}

/// An allowed executable: by path glob, by SHA-256, or both (then both must match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRule {
    pub path: Option<String>,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    pub mode: Mode,
    #[serde(default)]
    pub allow: Vec<ProcessRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbSection {
    pub mode: Mode,
    /// `vendor:product` (any serial) or `vendor:product:serial`, hex in lower case.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// A whole policy; a missing section means that kind is not governed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub networks: Option<NetworkSection>,
    pub processes: Option<ProcessSection>,
    pub usb: Option<UsbSection>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: no signature (a policy is accepted only signed by the collector)")]
    Unsigned { origin: String },
    #[error("{origin}: the signature does not match (edited locally, or another signer)")]
    BadSignature { origin: String },
    #[error("{origin}:{line}: {message}")]
    Parse {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Policy {
    /// Parses and checks a policy's text (no signature check: see [`Policy::verified`]).
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse {
            origin: origin.to_string(),
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            message: e.message().to_string(),
        })?;
        let invalid = |message: String| PolicyError::Invalid {
            origin: origin.to_string(),
            message,
        };
        if let Some(processes) = &policy.processes {
            for rule in &processes.allow {
                if rule.path.is_none() && rule.sha256.is_none() {
                    return Err(invalid(
                        "a process rule needs a path, a sha256 or both".into(),
                    ));
                }
                if let Some(path) = &rule.path {
                    glob::Pattern::new(path)
                        .map_err(|e| invalid(format!("process path {path:?}: {e}")))?;
                }
                if let Some(hash) = &rule.sha256
                    && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(invalid(format!(
                        "process sha256 {hash:?}: not 64 hex digits"
                    )));
                }
            }
        }
        if let Some(usb) = &policy.usb {
            for entry in &usb.allow {
                let parts: Vec<&str> = entry.split(':').collect();
                let hex4 = |p: &str| p.len() == 4 && p.bytes().all(|b| b.is_ascii_hexdigit());
                if !(parts.len() == 2 || parts.len() == 3) || !hex4(parts[0]) || !hex4(parts[1]) {
                    return Err(invalid(format!(
                        "USB entry {entry:?}: expected vendor:product[:serial] (4 hex digits each)"
                    )));
                }
            }
        }
        Ok(policy)
    }

    /// The policy in `text` if `signature` is the collector's over exactly these bytes.
    pub fn verified(
        text: &str,
        signature: Option<&str>,
        collector: &VerifyingKey,
        origin: &str,
    ) -> Result<Policy, PolicyError> {
        let Some(signature) = signature.map(str::trim).filter(|s| !s.is_empty()) else {
            return Err(PolicyError::Unsigned {
                origin: origin.to_string(),
            });
        };
        yagura_shared::verify_document(collector, SIGNATURE_PURPOSE, text.as_bytes(), signature)
            .map_err(|_| PolicyError::BadSignature {
                origin: origin.to_string(),
            })?;
        Policy::parse(text, origin)
    }

    /// The policy as TOML (what learn mode proposes for an operator to sign).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Something observed that the policy does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    Process {
        pid: u32,
        start_ticks: u64,
        name: String,
        exe: Option<String>,
        sha256: Option<String>,
    },
    Usb {
        bus_id: String,
        key: String,
    },
}

impl ProcessRule {
    fn allows(&self, exe: Option<&str>, sha256: Option<&str>) -> bool {
        let path_ok = self.path.as_ref().is_none_or(|pattern| {
            exe.is_some_and(|exe| glob::Pattern::new(pattern).is_ok_and(|p| p.matches(exe)))
        });
        let hash_ok = self
            .sha256
            .as_ref()
            .is_none_or(|want| sha256.is_some_and(|have| have.eq_ignore_ascii_case(want)));
        path_ok && hash_ok
    }
}

fn usb_allowed(allow: &[String], key: &str) -> bool {
    allow.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        let key = key.to_ascii_lowercase();
        // `vendor:product` allows any serial; with a serial, only that one.
        key == entry || key.starts_with(&format!("{entry}:"))
    })
}

/// What `observed` holds that `policy` (in audit or enforce mode) does not allow. Kernel
/// threads (no executable) are not judged.
pub fn violations(policy: &Policy, observed: &Observed) -> Vec<Violation> {
    let mut found = Vec::new();
    if let Some(section) = policy.processes.as_ref().filter(|s| s.mode != Mode::Learn) {
        for p in observed.processes.values() {
            let Some(exe) = &p.exe else { continue };
            let exe = exe.display().to_string();
            if !section
                .allow
                .iter()
                .any(|rule| rule.allows(Some(&exe), p.exe_sha256.as_deref()))
            {
                found.push(Violation::Process {
                    pid: p.pid,
                    start_ticks: p.start_ticks,
                    name: p.name.clone(),
                    exe: Some(exe),
                    sha256: p.exe_sha256.clone(),
                });
            }
        }
    }
    if let Some(section) = policy.usb.as_ref().filter(|s| s.mode != Mode::Learn) {
        for device in observed.usb.values() {
            let key = device.key();
            if !usb_allowed(&section.allow, &key) {
                found.push(Violation::Usb {
                    bus_id: device.bus_id.clone(),
                    key,
                });
            }
        }
    }
    found
}

/// What learn mode proposes: every executable seen (by path and hash), every USB device
/// seen (with its serial), inbound from loopback and the networks of the neighbours seen,
/// outbound unrestricted; each section in audit mode, for an operator to review, sign
/// and then enforce.
pub fn propose(observed: &Observed) -> Policy {
    let mut executables = BTreeSet::new();
    for p in observed.processes.values() {
        if let Some(exe) = &p.exe {
            executables.insert((exe.display().to_string(), p.exe_sha256.clone()));
        }
    }
    let mut inbound: BTreeSet<IpNet> = ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    for ip in observed.neighbours.keys() {
        let prefix = if ip.is_ipv4() { 24 } else { 64 };
        if let Ok(net) = IpNet::new(*ip, prefix) {
            inbound.insert(net.trunc());
        }
    }
    Policy {
        networks: Some(NetworkSection {
            mode: Mode::Audit,
            inbound: inbound.into_iter().collect(),
            outbound: Vec::new(),
        }),
        processes: Some(ProcessSection {
            mode: Mode::Audit,
            allow: executables
                .into_iter()
                .map(|(path, sha256)| ProcessRule {
                    path: Some(path),
                    sha256,
                })
                .collect(),
        }),
        usb: Some(UsbSection {
            mode: Mode::Audit,
            allow: observed.usb.values().map(|d| d.key()).collect(),
        }),
    }
}
