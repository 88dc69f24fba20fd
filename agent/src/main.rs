//! `yagura-agent`: command-line glue around the `yagura_agent` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use yagura_agent::AgentConfig;

#[derive(Debug, Parser)]
#[command(name = "yagura-agent", version, about = "Yagura endpoint agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register this agent with a collector (once, before `run`).
    Enroll {
        /// The agent configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The collector's base URL, e.g. https://collector:8443
        #[arg(long)]
        collector: String,
        /// One-time enrollment token issued by the collector.
        #[arg(long, env = "YAGURA_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        /// SHA-256 fingerprint of the collector's certificate (hex, colons allowed).
        /// Without it the certificate is trusted on first use.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Enroll again even if this agent is already enrolled.
        #[arg(long)]
        force: bool,
    },
    /// Tail, spool and ship until SIGINT or SIGTERM.
    Run {
        /// The agent configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Parse log lines as a source would and print each event as one JSON line, to try a
    /// source's settings before deploying them.
    Parse {
        /// The parser: raw, syslog, linux-auth, web-access, web-error, auditd, postgresql,
        /// dns, json or auto.
        #[arg(long)]
        parser: String,
        /// `event.dataset` of the events.
        #[arg(long, default_value = "generic")]
        dataset: String,
        /// Zone of timestamps that carry none (`UTC` or `+HH:MM`).
        #[arg(long)]
        timezone: Option<String>,
        /// The file to read; `-` or nothing for standard input.
        file: Option<PathBuf>,
    },
    /// Print the version; with `--deps`, every package the agent was built with
    /// (name and locked version), to check against security advisories.
    Version {
        #[arg(long)]
        deps: bool,
    },
    /// Check a configuration file: every error with its line and key; exit 1 on any.
    /// (`run` makes the same checks before it starts.)
    CheckConfig {
        /// The agent configuration file.
        file: PathBuf,
    },
    /// Move this agent to a new signing key. The running agent does it between two
    /// batches (the collector keeps the old key for the batches before); when none is
    /// running, the next start does it. Waits for the outcome.
    RotateKey {
        /// The agent configuration file.
        #[arg(long)]
        config: PathBuf,
        /// How long to wait for the running agent.
        #[arg(long, default_value_t = 60)]
        timeout_seconds: u64,
    },
    /// Show the running agent's health: uptime, memory, spool, lag, counters, errors
    /// (from the status file it refreshes every heartbeat interval).
    Status {
        /// The agent configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    // One async worker is plenty (the heavy work — reading, parsing, sealing — runs on
    // the blocking pool, one step at a time); a worker per core would cost every thread's
    // stack and allocator arena on a many-core server for nothing.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Enroll {
                config,
                collector,
                token,
                fingerprint,
                force,
            } => {
                let config = AgentConfig::load(&config)?;
                let enrollment = yagura_agent::enroll(
                    &config.state_dir,
                    &collector,
                    &token,
                    fingerprint.as_deref(),
                    &config.resolved_host_name(),
                    force,
                )
                .await?;
                println!("enrolled as agent {}", enrollment.agent_id);
                if let Some(fp) = &enrollment.fingerprint {
                    println!("collector certificate SHA-256: {fp}");
                }
                Ok(())
            }
            Command::Parse {
                parser,
                dataset,
                timezone,
                file,
            } => parse_lines(&parser, &dataset, timezone, file.as_deref()),
            Command::Version { deps } => {
                println!("yagura-agent {}", env!("CARGO_PKG_VERSION"));
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
            Command::CheckConfig { file } => {
                yagura_shared::config_check::check_file(&file, AgentConfig::problems)
                    .map_err(anyhow::Error::msg)
            }
            Command::RotateKey {
                config,
                timeout_seconds,
            } => {
                let config = AgentConfig::load(&config)?;
                let state_dir = &config.state_dir;
                yagura_agent::enroll::Enrollment::load(state_dir)?;
                yagura_agent::rotate_key::request(state_dir)?;
                let deadline =
                    std::time::Instant::now() + std::time::Duration::from_secs(timeout_seconds);
                loop {
                    if let Some(result) = yagura_agent::rotate_key::result(state_dir) {
                        if result.ok {
                            println!(
                                "rotated: public key {} signs from batch {} on",
                                result.public_key.unwrap_or_default(),
                                result.from_sequence.unwrap_or_default()
                            );
                            return Ok(());
                        }
                        anyhow::bail!(
                            "the key was not rotated: {}",
                            result.error.unwrap_or_default()
                        );
                    }
                    if std::time::Instant::now() > deadline {
                        anyhow::bail!(
                            "no running agent took the request within {timeout_seconds} s; it \
                             stays in {} and the agent rotates its key at its next start",
                            state_dir.display()
                        );
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
            Command::Status { config, json } => {
                let config = AgentConfig::load(&config)?;
                let status =
                    yagura_agent::health::Status::read(&config.state_dir).with_context(|| {
                        format!(
                            "no status in {} (is the agent running, or has it run?)",
                            config.state_dir.display()
                        )
                    })?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&status)?);
                } else {
                    print!("{}", status.render(chrono::Utc::now()));
                }
                Ok(())
            }
            Command::Run { config } => {
                let config = AgentConfig::load(&config)?;
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                yagura_agent::run(config, shutdown).await?;
                Ok(())
            }
        }
    })
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
        result = tokio::signal::ctrl_c() => match result {
            Ok(()) => tracing::info!("SIGINT received, stopping"),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGINT");
                return;
            }
        },
    }
    shutdown.cancel();
}

