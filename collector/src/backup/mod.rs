//! `yagura backup`: encrypted, verifiable snapshots of a collector, and restore.
//!
//! A snapshot holds everything a collector needs to come back: the state database, the
//! shop's database, the index, the archive, the keys and certificates in the data
//! directory, and the configuration file. It can be taken while the collector runs, and
//! is consistent because it is taken in the order the data flows backwards:
//!
//! 1. the databases, with SQLite's `VACUUM INTO` (a transactionally consistent copy that
//!    does not stop writers);
//! 2. the index: each day's last commit (`meta.json`) and the segment files it names,
//!    hard-linked first so a merge cannot delete them mid-copy;
//! 3. the archive: the sealed segments (immutable) and the intact records of the newest.
//!
//! So everything the databases and the index refer to is in the archive copy: after a
//! restore the indexer and the detector resume from their committed offsets and catch up
//! on the archive records taken after them, and the shop's audit forwarder re-sends at
//! most a batch the archive already holds (acknowledged as a duplicate, not stored).
//!
//! The store (`--to DIR`) is a directory of encrypted objects and manifests ([`crypt`]):
//!
//! ```text
//! DIR/backup.json                 format and the id of the key it needs (plain text)
//! DIR/objects/ab/ab12…            one encrypted file each, named by a keyed hash
//! DIR/snapshots/<id>.manifest     an encrypted manifest: every file's path, size,
//!                                 SHA-256, mode and object
//! ```
//!
//! Objects are content-addressed, so a snapshot stores only what changed since the
//! snapshots before it in the same store: sealed archive segments and index segment files
//! are written once (incremental). Copying the directory elsewhere (rsync, object
//! storage) is the offsite copy; nothing in it is readable without the key file.

pub mod crypt;

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crypt::BackupKey;

use crate::config::CollectorConfig;

/// The store and manifest format this build writes and reads.
const FORMAT: u32 = 1;
/// Prefix of the scratch directory (inside the data directory, for hard links).
const STAGING_PREFIX: &str = ".backup-staging-";
/// Where a restore puts configuration files when not told.
pub const RESTORED_CONFIG_DIR: &str = "restored-config";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading: {0}")]
    Read(#[source] io::Error),
    #[error("writing: {0}")]
    Write(#[source] io::Error),
    #[error("backup key: {0}")]
    KeyFile(String),
    #[error("encryption: {0}")]
    Crypto(String),
    #[error("backup damaged: {0}")]
    Damaged(String),
    #[error("database copy of {path}: {message}")]
    Database { path: String, message: String },
    #[error("{0}")]
    Refused(String),
}

impl BackupError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
        move |source| BackupError::Io {
            path: path.display().to_string(),
            source,
        }
    }
    pub(crate) fn read(e: io::Error) -> BackupError {
        BackupError::Read(e)
    }
    pub(crate) fn write(e: io::Error) -> BackupError {
        BackupError::Write(e)
    }
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

/// `DIR/backup.json`: what a store is, readable without the key.
#[derive(Debug, Serialize, Deserialize)]
struct StoreInfo {
    format: u32,
    /// [`BackupKey::id`] of the key every object here is sealed with.
    key_id: String,
}

/// One file of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// `data/<path in the data directory>` or `config/<file name>`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub object: String,
    /// Unix permission bits (keys are 0600 and come back so).
    pub mode: u32,
}

/// A snapshot's manifest (stored encrypted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub snapshot: String,
    pub created_at: DateTime<Utc>,
    pub collector_version: String,
    pub data_dir: PathBuf,
    pub config_file: Option<PathBuf>,
    /// The archive offset the snapshot's archive copy ends at: every batch acknowledged
    /// before this point is in the snapshot.
    pub archive_end_offset: u64,
    /// What the snapshot does not hold, and why.
    pub notes: Vec<String>,
    pub entries: Vec<Entry>,
}

/// What `create` did.
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    pub snapshot: String,
    pub files: usize,
    pub bytes: u64,
    /// Objects written by this snapshot (the rest were already in the store).
    pub new_objects: usize,
    pub new_bytes: u64,
    pub archive_end_offset: u64,
    pub notes: Vec<String>,
    pub seconds: f64,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub snapshots: usize,
    pub entries: usize,
    pub objects: usize,
    pub bytes: u64,
    /// One line per problem, naming the snapshot and file.
    pub problems: Vec<String>,
}

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub created_at: DateTime<Utc>,
    pub files: usize,
    pub bytes: u64,
    pub archive_end_offset: u64,
    pub config_dir: PathBuf,
    pub notes: Vec<String>,
    pub seconds: f64,
}

