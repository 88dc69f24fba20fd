//! The allowlist at work: loads the signed policy (and refuses an unsigned or edited
//! one, keeping the previous policy), judges each inventory observation, acts in enforce
//! mode, and turns all of it into events (`event.dataset: yagura.allowlist`).
//!
//! Each violation is reported once per item (a process by pid and start time, a USB
//! device by port and key), not once per diff cycle.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::json;
use yagura_shared::policy_delivery::{DeliveredPolicy, NO_POLICY, policy_sha256};
use yagura_shared::{Event, VerifyingKey};

use super::nft::{self, NetworkRules};
use super::policy::{self, Mode, Policy, Violation};
use crate::inventory::observe::Observed;
use crate::inventory::processes;
use crate::inventory::usb;
use crate::tail::EventContext;

/// The dataset of allowlist events.
pub const ALLOWLIST_DATASET: &str = "yagura.allowlist";

/// Where the policy comes from and who must have signed it.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// The policy (TOML); its signature is `<path>.sig`.
    pub path: PathBuf,
    /// The collector's policy-signing key.
    pub signer: VerifyingKey,
}

/// Where the shipper leaves a policy the collector hands over, and where it reads which
/// policy to name in its requests (see `yagura_shared::policy_delivery`). Shared by the
/// shipper (async) and the enforcer (the inventory thread); both only swap small values.
#[derive(Debug)]
pub struct PolicyMailbox {
    /// SHA-256 of the policy in force, or of the last one handed over (taken or refused,
    /// so a refused policy is not sent again with every answer); `none` at first.
    held: Mutex<String>,
    delivered: Mutex<Option<DeliveredPolicy>>,
}

impl Default for PolicyMailbox {
    fn default() -> Self {
        PolicyMailbox {
            held: Mutex::new(NO_POLICY.to_string()),
            delivered: Mutex::new(None),
        }
    }
}

impl PolicyMailbox {
    /// What the agent names in its requests.
    pub fn held(&self) -> String {
        self.held
            .lock()
            .map_or_else(|_| NO_POLICY.to_string(), |h| h.clone())
    }

    fn set_held(&self, sha256: String) {
        if let Ok(mut held) = self.held.lock() {
            *held = sha256;
        }
    }

    /// A mailbox that names the policy already on disk, when it verifies (so a restarted
    /// agent does not ask for the policy it has).
    pub fn holding(source: &PolicySource) -> Self {
        let mailbox = PolicyMailbox::default();
        let mut sig = source.path.as_os_str().to_owned();
        sig.push(".sig");
        if let Ok(text) = std::fs::read_to_string(&source.path)
            && let Ok(signature) = std::fs::read_to_string(PathBuf::from(sig))
            && Policy::verified(&text, Some(&signature), &source.signer, "policy").is_ok()
        {
            mailbox.set_held(policy_sha256(&text));
        }
        mailbox
    }

    /// A policy from the collector, for the enforcer's next cycle (a newer one replaces
    /// one not yet taken). Its name is checked against its text: a mismatch would have it
    /// sent again with every answer.
    pub fn deliver(&self, policy: DeliveredPolicy) {
        if policy_sha256(&policy.policy) != policy.sha256 {
            tracing::warn!(assignment = %policy.name, "allowlist policy whose hash does not match its text ignored");
            return;
        }
        if self.held() == policy.sha256 {
            return;
        }
        self.set_held(policy.sha256.clone());
        if let Ok(mut delivered) = self.delivered.lock() {
            *delivered = Some(policy);
        }
    }

    fn take(&self) -> Option<DeliveredPolicy> {
        self.delivered.lock().ok().and_then(|mut d| d.take())
    }
}

/// Writes `text` beside `path` in a new file of its own (never an existing one, nor what
/// a planted symlink points to), flushed to disk; returns its path.
fn write_temporary(path: &Path, text: &str) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::now_v7()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    Ok(temporary)
}

