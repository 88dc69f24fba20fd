//! Installed packages, for patch visibility: which versions of what are installed, so
//! the collector can match them against advisories.
//!
//! Two package managers are read:
//!
//! * **dpkg** (Debian, Ubuntu): the status database `<root>/var/lib/dpkg/status`, parsed
//!   directly (no `dpkg-query` process, and it works on a fixture tree or a mounted
//!   image).
//! * **rpm** (RHEL, Fedora, SUSE): through the `rpm` command, because its database is
//!   SQLite or Berkeley DB depending on the distribution. No `rpm` command means no rpm
//!   packages, not an error; a hung `rpm` (a stale database lock) is killed after
//!   [`RPM_TIMEOUT`].
//!
//! A host may have both (rpm installed on Debian to build packages): both are reported,
//! each with its [`PackageSource`].

use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::take_while1;
use nom::character::complete::{char, space0};
use nom::combinator::rest;
use nom::sequence::{separated_pair, terminated};

/// Where the dpkg status database is, under the root.
pub const DPKG_STATUS: &str = "var/lib/dpkg/status";

/// The `rpm -qa` query format: name, version-release and architecture, tab-separated.
pub const RPM_QUERY_FORMAT: &str = "%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n";

/// How long `rpm -qa` may run (it takes about a second on a typical host).
pub const RPM_TIMEOUT: Duration = Duration::from_secs(120);

/// Most output read from `rpm` (a few thousand packages are ~200 KiB).
const MAX_RPM_OUTPUT: u64 = 64 * 1024 * 1024;

/// The package manager a package was found in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PackageSource {
    Dpkg,
    Rpm,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Package {
    pub name: String,
    /// As the package manager writes it: dpkg's `[epoch:]upstream[-revision]`, rpm's
    /// `version-release` (without the epoch).
    pub version: String,
    /// `amd64`, `all`, `x86_64`, `noarch`, …; `None` when the database gives none
    /// (rpm's `(none)` for `gpg-pubkey` entries).
    pub architecture: Option<String>,
    pub source: PackageSource,
}

/// Every installed package under `root` (normally `/`), sorted by (name, architecture)
/// (then version and source, so the order is total: rpm may hold several versions of one
/// package, kernels typically).
///
/// Never fails: a missing dpkg database or `rpm` command contributes nothing, and
/// other read errors are logged.
pub fn read_packages(root: &Path) -> Vec<Package> {
    let mut packages = read_dpkg(root);
    packages.extend(read_rpm(root));
    packages.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    packages
}

impl Package {
    /// The order of [`read_packages`].
    fn sort_key(&self) -> (&str, Option<&str>, &str, PackageSource) {
        (
            &self.name,
            self.architecture.as_deref(),
            &self.version,
            self.source,
        )
    }
}

fn read_dpkg(root: &Path) -> Vec<Package> {
    let path = root.join(DPKG_STATUS);
    match std::fs::read(&path) {
        Ok(bytes) => parse_dpkg_status(&String::from_utf8_lossy(&bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the dpkg database");
            Vec::new()
        }
    }
}

/// The installed packages of a dpkg status database.
///
/// The file is a sequence of stanzas separated by blank lines, each a list of
/// `Field: value` lines; a line starting with a space or tab continues the previous
/// field (descriptions, conffiles) and is skipped. Field names are case-insensitive.
/// A stanza counts when its `Status` (`want flag state`) says the package is
/// `installed`: `install ok installed`, and also `hold ok installed` (a held package is
/// installed, and is the very kind that misses updates) and `deinstall ok installed`
/// (marked for removal, still on disk). Removed packages whose configuration files are
/// left (`config-files`), half-installed and not-installed ones are not. Stanzas
/// without a name or version and unreadable lines are skipped.
pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    let mut stanza = Stanza::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            packages.extend(std::mem::take(&mut stanza).finish());
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Ok((_, (name, value))) = field_line(line) else {
            continue;
        };
        let value = value.trim_end();
        let slot = if name.eq_ignore_ascii_case("Package") {
            &mut stanza.package
        } else if name.eq_ignore_ascii_case("Version") {
            &mut stanza.version
        } else if name.eq_ignore_ascii_case("Architecture") {
            &mut stanza.architecture
        } else if name.eq_ignore_ascii_case("Status") {
            &mut stanza.status
        } else {
            continue;
        };
        *slot = Some(value);
    }
    packages.extend(stanza.finish());
    packages
}

/// `Name: value` (the value may be empty: it then lives on continuation lines).
fn field_line(line: &str) -> IResult<&str, (&str, &str)> {
    separated_pair(
        take_while1(|c: char| c != ':' && !c.is_whitespace()),
        terminated(char(':'), space0),
        rest,
    )
    .parse(line)
}

