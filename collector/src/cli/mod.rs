//! Command-line interface: argument parsing (raw) and the commands (validated glue).

mod alerts;
mod allowlist;
mod backup;
mod bench;
mod bench_agent;
mod bench_alert;
mod bench_cluster;
mod bench_detect;
mod bench_search;
mod bench_shop;
mod export;
mod remote;
mod rules;
mod search;
mod shop;
mod up;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use yagura_collector::config::CollectorConfig;
use yagura_collector::server;

#[derive(Debug, Parser)]
#[command(name = "yagura", version, about = "Yagura collector and analyst CLI")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector (HTTPS ingest, archive, index, API).
    Serve {
        #[arg(long, default_value = "/etc/yagura/collector.toml")]
        config: PathBuf,
        /// What this process does: everything (`all`), or one role of a cluster on
        /// NATS JetStream (`[archive] backend = "jetstream"`; docs/scale-out.md).
        #[arg(long, value_enum, default_value = "all")]
        role: yagura_collector::cluster::Role,
    },
    /// Run everything on one machine with embedded defaults: collector and a local agent.
    Up(up::UpArgs),
    /// Search events (docs/query-language.md; `*` for everything), with aggregations.
    Search(search::SearchArgs),
    /// Write every event a query matches to standard output, as NDJSON or CSV.
    Export(export::ExportArgs),
    /// Manage enrolled agents and enrollment tokens.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Manage API tokens.
    ApiToken {
        #[command(subcommand)]
        command: ApiTokenCommand,
    },
    /// Trace an indexed event to the agent-signed batch it came in and re-verify it.
    Provenance {
        /// The event's `event.id`.
        event_id: String,
        /// Print the whole report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// What was on an agent's host at a time: processes, ports, USB devices, users,
    /// groups, packages, neighbours.
    Inventory {
        /// The agent id.
        agent: uuid::Uuid,
        /// RFC 3339, or how long ago (`2h`); default now.
        #[arg(long)]
        at: Option<String>,
        /// Only these kinds (comma-separated: process,port,usb,user,group,package,neighbour,
        /// interface,mount).
        #[arg(long)]
        kinds: Option<String>,
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Check a collector.toml: every error with its line and key; exit 1 on any.
    /// (`serve` makes the same checks before it starts.)
    CheckConfig { file: PathBuf },
    /// Print the version; with `--deps`, every package the collector was built with
    /// (name and locked version), to check against security advisories.
    Version {
        #[arg(long)]
        deps: bool,
    },
    /// Allowlist policies for agents: the signing key, signing, assigning by label.
    Allowlist {
        #[command(subcommand)]
        command: allowlist::AllowlistCommand,
    },
    /// Alerts: list, show, acknowledge, resolve, assign, note; the outbox.
    Alerts {
        #[command(subcommand)]
        command: alerts::AlertsCommand,
    },
    /// Detection rules (Sigma): check rule directories, evaluate events offline.
    Rules {
        #[command(subcommand)]
        command: rules::RulesCommand,
    },
    /// The reference shop: audit-chain verification, key rotation, masked export.
    Shop {
        #[command(subcommand)]
        command: shop::ShopCommand,
    },
    /// The collector's certificate: rotate it through a signed hand-over to the agents.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Encrypted backups: make a key, take, list, verify and restore snapshots.
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// The archive of signed batches.
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// Benchmarks (for docs/benchmarks.md).
    #[command(hide = true)]
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TlsCommand {
    /// Make the next certificate and publish its hand-over, signed with the current key
    /// (agents fetch it and trust both). Activate once the fleet has it.
    Rotate {
        #[command(flatten)]
        location: DataLocation,
    },
    /// Make the staged certificate the current one; the collector serves it from its next
    /// start (restart it).
    Activate {
        #[command(flatten)]
        location: DataLocation,
    },
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Re-verify every archived batch (CRC, payload hash, signature) from the data
    /// directory; read-only, safe while the collector runs. Exits 1 on any mismatch.
    Verify {
        #[command(flatten)]
        location: DataLocation,
        /// Only batches received after this (e.g. 24h, 7d, or an RFC 3339 time).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Ingest throughput on loopback (verify + archive + ack, no indexing).
    Ingest(bench::BenchIngestArgs),
    /// Agent throughput (tail → parse → spool → ship) and idle footprint, beside rsyslog.
    Agent(bench_agent::BenchAgentArgs),
    /// Indexing throughput (against tantivy directly) and warm query latency.
    Search(bench_search::BenchSearchArgs),
    /// Detection latency: archive append → match on the live stream.
    Detect(bench_detect::BenchDetectArgs),
    /// Alerting latency: line appended to a watched file → page at a webhook receiver.
    Alert(bench_alert::BenchAlertArgs),
    /// Shop cart requests/s and p99 with wrk, sign-ins/s, Argon2id hash time.
    Shop(bench_shop::BenchShopArgs),
    /// JetStream publish ack latency; indexing through one and two indexer processes.
    Cluster(bench_cluster::BenchClusterArgs),
}

/// Where the collector's data is: a config file or a data directory.
#[derive(Debug, Args)]
struct DataLocation {
    /// The collector configuration file.
    #[arg(long, conflicts_with = "data_dir")]
    config: Option<PathBuf>,
    /// The collector data directory (default: ./yagura-data, as used by `yagura up`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl DataLocation {
    fn config(&self) -> anyhow::Result<CollectorConfig> {
        match (&self.config, &self.data_dir) {
            (Some(path), _) => Ok(CollectorConfig::load(path)?),
            (None, Some(dir)) => Ok(CollectorConfig::with_data_dir(dir.clone())),
            (None, None) => Ok(CollectorConfig::with_data_dir(PathBuf::from(
                up::DEFAULT_DATA_DIR,
            ))),
        }
    }
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// List enrolled agents with their status, last seen, version, lag and spool (read
    /// from the data directory; the running collector persists fleet state every few
    /// seconds).
    List {
        #[command(flatten)]
        location: DataLocation,
    },
    /// Show one agent in full.
    Show {
        id: uuid::Uuid,
        #[command(flatten)]
        location: DataLocation,
    },
    /// Revoke an agent through the running collector's API (its batches get 401 at once).
    Revoke {
        id: uuid::Uuid,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an enrollment token; it is printed once and stored hashed.
    Create {
        #[command(flatten)]
        location: DataLocation,
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it stays valid (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Labels copied to every agent enrolled with it: `key=value,key=value`.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
}

/// Parses `key=value` labels.
pub(crate) fn parse_labels(items: &[String]) -> anyhow::Result<yagura_collector::store::Labels> {
    let mut labels = yagura_collector::store::Labels::new();
    for item in items {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--labels `{item}`: expected key=value"))?;
        let key = key.trim();
        anyhow::ensure!(
            !key.is_empty()
                && key.len() <= 64
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')),
            "--labels `{item}`: keys are 1 to 64 of [A-Za-z0-9_.-]"
        );
        anyhow::ensure!(
            value.len() <= 256,
            "--labels `{item}`: value over 256 bytes"
        );
        labels.insert(key.to_string(), value.trim().to_string());
    }
    Ok(labels)
}

fn print_agents(agents: &[yagura_collector::api::AgentView]) {
    println!(
        "{:<38} {:<20} {:<9} {:<8} {:<10} {:<28} {:<10} {:>10} {:>8}",
        "ID",
        "HOSTNAME",
        "KIND",
        "STATUS",
        "CONNECTED",
        "LAST SEEN",
        "VERSION",
        "LAG BYTES",
        "SPOOL"
    );
    for a in agents {
        let dash = || "-".to_string();
        println!(
            "{:<38} {:<20} {:<9} {:<8} {:<10} {:<28} {:<10} {:>10} {:>8}",
            a.id,
            a.hostname,
            a.kind,
            a.status,
            a.connectivity,
            a.last_seen_at.clone().unwrap_or_else(dash),
            a.version,
            a.lag_bytes.map_or_else(dash, |v| v.to_string()),
            a.spool_batches.map_or_else(dash, |v| v.to_string()),
        );
    }
}

#[derive(Debug, Subcommand)]
enum ApiTokenCommand {
    /// Create an API token; it is printed once and stored hashed.
    Create {
        #[command(flatten)]
        location: DataLocation,
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

/// Parses `30m`, `24h`, `7d` into a duration.
fn parse_ttl(text: &str) -> anyhow::Result<chrono::Duration> {
    let now = chrono::Utc::now();
    let before =
        yagura_collector::api::parse_since(text, now).map_err(|e| anyhow::anyhow!("--ttl {e}"))?;
    Ok(now - before)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, role } => serve(config, role).await,
        Command::Up(args) => up::run(args).await,
        Command::Search(args) => search::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Rules { command } => rules::run(command).await,
        Command::Shop { command } => shop::run(command).await,
        Command::Backup { command } => backup::run(command).await,
        Command::Tls { command } => {
            let location = match &command {
                TlsCommand::Rotate { location } | TlsCommand::Activate { location } => location,
            };
            let config = location.config()?;
            anyhow::ensure!(
                config.tls.cert_path.is_none(),
                "tls.cert_path is set: the certificate is managed outside the collector (replace \
                 the files, and give agents the new fingerprint)"
            );
            let dir = config.tls_dir();
            match command {
                TlsCommand::Rotate { .. } => {
                    let handover = yagura_collector::tls::handover::stage(
                        &dir,
                        &config.tls.subject_alt_names,
                    )?;
                    println!(
                        "hand-over published: sha256 {} → sha256 {}",
                        handover.from_fingerprint, handover.to_fingerprint
                    );
                    println!(
                        "agents take it within their [ship] handover_check_seconds; then run \
                         `yagura tls activate` and restart the collector"
                    );
                }
                TlsCommand::Activate { .. } => {
                    let (from, to) = yagura_collector::tls::handover::activate(&dir)?;
                    println!(
                        "certificate sha256 {to} is now current (was {from}); restart the \
                         collector to serve it"
                    );
                }
            }
            Ok(())
        }
        Command::Agents {
            command:
                AgentsCommand::Token {
                    command:
                        TokenCommand::Create {
                            location,
                            uses,
                            ttl,
                            labels,
                        },
                },
        } => {
            let ttl = parse_ttl(&ttl)?;
            anyhow::ensure!(uses > 0, "--uses must be at least 1");
            let labels = parse_labels(&labels)?;
            let store = server::open_store(&location.config()?).await?;
            let token = store.create_enrollment_token(ttl, uses, &labels).await?;
            store.close().await;
            println!("{}", token.expose());
            Ok(())
        }
        Command::Agents {
            command: AgentsCommand::List { location },
        } => {
            let views = agent_views(&location).await?;
            print_agents(&views);
            Ok(())
        }
        Command::Agents {
            command: AgentsCommand::Show { id, location },
        } => {
            let views = agent_views(&location).await?;
            let view = views
                .into_iter()
                .find(|v| v.id == id.to_string())
                .ok_or_else(|| anyhow::anyhow!("no agent {id}"))?;
            println!("{}", serde_json::to_string_pretty(&view)?);
            Ok(())
        }
        Command::Agents {
            command: AgentsCommand::Revoke { id, remote },
        } => {
            let answer = remote
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/agents/{id}/revoke"),
                )
                .await?;
            println!("{id}: {}", answer["status"].as_str().unwrap_or("?"));
            Ok(())
        }
        Command::Provenance {
            event_id,
            json,
            remote,
        } => provenance(&event_id, json, &remote).await,
        Command::Alerts { command } => alerts::run(command).await,
        Command::Allowlist { command } => allowlist::run(command).await,
        Command::Version { deps } => {
            println!("yagura {}", env!("CARGO_PKG_VERSION"));
            if deps {
                use yagura_agent::build_info::{
                    CARGO_LOCK, format_dependencies, locked_dependencies,
                };
                let list = locked_dependencies(CARGO_LOCK, env!("CARGO_PKG_NAME"))
                    .map_err(anyhow::Error::msg)?;
                print!("{}", format_dependencies(&list));
            }
            Ok(())
        }
        Command::CheckConfig { file } => yagura_shared::config_check::check_file(&file, |text| {
            CollectorConfig::problems(text, &file)
        })
        .map_err(anyhow::Error::msg),
        Command::Inventory {
            agent,
            at,
            kinds,
            json,
            remote,
        } => inventory(agent, at.as_deref(), kinds.as_deref(), json, &remote).await,
        Command::Archive {
            command: ArchiveCommand::Verify { location, since },
        } => archive_verify(&location, since.as_deref()).await,
        Command::Bench {
            command: BenchCommand::Ingest(args),
        } => bench::run(args).await,
        Command::Bench {
            command: BenchCommand::Detect(args),
        } => bench_detect::run(args).await,
        Command::Bench {
            command: BenchCommand::Alert(args),
        } => bench_alert::run(args).await,
        Command::Bench {
            command: BenchCommand::Agent(args),
        } => tokio::task::spawn_blocking(move || bench_agent::run(args)).await?,
        Command::Bench {
            command: BenchCommand::Search(args),
        } => bench_search::run(args).await,
        Command::Bench {
            command: BenchCommand::Shop(args),
        } => bench_shop::run(args).await,
        Command::Bench {
            command: BenchCommand::Cluster(args),
        } => bench_cluster::run(args).await,
        Command::ApiToken {
            command: ApiTokenCommand::Create { location, name },
        } => {
            let store = server::open_store(&location.config()?).await?;
            let token = store.create_api_token(&name).await?;
            store.close().await;
            println!("{}", token.expose());
            Ok(())
        }
    }
}

/// Agents and their persisted fleet state, read from the data directory.
async fn agent_views(
    location: &DataLocation,
) -> anyhow::Result<Vec<yagura_collector::api::AgentView>> {
    let store = server::open_store(&location.config()?).await?;
    let agents = store.agents().await?;
    let mut states: std::collections::HashMap<_, _> = store
        .agent_states()
        .await?
        .into_iter()
        .map(|s| (s.agent_id, s))
        .collect();
    store.close().await;
    Ok(agents
        .into_iter()
        .map(|a| {
            let state = states.remove(&a.id);
            yagura_collector::api::AgentView::new(a, state)
        })
        .collect())
}

/// One line per item: kind, key, and what identifies it best.
fn inventory_line(kind: &str, item: &serde_json::Value) -> String {
    let event = &item["event"];
    let field = |path: &str| {
        path.split('.')
            .try_fold(event, |v, p| v.get(p))
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let detail = match kind {
        "process" => format!(
            "{} {} {}",
            field("process.name"),
            field("user.name"),
            field("process.executable")
        ),
        "port" => format!("{} {}", field("process.name"), field("process.pid")),
        "usb" => format!(
            "{} {}",
            field("device.manufacturer"),
            field("device.model.name")
        ),
        "user" => format!("uid {}", field("user.id")),
        "group" => format!("gid {}", field("group.id")),
        "package" => field("package.version"),
        "neighbour" => field("yagura.inventory.neighbour.mac"),
        _ => String::new(),
    };
    format!(
        "{kind:<10} {:<40} {}  (since {})",
        item["key"].as_str().unwrap_or("-"),
        detail.trim(),
        item["since"].as_str().unwrap_or("-")
    )
}

async fn inventory(
    agent: uuid::Uuid,
    at: Option<&str>,
    kinds: Option<&str>,
    json: bool,
    remote: &remote::RemoteArgs,
) -> anyhow::Result<()> {
    let mut path = format!("/api/v1/agents/{agent}/inventory");
    if let Some(at) = at {
        let encoded: String = url_encode(at);
        path.push_str(&format!("?at={encoded}"));
    }
    let answer = remote.call(reqwest::Method::GET, &path).await?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let wanted: Option<Vec<&str>> = kinds.map(|k| k.split(',').map(str::trim).collect());
    println!(
        "agent {agent} at {} (snapshot {} of {}, {} changes after it)",
        answer["at"].as_str().unwrap_or("-"),
        answer["snapshot_id"].as_str().unwrap_or("none"),
        answer["snapshot_at"].as_str().unwrap_or("-"),
        answer["changes_applied"]
    );
    if let Some(items) = answer["items"].as_object() {
        for (kind, list) in items {
            if wanted.as_ref().is_some_and(|w| !w.contains(&kind.as_str())) {
                continue;
            }
            for item in list.as_array().into_iter().flatten() {
                println!("{}", inventory_line(kind, item));
            }
        }
    }
    Ok(())
}

/// Percent-encodes a query value (RFC 3339 times carry `+` and `:`).
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn provenance(event_id: &str, json: bool, remote: &remote::RemoteArgs) -> anyhow::Result<()> {
    let event_id = uuid::Uuid::parse_str(event_id)
        .map_err(|_| anyhow::anyhow!("`{event_id}` is not an event id (UUID)"))?;
    let report = remote
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/events/{event_id}/provenance"),
        )
        .await?;
    let verified = report["verified"].as_bool() == Some(true);
    if json {
        println!("{report}");
    } else {
        let batch = &report["batch"];
        let header = &batch["header"];
        println!("event          {event_id}");
        println!(
            "agent          {}  ({})",
            header["agent_id"].as_str().unwrap_or("-"),
            batch["agent_hostname"].as_str().unwrap_or("-")
        );
        println!(
            "agent key      {}",
            batch["agent_public_key"].as_str().unwrap_or("-")
        );
        println!("batch sequence {}", header["sequence"]);
        println!(
            "batch created  {}",
            header["created_at"].as_str().unwrap_or("-")
        );
        println!("batch events   {}", header["event_count"]);
        println!(
            "payload sha256 {}",
            header["payload_sha256"].as_str().unwrap_or("-")
        );
        println!("archive offset {}", batch["archive_offset"]);
        println!("record CRC     {}", ok(&batch["crc_valid"]));
        println!("payload hash   {}", ok(&batch["payload_hash_valid"]));
        println!("signature      {}", ok(&batch["signature_valid"]));
        println!("event in batch {}", ok(&report["event_in_payload"]));
        for problem in batch["problems"].as_array().into_iter().flatten() {
            println!("problem        {}", problem.as_str().unwrap_or("-"));
        }
        println!("verified       {}", if verified { "yes" } else { "NO" });
    }
    anyhow::ensure!(verified, "event {event_id} does NOT verify");
    Ok(())
}

fn ok(value: &serde_json::Value) -> &'static str {
    if value.as_bool() == Some(true) {
        "ok"
    } else {
        "FAILED"
    }
}

async fn archive_verify(location: &DataLocation, since: Option<&str>) -> anyhow::Result<()> {
    let config = location.config()?;
    let since_ms = since
        .map(|s| yagura_collector::api::parse_since(s, chrono::Utc::now()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--since {e}"))?
        .map(|t| t.timestamp_millis());
    let store = server::open_store(&config).await?;
    let agents = store
        .agents()
        .await?
        .into_iter()
        .map(|a| (a.id, a))
        .collect();
    store.close().await;
    let dir = config.archive_dir();
    let report = tokio::task::spawn_blocking(move || {
        yagura_collector::custody::verify_archive(&dir, &agents, since_ms)
    })
    .await??;
    for failure in &report.failures {
        println!(
            "MISMATCH {}: {}",
            failure.name(),
            failure.problems.join("; ")
        );
    }
    for (segment, position, reason) in &report.unreadable {
        println!("UNREADABLE segment {segment} at byte {position}: {reason}");
    }
    println!(
        "{} batches checked, {} verified, {} mismatched, {} unreadable regions",
        report.batches_checked,
        report.batches_verified,
        report.failures.len(),
        report.unreadable.len()
    );
    anyhow::ensure!(
        report.failures.is_empty(),
        "{} archived batches do not verify",
        report.failures.len()
    );
    Ok(())
}

async fn serve(path: PathBuf, role: yagura_collector::cluster::Role) -> anyhow::Result<()> {
    use yagura_collector::cluster::Role;
    use yagura_collector::config::ArchiveBackend;
    let config = CollectorConfig::load(&path)?;
    let shutdown = CancellationToken::new();
    let mode = match (config.archive.backend, role) {
        (ArchiveBackend::Segments, Role::All) => {
            if config.index.enabled {
                server::RunMode::Full
            } else {
                server::RunMode::IngestOnly
            }
        }
        (ArchiveBackend::Segments, role) => anyhow::bail!(
            "{}: --role {} needs [archive] backend = \"jetstream\" (a cluster shares its \
             archive on NATS JetStream; see docs/scale-out.md)",
            path.display(),
            role.name()
        ),
        (ArchiveBackend::JetStream, Role::Indexer) => {
            let signal = tokio::spawn(stop_signal(shutdown.clone()));
            let result = yagura_collector::cluster::node::run_indexer(config, shutdown, |node| {
                println!(
                    "yagura indexer {} on stream {} ({} partitions)",
                    node.name, node.stream, node.partitions
                );
            })
            .await;
            signal.abort();
            return result;
        }
        (ArchiveBackend::JetStream, Role::Detector) => {
            let signal = tokio::spawn(stop_signal(shutdown.clone()));
            let result = yagura_collector::cluster::node::run_detector(config, shutdown, |node| {
                println!(
                    "yagura detector {} on stream {} ({} partitions)",
                    node.name, node.stream, node.partitions
                );
            })
            .await;
            signal.abort();
            return result;
        }
        (ArchiveBackend::JetStream, Role::Ingest) => server::RunMode::Gateway,
        (ArchiveBackend::JetStream, Role::Api) => server::RunMode::Api,
        (ArchiveBackend::JetStream, Role::All) => server::RunMode::ClusterAll,
    };
    // Every role of a cluster in this one process: the indexer and the detector beside
    // the HTTP side (a gateway and an api node), each a member of its consumer group.
    let mut members = Vec::new();
    if mode == server::RunMode::ClusterAll {
        use yagura_collector::cluster::node::{run_detector, run_indexer};
        let (indexing, detecting) = (config.clone(), config.clone());
        let stop = shutdown.clone();
        members.push(tokio::spawn(async move {
            run_indexer(indexing, stop.clone(), |node| {
                println!("yagura indexer {} on stream {}", node.name, node.stream);
            })
            .await
            .context("the indexer")
            .inspect_err(|error| stop_all(error, &stop))
        }));
        if config.detect.rules.is_empty() {
            tracing::info!("no [detect] rules: this node runs no detector");
        } else {
            let stop = shutdown.clone();
            members.push(tokio::spawn(async move {
                run_detector(detecting, stop.clone(), |node| {
                    println!("yagura detector {} on stream {}", node.name, node.stream);
                })
                .await
                .context("the detector")
                .inspect_err(|error| stop_all(error, &stop))
            }));
        }
    }
    let (started_tx, started_rx) = oneshot::channel();
    let server = tokio::spawn(server::run_with(config, started_tx, shutdown.clone(), mode));
    if let Ok(started) = started_rx.await {
        println!("yagura collector listening on {}", started.url);
        println!("certificate fingerprint (sha256): {}", started.fingerprint);
        if let Some(token) = &started.first_run_api_token {
            println!(
                "first-run API token (shown once, stored hashed): {}",
                token.expose()
            );
        }
        // With segment listeners, one line per listener (agents pin the ingest one).
        if started.listeners.len() > 1 {
            for listener in &started.listeners {
                println!(
                    "listener {} ({}) on {} certificate sha256 {}",
                    listener.name,
                    listener.segments.names().join(", "),
                    listener.url,
                    listener.fingerprint
                );
            }
        }
    }
    let signal = tokio::spawn(stop_signal(shutdown.clone()));
    let result = server.await.context("collector task")?;
    signal.abort();
    // The server ended (stopped, or failed): the members stop with it.
    shutdown.cancel();
    for member in members {
        member.await.context("cluster member task")??;
    }
    result
}

/// A member of a whole-cluster node failed: said now, and the node stops (a node that
/// silently stopped indexing or detecting would hold its leases for nothing).
fn stop_all(error: &anyhow::Error, shutdown: &CancellationToken) {
    tracing::error!(
        error = format!("{error:#}"),
        "a cluster member failed; stopping"
    );
    shutdown.cancel();
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
pub(crate) async fn stop_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL only");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_value_pairs_with_plain_keys() {
        let labels = parse_labels(&["site=osaka".into(), "tier = web".into()]).expect("ok");
        assert_eq!(labels.get("site").map(String::as_str), Some("osaka"));
        assert_eq!(labels.get("tier").map(String::as_str), Some("web"));
        assert!(parse_labels(&["novalue".into()]).is_err());
        assert!(parse_labels(&["=x".into()]).is_err());
        assert!(parse_labels(&["bad key=x".into()]).is_err());
        assert!(parse_labels(&[]).expect("empty").is_empty());
    }
}
