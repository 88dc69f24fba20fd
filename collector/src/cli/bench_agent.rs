//! `yagura bench agent`: the agent's throughput and footprint, with rsyslog beside it.
//!
//! Measures, on one generated file of sshd-like lines (~190 bytes each):
//! * the limit: a plain sequential read of the file (lines/s, MiB/s);
//! * Yagura: `yagura-agent` (tail → parse `linux-auth` → durable spool → signed batches)
//!   shipping to a real `yagura serve` on loopback: wall time until every line is acked,
//!   the agent's CPU seconds and peak RSS (from `/proc`);
//! * the peer, when `rsyslogd` is installed: rsyslog's `imfile` → `omfwd` TCP to a counting
//!   sink on loopback, measured the same way;
//! * the agent's idle footprint with 50 watched files: RSS and CPU over ten seconds.
//!
//! Both binaries are taken from the directory of the running `yagura`, so build with
//! `cargo build --release --bins` and run `target/release/yagura bench agent`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct BenchAgentArgs {
    /// Lines in the generated file.
    #[arg(long, default_value_t = 1_000_000)]
    lines: u64,
    /// Work directory (default: a new one under the system temp dir, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip the rsyslog run.
    #[arg(long)]
    no_rsyslog: bool,
    /// Then this many more pairs of runs, the ingest-only pipeline and rsyslog in
    /// alternation, each in fresh directories: every pair's ratio and their median. On a
    /// shared VM rsyslog's rate moves by a third between consecutive runs, so a single
    /// pair says little about the ratio.
    #[arg(
        long,
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=100),
        conflicts_with = "no_rsyslog"
    )]
    pairs: u32,
}

/// CPU seconds and peak RSS of a process, read from `/proc` while it still runs.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu_seconds: f64,
    peak_rss_bytes: u64,
}

fn usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).context("utime")?.parse::<f64>()?
        + fields.get(12).context("stime")?.parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Usage {
        cpu_seconds: ticks / 100.0,
        peak_rss_bytes: hwm_kib * 1024,
    })
}

fn rss_now(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// One sshd-like line of about 190 bytes, varied like real brute-force traffic.
fn line(i: u64) -> String {
    let users = [
        "root", "admin", "oracle", "deploy", "test", "ubuntu", "postgres", "git",
    ];
    let user = users[(i % users.len() as u64) as usize];
    let ip = format!("203.0.{}.{}", (i / 251) % 256, i % 251);
    let port = 30_000 + (i * 7919) % 30_000;
    let micros = i % 1_000_000;
    let body = match i % 4 {
        0 | 1 => format!("Failed password for invalid user {user} from {ip} port {port} ssh2"),
        2 => format!("Accepted publickey for {user} from {ip} port {port} ssh2: RSA SHA256:Xq3b"),
        _ => format!("Connection closed by authenticating user {user} {ip} port {port} [preauth]"),
    };
    let mut text = format!(
        "2026-11-25T08:{:02}:{:02}.{micros:06}+00:00 bench-host sshd[{}]: {body}",
        (i / 60) % 60,
        i % 60,
        1000 + i % 30_000
    );
    while text.len() < 189 {
        text.push_str(" pad");
    }
    text
}

fn generate(path: &Path, lines: u64) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut bytes = 0;
    for i in 0..lines {
        let l = line(i);
        bytes += l.len() as u64 + 1;
        out.write_all(l.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(bytes)
}

struct Figures {
    name: &'static str,
    wall: Duration,
    usage: Option<Usage>,
}

fn report(f: &Figures, lines: u64, bytes: u64) {
    let secs = f.wall.as_secs_f64();
    let mut row = format!(
        "| {} | {:.0} | {:.1} | {:.2} s |",
        f.name,
        lines as f64 / secs,
        bytes as f64 / secs / (1024.0 * 1024.0),
        secs
    );
    match f.usage {
        Some(u) => row.push_str(&format!(
            " {:.2} | {:.1} MiB |",
            u.cpu_seconds * 1_000_000.0 / lines as f64,
            u.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        )),
        None => row.push_str(" – | – |"),
    }
    println!("{row}");
}

fn sequential_read(path: &Path) -> anyhow::Result<Figures> {
    let start = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut count = 0u64;
    let mut buf = Vec::with_capacity(512);
    while reader.read_until(b'\n', &mut buf)? > 0 {
        count += 1;
        buf.clear();
    }
    std::hint::black_box(count);
    Ok(Figures {
        name: "sequential read (limit)",
        wall: start.elapsed(),
        usage: None,
    })
}

/// A child that is killed when dropped.
pub(super) struct Guard(pub(super) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found next to {}: build with `cargo build --release --bins`",
        name,
        exe.display()
    );
    Ok(path)
}

pub(super) fn read_line_with(
    child: &mut Child,
    prefix: &str,
) -> anyhow::Result<(String, std::io::Lines<BufReader<std::process::ChildStdout>>)> {
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix(prefix) {
            return Ok((rest.trim().to_string(), lines));
        }
    }
    bail!("no line starting with {prefix:?}")
}

