//! `yagura check-config` and `yagura-agent check-config` as an operator runs them: every
//! error of a file at once, each with its line, column and the dotted key at fault, exit
//! 1; a good file is `ok`, exit 0.

use std::path::Path;
use std::process::Command;

use yagura_e2e::binaries;

fn check(program: &Path, file: &Path) -> anyhow::Result<(bool, String, String)> {
    let output = Command::new(program)
        .arg("check-config")
        .arg(file)
        .output()?;
    Ok((
        output.status.success(),
        String::from_utf8(output.stdout)?,
        String::from_utf8(output.stderr)?,
    ))
}

#[test]
fn agent_config_errors_name_line_and_key() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("agent.toml");
    std::fs::write(
        &file,
        "state_dir = \"/var/lib/yagura-agent\"\nheartbeat_interval_seconds = \"often\"\n[ship]\nbatch_max_evnts = 5\n[[sources]]\npaths = [\"/var/log/syslog\"]\n[[sources]]\npaths = [\"/var/log/auth.log\"]\nparser = 7\n",
    )?;
    let (ok, _, said) = check(&binaries().agent, &file)?;
    assert!(!ok);
    let path = file.display();
    for expected in [
        format!(
            "{path}:2:30: `heartbeat_interval_seconds`: invalid type: string \"often\", expected u64"
        ),
        format!("{path}:4:1: `ship.batch_max_evnts`: unknown field `batch_max_evnts`"),
        format!("{path}:9:10: `sources[1].parser`: invalid type: integer `7`"),
    ] {
        assert!(said.contains(&expected), "{expected}\nnot in:\n{said}");
    }
    // A check beyond the types, located by its key.
    std::fs::write(&file, "state_dir = \"\"\n")?;
    let (ok, _, said) = check(&binaries().agent, &file)?;
    assert!(!ok);
    assert!(said.contains(&format!("{path}:1: `state_dir`:")), "{said}");

    std::fs::write(&file, "state_dir = \"/var/lib/yagura-agent\"\n")?;
    let (ok, out, _) = check(&binaries().agent, &file)?;
    assert!(ok && out.contains(": ok"), "{out}");
    Ok(())
}

#[test]
fn collector_config_errors_name_line_and_key() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("collector.toml");
    std::fs::write(
        &file,
        "data_dir = \"data\"\n[ingest]\nmax_body_bytes = \"lots\"\n[index]\ncomit_interval_ms = 5\n",
    )?;
    let (ok, _, said) = check(&binaries().collector, &file)?;
    assert!(!ok);
    let path = file.display();
    for expected in [
        format!(
            "{path}:3:18: `ingest.max_body_bytes`: invalid type: string \"lots\", expected usize"
        ),
        format!(
            "{path}:5:1: `index.comit_interval_ms`: unknown field `comit_interval_ms`, expected one of `enabled`, `commit_interval_ms`"
        ),
    ] {
        assert!(said.contains(&expected), "{expected}\nnot in:\n{said}");
    }
    std::fs::write(
        &file,
        "data_dir = \"data\"\n[ingest]\nmax_body_bytes = 10\n",
    )?;
    let (ok, _, said) = check(&binaries().collector, &file)?;
    assert!(!ok);
    assert!(
        said.contains(&format!("{path}:3: `ingest.max_body_bytes`: ")),
        "{said}"
    );
    // The same checks stop `serve` before it starts.
    let serve = Command::new(&binaries().collector)
        .args(["serve", "--config"])
        .arg(&file)
        .output()?;
    assert!(!serve.status.success());

    std::fs::write(&file, "data_dir = \"data\"\n")?;
    let (ok, out, _) = check(&binaries().collector, &file)?;
    assert!(ok && out.contains(": ok"), "{out}");
    Ok(())
}