/// Replaces the policy and its signature: both written in full first, then renamed over
/// the files (signature, then policy) and the directory flushed, so a failure while
/// writing leaves both files as they were, and only a crash between the two renames can
/// leave a pair that does not verify (refused at the next start, and asked for again).
fn replace_pair(policy: &Path, text: &str, signature: &Path, sig: &str) -> std::io::Result<()> {
    let new_sig = write_temporary(signature, sig)?;
    let new_policy = match write_temporary(policy, text) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&new_sig);
            return Err(e);
        }
    };
    let renamed =
        std::fs::rename(&new_sig, signature).and_then(|()| std::fs::rename(&new_policy, policy));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&new_sig);
        let _ = std::fs::remove_file(&new_policy);
    }
    renamed?;
    if let Some(dir) = policy.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The allowlist's state between diff cycles.
#[derive(Debug)]
pub struct Enforcer {
    mailbox: Arc<PolicyMailbox>,
    /// SHA-256 of the policy in force.
    in_force: Option<String>,
    source: PolicySource,
    proc_root: PathBuf,
    policy: Option<Policy>,
    /// (length, modified) of the policy and signature files last read.
    seen: Option<(
        u64,
        Option<std::time::SystemTime>,
        u64,
        Option<std::time::SystemTime>,
    )>,
    reported: HashSet<String>,
    /// The network ruleset in force (so it is applied once per change).
    network: Option<String>,
}

fn event(context: &EventContext, action: &str, outcome: &str) -> Event {
    let mut event = Event::new(Utc::now());
    context.stamp(&mut event);
    event.set_str("event.dataset", ALLOWLIST_DATASET);
    event.set_str("event.module", "allowlist");
    event.set_str("event.kind", "event");
    event.set_str("event.action", action);
    event.set_str("event.outcome", outcome);
    event
}

fn stamp_of(path: &Path) -> (u64, Option<std::time::SystemTime>) {
    std::fs::metadata(path).map_or((0, None), |m| (m.len(), m.modified().ok()))
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Learn => "learn",
        Mode::Audit => "audit",
        Mode::Enforce => "enforce",
    }
}

impl Enforcer {
    pub fn new(source: PolicySource, proc_root: PathBuf) -> Self {
        Enforcer {
            mailbox: Arc::default(),
            in_force: None,
            source,
            proc_root,
            policy: None,
            seen: None,
            reported: HashSet::new(),
            network: None,
        }
    }

    /// Takes policies the collector hands over through `mailbox` (shared with the
    /// shipper).
    pub fn with_mailbox(mut self, mailbox: Arc<PolicyMailbox>) -> Self {
        self.mailbox = mailbox;
        self
    }

    /// A policy handed over by the collector: checked against the signer like any other,
    /// then written over the policy file and its signature, where the reload that follows
    /// takes it (and where it survives a restart). A policy that fails the check is
    /// refused and reported and the files are left alone.
    fn store_delivered(&mut self, context: &EventContext) -> Vec<Event> {
        let Some(delivered) = self.mailbox.take() else {
            return Vec::new();
        };
        let origin = format!("assignment {} from the collector", delivered.name);
        let stored = Policy::verified(
            &delivered.policy,
            Some(&delivered.signature),
            &self.source.signer,
            &origin,
        )
        .map_err(|e| e.to_string())
        .and_then(|_| {
            replace_pair(
                &self.source.path,
                &delivered.policy,
                &self.signature_path(),
                &delivered.signature,
            )
            .map_err(|e| {
                // Not the policy's fault: name the one in force again, so it is offered
                // again with a later answer.
                self.mailbox
                    .set_held(self.in_force.clone().unwrap_or_else(|| NO_POLICY.into()));
                format!("cannot write {}: {e}", self.source.path.display())
            })
        });
        let mut received = match &stored {
            Ok(()) => {
                // Read again whatever the file stamps say.
                self.seen = None;
                event(context, "policy_received", "success")
            }
            Err(error) => {
                tracing::error!(%error, "allowlist policy from the collector refused");
                let mut refused = event(context, "policy_refused", "failure");
                refused.set_str("event.reason", error.clone());
                refused
            }
        };
        received.set_str("yagura.allowlist.assignment", delivered.name.clone());
        received.set_str("yagura.allowlist.sha256", delivered.sha256.clone());
        received.set_str(
            "message",
            match &stored {
                Ok(()) => format!("allowlist policy {origin} received"),
                Err(error) => format!(
                    "allowlist policy {origin} refused, the previous one stays in force: {error}"
                ),
            },
        );
        vec![received]
    }

    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    fn signature_path(&self) -> PathBuf {
        let mut name = self.source.path.as_os_str().to_owned();
        name.push(".sig");
        PathBuf::from(name)
    }