/// A collector in `work/<name>-collector` and an agent enrolled with it in
/// `work/<name>-agent`, configured with `agent_toml` (after its `state_dir` line).
pub(super) struct BenchStack {
    _collector: Guard,
    collector_pid: u32,
    agent_config: PathBuf,
    state_dir: PathBuf,
}

pub(super) fn start_stack(
    work: &Path,
    name: &str,
    collector_toml: &str,
    agent_toml: &str,
) -> anyhow::Result<BenchStack> {
    let yagura = std::env::current_exe()?;
    let agent_bin = sibling("yagura-agent")?;
    let cdir = work.join(format!("{name}-collector"));
    std::fs::create_dir_all(&cdir)?;
    let config = cdir.join("collector.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n{collector_toml}"),
    )?;
    let mut collector = Command::new(&yagura)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (url, mut rest) = read_line_with(&mut collector, "yagura collector listening on")?;
    let fingerprint = rest
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("certificate fingerprint (sha256):")
                .map(|f| f.trim().to_string())
        })
        .context("fingerprint")?;
    let collector_pid = collector.id();
    let collector = Guard(collector);
    let token = Command::new(&yagura)
        .args(["agents", "token", "create", "--config"])
        .arg(&config)
        .output()?;
    anyhow::ensure!(token.status.success(), "token create failed");
    let token = String::from_utf8(token.stdout)?.trim().to_string();
    let adir = work.join(format!("{name}-agent"));
    std::fs::create_dir_all(&adir)?;
    let state_dir = adir.join("state");
    let agent_config = adir.join("agent.toml");
    std::fs::write(
        &agent_config,
        format!("state_dir = \"{}\"\n{agent_toml}", state_dir.display()),
    )?;
    let enrolled = Command::new(&agent_bin)
        .args(["enroll", "--config"])
        .arg(&agent_config)
        .args([
            "--collector",
            &url,
            "--token",
            &token,
            "--fingerprint",
            &fingerprint,
        ])
        .stderr(Stdio::null())
        .output()?;
    anyhow::ensure!(enrolled.status.success(), "enroll failed");
    Ok(BenchStack {
        _collector: collector,
        collector_pid,
        agent_config,
        state_dir,
    })
}

