//! `yagura up`: the whole product on one machine with embedded defaults.
//!
//! Starts the collector, enrolls a local agent against it on the first run (pinning the
//! collector's certificate like any agent), starts a demo log so there is something to
//! search at once, and tails the host's auth and syslog files when they are readable.
//! Ctrl-C stops the agent first (it seals and ships what it read; anything unshipped stays
//! in its durable spool), then the collector (which indexes everything it acknowledged).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use yagura_agent::{AgentConfig, SourceConfig, StartAt};
use yagura_collector::config::CollectorConfig;
use yagura_collector::server;

pub const DEFAULT_DATA_DIR: &str = "yagura-data";

/// Host logs the local agent tails when this process may read them.
const HOST_LOGS: &[(&str, &str)] = &[
    ("/var/log/auth.log", "system.auth"),
    ("/var/log/secure", "system.auth"),
    ("/var/log/syslog", "system.syslog"),
    ("/var/log/messages", "system.syslog"),
];

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where everything is kept (archive, index, state, agent spool, demo log).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Address of the collector's HTTPS listener.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// Do not write the generated demo log.
    #[arg(long)]
    no_demo: bool,
    /// Do not tail the host's auth and syslog files.
    #[arg(long)]
    no_host_logs: bool,
    /// Sigma rule directories the live detector runs (default: `detections` when it
    /// exists here, as in a checkout of the project).
    #[arg(long)]
    rules: Vec<PathBuf>,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let mut config = CollectorConfig::with_data_dir(data_dir.clone());
    config.listen = args.listen;
    config.detect.rules = if args.rules.is_empty() {
        let pack = PathBuf::from("detections");
        if pack.is_dir() {
            vec![std::fs::canonicalize(pack)?]
        } else {
            Vec::new()
        }
    } else {
        args.rules.clone()
    };

    let collector_stop = CancellationToken::new();
    let (started_tx, started_rx) = oneshot::channel();
    let collector = tokio::spawn(server::run(
        config.clone(),
        started_tx,
        collector_stop.clone(),
    ));
    let Ok(started) = started_rx.await else {
        return collector
            .await
            .context("collector task")?
            .and_then(|()| anyhow::bail!("the collector stopped before listening"));
    };

    let agent_dir = data_dir.join("agent");
    let host_name = yagura_agent::config::system_hostname();
    if !agent_dir.join("enrollment.json").exists() {
        let store = server::open_store(&config).await?;
        let token = store
            .create_enrollment_token(chrono::Duration::minutes(10), 1, &Default::default())
            .await?;
        store.close().await;
        yagura_agent::enroll(
            &agent_dir,
            &started.ingest().url,
            token.expose(),
            Some(&started.ingest().fingerprint),
            &host_name,
            false,
        )
        .await
        .context("enrolling the local agent")?;
    }

    // The console's first account: an admin (analyst rights included) whose password is
    // printed once; the second factor is enrolled at the first sign-in.
    let console_account = if started.first_run_api_token.is_some() && config.shop.enabled {
        Some(create_console_admin(&config).await?)
    } else {
        None
    };

    let mut agent_config = AgentConfig::new(&agent_dir);
    agent_config.inventory.enabled = true;
    let demo_stop = CancellationToken::new();
    let mut demo = None;
    if !args.no_demo {
        let demo_path = data_dir.join("demo").join("demo.log");
        demo = Some(tokio::spawn(write_demo_log(
            demo_path.clone(),
            host_name.clone(),
            demo_stop.clone(),
        )));
        let mut demo_source = source(&demo_path, "yagura.demo");
        demo_source.parser = "linux-auth".into();
        agent_config.sources.push(demo_source);
    }
    let mut tailed_host_logs = Vec::new();
    if !args.no_host_logs {
        for (path, dataset) in HOST_LOGS {
            if std::fs::File::open(path).is_ok() {
                let mut s = source(Path::new(path), dataset);
                s.start_at = StartAt::End;
                agent_config.sources.push(s);
                tailed_host_logs.push(*path);
            }
        }
    }
    let agent_stop = CancellationToken::new();
    let agent = tokio::spawn(yagura_agent::run(agent_config, agent_stop.clone()));

    print_banner(
        &started,
        &data_dir,
        &tailed_host_logs,
        console_account.as_ref(),
        config.shop.enabled,
    );
    let signal_stop = CancellationToken::new();
    tokio::select! {
        _ = super::stop_signal(signal_stop.clone()) => {}
        _ = collector_stopped(&collector) => {}
    }

    demo_stop.cancel();
    if let Some(demo) = demo {
        let _ = demo.await;
    }
    agent_stop.cancel();
    let agent_result = agent.await.context("agent task")?;
    collector_stop.cancel();
    let collector_result = collector.await.context("collector task")?;
    agent_result.context("local agent")?;
    collector_result?;
    println!(
        "Yagura stopped; nothing acknowledged was lost. Data is in {}",
        data_dir.display()
    );
    Ok(())
}