    /// Reads the policy again when its files changed. A policy that is unsigned, signed by
    /// another key, edited after signing or invalid is refused and reported; the previous
    /// policy stays in force.
    pub fn reload_if_changed(&mut self, context: &EventContext) -> Vec<Event> {
        let mut events = self.store_delivered(context);
        events.extend(self.reload_files(context));
        events
    }

    fn reload_files(&mut self, context: &EventContext) -> Vec<Event> {
        let sig_path = self.signature_path();
        let (len, modified) = stamp_of(&self.source.path);
        let (sig_len, sig_modified) = stamp_of(&sig_path);
        let now = (len, modified, sig_len, sig_modified);
        if self.seen == Some(now) {
            return Vec::new();
        }
        self.seen = Some(now);
        let origin = self.source.path.display().to_string();
        let Ok(text) = std::fs::read_to_string(&self.source.path) else {
            return Vec::new();
        };
        let signature = std::fs::read_to_string(&sig_path).ok();
        match Policy::verified(&text, signature.as_deref(), &self.source.signer, &origin) {
            Ok(policy) => {
                let mut loaded = event(context, "policy_loaded", "success");
                let modes = json!({
                    "networks": policy.networks.as_ref().map(|s| mode_name(s.mode)),
                    "processes": policy.processes.as_ref().map(|s| mode_name(s.mode)),
                    "usb": policy.usb.as_ref().map(|s| mode_name(s.mode)),
                });
                loaded.set("yagura.allowlist.modes", modes);
                let sha256 = policy_sha256(&text);
                loaded.set_str("yagura.allowlist.sha256", sha256.clone());
                loaded.set_str("message", format!("allowlist policy {origin} loaded"));
                self.mailbox.set_held(sha256.clone());
                self.in_force = Some(sha256);
                self.policy = Some(policy);
                self.reported.clear();
                self.network = None;
                vec![loaded]
            }
            Err(error) => {
                tracing::error!(%error, "allowlist policy refused");
                let mut refused = event(context, "policy_refused", "failure");
                refused.set_str("event.reason", error.to_string());
                refused.set_str(
                    "message",
                    format!("allowlist policy refused, the previous one stays in force: {error}"),
                );
                vec![refused]
            }
        }
    }

    /// In learn mode (any rule set), the policy this observation suggests, as TOML for an
    /// operator to review and sign (`policy_proposed`, at each snapshot).
    pub fn proposal(&self, observed: &Observed, context: &EventContext) -> Vec<Event> {
        let Some(policy) = &self.policy else {
            return Vec::new();
        };
        let learning = policy
            .networks
            .as_ref()
            .is_some_and(|s| s.mode == Mode::Learn)
            || policy
                .processes
                .as_ref()
                .is_some_and(|s| s.mode == Mode::Learn)
            || policy.usb.as_ref().is_some_and(|s| s.mode == Mode::Learn);
        if !learning {
            return Vec::new();
        }
        let proposed = policy::propose(observed);
        let mut event = event(context, "policy_proposed", "success");
        event.set_str("yagura.allowlist.proposal", proposed.to_toml());
        event.set_str(
            "message",
            format!(
                "allowlist learn mode: a policy of {} executables and {} USB devices proposed",
                proposed.processes.as_ref().map_or(0, |p| p.allow.len()),
                proposed.usb.as_ref().map_or(0, |u| u.allow.len())
            ),
        );
        vec![event]
    }