/// One line of `backup list`.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotSummary {
    pub snapshot: String,
    pub created_at: DateTime<Utc>,
    pub files: usize,
    pub bytes: u64,
    pub archive_end_offset: u64,
}

/// Makes a new key file (mode 0600); refuses to overwrite one.
pub fn write_new_key(path: &Path) -> Result<BackupKey> {
    let key = BackupKey::generate()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(BackupError::io(path))?;
    file.write_all(key.to_file_text().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(BackupError::io(path))?;
    Ok(key)
}

/// An opened store directory.
struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens `dir` for `key`, making it when `create` and it is new.
    fn open(dir: &Path, key: &BackupKey, create: bool) -> Result<Store> {
        let info_path = dir.join("backup.json");
        match std::fs::read(&info_path) {
            Ok(bytes) => {
                let info: StoreInfo = serde_json::from_slice(&bytes)
                    .map_err(|e| BackupError::Damaged(format!("{}: {e}", info_path.display())))?;
                if info.format != FORMAT {
                    return Err(BackupError::Refused(format!(
                        "{}: format {}, this yagura reads format {FORMAT}",
                        info_path.display(),
                        info.format
                    )));
                }
                if info.key_id != key.id() {
                    return Err(BackupError::KeyFile(format!(
                        "the backups in {} were made with key {}, the key file given is key {}",
                        dir.display(),
                        info.key_id,
                        key.id()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                for sub in ["objects", "snapshots"] {
                    let path = dir.join(sub);
                    std::fs::create_dir_all(&path).map_err(BackupError::io(&path))?;
                }
                let info = serde_json::to_vec_pretty(&StoreInfo {
                    format: FORMAT,
                    key_id: key.id(),
                })
                .map_err(|e| BackupError::Crypto(e.to_string()))?;
                write_atomically(&info_path, &info)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BackupError::Refused(format!(
                    "{} holds no backups (no backup.json)",
                    dir.display()
                )));
            }
            Err(e) => return Err(BackupError::io(&info_path)(e)),
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    fn object_path(&self, object: &str) -> PathBuf {
        self.dir
            .join("objects")
            .join(object.get(..2).unwrap_or("00"))
            .join(object)
    }

    fn manifest_path(&self, snapshot: &str) -> PathBuf {
        self.dir
            .join("snapshots")
            .join(format!("{snapshot}.manifest"))
    }

    /// Snapshot ids, oldest first (ids sort by time).
    fn snapshots(&self) -> Result<Vec<String>> {
        let dir = self.dir.join("snapshots");
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(BackupError::io(&dir))? {
            let entry = entry.map_err(BackupError::io(&dir))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".manifest"))
            {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn read_manifest(&self, key: &BackupKey, snapshot: &str) -> Result<Manifest> {
        let path = self.manifest_path(snapshot);
        let file = File::open(&path).map_err(BackupError::io(&path))?;
        let mut plain = Vec::new();
        key.open(&manifest_aad(snapshot), file, &mut plain)?;
        let manifest: Manifest = serde_json::from_slice(&plain)
            .map_err(|e| BackupError::Damaged(format!("manifest {snapshot}: {e}")))?;
        if manifest.snapshot != snapshot || manifest.format != FORMAT {
            return Err(BackupError::Damaged(format!(
                "manifest {snapshot} names snapshot {} (format {})",
                manifest.snapshot, manifest.format
            )));
        }
        Ok(manifest)
    }

    /// `snapshot`, or the newest.
    fn pick(&self, snapshot: Option<&str>) -> Result<String> {
        let all = self.snapshots()?;
        match snapshot {
            Some(wanted) if all.iter().any(|s| s == wanted) => Ok(wanted.to_string()),
            Some(wanted) => Err(BackupError::Refused(format!(
                "no snapshot {wanted} in {} (there are: {})",
                self.dir.display(),
                all.join(", ")
            ))),
            None => all.last().cloned().ok_or_else(|| {
                BackupError::Refused(format!("{} holds no snapshot", self.dir.display()))
            }),
        }
    }

    /// Seals `source` as `object` unless the store holds it already (an object of the
    /// right sealed length); true if written. The sealed bytes must be the `size` and
    /// `sha256` the object is named for, else the source changed under the backup.
    fn put(
        &self,
        key: &BackupKey,
        object: &str,
        source: &Path,
        (size, sha256): (u64, &str),
        touched: &mut BTreeSet<PathBuf>,
    ) -> Result<bool> {
        let path = self.object_path(object);
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == crypt::sealed_len(size))
        {
            return Ok(false);
        }
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(BackupError::io(&parent))?;
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| BackupError::Crypto(e.to_string()))?;
        let tmp = parent.join(format!("{object}.{}.tmp", hex::encode(suffix)));
        let written = (|| {
            let input = File::open(source).map_err(BackupError::io(source))?;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(BackupError::io(&tmp))?;
            let mut out = io::BufWriter::new(file);
            let sealed = key.seal(object, input, &mut out)?;
            let file = out
                .into_inner()
                .map_err(|e| BackupError::io(&tmp)(e.into_error()))?;
            if sealed != (size, sha256.to_string()) {
                return Err(BackupError::Refused(format!(
                    "{} changed while it was being backed up",
                    source.display()
                )));
            }
            file.sync_all().map_err(BackupError::io(&tmp))
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
        std::fs::rename(&tmp, &path).map_err(BackupError::io(&path))?;
        touched.insert(parent);
        Ok(true)
    }
}

/// Flushes directory entries (new objects, a new manifest) to disk.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BackupError::io(dir))
}

fn manifest_aad(snapshot: &str) -> String {
    format!("snapshot {snapshot}")
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(BackupError::io(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(BackupError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(BackupError::io(path))
}

fn sha256_of(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).map_err(BackupError::io(path))?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(BackupError::io(path))?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hash.finalize())))
}

/// A file to put into the snapshot: where its bytes are now, and its path in the snapshot.
struct Planned {
    source: PathBuf,
    path: String,
    /// The file whose permissions the snapshot records (the original of a staged copy).
    mode_from: PathBuf,
}

impl Planned {
    fn staged(source: PathBuf, path: impl Into<String>, original: &Path) -> Self {
        Planned {
            source,
            path: path.into(),
            mode_from: original.to_path_buf(),
        }
    }
}

/// The scratch directory of one `create`, removed however it ends.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Takes a snapshot of the collector `config` describes into the store at `to`.
pub async fn create(
    config: &CollectorConfig,
    config_file: Option<&Path>,
    to: &Path,
    key: &BackupKey,
) -> Result<CreateReport> {
    let started = Instant::now();
    let store = Store::open(to, key, true)?;
    // One writer per store: two runs at once (overlapping timers) would race on objects.
    let lock_path = store.dir.join("backup.lock");
    let lock = File::create(&lock_path).map_err(BackupError::io(&lock_path))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => BackupError::Refused(format!(
            "another backup is writing to {} now",
            store.dir.display()
        )),
        std::fs::TryLockError::Error(e) => BackupError::io(&lock_path)(e),
    })?;
    let created_at = Utc::now();
    let mut suffix = [0u8; 3];
    getrandom::fill(&mut suffix).map_err(|e| BackupError::Crypto(e.to_string()))?;
    let snapshot = format!(
        "{}-{}",
        created_at.format("%Y%m%dT%H%M%S%.3fZ"),
        hex::encode(suffix)
    );
    let data_dir = &config.data_dir;
    if !data_dir.is_dir() {
        return Err(BackupError::Refused(format!(
            "{} is not a directory: nothing to back up",
            data_dir.display()
        )));
    }
    // Scratch left by a run that was killed holds hard links to deleted files: gone.
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let staging = Staging(data_dir.join(format!("{STAGING_PREFIX}{snapshot}")));
    std::fs::create_dir_all(&staging.0).map_err(BackupError::io(&staging.0))?;
    let mut planned = Vec::new();
    let mut notes = Vec::new();
    let mut skip: HashSet<PathBuf> = HashSet::new();

    // 1. The databases.
    let state_db = config.database_path();
    if state_db.is_file() {
        let copy = staging.0.join("state.db");
        vacuum_into(&state_db, &copy).await?;
        planned.push(Planned::staged(copy, "data/state.db", &state_db));
    }
    skip.insert(state_db);
    let shop_url = config.shop_database_url();
    if shop_url.starts_with("sqlite:") {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&shop_url)
            .map_err(|e| BackupError::Refused(format!("shop.database_url: {e}")))?;
        let shop_db = options.get_filename().to_path_buf();
        if shop_db.is_file() {
            let copy = staging.0.join("shop.db");
            vacuum_into(&shop_db, &copy).await?;
            let path = match shop_db.strip_prefix(data_dir) {
                Ok(rel) => format!("data/{}", rel.display()),
                Err(_) => {
                    notes.push(format!(
                        "the shop database {} is outside the data directory: restored as \
                         config/shop.db",
                        shop_db.display()
                    ));
                    "config/shop.db".into()
                }
            };
            planned.push(Planned::staged(copy, path, &shop_db));
        }
        skip.insert(shop_db);
    } else {
        notes.push(
            "the shop's database is PostgreSQL: not in this snapshot; back it up with \
             pg_dump or the server's own backups at the same time"
                .into(),
        );
    }

    // 2 and 3: the index, then the archive, in blocking code.
    let (files, archive_end_offset) = {
        let config = config.clone();
        let staging_dir = staging.0.clone();
        let config_file = config_file.map(Path::to_path_buf);
        tokio::task::spawn_blocking(move || {
            plan_files(&config, &staging_dir, config_file.as_deref(), skip)
        })
        .await
        .map_err(|e| BackupError::Crypto(format!("backup task: {e}")))??
    };
    planned.extend(files.0);
    notes.extend(files.1);

    let key = key.clone();
    let store_dir = store.dir.clone();
    let manifest_base = Manifest {
        format: FORMAT,
        snapshot: snapshot.clone(),
        created_at,
        collector_version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir: data_dir.clone(),
        config_file: config_file.map(Path::to_path_buf),
        archive_end_offset,
        notes,
        entries: Vec::new(),
    };
    let report = tokio::task::spawn_blocking(move || -> Result<CreateReport> {
        let store = Store { dir: store_dir };
        let mut manifest = manifest_base;
        let mut new_objects = 0;
        let mut new_bytes = 0;
        let mut bytes = 0;
        let mut touched = BTreeSet::new();
        for file in &planned {
            let (size, sha256) = sha256_of(&file.source)?;
            let object = key.object_name(&sha256);
            if store.put(&key, &object, &file.source, (size, &sha256), &mut touched)? {
                new_objects += 1;
                new_bytes += size;
            }
            bytes += size;
            let mode = std::fs::metadata(&file.mode_from)
                .or_else(|_| std::fs::metadata(&file.source))
                .map_err(BackupError::io(&file.mode_from))?
                .permissions()
                .mode()
                & 0o7777;
            manifest.entries.push(Entry {
                path: file.path.clone(),
                size,
                sha256,
                object,
                mode,
            });
        }
        // The objects' directory entries are durable before a manifest names them.
        for dir in &touched {
            sync_dir(dir)?;
        }
        sync_dir(&store.dir.join("objects"))?;
        let plain =
            serde_json::to_vec(&manifest).map_err(|e| BackupError::Crypto(e.to_string()))?;
        let path = store.manifest_path(&manifest.snapshot);
        let tmp = path.with_extension("tmp");
        let mut out = File::create(&tmp).map_err(BackupError::io(&tmp))?;
        key.seal(&manifest_aad(&manifest.snapshot), &plain[..], &mut out)?;
        out.sync_all().map_err(BackupError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(BackupError::io(&path))?;
        if let Ok(dir) = File::open(store.dir.join("snapshots")) {
            let _ = dir.sync_all();
        }
        Ok(CreateReport {
            snapshot: manifest.snapshot,
            files: manifest.entries.len(),
            bytes,
            new_objects,
            new_bytes,
            archive_end_offset: manifest.archive_end_offset,
            notes: manifest.notes,
            seconds: 0.0,
        })
    })
    .await
    .map_err(|e| BackupError::Crypto(format!("backup task: {e}")))??;
    drop(staging);
    Ok(CreateReport {
        seconds: started.elapsed().as_secs_f64(),
        ..report
    })
}

/// A transactionally consistent copy of a SQLite database, taken beside its writers.
async fn vacuum_into(source: &Path, copy: &Path) -> Result<()> {
    use sqlx::Connection as _;
    let database = |message: String| BackupError::Database {
        path: source.display().to_string(),
        message,
    };
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(source)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30));
    let mut connection = sqlx::sqlite::SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| database(e.to_string()))?;
    let target = copy
        .to_str()
        .ok_or_else(|| database("the staging path is not UTF-8".into()))?
        .to_string();
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&mut connection)
        .await
        .map_err(|e| database(e.to_string()))?;
    connection
        .close()
        .await
        .map_err(|e| database(e.to_string()))
}