/// Starts `yagura-agent run` for a stack; returns the guard and the pid.
pub(super) fn run_agent(stack: &BenchStack) -> anyhow::Result<(Guard, u32)> {
    let agent = Command::new(sibling("yagura-agent")?)
        .args(["run", "--config"])
        .arg(&stack.agent_config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = agent.id();
    Ok((Guard(agent), pid))
}

/// The agent's run; `index`: whether the collector also indexes (otherwise it verifies,
/// archives with fsync and acknowledges: an ingest-only node, the counterpart of the
/// peer's counting sink).
fn yagura_run(work: &Path, file: &Path, index: bool) -> anyhow::Result<Figures> {
    let stack = start_stack(
        work,
        if index {
            "throughput-indexed"
        } else {
            "throughput"
        },
        // The per-agent rate limit (a policy against a runaway agent, 50,000 events/s by
        // default) is off: the run measures capacity.
        if index {
            "[ingest]\nagent_events_per_second = 0\n"
        } else {
            "[ingest]\nagent_events_per_second = 0\n[index]\nenabled = false\n"
        },
        &format!(
            "host_name = \"bench-host\"\nheartbeat_interval_seconds = 1\n[ship]\nbatch_max_events = 2000\nbatch_max_wait_ms = 200\n[[sources]]\npaths = [\"{}\"]\ndataset = \"bench.auth\"\nparser = \"linux-auth\"\n",
            file.display()
        ),
    )?;
    let start = Instant::now();
    let (agent, pid) = run_agent(&stack)?;
    let acked_path = stack.state_dir.join("acked.json");
    let file_bytes = std::fs::metadata(file)?.len();
    let collector_before = usage(stack.collector_pid)?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    // Done when the collector has acknowledged the batch holding the file's last line:
    // the agent writes the checkpoint of every acked batch to `acked.json` before it
    // deletes the batch, so the end is seen to within one 10 ms poll (as the peer's
    // counting sink sees its last line).
    while acked_offset(&acked_path, file) < file_bytes {
        anyhow::ensure!(
            Instant::now() < deadline,
            "agent did not finish in 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall = start.elapsed();
    let used = usage(pid)?;
    let collector_after = usage(stack.collector_pid)?;
    println!(
        "(collector during the run: {:.2} CPU s, peak RSS {:.1} MiB)",
        collector_after.cpu_seconds - collector_before.cpu_seconds,
        collector_after.peak_rss_bytes as f64 / (1024.0 * 1024.0)
    );
    drop(agent);
    Ok(Figures {
        name: if index {
            "yagura-agent (linux-auth, spool, signed, HTTPS) → collector archiving and indexing"
        } else {
            "yagura-agent (linux-auth, spool, signed, HTTPS) → collector archiving (ingest only)"
        },
        wall,
        usage: Some(used),
    })
}

/// How far into `file` the collector has acknowledged, from the agent's `acked.json`.
fn acked_offset(acked_path: &Path, file: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(acked_path) else {
        return 0;
    };
    let Ok(acked) = serde_json::from_str::<serde_json::Value>(&text) else {
        return 0;
    };
    let path = file.to_string_lossy();
    acked["checkpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["path"].as_str() == Some(path.as_ref()))
        .filter_map(|c| c["offset"].as_u64())
        .max()
        .unwrap_or(0)
}

fn rsyslog_run(work: &Path, file: &Path, lines: u64) -> anyhow::Result<Figures> {
    let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("rsyslogd is not installed (apt-get install rsyslog)")?;
    let sink = TcpListener::bind("127.0.0.1:0")?;
    let port = sink.local_addr()?.port();
    let received = Arc::new(AtomicU64::new(0));
    {
        let received = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in sink.incoming() {
                let Ok(mut stream) = stream else { continue };
                let received = Arc::clone(&received);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let lines = buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                        received.fetch_add(lines, Ordering::Relaxed);
                    }
                });
            }
        });
    }
    let rdir = work.join("rsyslog");
    std::fs::create_dir_all(&rdir)?;
    let conf = rdir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{dir}\")\nmodule(load=\"imfile\" mode=\"inotify\")\n\
             input(type=\"imfile\" File=\"{file}\" Tag=\"bench\" ruleset=\"fwd\" freshStartTail=\"off\")\n\
             ruleset(name=\"fwd\") {{ action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{port}\" protocol=\"tcp\") }}\n",
            dir = rdir.display(),
            file = file.display(),
        ),
    )?;
    let start = Instant::now();
    let child = Command::new(&rsyslogd)
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(rdir.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let child = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(1800);
    while received.load(Ordering::Relaxed) < lines {
        anyhow::ensure!(
            Instant::now() < deadline,
            "rsyslog did not finish in 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = start.elapsed();
    let used = usage(pid)?;
    drop(child);
    Ok(Figures {
        name: "rsyslog imfile → omfwd TCP (no parsing, no spool, no signing)",
        wall,
        usage: Some(used),
    })
}

/// Yagura's lines/s over rsyslog's, pair by pair, and the median of those ratios.
fn alternating_pairs(work: &Path, file: &Path, lines: u64, pairs: u32) -> anyhow::Result<()> {
    println!();
    println!(
        "| pair | Yagura lines/s | agent CPU s per 1M lines | rsyslog lines/s | rsyslog CPU s per 1M lines | ratio |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let per_million = |f: &Figures| {
        f.usage
            .map_or(f64::NAN, |u| u.cpu_seconds * 1_000_000.0 / lines as f64)
    };
    let mut ratios = Vec::new();
    for pair in 1..=pairs {
        // Fresh directories: a second agent on the same state would resume at the end.
        let dir = work.join(format!("pair-{pair}"));
        std::fs::create_dir_all(&dir)?;
        let yagura = yagura_run(&dir, file, false)?;
        let rsyslog = rsyslog_run(&dir, file, lines)?;
        let (ours, theirs) = (
            lines as f64 / yagura.wall.as_secs_f64(),
            lines as f64 / rsyslog.wall.as_secs_f64(),
        );
        ratios.push(ours / theirs);
        println!(
            "| {pair} | {ours:.0} | {:.2} | {theirs:.0} | {:.2} | {:.2} |",
            per_million(&yagura),
            per_million(&rsyslog),
            ours / theirs
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("{}", ratio_summary(&mut ratios));
    Ok(())
}

/// `median ratio 1.42 over 8 pairs (1.21-1.63), at or above 1.5 in 3`.
fn ratio_summary(ratios: &mut [f64]) -> String {
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let Some((&low, &high)) = ratios.first().zip(ratios.last()) else {
        return "no pairs".into();
    };
    let median = if n % 2 == 1 {
        ratios[n / 2]
    } else {
        (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
    };
    let reaching = ratios.iter().filter(|r| **r >= 1.5).count();
    format!(
        "median ratio {median:.2} over {n} pairs ({low:.2}-{high:.2}), at or above 1.5 in {reaching}"
    )
}

/// RSS and CPU share of an idle agent tailing 50 files.
fn idle_footprint(work: &Path) -> anyhow::Result<(u64, f64)> {
    let logs = work.join("idle-logs");
    std::fs::create_dir_all(&logs)?;
    for i in 0..50 {
        let content: String = (0..10).map(|j| format!("{}\n", line(j))).collect();
        std::fs::write(logs.join(format!("app{i}.log")), content)?;
    }
    let stack = start_stack(
        work,
        "idle",
        "",
        &format!("[[sources]]\npaths = [\"{}/*.log\"]\n", logs.display()),
    )?;
    let (_agent, pid) = run_agent(&stack)?;
    std::thread::sleep(Duration::from_secs(5));
    let before = usage(pid)?;
    let window = Duration::from_secs(10);
    std::thread::sleep(window);
    let after = usage(pid)?;
    let cpu_share = (after.cpu_seconds - before.cpu_seconds) / window.as_secs_f64();
    Ok((rss_now(pid), cpu_share))
}

pub fn run(args: BenchAgentArgs) -> anyhow::Result<()> {
    let (work, remove) = super::bench::work_dir(args.dir, "agent")?;
    let file = work.join("bench.log");
    let bytes = generate(&file, args.lines)?;
    println!(
        "{} lines, {:.1} MiB, {} cores",
        args.lines,
        bytes as f64 / (1024.0 * 1024.0),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| pipeline | lines/s | MiB/s | wall | CPU s per 1M lines | peak RSS |");
    println!("| --- | --- | --- | --- | --- | --- |");
    report(&sequential_read(&file)?, args.lines, bytes);
    report(&yagura_run(&work, &file, false)?, args.lines, bytes);
    report(&yagura_run(&work, &file, true)?, args.lines, bytes);
    if !args.no_rsyslog {
        match rsyslog_run(&work, &file, args.lines) {
            Ok(f) => report(&f, args.lines, bytes),
            Err(e) => println!("| rsyslog | not measured: {e:#} |"),
        }
    }
    if args.pairs > 0 {
        alternating_pairs(&work, &file, args.lines, args.pairs)?;
    }
    let (rss, cpu) = idle_footprint(&work)?;
    println!(
        "idle, 50 watched files: RSS {:.1} MiB, CPU {:.2}% of a core",
        rss as f64 / (1024.0 * 1024.0),
        cpu * 100.0
    );
    if remove {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ratio_summary;
    use clap::Parser;

    #[test]
    fn pairs_without_rsyslog_is_refused_not_ignored() {
        let parsed = crate::cli::Cli::try_parse_from([
            "yagura",
            "bench",
            "agent",
            "--pairs",
            "2",
            "--no-rsyslog",
        ]);
        let error = parsed.expect_err("refused");
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(
            crate::cli::Cli::try_parse_from(["yagura", "bench", "agent", "--pairs", "2"]).is_ok()
        );
    }

    #[test]
    fn the_summary_gives_the_median_the_range_and_the_pairs_reaching_the_target() {
        assert_eq!(
            ratio_summary(&mut [1.6, 1.2, 1.5]),
            "median ratio 1.50 over 3 pairs (1.20-1.60), at or above 1.5 in 2"
        );
        assert_eq!(
            ratio_summary(&mut [1.4, 1.1, 1.3, 2.0]),
            "median ratio 1.35 over 4 pairs (1.10-2.00), at or above 1.5 in 1"
        );
        assert_eq!(ratio_summary(&mut []), "no pairs");
    }
}