    /// Judges one observation: violations become events, and in enforce mode actions.
    pub fn judge(&mut self, observed: &Observed, context: &EventContext) -> Vec<Event> {
        let Some(policy) = self.policy.clone() else {
            return Vec::new();
        };
        let mut events = self.apply_network(&policy, context);
        for violation in policy::violations(&policy, observed) {
            let (key, set, mode) = match &violation {
                Violation::Process {
                    pid, start_ticks, ..
                } => (
                    format!("process:{pid}:{start_ticks}"),
                    "processes",
                    policy.processes.as_ref().map(|s| s.mode),
                ),
                Violation::Usb { bus_id, key } => (
                    format!("usb:{bus_id}:{key}"),
                    "usb",
                    policy.usb.as_ref().map(|s| s.mode),
                ),
            };
            if !self.reported.insert(key) {
                continue;
            }
            let mode = mode.unwrap_or(Mode::Audit);
            let mut found = event(context, "violation", "failure");
            found.set_str("yagura.allowlist.rule_set", set);
            found.set_str("yagura.allowlist.mode", mode_name(mode));
            match &violation {
                Violation::Process {
                    pid,
                    name,
                    exe,
                    sha256,
                    ..
                } => {
                    found.set("process.pid", json!(pid));
                    found.set_str("process.name", name.clone());
                    if let Some(exe) = exe {
                        found.set_str("process.executable", exe.clone());
                    }
                    if let Some(hash) = sha256 {
                        found.set_str("process.hash.sha256", hash.clone());
                    }
                    found.set_str(
                        "message",
                        format!(
                            "process {name} ({pid}, {}) is not on the allowlist",
                            exe.as_deref().unwrap_or("?")
                        ),
                    );
                }
                Violation::Usb { bus_id, key } => {
                    found.set_str("device.id", key.clone());
                    found.set_str("yagura.allowlist.usb_bus_id", bus_id.clone());
                    found.set_str(
                        "message",
                        format!("USB device {key} at {bus_id} is not on the allowlist"),
                    );
                }
            }
            events.push(found);
            if mode == Mode::Enforce {
                events.push(self.enforce(&violation, observed, context));
            }
        }
        events
    }

    fn enforce(&self, violation: &Violation, observed: &Observed, context: &EventContext) -> Event {
        let result = match violation {
            Violation::Process {
                pid, start_ticks, ..
            } => kill(&self.proc_root, *pid, *start_ticks).map(|()| "process_killed"),
            Violation::Usb { bus_id, .. } => match observed.usb.get(bus_id) {
                Some(device) => usb::set_authorized(device, false)
                    .map(|()| "usb_blocked")
                    .map_err(|e| e.to_string()),
                None => Err("the device is gone".into()),
            },
        };
        match result {
            Ok(action) => {
                let mut done = event(context, action, "success");
                match violation {
                    Violation::Process { pid, name, exe, .. } => {
                        done.set("process.pid", json!(pid));
                        done.set_str("process.name", name.clone());
                        if let Some(exe) = exe {
                            done.set_str("process.executable", exe.clone());
                        }
                        done.set_str("yagura.allowlist.rule_set", "processes");
                        done.set_str(
                            "message",
                            format!("killed {name} ({pid}): not on the allowlist"),
                        );
                    }
                    Violation::Usb { bus_id, key } => {
                        done.set_str("device.id", key.clone());
                        done.set_str("yagura.allowlist.rule_set", "usb");
                        done.set_str(
                            "message",
                            format!("USB device {key} at {bus_id} deauthorised"),
                        );
                    }
                }
                done
            }
            Err(reason) => {
                let mut failed = event(context, "enforcement_failed", "failure");
                failed.set_str("event.reason", reason.clone());
                failed.set_str(
                    "message",
                    format!("could not enforce ({reason}); reported only (audit)"),
                );
                failed
            }
        }
    }

    /// Applies the network rules when they changed: the nftables ruleset in enforce mode
    /// (or its audit form), falling back to audit — and saying so — when nft cannot.
    fn apply_network(&mut self, policy: &Policy, context: &EventContext) -> Vec<Event> {
        let Some(section) = policy.networks.as_ref().filter(|s| s.mode != Mode::Learn) else {
            return Vec::new();
        };
        let mode = match section.mode {
            Mode::Enforce => nft::Mode::Enforce,
            _ => nft::Mode::Audit,
        };
        let rules = NetworkRules {
            inbound: section.inbound.clone(),
            outbound: section.outbound.clone(),
        };
        let ruleset = nft::ruleset(&rules, mode);
        if self.network.as_deref() == Some(ruleset.as_str()) {
            return Vec::new();
        }
        self.network = Some(ruleset.clone());
        match nft::apply(&ruleset) {
            Ok(()) => {
                let mut applied = event(context, "network_rules_applied", "success");
                applied.set_str("yagura.allowlist.rule_set", "networks");
                applied.set_str("yagura.allowlist.mode", mode_name(section.mode));
                applied.set_str(
                    "message",
                    "allowlist network rules applied (nftables table inet yagura)",
                );
                vec![applied]
            }
            Err(error) => {
                // A dry run: the ruleset that would be in force goes with the event, for
                // an operator to check or apply by hand.
                tracing::warn!(%error, %ruleset, "allowlist network rules not applied (dry run)");
                let mut failed = event(context, "enforcement_failed", "failure");
                failed.set_str("yagura.allowlist.rule_set", "networks");
                failed.set_str("yagura.allowlist.ruleset", ruleset);
                failed.set_str("event.reason", error.to_string());
                failed.set_str(
                    "message",
                    format!("network rules not applied ({error}); falling back to audit"),
                );
                vec![failed]
            }
        }
    }
}