/// Plans the index, the archive, the rest of the data directory and the configuration;
/// returns the files, notes and the archive copy's end offset.
#[allow(clippy::type_complexity)]
fn plan_files(
    config: &CollectorConfig,
    staging: &Path,
    config_file: Option<&Path>,
    mut skip: HashSet<PathBuf>,
) -> Result<((Vec<Planned>, Vec<String>), u64)> {
    let data_dir = &config.data_dir;
    let mut planned = Vec::new();
    let mut notes = Vec::new();

    // 2. The index: per day, the last commit and the files it names.
    let index_dir = config.index_dir();
    if index_dir.is_dir() {
        let state = index_dir.join("indexer.json");
        if state.is_file() {
            let copy = staging.join("index").join("indexer.json");
            create_parent(&copy)?;
            std::fs::copy(&state, &copy).map_err(BackupError::io(&state))?;
            planned.push(Planned::staged(copy, "data/index/indexer.json", &state));
        }
        let days = index_dir.join("days");
        if days.is_dir() {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&days).map_err(BackupError::io(&days))? {
                let entry = entry.map_err(BackupError::io(&days))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && entry.path().is_dir() {
                    names.push(name);
                }
            }
            names.sort();
            for day in names {
                let dir = days.join(&day);
                let copied = snapshot_day(&dir, &staging.join("index/days").join(&day))?;
                planned.extend(copied.into_iter().map(|(source, name)| {
                    Planned::staged(source, format!("data/index/days/{day}/{name}"), &dir)
                }));
            }
        }
    }
    skip.insert(index_dir);

    // 3. The archive: sealed segments as they are, the newest up to its last intact
    // record.
    let archive_dir = config.archive_dir();
    let mut archive_end_offset = 0;
    if archive_dir.is_dir() {
        let segments = crate::archive::segment_files(&archive_dir)
            .map_err(|e| BackupError::Refused(e.to_string()))?;
        let staged = staging.join("archive");
        std::fs::create_dir_all(&staged).map_err(BackupError::io(&staged))?;
        for (index, (base, path)) in segments.iter().enumerate() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let copy = staged.join(&name);
            if index + 1 < segments.len() {
                link_or_copy(path, &copy).map_err(BackupError::io(path))?;
                let size = std::fs::metadata(&copy)
                    .map_err(BackupError::io(&copy))?
                    .len();
                archive_end_offset = base + size;
            } else {
                let intact = crate::archive::intact_length(path)
                    .map_err(|e| BackupError::Refused(e.to_string()))?;
                let mut from = File::open(path)
                    .map_err(BackupError::io(path))?
                    .take(intact);
                let mut to = File::create(&copy).map_err(BackupError::io(&copy))?;
                io::copy(&mut from, &mut to).map_err(BackupError::io(&copy))?;
                archive_end_offset = base + intact;
            }
            planned.push(Planned::staged(copy, format!("data/archive/{name}"), path));
        }
        let sequences = archive_dir.join("sequences.json");
        if sequences.is_file() {
            let copy = staged.join("sequences.json");
            std::fs::copy(&sequences, &copy).map_err(BackupError::io(&sequences))?;
            planned.push(Planned::staged(
                copy,
                "data/archive/sequences.json",
                &sequences,
            ));
        }
    }
    skip.insert(archive_dir);
    skip.insert(staging.to_path_buf());

    // The rest of the data directory (keys, certificates, small state files), copied
    // first so a file written meanwhile is taken whole, as it was at one moment.
    let mut rest = Vec::new();
    walk(data_dir, &skip, &mut rest, &mut notes)?;
    rest.sort();
    let staged_rest = staging.join("rest");
    for source in rest {
        let rel = source.strip_prefix(data_dir).map_err(|_| {
            BackupError::Refused(format!("{} outside the data dir", source.display()))
        })?;
        let copy = staged_rest.join(rel);
        create_parent(&copy)?;
        std::fs::copy(&source, &copy).map_err(BackupError::io(&source))?;
        planned.push(Planned::staged(
            copy,
            format!("data/{}", rel.display()),
            &source,
        ));
    }

    // The configuration and the files it names outside the data directory: the field
    // keyring, certificates and keys.
    let staged_config = staging.join("config");
    let mut outside = Vec::new();
    if let Some(file) = config_file {
        outside.push((file.to_path_buf(), file_name(file)));
    }
    let keyring = config.shop_field_keys_path();
    if keyring.is_file() && !keyring.starts_with(data_dir) {
        outside.push((keyring.clone(), format!("shop-{}", file_name(&keyring))));
    }
    let mut tls = vec![
        ("tls", &config.tls.cert_path),
        ("tls", &config.tls.key_path),
    ];
    for (name, listener) in config.listeners.named() {
        tls.push((name, &listener.cert_path));
        tls.push((name, &listener.key_path));
    }
    for (owner, file) in tls {
        if let Some(file) = file
            && !file.starts_with(data_dir)
        {
            outside.push((file.clone(), format!("{owner}-{}", file_name(file))));
        }
    }
    let mut names = HashSet::new();
    for (source, name) in outside {
        if !names.insert(name.clone()) {
            continue;
        }
        let copy = staged_config.join(&name);
        create_parent(&copy)?;
        std::fs::copy(&source, &copy).map_err(BackupError::io(&source))?;
        planned.push(Planned::staged(copy, format!("config/{name}"), &source));
    }
    if config.shop.field_keys_env.is_some() {
        notes.push(
            "the shop's field-encryption keyring comes from an environment variable: not in \
             this snapshot; keep it with the backup key, or the shop's encrypted fields \
             cannot be read after a restore"
                .into(),
        );
    }
    if !config.detect.rules.is_empty() || config.console.dashboards.is_some() {
        notes.push(
            "detection rules and dashboard directories are not in the snapshot: keep them in \
             version control"
                .into(),
        );
    }
    Ok(((planned, notes), archive_end_offset))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

