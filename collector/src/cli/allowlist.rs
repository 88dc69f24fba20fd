//! `yagura allowlist`: the collector signs allowlist policies for its agents. Agents take
//! a policy only with a valid signature by this key (`[allowlist] signer` in
//! `agent.toml`); a policy edited on the endpoint after signing is refused there.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use yagura_agent::allowlist::policy::{Policy, SIGNATURE_PURPOSE};
use yagura_collector::collector_events::load_or_create_key;

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
}

pub fn run(command: AllowlistCommand) -> anyhow::Result<()> {
    match command {
        AllowlistCommand::Key { location } => {
            let config = location.config()?;
            let key = load_or_create_key(&config.collector_key_path())
                .context("the collector's signing key")?;
            println!("{}", key.public_key_base64());
            Ok(())
        }
        AllowlistCommand::Sign { file, location } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // A policy agents would refuse is not signed.
            Policy::parse(&text, &file.display().to_string())?;
            let config = location.config()?;
            let key = load_or_create_key(&config.collector_key_path())
                .context("the collector's signing key")?;
            let mut sig = file.as_os_str().to_owned();
            sig.push(".sig");
            let sig = PathBuf::from(sig);
            std::fs::write(&sig, key.sign_document(SIGNATURE_PURPOSE, text.as_bytes()))
                .with_context(|| format!("writing {}", sig.display()))?;
            println!("{} signed: {}", file.display(), sig.display());
            Ok(())
        }
    }
}
