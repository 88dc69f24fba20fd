//! `yagura allowlist`: the collector signs allowlist policies for its agents and assigns
//! them by label. Agents take a policy only with a valid signature by this key
//! (`[allowlist] signer` in `agent.toml`); a policy edited on the endpoint after signing
//! is refused there. An assigned policy reaches each matching agent in the answer to its
//! next ingest request (see `yagura_collector::fleet::allowlist`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use yagura_agent::allowlist::policy::{Policy, SIGNATURE_PURPOSE};
use yagura_collector::collector_events::load_or_create_key;
use yagura_collector::fleet::allowlist;
use yagura_collector::server;
use yagura_collector::store::Labels;

use super::DataLocation;

#[derive(Debug, Subcommand)]
pub enum AllowlistCommand {
    /// Print the public key agents verify policies with (`[allowlist] signer`).
    Key {
        #[command(flatten)]
        location: DataLocation,
    },
    /// Check a policy and write its signature beside it (`FILE.sig`).
    Sign {
        file: PathBuf,
        #[command(flatten)]
        location: DataLocation,
    },
    /// Check and sign a policy, and assign it to every agent enrolled with all the given
    /// labels (none: every agent). An agent gets the matching assignment with the most
    /// labels; assigning an existing name replaces it.
    Assign {
        file: PathBuf,
        /// The assignment's name (e.g. `prod-web`).
        #[arg(long)]
        name: String,
        /// Labels an agent must carry: `key=value,key=value`.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        #[command(flatten)]
        location: DataLocation,
    },
    /// List the assignments: name, labels, policy hash, when assigned.
    Assignments {
        #[command(flatten)]
        location: DataLocation,
        /// Print JSON (with each policy's text).
        #[arg(long)]
        json: bool,
    },
    /// Remove an assignment. Agents keep the policy they hold.
    Unassign {
        name: String,
        #[command(flatten)]
        location: DataLocation,
    },
}

/// Checks the policy in `file` (a policy agents would refuse is not signed) and returns
/// its text and the collector's signature.
fn checked_and_signed(file: &Path, location: &DataLocation) -> anyhow::Result<(String, String)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Policy::parse(&text, &file.display().to_string())?;
    let config = location.config()?;
    let key =
        load_or_create_key(&config.collector_key_path()).context("the collector's signing key")?;
    let signature = key.sign_document(SIGNATURE_PURPOSE, text.as_bytes());
    Ok((text, signature))
}

pub async fn run(command: AllowlistCommand) -> anyhow::Result<()> {
    match command {
        AllowlistCommand::Key { location } => {
            let config = location.config()?;
            let key = load_or_create_key(&config.collector_key_path())
                .context("the collector's signing key")?;
            println!("{}", key.public_key_base64());
            Ok(())
        }
        AllowlistCommand::Sign { file, location } => {
            let (_, signature) = checked_and_signed(&file, &location)?;
            let mut sig = file.as_os_str().to_owned();
            sig.push(".sig");
            let sig = PathBuf::from(sig);
            std::fs::write(&sig, signature)
                .with_context(|| format!("writing {}", sig.display()))?;
            println!("{} signed: {}", file.display(), sig.display());
            Ok(())
        }
        AllowlistCommand::Assign {
            file,
            name,
            labels,
            location,
        } => {
            let selector = super::parse_labels(&labels)?;
            let (text, signature) = checked_and_signed(&file, &location)?;
            let store = server::open_store(&location.config()?).await?;
            let assigned = allowlist::assign(&store, &name, &selector, &text, &signature).await;
            store.close().await;
            let assigned = assigned?;
            println!(
                "{} assigned as {} to agents with {} (sha256 {})",
                file.display(),
                assigned.name,
                describe(&assigned.selector),
                assigned.sha256
            );
            Ok(())
        }
        AllowlistCommand::Assignments { location, json } => {
            let store = server::open_store(&location.config()?).await?;
            let all = allowlist::assignments(&store).await;
            store.close().await;
            let all = all?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            println!("{:<24} {:<40} {:<16} ASSIGNED", "NAME", "LABELS", "SHA256");
            for a in &all {
                println!(
                    "{:<24} {:<40} {:<16} {}",
                    a.name,
                    describe(&a.selector),
                    &a.sha256[..16.min(a.sha256.len())],
                    a.assigned_at
                );
            }
            Ok(())
        }
        AllowlistCommand::Unassign { name, location } => {
            let store = server::open_store(&location.config()?).await?;
            let removed = allowlist::unassign(&store, &name).await;
            store.close().await;
            anyhow::ensure!(removed?, "no assignment named {name}");
            println!("{name} unassigned (agents keep the policy they hold)");
            Ok(())
        }
    }
}

/// `env=prod, role=web`, or `every agent` for the default.
fn describe(selector: &Labels) -> String {
    if selector.is_empty() {
        return "every agent".into();
    }
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
