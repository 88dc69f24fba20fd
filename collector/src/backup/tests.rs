//! Snapshots of a data directory made of the real pieces (a SQLite database written
//! through sqlx, an archive written by `SegmentArchive`, key files), restored and
//! compared byte for byte; incremental snapshots, damage, wrong keys and unsafe targets.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use chrono::Utc;
use sqlx::Connection as _;
use uuid::Uuid;
use yagura_shared::{AgentKey, Event, SignedBatch};

use super::*;
use crate::archive::{Archive as _, SegmentArchive};

fn batch(key: &AgentKey, agent: Uuid, sequence: u64) -> Vec<u8> {
    let mut e = Event::new(Utc::now());
    e.set_str(
        "message",
        format!("backup test line {sequence:06} {}", "x".repeat(200)),
    );
    SignedBatch::seal(key, agent, sequence, Utc::now(), &[e])
        .expect("seal")
        .into_bytes()
}

async fn append(
    archive: &SegmentArchive,
    key: &AgentKey,
    agent: Uuid,
    sequences: std::ops::Range<u64>,
) {
    for sequence in sequences {
        archive
            .append(agent, sequence, batch(key, agent, sequence))
            .await
            .expect("append");
    }
}

async fn write_database(path: &Path, rows: u32) {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let mut db = sqlx::sqlite::SqliteConnection::connect_with(&options)
        .await
        .expect("open");
    sqlx::query("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, v TEXT)")
        .execute(&mut db)
        .await
        .expect("create");
    for n in 0..rows {
        sqlx::query("INSERT OR REPLACE INTO t (n, v) VALUES (?, ?)")
            .bind(n)
            .bind(format!("row {n}"))
            .execute(&mut db)
            .await
            .expect("insert");
    }
    db.close().await.expect("close");
}

async fn count_rows(path: &Path) -> i64 {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut db = sqlx::sqlite::SqliteConnection::connect_with(&options)
        .await
        .expect("open");
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM t")
        .fetch_one(&mut db)
        .await
        .expect("count");
    n
}

/// Every file under `dir` with its bytes, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut all = Vec::new();
    walk(dir, &HashSet::new(), &mut all, &mut Vec::new()).expect("walk");
    for path in all {
        let rel = path.strip_prefix(dir).expect("rel").display().to_string();
        out.insert(rel, std::fs::read(&path).expect("read"));
    }
    out
}

