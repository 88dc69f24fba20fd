//! `yagura shop`: offline operations on the reference shop's data — verify the audit
//! chain, rotate the field-encryption key (re-encrypting what it protects), export a
//! masked copy for test environments, and create accounts with a role.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;

use super::DataLocation;
use yagura_collector::shop::domain::form::{mask_email, mask_name, mask_phone, mask_text};
use yagura_collector::shop::domain::user::Role;
use yagura_collector::shop::infrastructure::audit_trail::{self, Verification};
use yagura_collector::shop::infrastructure::field_cipher::FieldKeyring;

#[derive(Debug, Subcommand)]
pub enum ShopCommand {
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Put a new field-encryption key first and re-encrypt every sensitive value with it
    /// (the old keys stay in the keyring to read backups; remove them by hand later).
    RotateKey {
        #[command(flatten)]
        location: DataLocation,
    },
    /// Write the shop's data with personal fields masked (for test environments), NDJSON.
    Export {
        /// Mask personal data. Required: an unmasked export is not offered.
        #[arg(long)]
        masked: bool,
        /// Where to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        location: DataLocation,
    },
    /// Create an account with a role (e.g. the first admin). The password is read from
    /// the environment variable YAGURA_SHOP_PASSWORD, never from the command line.
    CreateAccount {
        email: String,
        #[arg(long, default_value = "customer")]
        role: String,
        #[command(flatten)]
        location: DataLocation,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every record's hash and link, from the first; exit 1 at the first break.
    Verify {
        #[command(flatten)]
        location: DataLocation,
    },
}

pub async fn run(command: ShopCommand) -> anyhow::Result<()> {
    match command {
        ShopCommand::Audit {
            command: AuditCommand::Verify { location },
        } => {
            let config = location.config()?;
            let shop = yagura_collector::shop::open(&config).await?;
            let db = shop.repository().database().clone();
            let verdict = audit_trail::verify(&db)
                .await
                .context("reading the audit trail")?;
            db.close().await;
            match verdict {
                Verification::Intact { records } => {
                    println!("audit trail intact: {records} records, every link and hash verified");
                    Ok(())
                }
                Verification::Broken(broken) => {
                    eprintln!(
                        "audit trail BROKEN at record {}: {}",
                        broken.sequence, broken.problem
                    );
                    std::process::exit(1);
                }
            }
        }
        ShopCommand::RotateKey { location } => {
            let config = location.config()?;
            anyhow::ensure!(
                config.shop.field_keys_env.is_none()
                    || std::env::var(config.shop.field_keys_env.as_deref().unwrap_or("")).is_err(),
                "the keyring comes from the environment: rotate it there, then run this again \
                 with the new key first"
            );
            let shop = yagura_collector::shop::open(&config).await?;
            let path = config.shop_field_keys_path();
            let keys = FieldKeyring::rotate_file(&path)?;
            let active = keys.active_key_id().to_string();
            shop.replace_keys(keys)?;
            let changed = shop.reencrypt_all().await?;
            shop.repository().database().close().await;
            println!(
                "{}: key {active} is now active; {changed} submissions re-encrypted",
                path.display()
            );
            Ok(())
        }
        ShopCommand::Export {
            masked,
            out,
            location,
        } => {
            anyhow::ensure!(
                masked,
                "only a masked export is offered: pass --masked (personal data stays in production)"
            );
            let config = location.config()?;
            let shop = yagura_collector::shop::open(&config).await?;
            let mut lines = Vec::new();
            for user in shop.users().await? {
                lines.push(json!({
                    "kind": "user",
                    "id": user.id.0,
                    "email": mask_email(user.email.as_str()),
                    "role": user.role,
                    "mfa_enrolled": user.mfa_enrolled,
                }));
            }
            for submission in shop.all_submissions().await? {
                lines.push(json!({
                    "kind": "form_submission",
                    "id": submission.id,
                    "created_at": submission.created_at,
                    "name": mask_name(&submission.name),
                    "email": mask_email(&submission.email),
                    "phone": mask_phone(&submission.phone),
                    "address": mask_text(&submission.address),
                    "message": mask_text(&submission.message),
                }));
            }
            shop.repository().database().close().await;
            let mut text = String::new();
            for line in &lines {
                text.push_str(&line.to_string());
                text.push('\n');
            }
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout().write_all(text.as_bytes())?,
            }
            Ok(())
        }
        ShopCommand::CreateAccount {
            email,
            role,
            location,
        } => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("--role: one of customer, analyst, admin"))?;
            let password = std::env::var("YAGURA_SHOP_PASSWORD")
                .context("set YAGURA_SHOP_PASSWORD to the new account's password")?;
            let config = location.config()?;
            let shop = yagura_collector::shop::open(&config).await?;
            let id = shop.create_account(&email, &password, role).await;
            shop.repository().database().close().await;
            let id = id.map_err(|e| match e {
                yagura_collector::shop::application::ShopError::Invalid(problems) => {
                    anyhow::anyhow!(
                        "{}",
                        problems
                            .iter()
                            .map(|p| format!("{}: {}", p.field, p.problem))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                }
                other => anyhow::anyhow!("{other}"),
            })?;
            println!("{} ({}) created: {}", email, role.as_str(), id.0);
            Ok(())
        }
    }
}
