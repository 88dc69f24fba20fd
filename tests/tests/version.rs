//! `yagura version --deps` and `yagura-agent version --deps`: the binaries list the
//! packages they were built with, as locked, for checking against advisories.

use std::process::Command;

use yagura_e2e::binaries;

fn listing(binary: &std::path::Path) -> anyhow::Result<String> {
    let output = Command::new(binary).args(["version", "--deps"]).output()?;
    anyhow::ensure!(output.status.success(), "{output:?}");
    Ok(String::from_utf8(output.stdout)?)
}

fn locked_version(name: &str) -> Option<String> {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).ok()?;
    let at = lock.find(&format!("[[package]]\nname = \"{name}\"\nversion = \""))?;
    let rest = &lock[at..];
    let start = rest.find("version = \"")? + "version = \"".len();
    Some(rest[start..].split('"').next()?.to_string())
}

#[test]
fn both_binaries_list_their_locked_dependencies() -> anyhow::Result<()> {
    let collector = listing(&binaries().collector)?;
    assert!(collector.starts_with("yagura 0.1.0\n"), "{collector}");
    for name in ["tantivy", "rustls", "axum", "ed25519-dalek"] {
        let version = locked_version(name).expect(name);
        assert!(
            collector.lines().any(|l| l == format!("{name} {version}")),
            "{name} {version} missing"
        );
    }
    let agent = listing(&binaries().agent)?;
    assert!(agent.starts_with("yagura-agent 0.1.0\n"), "{agent}");
    assert!(agent.lines().any(|l| l.starts_with("rustls ")));
    assert!(!agent.lines().any(|l| l.starts_with("tantivy ")));
    Ok(())
}