/// `yagura-agent parse`: the events the agent would make of these lines, as NDJSON.
fn parse_lines(
    parser: &str,
    dataset: &str,
    timezone: Option<String>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Write as _};
    use yagura_agent::parse::{AuditdAssembler, AuditdGroup, ParserKind, parse_into};
    let source = yagura_agent::SourceConfig {
        parser: parser.to_string(),
        timezone,
        ..yagura_agent::SourceConfig::default()
    };
    let (kind, context) = source.parser_setup().map_err(anyhow::Error::msg)?;
    let (reader, path): (Box<dyn std::io::BufRead>, Option<String>) = match file {
        None => (Box::new(std::io::stdin().lock()), None),
        Some(p) if p.as_os_str() == "-" => (Box::new(std::io::stdin().lock()), None),
        Some(p) => (
            Box::new(std::io::BufReader::new(
                std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
            )),
            Some(p.display().to_string()),
        ),
    };
    let host = yagura_agent::config::system_hostname();
    let base = |text: &str, offset: u64| {
        let mut event = yagura_shared::Event::new(chrono::Utc::now());
        event.set_str("message", text);
        event.set_str("event.original", text);
        event.set_str("event.dataset", dataset);
        event.set_str("host.name", host.clone());
        if let Some(path) = &path {
            event.set_str("log.file.path", path.clone());
            event.set("log.offset", serde_json::Value::from(offset));
        }
        event
    };
    let mut out = std::io::stdout().lock();
    let mut audit = AuditdAssembler::new(std::time::Duration::from_secs(3600));
    let emit_group =
        |group: AuditdGroup<u64>, out: &mut dyn std::io::Write| -> anyhow::Result<()> {
            let mut event = base(&group.lines.join("\n"), group.first);
            group.write_into(&mut event);
            writeln!(out, "{}", event.to_json_line())?;
            Ok(())
        };
    let mut offset = 0u64;
    for (number, line) in reader.split(b'\n').enumerate() {
        let bytes = line.with_context(|| format!("reading line {}", number + 1))?;
        let line_offset = offset;
        offset += bytes.len() as u64 + 1;
        let text = String::from_utf8_lossy(&bytes);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if kind == ParserKind::Auditd {
            for group in audit.push(text, line_offset, std::time::Instant::now()) {
                emit_group(group, &mut out)?;
            }
            continue;
        }
        let mut event = base(text, line_offset);
        parse_into(kind, text, &context, &mut event);
        writeln!(out, "{}", event.to_json_line())?;
    }
    if let Some(group) = audit.flush() {
        emit_group(group, &mut out)?;
    }
    Ok(())
}