/// The fields of one dpkg stanza that matter here.
#[derive(Debug, Default)]
struct Stanza<'a> {
    package: Option<&'a str>,
    version: Option<&'a str>,
    architecture: Option<&'a str>,
    status: Option<&'a str>,
}

impl Stanza<'_> {
    fn finish(self) -> Option<Package> {
        let installed = self
            .status
            .is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"));
        let name = self.package.filter(|n| !n.is_empty())?;
        let version = self.version.filter(|v| !v.is_empty())?;
        installed.then(|| Package {
            name: name.to_string(),
            version: version.to_string(),
            architecture: self
                .architecture
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            source: PackageSource::Dpkg,
        })
    }
}

/// The packages of `rpm -qa --queryformat` [`RPM_QUERY_FORMAT`] output: one
/// `name\tversion-release\tarch` line each; other lines are skipped.
pub fn parse_rpm_query(output: &str) -> Vec<Package> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (name, version, arch) = (fields.next()?, fields.next()?, fields.next()?);
            if fields.next().is_some() || name.is_empty() || version.is_empty() {
                return None;
            }
            let arch = arch.trim_end();
            Some(Package {
                name: name.to_string(),
                version: version.to_string(),
                architecture: (!arch.is_empty() && arch != "(none)").then(|| arch.to_string()),
                source: PackageSource::Rpm,
            })
        })
        .collect()
}

fn read_rpm(root: &Path) -> Vec<Package> {
    match run_capped(rpm_command(root), RPM_TIMEOUT) {
        Ok(output) => parse_rpm_query(&String::from_utf8_lossy(&output)),
        Err(RunError::Spawn(e)) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list rpm packages");
            Vec::new()
        }
    }
}

/// `rpm -qa` with [`RPM_QUERY_FORMAT`], on the database under `root` when it is not `/`.
fn rpm_command(root: &Path) -> Command {
    let mut command = Command::new("rpm");
    if root != Path::new("/") {
        // rpm wants an absolute root.
        command
            .arg("--root")
            .arg(std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()));
    }
    command
        .args(["-qa", "--queryformat", RPM_QUERY_FORMAT])
        .env("LC_ALL", "C");
    command
}

/// Why a command's output could not be had.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("cannot start the command: {0}")]
    Spawn(io::Error),
    #[error("the command did not finish within {0:?} and was killed")]
    Timeout(Duration),
    #[error("the command failed: {0}")]
    Failed(ExitStatus),
    #[error("reading the command's output failed: {0}")]
    Read(io::Error),
}

