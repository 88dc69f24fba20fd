//! `yagura rules check` and `yagura rules eval` as a detection engineer runs them: exit
//! codes, `file:line: message` on standard error, matches as NDJSON on standard output.

use std::path::PathBuf;
use std::process::Command;

use yagura_e2e::{binaries, copy_dir};

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

fn detections() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../detections")
}

/// The project's rule pack passes its own fixtures; swapping one rule's fixtures (so the
/// events that must fire are the ones that must not) makes `rules test` fail and name it.
#[test]
fn the_rule_pack_passes_its_fixtures_and_a_contradicted_fixture_fails() -> anyhow::Result<()> {
    let run = |dir: &std::path::Path| -> anyhow::Result<(bool, String, String)> {
        let out = Command::new(&binaries().collector)
            .args(["rules", "test"])
            .arg(dir)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, stdout, stderr) = run(&detections())?;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("FAILED") && !stdout.contains("MISSING"),
        "{stdout}"
    );

    let tmp = tempfile::tempdir()?;
    let copy = tmp.path().join("detections");
    copy_dir(&detections(), &copy)?;
    let fixtures = copy.join("fixtures/linux/auth");
    let matching = fixtures.join("sudo_not_in_sudoers.match.ndjson");
    let not_matching = fixtures.join("sudo_not_in_sudoers.nomatch.ndjson");
    let swap = tmp.path().join("swap");
    std::fs::rename(&matching, &swap)?;
    std::fs::rename(&not_matching, &matching)?;
    std::fs::rename(&swap, &not_matching)?;
    let (ok, stdout, stderr) = run(&copy)?;
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("did not fire"), "{stderr}");
    assert!(
        stderr.contains(
            "sudo_not_in_sudoers.nomatch.ndjson:1: `sudo attempted by a user not in sudoers` fired"
        ),
        "{stderr}"
    );
    Ok(())
}