/// Every regular file under `dir` but the skipped paths and transient files (locks,
/// SQLite's WAL and shared memory, temporaries, earlier staging directories).
fn walk(
    dir: &Path,
    skip: &HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
    notes: &mut Vec<String>,
) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(BackupError::io(dir))? {
        let entry = entry.map_err(BackupError::io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let transient = name.starts_with(STAGING_PREFIX)
            || [".lock", "-wal", "-shm", "-journal", ".tmp"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
            || skip.contains(&path);
        if transient {
            continue;
        }
        let kind = entry.file_type().map_err(BackupError::io(&path))?;
        if kind.is_dir() {
            walk(&path, skip, out, notes)?;
        } else if kind.is_file() {
            out.push(path);
        } else {
            notes.push(format!(
                "{} is not a regular file (a link or device): not in the snapshot",
                path.display()
            ));
        }
    }
    Ok(())
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(BackupError::io(parent)),
        None => Ok(()),
    }
}

/// A hard link (the file cannot vanish under the copy), or a copy across file systems.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => std::fs::copy(from, to).map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Stages one day index's last commit: `meta.json` as read, the segment files it names
/// (hard-linked), and a `.managed.json` listing them so tantivy's garbage collection
/// owns them after a restore. Retried when a merge deletes a file between reading the
/// commit and linking it.
fn snapshot_day(day: &Path, staged: &Path) -> Result<Vec<(PathBuf, String)>> {
    #[derive(Deserialize)]
    struct Meta {
        segments: Vec<SegmentMeta>,
    }
    #[derive(Deserialize)]
    struct SegmentMeta {
        segment_id: String,
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let _ = std::fs::remove_dir_all(staged);
        std::fs::create_dir_all(staged).map_err(BackupError::io(staged))?;
        let meta_path = day.join("meta.json");
        let meta_bytes = match std::fs::read(&meta_path) {
            Ok(bytes) => bytes,
            // A day made since the listing, not yet committed: nothing to keep.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BackupError::io(&meta_path)(e)),
        };
        let meta: Meta = serde_json::from_slice(&meta_bytes)
            .map_err(|e| BackupError::Damaged(format!("{}: {e}", meta_path.display())))?;
        let ids: Vec<String> = meta
            .segments
            .iter()
            .map(|s| s.segment_id.replace('-', ""))
            .collect();
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(day).map_err(BackupError::io(day))? {
            let entry = entry.map_err(BackupError::io(day))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.iter().any(|id| name.starts_with(id.as_str())) {
                names.insert(name);
            }
        }
        let mut vanished = false;
        for name in &names {
            match link_or_copy(&day.join(name), &staged.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => vanished = true,
                Err(e) => return Err(BackupError::io(&day.join(name))(e)),
            }
        }
        // Every segment read must still be committed (tantivy deletes only segments a
        // commit no longer names); a plain commit adding segments is no reason to retry.
        let still = std::fs::read(&meta_path).map_err(BackupError::io(&meta_path))?;
        let still_ids: BTreeSet<String> = serde_json::from_slice::<Meta>(&still)
            .map(|m| {
                m.segments
                    .into_iter()
                    .map(|s| s.segment_id.replace('-', ""))
                    .collect()
            })
            .unwrap_or_default();
        if vanished || !ids.iter().all(|id| still_ids.contains(id)) {
            if attempt < 20 {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            return Err(BackupError::Refused(format!(
                "{}: the index kept changing under the snapshot (20 attempts)",
                day.display()
            )));
        }
        let meta_copy = staged.join("meta.json");
        std::fs::write(&meta_copy, &meta_bytes).map_err(BackupError::io(&meta_copy))?;
        let managed = serde_json::to_vec(&names).map_err(|e| BackupError::Crypto(e.to_string()))?;
        let managed_copy = staged.join(".managed.json");
        std::fs::write(&managed_copy, managed).map_err(BackupError::io(&managed_copy))?;
        let mut out: Vec<(PathBuf, String)> = names
            .into_iter()
            .map(|name| (staged.join(&name), name))
            .collect();
        out.push((meta_copy, "meta.json".into()));
        out.push((managed_copy, ".managed.json".into()));
        return Ok(out);
    }
}

/// The snapshots of a store, oldest first.
pub fn list(from: &Path, key: &BackupKey) -> Result<Vec<SnapshotSummary>> {
    let store = Store::open(from, key, false)?;
    store
        .snapshots()?
        .iter()
        .map(|id| {
            let manifest = store.read_manifest(key, id)?;
            Ok(SnapshotSummary {
                snapshot: manifest.snapshot,
                created_at: manifest.created_at,
                files: manifest.entries.len(),
                bytes: manifest.entries.iter().map(|e| e.size).sum(),
                archive_end_offset: manifest.archive_end_offset,
            })
        })
        .collect()
}

/// Decrypts every object of `snapshot` (default: every snapshot) and checks its size and
/// SHA-256 against the manifest; each object is read once however many snapshots share it.
pub fn verify(from: &Path, key: &BackupKey, snapshot: Option<&str>) -> Result<VerifyReport> {
    let store = Store::open(from, key, false)?;
    let snapshots = match snapshot {
        Some(_) => vec![store.pick(snapshot)?],
        None => store.snapshots()?,
    };
    let mut report = VerifyReport::default();
    let mut checked = HashSet::new();
    for id in &snapshots {
        report.snapshots += 1;
        let manifest = match store.read_manifest(key, id) {
            Ok(manifest) => manifest,
            Err(error) => {
                report.problems.push(format!("snapshot {id}: {error}"));
                continue;
            }
        };
        for entry in &manifest.entries {
            report.entries += 1;
            if !checked.insert(entry.object.clone()) {
                continue;
            }
            report.objects += 1;
            let path = store.object_path(&entry.object);
            let outcome = File::open(&path)
                .map_err(BackupError::io(&path))
                .and_then(|file| key.open(&entry.object, file, io::sink()));
            match outcome {
                Ok((size, sha256)) if size == entry.size && sha256 == entry.sha256 => {
                    report.bytes += size;
                }
                Ok((size, _)) => report.problems.push(format!(
                    "snapshot {id}: {}: the object holds {size} bytes whose SHA-256 is not \
                     the manifest's ({} bytes)",
                    entry.path, entry.size
                )),
                Err(error) => report
                    .problems
                    .push(format!("snapshot {id}: {}: {error}", entry.path)),
            }
        }
    }
    Ok(report)
}

/// Restores `snapshot` (default: the newest) into `data_dir`, which must be empty or
/// absent; configuration files go to `config_dir` (default `data_dir/restored-config`).
pub fn restore(
    from: &Path,
    key: &BackupKey,
    snapshot: Option<&str>,
    data_dir: &Path,
    config_dir: Option<&Path>,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let store = Store::open(from, key, false)?;
    let id = store.pick(snapshot)?;
    let manifest = store.read_manifest(key, &id)?;
    let config_dir = config_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join(RESTORED_CONFIG_DIR));
    // Everything that can be checked before writing is: targets, duplicates, objects.
    let mut targets = Vec::with_capacity(manifest.entries.len());
    let mut seen = HashSet::new();
    for entry in &manifest.entries {
        let target = restore_target(&entry.path, data_dir, &config_dir)?;
        if !seen.insert(target.clone()) {
            return Err(BackupError::Damaged(format!(
                "the manifest names {} twice",
                entry.path
            )));
        }
        let object = store.object_path(&entry.object);
        if !std::fs::metadata(&object).is_ok_and(|m| m.len() == crypt::sealed_len(entry.size)) {
            return Err(BackupError::Damaged(format!(
                "{}: its object {} is missing or of the wrong length (run `yagura backup \
                 verify`)",
                entry.path, entry.object
            )));
        }
        targets.push((entry, target, object));
    }
    for (dir, what) in [
        (data_dir, "data directory"),
        (config_dir.as_path(), "configuration directory"),
    ] {
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(BackupError::Refused(format!(
                        "{} is not empty: a restore goes into an empty {what} (move the old \
                         one aside first)",
                        dir.display()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::io(dir)(e)),
        }
    }
    std::fs::create_dir_all(data_dir).map_err(BackupError::io(data_dir))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o750))
        .map_err(BackupError::io(data_dir))?;
    let mut bytes = 0;
    let written = (|| -> Result<()> {
        let mut dirs = BTreeSet::new();
        for (entry, target, object) in &targets {
            create_parent(target)?;
            let mut parent = target.parent();
            while let Some(dir) = parent {
                dirs.insert(dir.to_path_buf());
                if dir == data_dir || dir == config_dir {
                    break;
                }
                parent = dir.parent();
            }
            bytes += restore_file(key, entry, target, object)?;
        }
        for dir in dirs.iter().rev() {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if let Err(error) = written {
        // Leave the directories as empty as they were found: a half-restored data
        // directory must not be started, nor block the next attempt.
        for dir in [data_dir, config_dir.as_path()] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
            }
        }
        return Err(error);
    }
    Ok(RestoreReport {
        snapshot: id,
        created_at: manifest.created_at,
        files: manifest.entries.len(),
        bytes,
        archive_end_offset: manifest.archive_end_offset,
        config_dir,
        notes: manifest.notes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Decrypts one entry next to its target, checks it, gives it its mode, syncs it and
/// renames it into place; returns its size.
fn restore_file(key: &BackupKey, entry: &Entry, target: &Path, object: &Path) -> Result<u64> {
    let tmp = target.with_extension("restoring");
    let outcome = (|| {
        let sealed = File::open(object).map_err(BackupError::io(object))?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(BackupError::io(&tmp))?;
        let (size, sha256) = {
            let mut writer = io::BufWriter::new(&mut out);
            let opened = key.open(&entry.object, sealed, &mut writer)?;
            writer.flush().map_err(BackupError::io(&tmp))?;
            opened
        };
        if size != entry.size || sha256 != entry.sha256 {
            return Err(BackupError::Damaged(format!(
                "{}: restored {size} bytes that do not match the manifest",
                entry.path
            )));
        }
        out.set_permissions(std::fs::Permissions::from_mode(entry.mode & 0o777))
            .and_then(|()| out.sync_all())
            .map_err(BackupError::io(&tmp))?;
        std::fs::rename(&tmp, target).map_err(BackupError::io(target))?;
        Ok(size)
    })();
    if outcome.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    outcome
}

/// Where an entry goes; a path that would leave its directory is damage, not a path.
fn restore_target(path: &str, data_dir: &Path, config_dir: &Path) -> Result<PathBuf> {
    let (base, rel) = if let Some(rel) = path.strip_prefix("data/") {
        (data_dir, rel)
    } else if let Some(rel) = path.strip_prefix("config/") {
        (config_dir, rel)
    } else {
        return Err(BackupError::Damaged(format!("unknown entry {path:?}")));
    };
    let rel = Path::new(rel);
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(BackupError::Damaged(format!(
            "entry {path:?} leaves its directory"
        )));
    }
    Ok(base.join(rel))
}

#[cfg(test)]
mod tests;
