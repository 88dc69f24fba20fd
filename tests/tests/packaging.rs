//! The Debian packages: `packaging/deb/build` makes `yagura` and `yagura-agent` from the
//! built binaries; `dpkg-deb --info` shows each package with the maintainer scripts that
//! create the user, directories and unit, its contents hold the systemd unit, binary and
//! conffile; and the units pass `systemd-analyze verify` (but for the binary, which is
//! only in the package) with the hardening `systemd-analyze security` scores.

use std::path::{Path, PathBuf};
use std::process::Command;

use yagura_e2e::binaries;

fn strict() -> bool {
    std::env::var("YAGURA_TEST_STRICT").is_ok_and(|v| v == "1")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn debian_packages_carry_binaries_units_conffiles_and_maintainer_scripts() -> anyhow::Result<()> {
    if !have("dpkg-deb") {
        anyhow::ensure!(!strict(), "YAGURA_TEST_STRICT=1 and dpkg-deb is missing");
        eprintln!("skipped: dpkg-deb is not installed");
        return Ok(());
    }
    let bin_dir = binaries()
        .collector
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("binary directory"))?;
    let out = tempfile::tempdir()?;
    let built = run(Command::new("sh")
        .arg(workspace().join("packaging/deb/build"))
        .arg(&bin_dir)
        .arg(out.path())
        .env("YAGURA_DEB_COMPRESSION", "none"))?;
    let debs: Vec<&str> = built.lines().collect();
    assert_eq!(debs.len(), 2, "{built}");

    for (deb, package, unit, binary, conffile) in [
        (
            debs[0],
            "yagura",
            "yagura.service",
            "usr/bin/yagura",
            "/etc/yagura/collector.toml",
        ),
        (
            debs[1],
            "yagura-agent",
            "yagura-agent.service",
            "usr/bin/yagura-agent",
            "/etc/yagura/agent.toml",
        ),
    ] {
        let info = run(Command::new("dpkg-deb").args(["--info", deb]))?;
        assert!(info.contains(&format!("Package: {package}\n")), "{info}");
        assert!(info.contains("Version: 0.1.0"), "{info}");
        for script in ["postinst", "prerm", "postrm", "conffiles"] {
            assert!(info.contains(script), "{package} has no {script}: {info}");
        }
        let control = out.path().join(format!("{package}-control"));
        run(Command::new("dpkg-deb").args(["-e", deb]).arg(&control))?;
        let postinst = std::fs::read_to_string(control.join("postinst"))?;
        assert!(
            postinst.contains(&format!("systemctl enable {unit}")),
            "{package} registers its unit"
        );
        if package == "yagura" {
            assert!(postinst.contains("adduser --system"), "creates its user");
            assert!(postinst.contains("install -d -o yagura -g yagura -m 0750 /var/lib/yagura"));
        } else {
            assert!(postinst.contains("install -d -o root -g root -m 0700 /var/lib/yagura-agent"));
        }
        let conffiles = std::fs::read_to_string(control.join("conffiles"))?;
        assert_eq!(conffiles.trim(), conffile);

        let contents = run(Command::new("dpkg-deb").args(["--contents", deb]))?;
        for path in [
            format!("./lib/systemd/system/{unit}"),
            format!("./{binary}"),
        ] {
            assert!(
                contents.contains(&path),
                "{package} lacks {path}:\n{contents}"
            );
        }

        // The unit as shipped: valid, hardened.
        let tree = out.path().join(format!("{package}-tree"));
        run(Command::new("dpkg-deb").args(["-x", deb]).arg(&tree))?;
        let unit_file = tree.join("lib/systemd/system").join(unit);
        let text = std::fs::read_to_string(&unit_file)?;
        for key in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=",
        ] {
            assert!(text.contains(key), "{unit} lacks {key}");
        }
        if have("systemd-analyze") {
            let verify = Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(&unit_file)
                .output()?;
            let complaints: Vec<String> = String::from_utf8_lossy(&verify.stderr)
                .lines()
                .filter(|l| !l.contains("is not executable"))
                .map(str::to_string)
                .collect();
            assert!(complaints.is_empty(), "{unit}: {complaints:?}");
            let security = Command::new("systemd-analyze")
                .args(["security", "--offline=yes"])
                .arg(&unit_file)
                .output()?;
            let report = String::from_utf8_lossy(&security.stdout).into_owned()
                + &String::from_utf8_lossy(&security.stderr);
            let exposure: f64 = report
                .lines()
                .find_map(|l| l.split("exposure level for ").nth(1))
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("no exposure level in: {report}"))?;
            // The collector needs nothing; the agent keeps what enforcement needs.
            let limit = if package == "yagura" { 2.0 } else { 4.0 };
            println!("{unit}: exposure {exposure} (limit {limit})");
            assert!(exposure <= limit, "{unit}: exposure {exposure}\n{report}");
        }
    }
    Ok(())
}