/// Runs `command` and returns its standard output (at most [`MAX_RPM_OUTPUT`] bytes),
/// killing it after `timeout`. Standard error is discarded, standard input is empty.
///
/// The output is read on a thread so that the deadline holds even while the command
/// writes nothing; if the command outlives it the thread is left to finish on its own
/// once the pipe closes.
fn run_capped(mut command: Command, timeout: Duration) -> Result<Vec<u8>, RunError> {
    let deadline = Instant::now() + timeout;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(RunError::Spawn)?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(RunError::Read(io::Error::other("no stdout pipe")));
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut output = Vec::new();
        let result = stdout
            .take(MAX_RPM_OUTPUT)
            .read_to_end(&mut output)
            .map(|_| output);
        let _ = tx.send(result);
    });
    let kill = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
        RunError::Timeout(timeout)
    };
    let output = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(result) => result.map_err(RunError::Read)?,
        Err(_) => return Err(kill(&mut child)),
    };
    // The output is complete: the command closed it, normally by exiting.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => return Err(kill(&mut child)),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(RunError::Read(e)),
        }
    };
    if !status.success() {
        return Err(RunError::Failed(status));
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STATUS: &str = "\
Package: dpkg
Essential: yes
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 6609
Maintainer: Dpkg Developers <debian-dpkg@lists.debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 1.21.22
Depends: tar (>= 1.28-1)
Conffiles:
 /etc/alternatives/README 7be88b21f7e386c8d5a8790c2461c92b
 /etc/dpkg/dpkg.cfg f4413ffb515f8f753624ae3bb365b81b
Description: Debian package management system
 This package provides the low-level infrastructure for handling the
 installation and removal of Debian software packages.
 .
 For Debian package development tools, install dpkg-dev.
Homepage: https://wiki.debian.org/Teams/Dpkg

Package: oldpkg
Status: deinstall ok config-files
Priority: optional
Architecture: amd64
Version: 0.9-1
Conffiles:
 /etc/oldpkg.conf 0123456789abcdef0123456789abcdef obsolete

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Package: fake-from-description
 Version: 6.6.6
 Status: install ok installed

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4

package: held
status: hold ok installed
architecture: all
version: 1:2.0~rc1-3

Package: half
Status: install reinstreq half-installed
Architecture: amd64
Version: 1.0

Package: noversion
Status: install ok installed
Architecture: amd64

Status: install ok installed
Version: 1.0
Architecture: amd64

Package: noarch
Status: install ok installed
Version: 3
this line is garbage
: neither is this
Package : not a field name either
";

    fn pkg(name: &str, version: &str, arch: Option<&str>, source: PackageSource) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            architecture: arch.map(str::to_string),
            source,
        }
    }

    #[test]
    fn dpkg_status_keeps_installed_packages_only() {
        let dpkg = |n, v, a| pkg(n, v, a, PackageSource::Dpkg);
        assert_eq!(
            parse_dpkg_status(STATUS),
            vec![
                dpkg("dpkg", "1.21.22", Some("amd64")),
                dpkg("libc6", "2.36-9+deb12u4", Some("i386")),
                dpkg("libc6", "2.36-9+deb12u4", Some("amd64")),
                dpkg("held", "1:2.0~rc1-3", Some("all")),
                dpkg("noarch", "3", None),
            ]
        );
    }

    #[test]
    fn dpkg_status_with_crlf_and_blank_separator_lines() {
        let text = "Package: a\r\nStatus: install ok installed\r\nVersion: 1\r\n \t \r\n\
                    Package: b\r\nStatus: install ok installed\r\nVersion: 2 \r\n";
        let dpkg = |n, v| pkg(n, v, None, PackageSource::Dpkg);
        assert_eq!(
            parse_dpkg_status(text),
            vec![dpkg("a", "1"), dpkg("b", "2")]
        );
        assert!(parse_dpkg_status("").is_empty());
        assert!(parse_dpkg_status("\n\n\n").is_empty());
    }

    #[test]
    fn rpm_query_output() {
        let output = "bash\t5.1.8-9.el9\tx86_64\n\
                      gpg-pubkey\t8483c65d-5ccc5b19\t(none)\n\
                      kernel\t5.14.0-427.el9\tx86_64\n\
                      kernel\t5.14.0-362.el9\tx86_64\n\
                      tzdata\t2024a-1.el9\tnoarch\n\
                      \n\
                      broken line\n\
                      \tno-name\tx86_64\n\
                      too\tmany\tfields\there\n\
                      crlf\t1-1\ti686\r\n";
        let rpm = |n, v, a| pkg(n, v, a, PackageSource::Rpm);
        assert_eq!(
            parse_rpm_query(output),
            vec![
                rpm("bash", "5.1.8-9.el9", Some("x86_64")),
                rpm("gpg-pubkey", "8483c65d-5ccc5b19", None),
                rpm("kernel", "5.14.0-427.el9", Some("x86_64")),
                rpm("kernel", "5.14.0-362.el9", Some("x86_64")),
                rpm("tzdata", "2024a-1.el9", Some("noarch")),
                rpm("crlf", "1-1", Some("i686")),
            ]
        );
    }

    #[test]
    fn reads_a_fixture_root_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = dir.path().join(DPKG_STATUS);
        std::fs::create_dir_all(status.parent().expect("parent")).expect("mkdir");
        std::fs::write(&status, STATUS).expect("status");
        // rpm, if this host has it, finds no database under the fixture root.
        let names: Vec<(String, Option<String>)> = read_packages(dir.path())
            .into_iter()
            .map(|p| (p.name, p.architecture))
            .collect();
        let want = [
            ("dpkg", Some("amd64")),
            ("held", Some("all")),
            ("libc6", Some("amd64")),
            ("libc6", Some("i386")),
            ("noarch", None),
        ]
        .map(|(n, a)| (n.to_string(), a.map(str::to_string)));
        assert_eq!(names, want);
    }

    #[test]
    fn empty_root_has_no_packages() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_packages(dir.path()).is_empty());
    }

    #[test]
    fn rpm_command_line() {
        let command = rpm_command(Path::new("/"));
        assert_eq!(command.get_program(), "rpm");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["-qa", "--queryformat", RPM_QUERY_FORMAT]);
        let command = rpm_command(Path::new("/mnt/image"));
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(&args[..2], ["--root", "/mnt/image"]);
    }

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        command
    }

    #[test]
    fn run_capped_returns_output_or_says_why_not() {
        let output = run_capped(sh("printf 'a\\t1-1\\tnoarch\\n'"), Duration::from_secs(30))
            .expect("output");
        assert_eq!(
            parse_rpm_query(&String::from_utf8_lossy(&output)),
            vec![pkg("a", "1-1", Some("noarch"), PackageSource::Rpm)]
        );
        let failed = run_capped(sh("echo partial; exit 3"), Duration::from_secs(30));
        assert!(matches!(failed, Err(RunError::Failed(_))), "{failed:?}");
        let absent = run_capped(
            Command::new("/nonexistent/rpm-for-yagura-tests"),
            Duration::from_secs(30),
        );
        assert!(
            matches!(&absent, Err(RunError::Spawn(e)) if e.kind() == io::ErrorKind::NotFound),
            "{absent:?}"
        );
    }

    #[test]
    fn run_capped_kills_a_hung_command() {
        let started = Instant::now();
        let hung = run_capped(sh("exec sleep 30"), Duration::from_millis(300));
        assert!(matches!(hung, Err(RunError::Timeout(_))), "{hung:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// The machine's own packages, on Debian: dpkg itself is installed.
    #[test]
    fn reads_this_machines_packages() {
        if !Path::new("/").join(DPKG_STATUS).exists() {
            eprintln!("not a dpkg system: skipped");
            return;
        }
        let packages = read_packages(Path::new("/"));
        let dpkg = packages
            .iter()
            .find(|p| p.name == "dpkg" && p.source == PackageSource::Dpkg)
            .expect("dpkg is installed");
        assert!(!dpkg.version.is_empty());
        assert!(dpkg.architecture.is_some());
        assert!(packages.is_sorted_by_key(Package::sort_key));
    }

    /// A dpkg stanza for the round-trip property.
    fn stanza() -> impl Strategy<Value = (String, String, Option<String>, bool, String)> {
        (
            "[a-z0-9][a-z0-9+.-]{0,20}",
            "[0-9]{1,2}(:)?[0-9a-z.+~-]{1,12}",
            proptest::option::of("[a-z0-9]{2,8}"),
            any::<bool>(),
            // Continuation lines are never blank (dpkg writes ` .` for an empty line).
            proptest::collection::vec("[!-~][ -~]{0,29}", 0..4)
                .prop_map(|lines| lines.iter().map(|l| format!("\n {l}")).collect::<String>()),
        )
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in any::<String>()) {
            let _ = parse_dpkg_status(&text);
            let _ = parse_rpm_query(&text);
        }

        #[test]
        fn field_heavy_input_never_panics(
            parts in proptest::collection::vec(prop_oneof![
                Just("Package:"), Just("Status:"), Just(" install ok installed"),
                Just("Version:"), Just("Architecture:"), Just("\n"), Just("\n\n"), Just(" "),
                Just("\t"), Just(":"), Just("x"), Just("\r\n"), Just("\u{e9}"),
            ], 0..60)
        ) {
            let text = parts.concat();
            for p in parse_dpkg_status(&text) {
                prop_assert!(!p.name.is_empty() && !p.version.is_empty());
            }
            for p in parse_rpm_query(&text.replace(':', "\t")) {
                prop_assert!(!p.name.is_empty() && !p.version.is_empty());
            }
        }

        #[test]
        fn dpkg_stanzas_round_trip(stanzas in proptest::collection::vec(stanza(), 0..8)) {
            let mut text = String::new();
            let mut want = Vec::new();
            for (name, version, arch, installed, description) in &stanzas {
                let status = if *installed { "install ok installed" } else { "deinstall ok config-files" };
                text.push_str(&format!("Package: {name}\nStatus: {status}\n"));
                if let Some(arch) = arch {
                    text.push_str(&format!("Architecture: {arch}\n"));
                }
                text.push_str(&format!("Description: short{description}\nVersion: {version}\n\n"));
                if *installed {
                    want.push(pkg(name, version, arch.as_deref(), PackageSource::Dpkg));
                }
            }
            prop_assert_eq!(parse_dpkg_status(&text), want);
        }

        #[test]
        fn rpm_lines_round_trip(
            rows in proptest::collection::vec(
                ("[A-Za-z0-9_+.-]{1,20}", "[0-9a-z.~^_+]{1,10}-[0-9a-z._]{1,10}", "[a-z0-9_]{2,8}"),
                0..10,
            )
        ) {
            let output: String = rows.iter().map(|(n, v, a)| format!("{n}\t{v}\t{a}\n")).collect();
            let want: Vec<Package> = rows
                .iter()
                .map(|(n, v, a)| pkg(n, v, Some(a), PackageSource::Rpm))
                .collect();
            prop_assert_eq!(parse_rpm_query(&output), want);
        }
    }
}
