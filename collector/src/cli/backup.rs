//! `yagura backup keygen|create|list|verify|restore` (see [`yagura_collector::backup`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use yagura_collector::backup::{self, BackupKey};

use super::DataLocation;

/// The key file the packaged service uses.
const DEFAULT_KEY_FILE: &str = "/etc/yagura/backup.key";

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Make a new backup key file (mode 0600). Keep a copy apart from the backups:
    /// without it no backup can be read.
    Keygen {
        /// Where to write it; an existing file is never overwritten.
        file: PathBuf,
    },
    /// Take an encrypted snapshot of archive, index, databases, keys and configuration
    /// into a backup directory (safe while the collector runs; only what changed since the
    /// directory's last snapshot is written).
    Create {
        #[command(flatten)]
        location: DataLocation,
        /// The backup directory (made on first use).
        #[arg(long)]
        to: PathBuf,
        #[arg(long, default_value = DEFAULT_KEY_FILE)]
        key_file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the snapshots in a backup directory.
    List {
        #[arg(long)]
        from: PathBuf,
        #[arg(long, default_value = DEFAULT_KEY_FILE)]
        key_file: PathBuf,
    },
    /// Decrypt and check every file of every snapshot (or one); exit 1 on any problem.
    Verify {
        #[arg(long)]
        from: PathBuf,
        #[arg(long, default_value = DEFAULT_KEY_FILE)]
        key_file: PathBuf,
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// Restore a snapshot (default: the newest) into an empty data directory: the one
    /// `--config` names, or `--data-dir`.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        location: DataLocation,
        #[arg(long, default_value = DEFAULT_KEY_FILE)]
        key_file: PathBuf,
        #[arg(long)]
        snapshot: Option<String>,
        /// Where the configuration files go (default: DATA_DIR/restored-config).
        #[arg(long)]
        config_out: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn load_key(path: &Path) -> anyhow::Result<BackupKey> {
    BackupKey::load(path).with_context(|| {
        format!(
            "reading the backup key {} (make one with `yagura backup keygen FILE`)",
            path.display()
        )
    })
}

pub async fn run(command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Keygen { file } => {
            let key = backup::write_new_key(&file)?;
            println!(
                "backup key {} written to {} (mode 0600); keep a copy apart from the backups",
                key.id(),
                file.display()
            );
            Ok(())
        }
        BackupCommand::Create {
            location,
            to,
            key_file,
            json,
        } => {
            let key = load_key(&key_file)?;
            let config = location.config()?;
            let report = backup::create(&config, location.config.as_deref(), &to, &key).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            println!(
                "snapshot {} in {}: {} files, {} bytes ({} new objects, {} bytes written), \
                 archive up to offset {}, {:.2} s",
                report.snapshot,
                to.display(),
                report.files,
                report.bytes,
                report.new_objects,
                report.new_bytes,
                report.archive_end_offset,
                report.seconds
            );
            for note in &report.notes {
                println!("note: {note}");
            }
            Ok(())
        }
        BackupCommand::List { from, key_file } => {
            let key = load_key(&key_file)?;
            println!("SNAPSHOT\tCREATED\tFILES\tBYTES\tARCHIVE END");
            for s in backup::list(&from, &key)? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    s.snapshot,
                    s.created_at.to_rfc3339(),
                    s.files,
                    s.bytes,
                    s.archive_end_offset
                );
            }
            Ok(())
        }
        BackupCommand::Verify {
            from,
            key_file,
            snapshot,
        } => {
            let key = load_key(&key_file)?;
            let report = tokio::task::spawn_blocking(move || {
                backup::verify(&from, &key, snapshot.as_deref())
            })
            .await??;
            println!(
                "{} snapshots, {} files, {} objects decrypted and checked ({} bytes), {} problems",
                report.snapshots,
                report.entries,
                report.objects,
                report.bytes,
                report.problems.len()
            );
            for problem in &report.problems {
                eprintln!("{problem}");
            }
            anyhow::ensure!(
                report.problems.is_empty(),
                "the backup does not verify ({} problems)",
                report.problems.len()
            );
            Ok(())
        }
        BackupCommand::Restore {
            from,
            location,
            key_file,
            snapshot,
            config_out,
            json,
        } => {
            let key = load_key(&key_file)?;
            let data_dir = location.config()?.data_dir;
            let report = tokio::task::spawn_blocking(move || {
                backup::restore(
                    &from,
                    &key,
                    snapshot.as_deref(),
                    &data_dir,
                    config_out.as_deref(),
                )
            })
            .await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            println!(
                "restored snapshot {} (taken {}): {} files, {} bytes, archive up to offset {}, \
                 in {:.2} s; configuration files in {}",
                report.snapshot,
                report.created_at.to_rfc3339(),
                report.files,
                report.bytes,
                report.archive_end_offset,
                report.seconds,
                report.config_dir.display()
            );
            for note in &report.notes {
                println!("note: {note}");
            }
            Ok(())
        }
    }
}