struct Fixture {
    _tmp: tempfile::TempDir,
    config: CollectorConfig,
    config_file: PathBuf,
    store: PathBuf,
    key: BackupKey,
    archive: SegmentArchive,
    agent_key: AgentKey,
    agent: Uuid,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("tls")).expect("mkdir");
    let config_file = tmp.path().join("collector.toml");
    std::fs::write(&config_file, format!("data_dir = \"{}\"\n", data.display())).expect("config");
    let config = CollectorConfig::load(&config_file).expect("load");
    write_database(&config.database_path(), 50).await;
    std::fs::write(data.join("collector.key"), b"secret signing key").expect("key");
    std::fs::set_permissions(
        data.join("collector.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::write(data.join("tls/collector.crt"), b"certificate").expect("crt");
    // Transient files a snapshot leaves out.
    std::fs::write(data.join("something.lock"), b"").expect("lock");
    std::fs::write(data.join("indexer.json.tmp"), b"half").expect("tmp");
    // Small segments: several sealed ones and a newest being written.
    let archive = SegmentArchive::open(&config.archive_dir(), 4096).expect("archive");
    let agent_key = AgentKey::generate().expect("agent key");
    let agent = Uuid::new_v4();
    append(&archive, &agent_key, agent, 1..150).await;
    let store = tmp.path().join("backups");
    let key = BackupKey::generate().expect("key");
    Fixture {
        _tmp: tmp,
        config,
        config_file,
        store,
        key,
        archive,
        agent_key,
        agent,
    }
}

#[tokio::test]
async fn a_restored_snapshot_is_the_data_directory_as_it_was() {
    let f = fixture().await;
    let report = create(&f.config, Some(&f.config_file), &f.store, &f.key)
        .await
        .expect("create");
    assert_eq!(
        report.new_objects, report.files,
        "a first snapshot writes everything"
    );
    assert_eq!(
        report.archive_end_offset,
        f.archive.committed_end(),
        "the archive copy ends where the archive does"
    );
    let verified = verify(&f.store, &f.key, None).expect("verify");
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    assert_eq!(verified.entries, report.files);

    let before = files(&f.config.data_dir);
    let restored_dir = f.store.parent().expect("parent").join("restored");
    let restored = restore(&f.store, &f.key, None, &restored_dir, None).expect("restore");
    assert_eq!(restored.snapshot, report.snapshot);
    let mut after = files(&restored_dir);
    let config = after
        .remove(&format!("{RESTORED_CONFIG_DIR}/collector.toml"))
        .expect("the configuration file is restored");
    assert_eq!(config, std::fs::read(&f.config_file).expect("config"));

    // The databases are restored as consistent copies (compared by content), everything
    // else byte for byte; transient files are not taken.
    assert_eq!(count_rows(&restored_dir.join("state.db")).await, 50);
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        after.remove(name);
    }
    let expected: BTreeMap<_, _> = before
        .into_iter()
        .filter(|(path, _)| {
            !path.starts_with("state.db") && !path.ends_with(".lock") && !path.ends_with(".tmp")
        })
        .collect();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert!(after == expected, "restored bytes differ");
    let mode = std::fs::metadata(restored_dir.join("collector.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "a key comes back readable by its owner only"
    );

    // The restored archive opens and holds every batch.
    let reopened = SegmentArchive::open(&restored_dir.join("archive"), 4096).expect("reopen");
    assert_eq!(reopened.committed_end(), report.archive_end_offset);
    assert_eq!(reopened.recovery_report().records, 149);
}

#[tokio::test]
async fn a_second_snapshot_stores_only_what_changed() {
    let f = fixture().await;
    let first = create(&f.config, None, &f.store, &f.key)
        .await
        .expect("first");
    append(&f.archive, &f.agent_key, f.agent, 150..170).await;
    write_database(&f.config.database_path(), 60).await;
    let second = create(&f.config, None, &f.store, &f.key)
        .await
        .expect("second");
    let sealed = crate::archive::segment_files(&f.config.archive_dir())
        .expect("segments")
        .len();
    assert!(sealed > 10, "{sealed} segments");
    assert!(
        second.new_objects < second.files / 2,
        "sealed segments and unchanged files are reused: {} new of {}",
        second.new_objects,
        second.files
    );
    assert!(second.new_bytes < second.bytes / 2, "{second:?}");
    assert!(second.archive_end_offset > first.archive_end_offset);
    let snapshots = list(&f.store, &f.key).expect("list");
    assert_eq!(
        snapshots
            .iter()
            .map(|s| s.snapshot.clone())
            .collect::<Vec<_>>(),
        [first.snapshot.clone(), second.snapshot.clone()]
    );
    let verified = verify(&f.store, &f.key, None).expect("verify");
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    assert!(
        verified.objects < verified.entries,
        "shared objects are read once"
    );

    // The first snapshot is still whole and restorable on its own.
    let dir = f.store.parent().expect("parent").join("first");
    let restored = restore(&f.store, &f.key, Some(&first.snapshot), &dir, None).expect("restore");
    assert_eq!(restored.archive_end_offset, first.archive_end_offset);
    assert_eq!(count_rows(&dir.join("state.db")).await, 50);
}

#[tokio::test]
async fn damage_wrong_keys_and_occupied_targets_are_refused() {
    let f = fixture().await;
    let report = create(&f.config, None, &f.store, &f.key)
        .await
        .expect("create");

    let other = BackupKey::generate().expect("key");
    let wrong = verify(&f.store, &other, None).expect_err("another key");
    assert!(
        wrong
            .to_string()
            .contains(&format!("made with key {}", f.key.id())),
        "{wrong}"
    );

    // A flipped bit in one object: verify names the file, restore stops.
    let manifest = Store::open(&f.store, &f.key, false)
        .expect("store")
        .read_manifest(&f.key, &report.snapshot)
        .expect("manifest");
    let victim = manifest
        .entries
        .iter()
        .find(|e| e.path == "data/collector.key")
        .expect("key entry");
    let object = Store {
        dir: f.store.clone(),
    }
    .object_path(&victim.object);
    let mut bytes = std::fs::read(&object).expect("object");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&object, bytes).expect("tamper");
    let verified = verify(&f.store, &f.key, None).expect("verify runs");
    assert_eq!(verified.problems.len(), 1, "{:?}", verified.problems);
    assert!(
        verified.problems[0].contains("data/collector.key"),
        "{:?}",
        verified.problems
    );
    let dir = f.store.parent().expect("parent").join("restored");
    let damaged = restore(&f.store, &f.key, None, &dir, None).expect_err("damaged");
    assert!(
        damaged.to_string().contains("does not decrypt"),
        "{damaged}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0),
        0,
        "a failed restore leaves the directory empty, ready for the next attempt"
    );

    // Only into an empty directory.
    let occupied = restore(&f.store, &f.key, None, &f.config.data_dir, None).expect_err("occupied");
    assert!(occupied.to_string().contains("is not empty"), "{occupied}");
    let missing =
        restore(&f.store, &f.key, Some("nope"), &dir.join("x"), None).expect_err("no such");
    assert!(
        missing.to_string().contains("no snapshot nope"),
        "{missing}"
    );
    // A missing object is found before anything is written.
    std::fs::remove_file(&object).expect("remove");
    let missing_object = restore(&f.store, &f.key, None, &dir, None).expect_err("missing");
    assert!(
        missing_object
            .to_string()
            .contains("missing or of the wrong length"),
        "{missing_object}"
    );
}

#[test]
fn entries_cannot_leave_their_directory() {
    let data = Path::new("/restore/data");
    let config = Path::new("/restore/config");
    assert_eq!(
        restore_target("data/archive/1.seg", data, config).expect("ok"),
        data.join("archive/1.seg")
    );
    assert_eq!(
        restore_target("config/collector.toml", data, config).expect("ok"),
        config.join("collector.toml")
    );
    for bad in [
        "data/../etc/passwd",
        "data//abs",
        "data/",
        "config/../x",
        "other/x",
        "/etc/x",
    ] {
        assert!(restore_target(bad, data, config).is_err(), "{bad}");
    }
}
