//! Harness for Yagura's end-to-end tests: builds the real `yagura` and `yagura-agent`
//! binaries once, starts them in temporary directories on loopback ports, and talks to
//! the collector over HTTPS with the certificate pinned, as an agent or analyst would.

pub mod browser;
pub mod receiver;

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Paths of the two binaries, built once per test process.
pub struct Binaries {
    pub collector: PathBuf,
    pub agent: PathBuf,
}

/// Builds the binaries with the same cargo and profile as the tests, then finds them.
/// `CARGO_BIN_EXE_*` only covers the test's own package, hence this.
/// `YAGURA_E2E_RELEASE=1` builds and runs release binaries from debug tests (benchmarks
/// that drive the binaries need the product's speed, not the harness's).
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut command = Command::new(cargo);
        // Inherited, CARGO_MANIFEST_DIR makes build scripts (ring's) see a changed input.
        command.env_remove("CARGO_MANIFEST_DIR");
        command.current_dir(&workspace).args([
            "build",
            "--bins",
            "-p",
            "yagura-collector",
            "-p",
            "yagura-agent",
        ]);
        let release =
            !cfg!(debug_assertions) || std::env::var("YAGURA_E2E_RELEASE").is_ok_and(|v| v == "1");
        if release {
            command.arg("--release");
        }
        let status = command
            .status()
            .expect("running cargo build for the binaries");
        assert!(status.success(), "cargo build of the binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        let profile = if release { "release" } else { "debug" };
        let dir = target.join(profile);
        Binaries {
            collector: dir.join("yagura"),
            agent: dir.join("yagura-agent"),
        }
    })
}

/// A child process that is killed when dropped, with its stdout lines on a channel.
pub struct Process {
    child: Child,
    pub lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Process {
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Process { child, lines, name })
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it.
    pub fn expect_line(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim_start().strip_prefix(prefix) {
                        return Ok(rest.trim().to_string());
                    }
                }
                Err(_) => bail!(
                    "{} printed no line starting with {prefix:?} in {timeout:?}",
                    self.name
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process gets no chance to flush or clean up.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGINT or SIGTERM, then waits up to `timeout` for the exit status.
    pub fn stop(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill_hard();
                bail!(
                    "{} did not stop within {timeout:?} after SIG{signal}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// A collector running from a config file in its own directory.
pub struct Collector {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub url: String,
    pub fingerprint: String,
    pub api_token: String,
    pub process: Process,
    /// `serve --role` (a cluster node), or `None` for a collector on its own.
    pub role: Option<String>,
}

impl Collector {
    /// Writes `collector.toml` (listening on an ephemeral loopback port) and starts it.
    pub fn start(dir: &Path, extra_config: &str) -> anyhow::Result<Self> {
        Self::start_as(dir, extra_config, None)
    }

    /// [`Self::start`] with `serve --role <role>` (a node of a cluster).
    pub fn start_as(dir: &Path, extra_config: &str, role: Option<&str>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n[index]\ncommit_interval_ms = 200\n{extra_config}"
            ),
        )?;
        let process = Self::spawn(dir, &config, role)?;
        let url = process.expect_line("yagura collector listening on", Duration::from_secs(60))?;
        let fingerprint =
            process.expect_line("certificate fingerprint (sha256):", Duration::from_secs(5))?;
        let api_token = process.expect_line(
            "first-run API token (shown once, stored hashed):",
            Duration::from_secs(5),
        )?;
        // Later restarts must come back on the same address: agents know it.
        let text = std::fs::read_to_string(&config)?;
        let address = url.trim_start_matches("https://");
        // (Only the first, the main `listen`: segment listeners keep their own.)
        std::fs::write(&config, text.replacen("127.0.0.1:0", address, 1))?;
        Ok(Collector {
            dir: dir.to_path_buf(),
            config,
            url,
            fingerprint,
            api_token,
            process,
            role: role.map(str::to_owned),
        })
    }

    fn spawn(dir: &Path, config: &Path, role: Option<&str>) -> anyhow::Result<Process> {
        let config = config.display().to_string();
        let mut args = vec!["serve", "--config", &config];
        if let Some(role) = role {
            args.extend(["--role", role]);
        }
        Process::spawn(
            "yagura serve",
            &binaries().collector,
            &args,
            &dir.join("collector.log"),
        )
    }

    /// Starts the collector again on the same address and data (after a kill).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill_hard();
        self.process = Self::spawn(&self.dir, &self.config, self.role.as_deref())?;
        let url = self
            .process
            .expect_line("yagura collector listening on", Duration::from_secs(60))?;
        anyhow::ensure!(
            url == self.url,
            "collector came back on {url}, not {}",
            self.url
        );
        Ok(())
    }

    /// A new enrollment token, made with the CLI as an operator would.
    pub fn enrollment_token(&self, uses: u32) -> anyhow::Result<String> {
        self.labelled_enrollment_token(uses, "")
    }

    /// A new enrollment token giving its agents `labels` (`key=value,key=value`).
    pub fn labelled_enrollment_token(&self, uses: u32, labels: &str) -> anyhow::Result<String> {
        let mut command = Command::new(&binaries().collector);
        command
            .args(["agents", "token", "create", "--config"])
            .arg(&self.config)
            .args(["--uses", &uses.to_string()]);
        if !labels.is_empty() {
            command.args(["--labels", labels]);
        }
        let output = command.output()?;
        anyhow::ensure!(
            output.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?.trim().to_string())
    }

    /// An HTTPS client that trusts only this collector's certificate.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let (client, _) =
            yagura_agent::tls::pinned_client(Some(&self.fingerprint), Duration::from_secs(30))?;
        Ok(client)
    }