/// Kills `pid` if it is still the process that started at `start_ticks` (a pid reused
/// since the observation is left alone).
fn kill(proc_root: &Path, pid: u32, start_ticks: u64) -> Result<(), String> {
    let stat = std::fs::read(proc_root.join(pid.to_string()).join("stat"))
        .map_err(|e| format!("process {pid}: {e}"))?;
    let now = processes::parse_stat(&stat).map_err(|e| format!("process {pid}: {e}"))?;
    if now.start_ticks != start_ticks {
        return Err(format!("process {pid} already exited (pid reused)"));
    }
    let status = Command::new("/bin/kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill {pid}: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::observe::{self, Roots};
    use crate::inventory::processes::ExeHasher;
    use yagura_shared::AgentKey;

    fn context() -> EventContext {
        EventContext {
            host_name: "test-host".into(),
            agent_id: uuid::Uuid::now_v7(),
        }
    }

    fn write_policy(dir: &Path, text: &str, signer: Option<&AgentKey>) -> PathBuf {
        let path = dir.join("allowlist.toml");
        std::fs::write(&path, text).expect("policy");
        let sig = dir.join("allowlist.toml.sig");
        match signer {
            Some(key) => std::fs::write(
                &sig,
                key.sign_document(policy::SIGNATURE_PURPOSE, text.as_bytes()),
            )
            .expect("sig"),
            None => {
                let _ = std::fs::remove_file(&sig);
            }
        }
        path
    }

    /// An enforcer with `text` signed by a fresh collector key and loaded.
    fn enforcing(dir: &Path, text: &str) -> Enforcer {
        let collector = AgentKey::generate().expect("key");
        let path = write_policy(dir, text, Some(&collector));
        let mut enforcer = Enforcer::new(
            PolicySource {
                path,
                signer: collector.verifying_key(),
            },
            PathBuf::from("/proc"),
        );
        assert_eq!(
            actions(&enforcer.reload_if_changed(&context())),
            ["policy_loaded"]
        );
        enforcer
    }

    fn actions(events: &[Event]) -> Vec<&str> {
        events.iter().filter_map(Event::action).collect()
    }

    #[test]
    fn a_policy_handed_over_by_the_collector_is_checked_stored_and_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let collector = AgentKey::generate().expect("key");
        let intruder = AgentKey::generate().expect("key");
        let local = "[usb]\nmode = \"audit\"\nallow = [\"1d6b:0002\"]\n";
        let path = write_policy(dir.path(), local, Some(&collector));
        let mailbox = Arc::new(PolicyMailbox::default());
        let mut enforcer = Enforcer::new(
            PolicySource {
                path: path.clone(),
                signer: collector.verifying_key(),
            },
            PathBuf::from("/proc"),
        )
        .with_mailbox(Arc::clone(&mailbox));
        assert_eq!(mailbox.held(), NO_POLICY);
        assert_eq!(
            actions(&enforcer.reload_if_changed(&context())),
            ["policy_loaded"]
        );
        // The agent now names the policy in force.
        assert_eq!(mailbox.held(), policy_sha256(local));

        let handed = |text: &str, key: &AgentKey| DeliveredPolicy {
            name: "prod".into(),
            sha256: policy_sha256(text),
            policy: text.into(),
            signature: key.sign_document(policy::SIGNATURE_PURPOSE, text.as_bytes()),
        };
        // Signed by another key: refused, files untouched, and not asked for again.
        let forged = "[usb]\nmode = \"audit\"\nallow = []\n";
        mailbox.deliver(handed(forged, &intruder));
        assert_eq!(mailbox.held(), policy_sha256(forged));
        let refused = enforcer.reload_if_changed(&context());
        assert_eq!(actions(&refused), ["policy_refused"]);
        assert_eq!(
            refused[0].get_str("yagura.allowlist.assignment"),
            Some("prod")
        );
        assert_eq!(std::fs::read_to_string(&path).expect("file"), local);
        assert!(
            enforcer
                .policy()
                .is_some_and(|p| p.usb.as_ref().is_some_and(|u| !u.allow.is_empty()))
        );

        // Signed by the collector: stored over the files and loaded.
        let assigned = "[usb]\nmode = \"enforce\"\nallow = [\"1d6b:0003\"]\n";
        mailbox.deliver(handed(assigned, &collector));
        let taken = enforcer.reload_if_changed(&context());
        assert_eq!(actions(&taken), ["policy_received", "policy_loaded"]);
        assert_eq!(std::fs::read_to_string(&path).expect("file"), assigned);
        assert_eq!(mailbox.held(), policy_sha256(assigned));
        assert_eq!(
            enforcer
                .policy()
                .and_then(|p| p.usb.as_ref())
                .map(|u| u.mode),
            Some(Mode::Enforce)
        );
        // The same policy again is not handed over.
        mailbox.deliver(handed(assigned, &collector));
        assert!(enforcer.reload_if_changed(&context()).is_empty());
    }

    #[test]
    fn a_policy_that_cannot_be_written_is_asked_for_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let collector = AgentKey::generate().expect("key");
        let mailbox = Arc::new(PolicyMailbox::default());
        let mut enforcer = Enforcer::new(
            PolicySource {
                path: dir.path().join("missing").join("allowlist.toml"),
                signer: collector.verifying_key(),
            },
            PathBuf::from("/proc"),
        )
        .with_mailbox(Arc::clone(&mailbox));
        let text = "[usb]\nmode = \"audit\"\nallow = []\n";
        mailbox.deliver(DeliveredPolicy {
            name: "prod".into(),
            sha256: policy_sha256(text),
            policy: text.into(),
            signature: collector.sign_document(policy::SIGNATURE_PURPOSE, text.as_bytes()),
        });
        assert_eq!(mailbox.held(), policy_sha256(text));
        let refused = enforcer.reload_if_changed(&context());
        assert_eq!(actions(&refused), ["policy_refused"]);
        assert!(
            refused[0]
                .get_str("event.reason")
                .is_some_and(|r| r.contains("cannot write"))
        );
        // Not the policy's fault: the agent names what it holds (nothing) again.
        assert_eq!(mailbox.held(), NO_POLICY);
        // No temporary file is left behind either.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);

        // A delivery whose name does not match its text is ignored.
        mailbox.deliver(DeliveredPolicy {
            name: "prod".into(),
            sha256: policy_sha256("something else"),
            policy: text.into(),
            signature: String::new(),
        });
        assert_eq!(mailbox.held(), NO_POLICY);
        assert!(enforcer.reload_if_changed(&context()).is_empty());
    }

    #[test]
    fn only_a_policy_signed_by_the_collector_is_taken() {
        let dir = tempfile::tempdir().expect("tmp");
        let collector = AgentKey::generate().expect("key");
        let intruder = AgentKey::generate().expect("key");
        let text = "[usb]\nmode = \"audit\"\nallow = [\"1d6b:0002\"]\n";
        let path = write_policy(dir.path(), text, Some(&collector));
        let mut enforcer = Enforcer::new(
            PolicySource {
                path: path.clone(),
                signer: collector.verifying_key(),
            },
            PathBuf::from("/proc"),
        );
        assert_eq!(
            actions(&enforcer.reload_if_changed(&context())),
            ["policy_loaded"]
        );
        let good = enforcer.policy().cloned().expect("policy");

        // Edited locally after signing: refused, the signed one stays.
        std::fs::write(
            &path,
            "[usb]\nmode = \"audit\"\nallow = [\"dead:beef\"]\n\n",
        )
        .expect("edit");
        let refused = enforcer.reload_if_changed(&context());
        assert_eq!(actions(&refused), ["policy_refused"]);
        assert!(
            refused[0]
                .get_str("event.reason")
                .is_some_and(|r| r.contains("signature"))
        );
        assert_eq!(enforcer.policy(), Some(&good));
        // Signed by another key, or not signed at all: refused too.
        write_policy(
            dir.path(),
            "[usb]\nmode = \"enforce\"\nallow = []\n",
            Some(&intruder),
        );
        assert_eq!(
            actions(&enforcer.reload_if_changed(&context())),
            ["policy_refused"]
        );
        write_policy(
            dir.path(),
            "[usb]\nmode = \"enforce\"\nallow = []\n\n\n",
            None,
        );
        let unsigned = enforcer.reload_if_changed(&context());
        assert!(
            unsigned[0]
                .get_str("event.reason")
                .is_some_and(|r| r.contains("no signature"))
        );
        assert_eq!(enforcer.policy(), Some(&good));
        // Unchanged files are not read again.
        assert!(enforcer.reload_if_changed(&context()).is_empty());
    }

    #[test]
    fn a_learned_policy_applied_in_audit_mode_finds_nothing_on_the_same_activity() {
        let roots = Roots::default();
        let mut hasher = ExeHasher::new();
        let seen = observe::observe(&roots, &mut hasher);
        let proposed = policy::propose(&seen);
        // The proposal is a policy an operator can sign as it is.
        let text = proposed.to_toml();
        let reparsed = Policy::parse(&text, "proposal").expect("valid TOML policy");
        assert_eq!(reparsed, proposed);
        assert!(
            !proposed
                .processes
                .as_ref()
                .expect("processes")
                .allow
                .is_empty()
        );
        assert!(policy::violations(&reparsed, &seen).is_empty());
    }

    #[test]
    fn a_process_not_on_the_list_is_killed_and_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        // A copy of sleep under a name and path nothing else runs.
        let sleeper = dir.path().join("yagura-test-sleeper");
        std::fs::copy("/bin/sleep", &sleeper).expect("copy sleep");
        let mut child = Command::new(&sleeper).arg("60").spawn().expect("spawn");
        let mut enforcer = enforcing(
            dir.path(),
            "[processes]\nmode = \"enforce\"\nallow = [{ path = \"/usr/*\" }]\n",
        );
        // Judge only the child: enforcement on the test machine must touch nothing else.
        let mut seen = observe::observe(&Roots::default(), &mut ExeHasher::new());
        seen.processes.retain(|(pid, _), _| *pid == child.id());
        assert_eq!(seen.processes.len(), 1);
        let events = enforcer.judge(&seen, &context());
        assert_eq!(
            actions(&events),
            ["violation", "process_killed"],
            "{events:?}"
        );
        assert_eq!(
            events[0].get_str("yagura.allowlist.rule_set"),
            Some("processes")
        );
        assert_eq!(events[0].get_str("yagura.allowlist.mode"), Some("enforce"));
        let status = child.wait().expect("wait");
        assert!(!status.success(), "killed: {status}");
        // Reported once, not at every cycle.
        assert!(enforcer.judge(&seen, &context()).is_empty());
    }

    #[test]
    fn an_unlisted_usb_device_is_deauthorised() {
        let dir = tempfile::tempdir().expect("tmp");
        let device_dir = dir.path().join("1-2");
        std::fs::create_dir_all(&device_dir).expect("dir");
        std::fs::write(device_dir.join("authorized"), "1\n").expect("authorized");
        let mut enforcer = enforcing(
            dir.path(),
            "[usb]\nmode = \"enforce\"\nallow = [\"1d6b:0002\"]\n",
        );
        let mut seen = Observed::default();
        seen.usb.insert(
            "1-2".into(),
            usb::UsbDevice {
                bus_id: "1-2".into(),
                vendor_id: "0781".into(),
                product_id: "5581".into(),
                serial: Some("4C530001".into()),
                class: None,
                manufacturer: None,
                product: None,
                authorized: Some(true),
                sys_path: device_dir.clone(),
            },
        );
        let events = enforcer.judge(&seen, &context());
        assert_eq!(actions(&events), ["violation", "usb_blocked"]);
        assert_eq!(
            std::fs::read_to_string(device_dir.join("authorized"))
                .expect("read")
                .trim(),
            "0"
        );
    }
}
