//! SigmaHQ's 210 Linux rules (tests/fixtures/sigmahq, DRL 1.1, see its README and
//! LICENSE) load and compile under Yagura's field mapping, and representative ones fire
//! on Yagura's ECS events of the activity they describe — and stay quiet on the benign
//! neighbour of that activity.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::json;
use yagura_collector::detect::{Detector, ecs_pipeline, load_rules};
use yagura_shared::Event;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigmahq/rules/linux")
}

#[test]
fn every_sigmahq_linux_rule_loads_and_compiles() {
    let pipeline = ecs_pipeline().expect("pipeline");
    let set = load_rules(&[rules_dir()], &pipeline).expect("load");
    let errors: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(set.files.len(), 210);
    assert_eq!(set.detection_rules(), 210);
    let detector = Detector::new(&set, pipeline).expect("detector");
    assert_eq!(detector.detection_rules(), 210);
}

fn event(fields: serde_json::Value) -> Event {
    let mut event = Event::new(chrono::Utc::now());
    event.set_str("host.name", "web-1");
    if let serde_json::Value::Object(map) = fields {
        for (key, value) in map {
            event.set(&key, value);
        }
    }
    event
}

/// (what happened, the event, the SigmaHQ rule id that must fire, or must not).
fn cases() -> Vec<(&'static str, Event, &'static str, bool)> {
    vec![
        (
            "base64 decoding (process_creation: Image, CommandLine)",
            event(json!({
                "event.category": ["process"],
                "event.type": ["start"],
                "process.executable": "/usr/bin/base64",
                "process.command_line": "base64 -d /tmp/payload.b64",
            })),
            "e2072cab-8c9a-459b-b63c-40ae79e27031",
            true,
        ),
        (
            "base64 encoding is not decoding",
            event(json!({
                "event.category": ["process"],
                "event.type": ["start"],
                "process.executable": "/usr/bin/base64",
                "process.command_line": "base64 /etc/hostname",
            })),
            "e2072cab-8c9a-459b-b63c-40ae79e27031",
            false,
        ),
        (
            "a file in /etc/sudoers.d (file_event: TargetFilename, Image)",
            event(json!({
                "event.category": ["file"],
                "event.type": ["creation"],
                "file.path": "/etc/sudoers.d/99-backdoor",
                "process.executable": "/usr/bin/vim",
            })),
            "ddb26b76-4447-4807-871f-1b035b2bfa5d",
            true,
        ),
        (
            "dpkg's own sudoers.d file is filtered out",
            event(json!({
                "event.category": ["file"],
                "event.type": ["creation"],
                "file.path": "/etc/sudoers.d/README.dpkg-new",
                "process.executable": "/usr/bin/dpkg",
            })),
            "ddb26b76-4447-4807-871f-1b035b2bfa5d",
            false,
        ),
        (
            "a connection to an ngrok tunnel (network_connection: DestinationHostname)",
            event(json!({
                "event.category": ["network"],
                "event.type": ["connection"],
                "destination.domain": "tunnel.eu.ngrok.com",
                "destination.port": 443,
            })),
            "19bf6fdb-7721-4f3d-867f-53467f6a5db6",
            true,
        ),
        (
            "sysctl disabling ASLR (auditd: type, a0, a1, a2)",
            event(json!({
                "auditd.record_types": ["SYSCALL", "EXECVE", "CWD", "PATH"],
                "auditd.execve": {"argc": "3", "a0": "sysctl", "a1": "-w", "a2": "kernel.randomize_va_space=0"},
            })),
            "e497a24e-9345-4a62-9803-b06d7d7cb132",
            true,
        ),
        (
            "sysctl reading ASLR",
            event(json!({
                "auditd.record_types": ["SYSCALL", "EXECVE"],
                "auditd.execve": {"argc": "2", "a0": "sysctl", "a1": "kernel.randomize_va_space"},
            })),
            "e497a24e-9345-4a62-9803-b06d7d7cb132",
            false,
        ),
        (
            "a watched tool run (auditd: key)",
            event(json!({
                "auditd.record_types": ["SYSCALL", "PATH"],
                "auditd.syscall": {"key": "susp_activity", "exe": "/usr/bin/nmap"},
            })),
            "f7158a64-6204-4d6d-868a-6e6378b467e0",
            true,
        ),
        (
            "sshd reporting an attack on its crypto (sshd: keywords in the message)",
            event(json!({
                "event.dataset": "system.auth",
                "process.name": "sshd",
                "message": "Corrupted MAC on input. [preauth]",
            })),
            "e76b413a-83d0-4b94-8e4c-85db4a5b8bdc",
            true,
        ),
        (
            "an ordinary sshd login",
            event(json!({
                "event.dataset": "system.auth",
                "process.name": "sshd",
                "message": "Accepted publickey for alice from 10.0.0.8 port 50122 ssh2",
            })),
            "e76b413a-83d0-4b94-8e4c-85db4a5b8bdc",
            false,
        ),
        (
            "the same sshd words in a web server's error log are not sshd's",
            event(json!({
                "event.dataset": "nginx.error",
                "process.name": "nginx",
                "message": "upstream said: Corrupted MAC on input",
            })),
            "e76b413a-83d0-4b94-8e4c-85db4a5b8bdc",
            false,
        ),
        (
            "a process rule does not read file events",
            event(json!({
                "event.category": ["file"],
                "event.type": ["creation"],
                "process.executable": "/usr/bin/base64",
                "process.command_line": "base64 -d /tmp/payload.b64",
            })),
            "e2072cab-8c9a-459b-b63c-40ae79e27031",
            false,
        ),
    ]
}

#[test]
fn the_field_mapping_makes_representative_rules_fire_on_ecs_events() {
    let pipeline = ecs_pipeline().expect("pipeline");
    let set = load_rules(&[rules_dir()], &pipeline).expect("load");
    let mut detector = Detector::new(&set, pipeline).expect("detector");
    let mut failures = Vec::new();
    for (what, event, rule, fires) in cases() {
        let fired: HashSet<String> = detector
            .process(event)
            .into_iter()
            .filter_map(|d| d.rule.id)
            .collect();
        if fired.contains(rule) != fires {
            failures.push(format!(
                "{what}: rule {rule} {} (fired: {fired:?})",
                if fires { "did not fire" } else { "fired" }
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Without the mapping, the same events would not fire the generic-name rules: the
/// test above proves the mapping, not a coincidence of names.
#[test]
fn without_the_mapping_generic_rules_do_not_fire_on_ecs_events() {
    let empty: rsigma_eval::Pipeline =
        rsigma_eval::parse_pipeline("name: none\ntransformations: []\n").expect("pipeline");
    let set = load_rules(&[rules_dir()], &empty).expect("load");
    let mut detector = Detector::new(&set, empty).expect("detector");
    let (_, event, rule, _) = cases().remove(0);
    assert!(
        !detector
            .process(event)
            .iter()
            .any(|d| d.rule.id.as_deref() == Some(rule))
    );
}