    /// `POST /api/v1/ingest` with raw batch bytes, as an agent sends them: the status, the
    /// JSON body (`Null` when there is none) and the content type.
    pub async fn post_ingest(&self, body: Vec<u8>) -> anyhow::Result<(u16, Value, String)> {
        self.post_body("/api/v1/ingest", "application/octet-stream", body)
            .await
    }

    /// `POST /api/v1/ingest/bundle` with a bundle of batches (see [`Self::post_ingest`]).
    pub async fn post_bundle(&self, body: Vec<u8>) -> anyhow::Result<(u16, Value, String)> {
        self.post_body(
            "/api/v1/ingest/bundle",
            yagura_shared::bundle::BUNDLE_CONTENT_TYPE,
            body,
        )
        .await
    }

    async fn post_body(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Value, String)> {
        let response = self
            .client()?
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((
            status,
            response.json().await.unwrap_or(Value::Null),
            content_type,
        ))
    }

    /// `GET /api/v1/search`.
    pub async fn search(&self, query: &str, limit: usize) -> anyhow::Result<Value> {
        self.search_with(&[("q", query), ("limit", &limit.to_string())])
            .await
    }

    /// `GET path` of the API, as JSON (an error unless 2xx).
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .client()?
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.api_token)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status} {body}");
        Ok(body)
    }

    /// `GET /api/v1/search` with any parameters (`q`, `limit`, `agg`, `since`, …).
    pub async fn search_with(&self, params: &[(&str, &str)]) -> anyhow::Result<Value> {
        let response = self
            .client()?
            .get(format!("{}/api/v1/search", self.url))
            .bearer_auth(&self.api_token)
            .query(params)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "search {params:?}: {status} {body}");
        Ok(body)
    }

    /// Polls a search until its total is at least `minimum`; returns the total.
    pub async fn wait_for_at_least(
        &self,
        query: &str,
        minimum: u64,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(body) = self.search(query, 1).await
                && let Some(total) = body["total"].as_u64()
                && total >= minimum
            {
                return Ok(total);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{query:?} did not reach {minimum} in {timeout:?}")
    }

    /// Polls a search until its total is `expected` (or fails after `timeout`).
    pub async fn wait_for_total(
        &self,
        query: &str,
        expected: u64,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            match self.search(query, 1).await {
                Ok(body) => {
                    match body["total"].as_u64() {
                        Some(total) if total == expected => return Ok(body),
                        Some(total) if total > expected => {
                            bail!("{query:?} reached {total}, more than the {expected} expected")
                        }
                        _ => {}
                    }
                    last = body["total"].clone();
                }
                Err(e) => last = Value::String(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("{query:?} did not reach {expected} in {timeout:?}; last total {last}")
    }
}

/// An agent with its own state directory and config.
pub struct Agent {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub process: Option<Process>,
}

impl Agent {
    /// Writes `agent.toml` with the given `[[sources]]` and enrolls against `collector`.
    pub fn enroll(
        dir: &Path,
        collector: &Collector,
        host_name: &str,
        sources_toml: &str,
    ) -> anyhow::Result<Self> {
        Self::enroll_labelled(dir, collector, host_name, sources_toml, "")
    }

    /// [`Self::enroll`] with a token that gives the agent `labels` (`key=value,…`).
    pub fn enroll_labelled(
        dir: &Path,
        collector: &Collector,
        host_name: &str,
        sources_toml: &str,
        labels: &str,
    ) -> anyhow::Result<Self> {
        let at = (collector.url.as_str(), collector.fingerprint.as_str());
        Self::enroll_at(dir, collector, at, host_name, sources_toml, labels)
    }

    /// [`Self::enroll_labelled`] at a given ingest listener: `(url, fingerprint)`.
    pub fn enroll_at(
        dir: &Path,
        collector: &Collector,
        (url, fingerprint): (&str, &str),
        host_name: &str,
        sources_toml: &str,
        labels: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\nhost_name = \"{host_name}\"\n[ship]\nbatch_max_events = 500\nbatch_max_wait_ms = 100\nmax_backoff_ms = 500\n{sources_toml}",
                dir.join("state").display()
            ),
        )?;
        let token = collector.labelled_enrollment_token(1, labels)?;
        let output = Command::new(&binaries().agent)
            .args(["enroll", "--config"])
            .arg(&config)
            .args([
                "--collector",
                url,
                "--token",
                &token,
                "--fingerprint",
                fingerprint,
            ])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "enroll failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(Agent {
            dir: dir.to_path_buf(),
            config,
            process: None,
        })
    }

    /// The agent id written at enrollment.
    pub fn id(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(self.dir.join("state").join("enrollment.json"))?;
        let value: Value = serde_json::from_str(&text)?;
        Ok(value["agent_id"].as_str().context("agent_id")?.to_string())
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let config = self.config.display().to_string();
        self.process = Some(Process::spawn(
            "yagura-agent run",
            &binaries().agent,
            &["run", "--config", &config],
            &self.dir.join("agent.log"),
        )?);
        Ok(())
    }

    pub fn kill_hard(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill_hard();
        }
    }
}

