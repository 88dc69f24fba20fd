//! Command-line interface: argument parsing (raw) and the commands (validated glue).

mod search;
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
    },
    /// Run everything on one machine with embedded defaults: collector and a local agent.
    Up(up::UpArgs),
    /// Search events (tantivy query syntax; `*` for everything).
    Search(search::SearchArgs),
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
    /// List enrolled agents.
    List {
        #[command(flatten)]
        location: DataLocation,
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
    },
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
        Command::Serve { config } => serve(config).await,
        Command::Up(args) => up::run(args).await,
        Command::Search(args) => search::run(args).await,
        Command::Agents {
            command:
                AgentsCommand::Token {
                    command:
                        TokenCommand::Create {
                            location,
                            uses,
                            ttl,
                        },
                },
        } => {
            let ttl = parse_ttl(&ttl)?;
            anyhow::ensure!(uses > 0, "--uses must be at least 1");
            let store = server::open_store(&location.config()?).await?;
            let token = store.create_enrollment_token(ttl, uses).await?;
            store.close().await;
            println!("{}", token.expose());
            Ok(())
        }
        Command::Agents {
            command: AgentsCommand::List { location },
        } => {
            let store = server::open_store(&location.config()?).await?;
            let agents = store.agents().await?;
            store.close().await;
            println!(
                "{:<38} {:<24} {:<10} {:<8} ENROLLED",
                "ID", "HOSTNAME", "VERSION", "STATUS"
            );
            for a in agents {
                println!(
                    "{:<38} {:<24} {:<10} {:<8} {}",
                    a.id, a.hostname, a.version, a.status, a.enrolled_at
                );
            }
            Ok(())
        }
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

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = CollectorConfig::load(&path)?;
    let shutdown = CancellationToken::new();
    let (started_tx, started_rx) = oneshot::channel();
    let server = tokio::spawn(server::run(config, started_tx, shutdown.clone()));
    if let Ok(started) = started_rx.await {
        println!("yagura collector listening on {}", started.url);
        println!("certificate fingerprint (sha256): {}", started.fingerprint);
        if let Some(token) = &started.first_run_api_token {
            println!(
                "first-run API token (shown once, stored hashed): {}",
                token.expose()
            );
        }
    }
    let signal = tokio::spawn(stop_signal(shutdown.clone()));
    let result = server.await.context("collector task")?;
    signal.abort();
    result
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
