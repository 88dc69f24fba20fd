//! `yagura rules check` and `yagura rules eval` as a detection engineer runs them: exit
//! codes, `file:line: message` on standard error, matches as NDJSON on standard output.

use std::path::PathBuf;
use std::process::Command;

use yagura_e2e::binaries;

fn sigmahq() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../collector/tests/fixtures/sigmahq/rules/linux")
}

#[test]
fn check_passes_on_sigmahq_and_names_the_line_of_a_broken_rule() -> anyhow::Result<()> {
    let ok = Command::new(&binaries().collector)
        .args(["rules", "check"])
        .arg(sigmahq())
        .output()?;
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.contains("210 detection rules"), "{out}");

    let tmp = tempfile::tempdir()?;
    let broken = tmp.path().join("broken.yml");
    std::fs::write(
        &broken,
        "title: Broken\nlogsource:\n    product: linux\ndetection:\n    selection:\n        a: b\n    condition: selection or\nlevel: low\n",
    )?;
    let failed = Command::new(&binaries().collector)
        .args(["rules", "check"])
        .arg(tmp.path())
        .output()?;
    let err = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}:7: Condition parse error", broken.display())),
        "{err}"
    );
    Ok(())
}

#[test]
fn eval_prints_each_match_as_a_json_line() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let events = tmp.path().join("events.ndjson");
    std::fs::write(
        &events,
        concat!(
            r#"{"@timestamp":"2026-11-25T10:00:00Z","event":{"category":["process"],"type":["start"]},"process":{"executable":"/usr/bin/base64","command_line":"base64 -d payload.b64"}}"#,
            "\n",
            r#"{"@timestamp":"2026-11-25T10:00:01Z","event":{"category":["process"],"type":["start"]},"process":{"executable":"/usr/bin/ls","command_line":"ls"}}"#,
            "\n"
        ),
    )?;
    let run = Command::new(&binaries().collector)
        .args(["rules", "eval"])
        .arg(sigmahq())
        .arg("--events")
        .arg(&events)
        .output()?;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0]["rule"]["id"],
        "e2072cab-8c9a-459b-b63c-40ae79e27031"
    );
    assert_eq!(lines[0]["kind"], "detection");
    Ok(())
}