/// Appends lines `0..lines` to `log` on a thread of its own, in `bursts` equal bursts with
/// `pause` between them: a service writing steadily while a test does something else.
pub fn append_in_bursts(
    log: &Path,
    lines: usize,
    bursts: usize,
    pause: Duration,
    line: fn(usize) -> String,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let log = log.to_path_buf();
    std::thread::spawn(move || {
        let per = lines / bursts;
        for burst in 0..bursts {
            append_lines(&log, burst * per..(burst + 1) * per, line)?;
            std::thread::sleep(pause);
        }
        Ok(())
    })
}

/// Appends numbered lines to a file in chunks, the way a busy service writes its log.
pub fn append_lines(
    path: &Path,
    range: std::ops::Range<usize>,
    line: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut chunk = String::new();
    for i in range {
        chunk.push_str(&line(i));
        chunk.push('\n');
    }
    file.write_all(chunk.as_bytes())?;
    Ok(())
}

/// `len` pseudo-random lowercase letters (xorshift, fixed seed): text zstd cannot shrink
/// much, so a batch carrying it really is as large on the wire as it looks.
pub fn incompressible_text(len: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

/// `yagura up` in `dir/data` on a free port, without the host's logs: the running stack
/// and what its first start printed.
pub struct Up {
    pub process: Process,
    pub url: String,
    pub fingerprint: String,
    pub token: String,
    /// The `--data-dir` it runs on.
    pub data_arg: String,
    /// The console's first account and its password, as the first run printed them.
    pub console_user: String,
    pub console_password: String,
}

impl Up {
    pub fn start(dir: &Path) -> anyhow::Result<Up> {
        Self::start_with(dir, &[])
    }

    /// `yagura up` with more arguments (`--rules DIR`, …).
    pub fn start_with(dir: &Path, extra: &[&str]) -> anyhow::Result<Up> {
        let data_arg = dir.join("data").display().to_string();
        let mut args = vec![
            "up",
            "--data-dir",
            &data_arg,
            "--listen",
            "127.0.0.1:0",
            "--no-host-logs",
        ];
        args.extend_from_slice(extra);
        let process = Process::spawn(
            "yagura up",
            &binaries().collector,
            &args,
            &dir.join("up.log"),
        )?;
        // In the order the banner prints them.
        let console_user = process.expect_line("Console user:", Duration::from_secs(60))?;
        let console_password = process.expect_line("Password:", Duration::from_secs(5))?;
        let url = process.expect_line("API URL:", Duration::from_secs(5))?;
        let fingerprint = process.expect_line("Certificate:  sha256", Duration::from_secs(5))?;
        let token = process.expect_line("API token:", Duration::from_secs(5))?;
        Ok(Up {
            process,
            url,
            fingerprint,
            token,
            data_arg,
            console_user,
            console_password,
        })
    }
}

/// Copies the directory tree `from` to `to` (tests that edit a copy of a checked-in tree,
/// such as the rule pack).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The `[archive]` and `[archive.jetstream]` of a cluster's nodes.
#[derive(Debug, Clone, Copy)]
pub struct ClusterToml<'a> {
    pub url: &'a str,
    pub stream: &'a str,
    pub subject_prefix: &'a str,
    pub partitions: u32,
}