async fn collector_stopped(task: &tokio::task::JoinHandle<anyhow::Result<()>>) {
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn source(path: &Path, dataset: &str) -> SourceConfig {
    SourceConfig {
        paths: vec![path.display().to_string()],
        dataset: dataset.to_string(),
        ..SourceConfig::default()
    }
}

/// The first console account (`admin@yagura.local`) with a random password.
async fn create_console_admin(config: &CollectorConfig) -> anyhow::Result<(String, String)> {
    use base64::Engine as _;
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let email = CONSOLE_ADMIN.to_string();
    let shop = yagura_collector::shop::open(config).await?;
    let created = shop
        .create_account(
            &email,
            &password,
            yagura_collector::shop::domain::user::Role::Admin,
        )
        .await;
    shop.repository().database().close().await;
    created.map_err(|e| anyhow::anyhow!("creating the console account: {e:?}"))?;
    Ok((email, password))
}

/// The console account `yagura up` makes on its first run.
pub const CONSOLE_ADMIN: &str = "admin@yagura.local";

fn print_banner(
    started: &server::Started,
    data_dir: &Path,
    host_logs: &[&str],
    console_account: Option<&(String, String)>,
    console_enabled: bool,
) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nYagura is up.");
    if console_enabled {
        let _ = writeln!(out, "  Console:      {}/console/", started.url);
        match console_account {
            Some((email, password)) => {
                let _ = writeln!(out, "  Console user: {email}");
                let _ = writeln!(out, "  Password:     {password}");
                let _ = writeln!(
                    out,
                    "                (first run: shown once, stored hashed; set up the second factor at first sign-in)"
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  Console user: made on the first run; add one with `YAGURA_SHOP_PASSWORD=… yagura shop create-account EMAIL --role analyst --data-dir {}`",
                    data_dir.display()
                );
            }
        }
    }
    let _ = writeln!(out, "  API URL:      {}", started.url);
    let _ = writeln!(out, "  Certificate:  sha256 {}", started.fingerprint);
    match &started.first_run_api_token {
        Some(token) => {
            let _ = writeln!(out, "  API token:    {}", token.expose());
            let _ = writeln!(
                out,
                "                (first run: shown once, stored hashed — keep it)"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  API token:    shown on the first run; make another with `yagura api-token create --data-dir {}`",
                data_dir.display()
            );
        }
    }
    let _ = writeln!(
        out,
        "  Shop:         {}/shop/api (described at {}/shop/openapi.json; audit trail in event.dataset:yagura.shop.audit)",
        started.shop().url,
        started.shop().url
    );
    let _ = writeln!(out, "  Data:         {}", data_dir.display());
    if !host_logs.is_empty() {
        let _ = writeln!(out, "  Tailing:      {}", host_logs.join(", "));
    }
    let _ = writeln!(
        out,
        "  Try:          YAGURA_TOKEN=<token> yagura search 'message:password' --since 1h --data-dir {}",
        data_dir.display()
    );
    let _ = writeln!(out, "Press Ctrl-C to stop.\n");
}

/// Writes a plausible auth log line every two seconds, so a first search finds something.
async fn write_demo_log(path: PathBuf, host: String, stop: CancellationToken) {
    const USERS: &[&str] = &["root", "admin", "alice", "deploy", "oracle"];
    const SOURCES: &[&str] = &["203.0.113.7", "198.51.100.23", "192.0.2.44", "10.20.30.40"];
    if let Some(dir) = path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        tracing::warn!(error = %e, "demo log disabled");
        return;
    }
    let mut n: usize = 0;
    loop {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
        let user = USERS[n % USERS.len()];
        let ip = SOURCES[(n / 3) % SOURCES.len()];
        let port = 40_000 + (n * 7919) % 20_000;
        let pid = 1000 + n % 500;
        let message = match n % 4 {
            0 | 1 => format!("Failed password for invalid user {user} from {ip} port {port} ssh2"),
            2 => format!("Accepted publickey for {user} from {ip} port {port} ssh2"),
            _ => format!(
                "Connection closed by authenticating user {user} {ip} port {port} [preauth]"
            ),
        };
        let line = format!("{now} {host} sshd[{pid}]: {message}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(error = %e, "demo log write failed");
        }
        n += 1;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
