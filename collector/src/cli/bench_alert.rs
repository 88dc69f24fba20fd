//! `yagura bench alert` (hidden): log line → alert at a webhook receiver, end to end.
//!
//! A real `yagura serve` with one rule (a failed SSH login) and a policy grouping by
//! source address, a real `yagura-agent` (default shipping settings) tailing an auth log,
//! and a webhook receiver on loopback in this process. Each trial appends one failed
//! login from a new address and times until the receiver has the page for that address:
//! tail, parse, spool, sign, ship, verify, archive, detect, commit, alert, outbox, HTTP.
//! Trials run idle, then under a background load appended to a second watched file at a
//! steady rate (default 10,000 lines/s). Reports p50, p99 and the maximum of each.
//!
//! Build with `cargo build --release --bins` and run `target/release/yagura bench alert`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

use super::bench_agent::{run_agent, start_stack};

#[derive(Debug, Args)]
pub struct BenchAlertArgs {
    /// Trials per phase.
    #[arg(long, default_value_t = 200)]
    trials: u32,
    /// Background lines per second in the loaded phase.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Work directory (default: a new one under the system temp dir, removed at the end).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const RULE: &str = r#"title: SSH login failed (alert benchmark)
id: 7a3c0e55-5b1f-4a44-8c1e-00000000be01
logsource:
    product: linux
    service: sshd
detection:
    selection:
        event.action: ssh_login
        event.outcome: failure
    condition: selection
level: high
"#;

/// Arrival times of pages at the receiver, by source address.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn start_receiver(arrivals: Arrivals) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let arrivals = Arc::clone(&arrivals);
            async move {
                let at = Instant::now();
                let body: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                if body["type"] == "alert.trigger"
                    && let Some(group) = body["alert"]["group"].as_array()
                {
                    for pair in group {
                        if pair[0] == "source.ip"
                            && let Some(ip) = pair[1].as_str()
                        {
                            arrivals
                                .lock()
                                .map(|mut a| a.insert(ip.to_string(), at))
                                .ok();
                        }
                    }
                }
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(address)
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn syslog_time() -> String {
    chrono::Local::now().format("%b %e %H:%M:%S").to_string()
}

/// Appends `rate` benign sshd lines a second to `path` in 10 ms chunks until `stop`.
fn background_load(path: std::path::PathBuf, rate: u64, stop: Arc<AtomicBool>) {
    let per_chunk = (rate / 100).max(1);
    let start = Instant::now();
    let mut chunk_no: u64 = 0;
    let mut line_no: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut chunk = String::with_capacity(per_chunk as usize * 120);
        let now = syslog_time();
        for _ in 0..per_chunk {
            line_no += 1;
            chunk.push_str(&format!(
                "{now} web-1 sshd[{}]: Accepted publickey for user{} from 10.0.{}.{} port {} ssh2\n",
                1000 + line_no % 5000,
                line_no % 50,
                (line_no / 250) % 250,
                line_no % 250,
                20_000 + line_no % 40_000
            ));
        }
        if append(&path, &chunk).is_err() {
            return;
        }
        chunk_no += 1;
        let due = start + Duration::from_millis(chunk_no * 10);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// `trials` pages, one new source address each; the latency of each.
async fn trials(
    auth_log: &Path,
    arrivals: &Arrivals,
    phase: u32,
    trials: u32,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(trials as usize);
    for trial in 0..trials {
        let ip = format!("198.{}.{}.{}", 18 + phase, trial / 250, trial % 250 + 1);
        let line = format!(
            "{} web-1 sshd[4242]: Failed password for root from {ip} port {} ssh2\n",
            syslog_time(),
            40_000 + trial
        );
        let appended = Instant::now();
        append(auth_log, &line)?;
        let deadline = appended + Duration::from_secs(30);
        loop {
            let arrived = arrivals.lock().ok().and_then(|a| a.get(&ip).copied());
            if let Some(at) = arrived {
                latencies.push(at.duration_since(appended));
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no page for {ip} within 30 s (trial {trial})"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Trials start at varied points of the agent's batch timer.
        tokio::time::sleep(Duration::from_millis(100 + u64::from(trial % 7) * 37)).await;
    }
    Ok(latencies)
}

fn report(phase: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "| {phase} | {} | {:.0} | {:.0} | {:.0} |",
        latencies.len(),
        at(0.50),
        at(0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
}

pub async fn run(args: BenchAlertArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.trials > 0, "--trials must be above 0");
    let (work, remove) = super::bench::work_dir(args.dir, "alert")?;
    let arrivals: Arrivals = Arc::default();
    let receiver = start_receiver(Arc::clone(&arrivals)).await?;
    let rules = work.join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(rules.join("ssh.yml"), RULE)?;
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let auth_log = logs.join("auth.log");
    let load_log = logs.join("load.log");
    std::fs::write(&auth_log, "")?;
    std::fs::write(&load_log, "")?;
    let collector_toml = format!(
        "[detect]\nrules = [\"{}\"]\n\n[[alert.policy]]\nname = \"bench\"\nby = [\"source.ip\"]\n\
         \n[alert.destinations.hook]\ntype = \"webhook\"\nurl = \"http://{receiver}/hook\"\n\
         secret = \"bench\"\nrate_limit_per_minute = 100000\nupdates = false\n",
        rules.display()
    );
    let agent_toml = format!(
        "host_name = \"web-1\"\n\n[[sources]]\npaths = [\"{}\"]\ndataset = \"system.auth\"\n\
         parser = \"linux-auth\"\n\n[[sources]]\npaths = [\"{}\"]\ndataset = \"system.auth\"\n\
         parser = \"linux-auth\"\n",
        auth_log.display(),
        load_log.display()
    );
    let stack =
        tokio::task::block_in_place(|| start_stack(&work, "alert", &collector_toml, &agent_toml))
            .context("starting the collector and enrolling the agent")?;
    let (_agent, _) = run_agent(&stack)?;
    // The agent picks its files up and the pipeline warms (first page, TLS sessions).
    tokio::time::sleep(Duration::from_secs(2)).await;
    trials(&auth_log, &arrivals, 0, 3).await?;

    println!(
        "{} trials per phase, {} cores",
        args.trials,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| phase | trials | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    let idle = trials(&auth_log, &arrivals, 1, args.trials).await?;
    report("idle", idle);

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let path = load_log.clone();
        let rate = args.rate;
        std::thread::spawn(move || background_load(path, rate, stop))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let loaded = trials(&auth_log, &arrivals, 2, args.trials).await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    report(&format!("{} lines/s background", args.rate), loaded?);
    drop(stack);
    if remove {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}