impl ClusterToml<'_> {
    /// The configuration of node `node` (leases of 2 s, so take-overs are quick).
    pub fn node(&self, node: &str) -> String {
        format!(
            r#"
[archive]
backend = "jetstream"

[archive.jetstream]
url = "{url}"
stream = "{stream}"
subject_prefix = "{prefix}"
partitions = {partitions}

[cluster]
node = "{node}"
lease_seconds = 2
"#,
            url = self.url,
            stream = self.stream,
            prefix = self.subject_prefix,
            partitions = self.partitions,
        )
    }
}

/// Starts `yagura serve --role indexer` as node `node` of `cluster`, with its data in
/// `dir/<node>`; returns once it runs.
pub fn cluster_indexer(dir: &Path, node: &str, cluster: &ClusterToml) -> anyhow::Result<Process> {
    cluster_node(
        dir,
        node,
        cluster,
        "indexer",
        "[index]\ncommit_interval_ms = 200\n",
    )
}

/// Starts `yagura serve --role detector` as node `node` of `cluster`, running the rules
/// in `rules`, with its data in `dir/<node>`; returns once it runs.
pub fn cluster_detector(
    dir: &Path,
    node: &str,
    cluster: &ClusterToml,
    rules: &Path,
) -> anyhow::Result<Process> {
    cluster_node(
        dir,
        node,
        cluster,
        "detector",
        &format!("[detect]\nrules = [\"{}\"]\n", rules.display()),
    )
}

/// Starts `yagura serve --role <role>` (a role without HTTP listeners) as node `node`,
/// with `tables` in its configuration.
fn cluster_node(
    dir: &Path,
    node: &str,
    cluster: &ClusterToml,
    role: &'static str,
    tables: &str,
) -> anyhow::Result<Process> {
    let data = dir.join(node);
    std::fs::create_dir_all(&data)?;
    let path = data.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{data}\"\n{tables}{node}",
            data = data.display(),
            node = cluster.node(node),
        ),
    )?;
    let process = Process::spawn(
        role,
        &binaries().collector,
        &[
            "serve",
            "--role",
            role,
            "--config",
            &path.display().to_string(),
        ],
        &data.join(format!("{role}.log")),
    )?;
    process.expect_line(&format!("yagura {role}"), Duration::from_secs(60))?;
    Ok(process)
}

/// The cluster tests' rules: a line containing `marker` matches `cluster_marker`, and
/// four of them within an hour in one dataset — from any agent, through any gateway —
/// make one `event_count` correlation ([`MARKER_BURST`]).
pub const MARKER_RULES: &str = r#"
title: Cluster test marker
id: 5c0f2d6e-7a41-4b8e-9a57-3c1d2e4f0001
name: cluster_marker
logsource:
    product: linux
detection:
    selection:
        message|contains: marker
    condition: selection
level: low
---
title: Cluster test marker burst
id: 5c0f2d6e-7a41-4b8e-9a57-3c1d2e4f0002
correlation:
    type: event_count
    rules:
        - cluster_marker
    group-by:
        - event.dataset
    timespan: 1h
    condition:
        gte: 4
level: high
"#;

/// The id of the correlation in [`MARKER_RULES`].
pub const MARKER_BURST: &str = "5c0f2d6e-7a41-4b8e-9a57-3c1d2e4f0002";

/// Writes [`MARKER_RULES`] into `dir/rules` and returns that directory.
pub fn marker_rules(dir: &Path) -> anyhow::Result<PathBuf> {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(rules.join("markers.yml"), MARKER_RULES)?;
    Ok(rules)
}

/// The ids of the correlation matches of rule `rule` a collector (an api node) recorded.
pub async fn correlation_matches(api: &Collector, rule: &str) -> anyhow::Result<Vec<String>> {
    let listed = api.get_json("/api/v1/detections?limit=1000").await?;
    Ok(listed["detections"]
        .as_array()
        .context("detections")?
        .iter()
        .filter(|d| d["kind"] == "correlation" && d["rule"]["id"] == rule)
        .filter_map(|d| Some(d["id"].as_str()?.to_string()))
        .collect())
}

/// Waits up to `within` for the first correlation match of `rule` at `api`, then
/// `settle` more for any other, and returns them all.
pub async fn wait_for_correlation(
    api: &Collector,
    rule: &str,
    within: Duration,
    settle: Duration,
) -> anyhow::Result<Vec<String>> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let found = correlation_matches(api, rule).await;
        if found.as_ref().is_ok_and(|f| !f.is_empty()) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "correlation {rule} never matched: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(settle).await;
    correlation_matches(api, rule).await
}
