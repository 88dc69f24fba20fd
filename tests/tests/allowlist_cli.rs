//! `yagura allowlist key|sign` as an operator runs them: the collector signs a policy, an
//! agent takes it with the printed key, and refuses it once edited on the endpoint.

use std::process::Command;

use yagura_agent::allowlist::policy::Policy;
use yagura_e2e::binaries;

#[test]
fn the_collector_signs_policies_agents_verify_and_local_edits_are_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let data_arg = data.display().to_string();
    let key = Command::new(&binaries().collector)
        .args(["allowlist", "key", "--data-dir", &data_arg])
        .output()?;
    assert!(key.status.success());
    let signer = yagura_shared::verifying_key_from_base64(String::from_utf8(key.stdout)?.trim())?;

    let policy = tmp.path().join("allowlist.toml");
    let text = "[processes]\nmode = \"audit\"\nallow = [{ path = \"/usr/bin/*\" }]\n\n[usb]\nmode = \"enforce\"\nallow = [\"1d6b:0002\"]\n";
    std::fs::write(&policy, text)?;
    let signed = Command::new(&binaries().collector)
        .args(["allowlist", "sign"])
        .arg(&policy)
        .args(["--data-dir", &data_arg])
        .output()?;
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let signature = std::fs::read_to_string(tmp.path().join("allowlist.toml.sig"))?;
    let taken = Policy::verified(text, Some(&signature), &signer, "allowlist.toml")?;
    assert!(taken.usb.is_some());
    let edited = text.replace("1d6b:0002", "0781:5581");
    assert!(Policy::verified(&edited, Some(&signature), &signer, "allowlist.toml").is_err());

    // A policy agents would refuse is not signed: the error names the file.
    std::fs::write(
        &policy,
        "[usb]\nmode = \"enforce\"\nallow = [\"nonsense\"]\n",
    )?;
    let refused = Command::new(&binaries().collector)
        .args(["allowlist", "sign"])
        .arg(&policy)
        .args(["--data-dir", &data_arg])
        .output()?;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("allowlist.toml") && said.contains("nonsense"),
        "{said}"
    );
    Ok(())
}
