//! Running processes, read from `<proc_root>/<pid>/`: who runs what, from which binary,
//! with which arguments, and the SHA-256 of that binary.
//!
//! The inventory is taken every few seconds and diffed against the previous one, so:
//!
//! * a process is identified by `(pid, start_ticks)`, not by its pid alone: pids are
//!   reused, and the start time (in clock ticks since boot, `stat` field 22) tells one
//!   incarnation of a pid from the next;
//! * binaries are hashed once: [`ExeHasher`] caches hashes by the file's identity and
//!   change stamps, so an unchanged binary is never read again, however many processes
//!   run it and however many cycles pass;
//! * a process that exits while it is being read is simply left out (it is gone, the
//!   next cycle will not see it either); one pid is never an error for the whole list.
//!
//! Everything under `/proc/<pid>/` is written by, or on behalf of, the process itself
//! (its name, its command line, even the name of its executable), so the parsers treat
//! it as untrusted input: they never panic, and sizes are capped.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::{tag, take_till1};
use nom::character::complete::{anychar, char, u32 as dec_u32, u64 as dec_u64};
use nom::combinator::value;
use nom::multi::count;
use nom::sequence::{preceded, terminated};
use sha2::{Digest, Sha256};

/// Binaries larger than this are not hashed (their hash is `None`): hashing a multi-GiB
/// file every time it changes would stall the inventory cycle.
pub const DEFAULT_MAX_HASH_BYTES: u64 = 256 * 1024 * 1024;

/// The most of `/proc/<pid>/cmdline` read. A process controls its own command line and
/// the kernel does not bound it by much (`ARG_MAX` and beyond): arguments past this
/// are dropped rather than letting one process inflate every inventory.
pub const MAX_CMDLINE_BYTES: u64 = 64 * 1024;

/// What `readlink` of `/proc/<pid>/exe` appends when the binary was deleted (or
/// replaced by a rename, as package upgrades do) after the process started.
const DELETED_SUFFIX: &[u8] = b" (deleted)";

/// Most bytes read from `stat` and `status` (both are a few hundred bytes to ~1.5 KiB).
const MAX_SMALL_FILE_BYTES: u64 = 16 * 1024;

/// One running process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// The real uid (`Uid:` first field of `status`): the user who started it, not the
    /// setuid owner of its binary.
    pub uid: u32,
    /// The name of `uid`; the reader leaves it `None`, the caller fills it from the
    /// local accounts (see `accounts::user_names`).
    pub user: Option<String>,
    /// The kernel's command name (`comm`, at most 15 bytes, set by the process itself:
    /// not evidence of what the binary is).
    pub name: String,
    /// The executable, as `readlink /proc/<pid>/exe` names it, with the ` (deleted)`
    /// suffix removed (see `exe_deleted`). `None` for kernel threads and for processes
    /// whose `exe` cannot be read (other users' processes when not root).
    pub exe: Option<PathBuf>,
    /// The executable was deleted or replaced on disk after the process started: an
    /// upgraded-but-not-restarted service, or a binary that removed itself.
    pub exe_deleted: bool,
    /// Lowercase hex SHA-256 of the executable the process runs (read through
    /// `/proc/<pid>/exe`, so it is the binary actually mapped, even when deleted or in
    /// another mount namespace). `None` when it cannot be read or is too large.
    pub exe_sha256: Option<String>,
    /// The arguments (`cmdline`, NUL-separated); empty for kernel threads and zombies.
    pub cmdline: Vec<String>,
    /// Start time in clock ticks since boot (`stat` field 22): with `pid`, identifies
    /// this incarnation of the pid.
    pub start_ticks: u64,
}

/// The fields of `/proc/<pid>/stat` the inventory uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// The command name, decoded lossily (it is any bytes but NUL the process chose).
    pub comm: String,
    /// `R`, `S`, `D`, `Z`, …
    pub state: char,
    pub ppid: u32,
    pub start_ticks: u64,
}

/// Why a `stat` line could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatError {
    #[error("stat does not start with `<pid> (`")]
    NoPid,
    #[error("stat has no `)` closing the command name")]
    NoComm,
    #[error("stat fields after the command name are missing or malformed")]
    Fields,
}

/// Parses `/proc/<pid>/stat`.
///
/// The command name sits between the first `(` and the **last** `)`: it may itself
/// contain spaces and parentheses (`1 ((a b) c)) S …` is the command `(a b) c)`), while
/// the fields after it are numbers and the state letter, never a `)`.
pub fn parse_stat(input: &[u8]) -> Result<ProcStat, StatError> {
    let pid_result: IResult<&[u8], u32> = terminated(dec_u32, tag(&b" ("[..])).parse(input);
    let (rest, pid) = pid_result.map_err(|_| StatError::NoPid)?;
    let close = rest
        .iter()
        .rposition(|&b| b == b')')
        .ok_or(StatError::NoComm)?;
    let comm = String::from_utf8_lossy(&rest[..close]).into_owned();
    let (state, ppid, start_ticks) = stat_fields(&rest[close + 1..])
        .map_err(|_| StatError::Fields)?
        .1;
    Ok(ProcStat {
        pid,
        comm,
        state,
        ppid,
        start_ticks,
    })
}

/// ` S ppid pgrp … starttime …` after the command name: field 3 (state), 4 (ppid), then
/// 17 fields skipped (5 to 21, some of them negative), then 22 (starttime).
fn stat_fields(i: &[u8]) -> IResult<&[u8], (char, u32, u64)> {
    let field = || preceded(char(' '), take_till1(|b: u8| b == b' ' || b == b'\n'));
    (
        preceded(char(' '), anychar),
        preceded(char(' '), dec_u32),
        preceded(count(value((), field()), 17), preceded(char(' '), dec_u64)),
    )
        .parse(i)
}

/// The real uid from `/proc/<pid>/status` (`Uid:\treal\teffective\tsaved\tfs`).
pub fn parse_status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Splits `/proc/<pid>/cmdline` into arguments. Trailing NULs are the terminator (and
/// the padding left by programs that rewrite their title), not empty arguments.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end == 0 {
        return Vec::new();
    }
    bytes[..end]
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Reads every process under `proc_root` (normally `/proc`), sorted by pid.
///
/// Pids that vanish while being read, or whose `stat`/`status` cannot be read or
/// parsed, are left out. Processes whose executable cannot be read (kernel threads,
/// other users' processes without privileges) are kept with `exe: None`. An unreadable
/// `proc_root` gives an empty list (logged).
pub fn read_processes(proc_root: &Path, hasher: &mut ExeHasher) -> Vec<Process> {
    let entries = match fs::read_dir(proc_root) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(path = %proc_root.display(), error = %e, "cannot list processes");
            return Vec::new();
        }
    };
    hasher.begin_cycle();
    let mut processes: Vec<Process> = entries
        .flatten()
        .filter_map(|entry| parse_pid(entry.file_name().as_bytes()))
        .filter_map(|pid| read_process(proc_root, pid, hasher))
        .collect();
    hasher.end_cycle();
    processes.sort_by_key(|p| p.pid);
    processes
}

/// The processes now, reusing the records in `known` for processes still running (same
/// pid and start time) instead of reading them again: a diff cycle reads one `stat` per
/// process and reads in full only the new ones. The hash cache is pruned by
/// [`read_processes`] (at snapshots), not here.
pub fn read_processes_reusing(
    proc_root: &Path,
    hasher: &mut ExeHasher,
    known: &std::collections::BTreeMap<(u32, u64), Process>,
) -> Vec<Process> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut processes: Vec<Process> = entries
        .flatten()
        .filter_map(|entry| parse_pid(entry.file_name().as_bytes()))
        .filter_map(|pid| {
            let stat = read_stat(&proc_root.join(pid.to_string()))?;
            match known.get(&(pid, stat.start_ticks)) {
                Some(process) => Some(process.clone()),
                None => read_process(proc_root, pid, hasher),
            }
        })
        .collect();
    processes.sort_by_key(|p| p.pid);
    processes
}

/// A `/proc` entry name that is a pid: decimal digits only (`u32::from_str` would also
/// take `+5`).
fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// Reads one process; `None` when it is gone or its `stat`/`status` are unreadable.
///
/// `stat` is read again at the end: if the pid's start time changed (or the pid is
/// gone), the files read belong to two different processes and the record is dropped
/// rather than mixing them.
pub fn read_process(proc_root: &Path, pid: u32, hasher: &mut ExeHasher) -> Option<Process> {
    let dir = proc_root.join(pid.to_string());
    let stat = read_stat(&dir)?;
    if stat.pid != pid {
        return None;
    }
    let status = read_capped(&dir.join("status"), MAX_SMALL_FILE_BYTES).ok()?;
    let uid = parse_status_uid(&String::from_utf8_lossy(&status))?;
    let cmdline = read_capped(&dir.join("cmdline"), MAX_CMDLINE_BYTES)
        .map(|bytes| parse_cmdline(&bytes))
        .unwrap_or_default();
    let exe_link = dir.join("exe");
    let (exe, exe_deleted) = match fs::read_link(&exe_link) {
        Ok(target) => {
            let (path, deleted) = strip_deleted(target, &exe_link);
            (Some(path), deleted)
        }
        Err(_) => (None, false),
    };
    let exe_sha256 = exe.as_ref().and_then(|_| hasher.sha256(&exe_link));
    let again = read_stat(&dir)?;
    if again.start_ticks != stat.start_ticks {
        return None;
    }
    Some(Process {
        pid,
        ppid: stat.ppid,
        uid,
        user: None,
        name: stat.comm,
        exe,
        exe_deleted,
        exe_sha256,
        cmdline,
        start_ticks: stat.start_ticks,
    })
}

fn read_stat(dir: &Path) -> Option<ProcStat> {
    let bytes = read_capped(&dir.join("stat"), MAX_SMALL_FILE_BYTES).ok()?;
    parse_stat(&bytes).ok()
}

/// Removes the ` (deleted)` suffix of an `exe` link target. The suffix alone could be
/// part of a real file name (a binary named `x (deleted)` to look gone), so it only
/// counts when what the link leads to has no name left on disk, or cannot be reached.
fn strip_deleted(target: PathBuf, exe_link: &Path) -> (PathBuf, bool) {
    let bytes = target.as_os_str().as_bytes();
    let Some(stripped) = bytes.strip_suffix(DELETED_SUFFIX) else {
        return (target, false);
    };
    let still_linked = fs::metadata(exe_link).is_ok_and(|m| m.nlink() > 0);
    if still_linked {
        return (target, false);
    }
    (
        PathBuf::from(std::ffi::OsString::from_vec(stripped.to_vec())),
        true,
    )
}

fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// SHA-256 of executables, with a cache so that unchanged binaries are hashed once.
///
/// The cache key is the file's identity and change stamps from its metadata: device,
/// inode, size, mtime, and ctime too, because mtime can be set back with `touch -d`
/// after editing a binary in place while ctime cannot be set at all. A package upgrade
/// (new inode) or any write changes the key, so the file is hashed again.
///
/// Entries not used during a [`read_processes`] cycle are dropped at its end, so the
/// cache holds only binaries that are running.
#[derive(Debug)]
pub struct ExeHasher {
    max_bytes: u64,
    cache: HashMap<FileKey, CacheEntry>,
    cycle: u64,
    hashed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(meta: &fs::Metadata) -> Self {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct CacheEntry {
    /// `None`: too large to hash (not worth trying again while unchanged).
    sha256: Option<String>,
    /// The last cycle this entry was used in.
    used: u64,
}

impl Default for ExeHasher {
    fn default() -> Self {
        ExeHasher::with_max_bytes(DEFAULT_MAX_HASH_BYTES)
    }
}

impl ExeHasher {
    /// A hasher with the default size limit ([`DEFAULT_MAX_HASH_BYTES`]).
    pub fn new() -> Self {
        ExeHasher::default()
    }

    /// A hasher that leaves files larger than `max_bytes` unhashed.
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        ExeHasher {
            max_bytes,
            cache: HashMap::new(),
            cycle: 0,
            hashed: 0,
        }
    }

    /// How many files were actually read and hashed (cache misses) so far.
    pub fn hashed(&self) -> u64 {
        self.hashed
    }

    /// How many hashes the cache holds.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The lowercase hex SHA-256 of the regular file `path` leads to (symlinks
    /// followed, `/proc/<pid>/exe` included), from the cache when the file is unchanged.
    /// `None` when it cannot be read, is not a regular file, is larger than the limit,
    /// or changed while being read.
    pub fn sha256(&mut self, path: &Path) -> Option<String> {
        let meta = fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let cycle = self.cycle;
        if let Some(entry) = self.cache.get_mut(&FileKey::of(&meta)) {
            entry.used = cycle;
            return entry.sha256.clone();
        }
        if meta.size() > self.max_bytes {
            self.remember(FileKey::of(&meta), None);
            return None;
        }
        // The key is taken from the open file, not the path: a file replaced between
        // the lookup and the open is hashed under its own identity.
        let mut file = File::open(path).ok()?;
        let before = FileKey::of(&file.metadata().ok()?);
        let digest = hash_capped(&mut file, self.max_bytes).ok()?;
        self.hashed += 1;
        let after = FileKey::of(&file.metadata().ok()?);
        let sha256 = digest.map(hex::encode);
        if before == after {
            self.remember(before, sha256.clone());
            sha256
        } else {
            // Written to while being read: the digest matches no version of the file.
            None
        }
    }

    fn remember(&mut self, key: FileKey, sha256: Option<String>) {
        let used = self.cycle;
        self.cache.insert(key, CacheEntry { sha256, used });
    }

    fn begin_cycle(&mut self) {
        self.cycle += 1;
    }

    fn end_cycle(&mut self) {
        let cycle = self.cycle;
        self.cache.retain(|_, entry| entry.used == cycle);
    }
}

/// SHA-256 of at most `max` bytes; `None` when the file turns out to be longer (it grew
/// after its size was checked).
fn hash_capped(file: &mut File, max: u64) -> io::Result<Option<[u8; 32]>> {
    let mut hasher = Sha256::new();
    let mut reader = file.take(max.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if total > max {
            return Ok(None);
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::symlink;

    /// A `stat` line as the kernel writes it (52 fields), with negative values where
    /// the kernel has them (tpgid, priority, nice), to check that fields are skipped
    /// as tokens and not read as numbers.
    fn stat_line(pid: u32, comm: &[u8], ppid: u32, start: u64) -> Vec<u8> {
        let mut line = format!("{pid} (").into_bytes();
        line.extend_from_slice(comm);
        line.extend_from_slice(
            format!(
                ") S {ppid} {pid} {pid} 34816 -1 4194560 1234 0 5 0 12 7 0 0 20 -5 1 0 {start} \
                 10412032 1024 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 \
                 0 0 0 0 0 0 0 0\n"
            )
            .as_bytes(),
        );
        line
    }

    #[test]
    fn stat_with_plain_comm() {
        let stat = parse_stat(&stat_line(1234, b"bash", 1000, 987_654)).expect("stat");
        assert_eq!(
            stat,
            ProcStat {
                pid: 1234,
                comm: "bash".into(),
                state: 'S',
                ppid: 1000,
                start_ticks: 987_654,
            }
        );
    }

    #[test]
    fn stat_comm_is_taken_up_to_the_last_paren() {
        for comm in [
            "(a b) c)",
            "a) S 1 2 3",
            ")",
            "(",
            "",
            " ",
            "x\ny",
            "((()))",
            "kworker/0:1-events",
        ] {
            let stat = parse_stat(&stat_line(7, comm.as_bytes(), 2, 42)).expect(comm);
            assert_eq!(stat.comm, comm);
            assert_eq!(
                (stat.pid, stat.ppid, stat.start_ticks),
                (7, 2, 42),
                "{comm:?}"
            );
        }
    }

    #[test]
    fn stat_comm_bytes_are_decoded_lossily() {
        let stat = parse_stat(&stat_line(7, b"a\xffb", 2, 42)).expect("stat");
        assert_eq!(stat.comm, "a\u{fffd}b");
    }

    #[test]
    fn malformed_stat_is_an_error() {
        assert_eq!(parse_stat(b""), Err(StatError::NoPid));
        assert_eq!(parse_stat(b"abc (x) S 1"), Err(StatError::NoPid));
        assert_eq!(parse_stat(b"-1 (x) S 1"), Err(StatError::NoPid));
        assert_eq!(parse_stat(b"99999999999 (x) S 1"), Err(StatError::NoPid));
        assert_eq!(parse_stat(b"12 (x S 1 2"), Err(StatError::NoComm));
        assert_eq!(parse_stat(b"12 (x) S 1 2 3"), Err(StatError::Fields));
        assert_eq!(parse_stat(b"12 (x) S -1"), Err(StatError::Fields));
        assert_eq!(parse_stat(b"12 (x)"), Err(StatError::Fields));
        // Field 22 present but not a number.
        let line = String::from_utf8(stat_line(12, b"x", 1, 5)).expect("utf8");
        let bad = line.replacen(" 5 10412032", " x 10412032", 1);
        assert_eq!(parse_stat(bad.as_bytes()), Err(StatError::Fields));
    }

    #[test]
    fn status_gives_the_real_uid() {
        let status = "Name:\tpasswd\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t5\n\
                      Uid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_status_uid(status), Some(1000));
        assert_eq!(parse_status_uid("Name:\tx\n"), None);
        assert_eq!(parse_status_uid("Uid:\t\n"), None);
        assert_eq!(parse_status_uid("Uid:\tabc\t0\n"), None);
    }

    #[test]
    fn cmdline_is_split_on_nul() {
        assert_eq!(
            parse_cmdline(b"/usr/bin/python3\0-c\0print('a b')\0"),
            vec!["/usr/bin/python3", "-c", "print('a b')"]
        );
        assert_eq!(parse_cmdline(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert_eq!(
            parse_cmdline(b"nginx: worker process\0\0\0\0"),
            vec!["nginx: worker process"]
        );
        assert_eq!(parse_cmdline(b"no-terminator"), vec!["no-terminator"]);
        assert!(parse_cmdline(b"").is_empty());
        assert!(parse_cmdline(b"\0\0").is_empty());
        assert_eq!(parse_cmdline(b"\xff\0"), vec!["\u{fffd}"]);
    }

    /// `sha256sum` of the bytes `hello`.
    const HELLO_SHA256: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            fs::create_dir(dir.path().join("proc")).expect("proc");
            fs::create_dir(dir.path().join("bin")).expect("bin");
            Fixture { dir }
        }

        fn proc_root(&self) -> PathBuf {
            self.dir.path().join("proc")
        }

        fn bin(&self, name: &str, content: &[u8]) -> PathBuf {
            let path = self.dir.path().join("bin").join(name);
            fs::write(&path, content).expect("write binary");
            path
        }

        fn pid_dir(&self, pid: u32) -> PathBuf {
            let dir = self.proc_root().join(pid.to_string());
            fs::create_dir_all(&dir).expect("pid dir");
            dir
        }

        /// A complete pid directory; `exe` is where its `exe` link points, if anywhere.
        fn process(
            &self,
            pid: u32,
            comm: &str,
            ppid: u32,
            uid: u32,
            cmdline: &[u8],
            exe: Option<&Path>,
        ) {
            let dir = self.pid_dir(pid);
            fs::write(
                dir.join("stat"),
                stat_line(pid, comm.as_bytes(), ppid, 1000 + u64::from(pid)),
            )
            .expect("stat");
            fs::write(
                dir.join("status"),
                format!("Name:\t{comm}\nUid:\t{uid}\t0\t0\t0\nGid:\t0\t0\t0\t0\n"),
            )
            .expect("status");
            fs::write(dir.join("cmdline"), cmdline).expect("cmdline");
            if let Some(exe) = exe {
                symlink(exe, dir.join("exe")).expect("exe link");
            }
        }
    }

    #[test]
    fn reads_a_fixture_proc_tree() {
        let fx = Fixture::new();
        let tool = fx.bin("tool", b"hello");
        fx.process(
            42,
            "(a b) c)",
            1,
            1000,
            b"/bin/tool\0--flag\0a b\0",
            Some(&tool),
        );
        // A second process running the same binary.
        fx.process(43, "tool", 42, 0, b"/bin/tool\0", Some(&tool));
        // A kernel thread: no cmdline, no exe.
        fx.process(2, "kthreadd", 0, 0, b"", None);
        // A binary deleted after the process started (the link dangles here).
        let gone = fx.dir.path().join("bin").join("gone (deleted)");
        fx.process(50, "gone", 1, 33, b"gone\0", Some(&gone));
        // Vanished mid-read: stat but no status.
        let dir = fx.pid_dir(60);
        fs::write(dir.join("stat"), stat_line(60, b"x", 1, 1)).expect("stat");
        // Garbage stat.
        let dir = fx.pid_dir(61);
        fs::write(dir.join("stat"), b"garbage").expect("stat");
        fs::write(dir.join("status"), b"Uid:\t0\t0\t0\t0\n").expect("status");
        // A stat naming another pid.
        let dir = fx.pid_dir(62);
        fs::write(dir.join("stat"), stat_line(63, b"x", 1, 1)).expect("stat");
        fs::write(dir.join("status"), b"Uid:\t0\t0\t0\t0\n").expect("status");
        // Entries that are not pids.
        fs::create_dir(fx.proc_root().join("net")).expect("net");
        fs::create_dir(fx.proc_root().join("+5")).expect("+5");
        symlink("42", fx.proc_root().join("self")).expect("self");
        fs::write(fx.proc_root().join("uptime"), b"1.0 2.0\n").expect("uptime");

        let mut hasher = ExeHasher::new();
        let procs = read_processes(&fx.proc_root(), &mut hasher);
        let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![2, 42, 43, 50]);

        let p = &procs[1];
        assert_eq!(
            *p,
            Process {
                pid: 42,
                ppid: 1,
                uid: 1000,
                user: None,
                name: "(a b) c)".into(),
                exe: Some(tool.clone()),
                exe_deleted: false,
                exe_sha256: Some(HELLO_SHA256.into()),
                cmdline: vec!["/bin/tool".into(), "--flag".into(), "a b".into()],
                start_ticks: 1042,
            }
        );
        assert_eq!(procs[2].exe_sha256.as_deref(), Some(HELLO_SHA256));
        assert_eq!(
            hasher.hashed(),
            1,
            "one binary, hashed once for two processes"
        );

        let kthread = &procs[0];
        assert_eq!(
            (kthread.exe.as_ref(), kthread.exe_sha256.as_ref()),
            (None, None)
        );
        assert!(kthread.cmdline.is_empty());
        assert!(!kthread.exe_deleted);

        let deleted = &procs[3];
        assert_eq!(deleted.exe, Some(fx.dir.path().join("bin").join("gone")));
        assert!(deleted.exe_deleted);
        assert_eq!(deleted.exe_sha256, None);
        assert_eq!(deleted.uid, 33);
    }

    #[test]
    fn a_file_really_named_deleted_is_not_flagged() {
        let fx = Fixture::new();
        let tricky = fx.bin("tool (deleted)", b"hello");
        fx.process(42, "tool", 1, 0, b"", Some(&tricky));
        let procs = read_processes(&fx.proc_root(), &mut ExeHasher::new());
        assert_eq!(procs[0].exe, Some(tricky));
        assert!(!procs[0].exe_deleted);
        assert_eq!(procs[0].exe_sha256.as_deref(), Some(HELLO_SHA256));
    }

    #[test]
    fn missing_proc_root_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_processes(&dir.path().join("nope"), &mut ExeHasher::new()).is_empty());
    }

    #[test]
    fn unchanged_binaries_are_not_hashed_again() {
        let fx = Fixture::new();
        let tool = fx.bin("tool", b"hello");
        let other = fx.bin("other", b"other");
        fx.process(42, "tool", 1, 0, b"", Some(&tool));
        fx.process(43, "other", 1, 0, b"", Some(&other));
        let mut hasher = ExeHasher::new();
        read_processes(&fx.proc_root(), &mut hasher);
        assert_eq!(hasher.hashed(), 2);
        for _ in 0..3 {
            let procs = read_processes(&fx.proc_root(), &mut hasher);
            assert_eq!(procs[0].exe_sha256.as_deref(), Some(HELLO_SHA256));
        }
        assert_eq!(hasher.hashed(), 2, "cycles without changes hash nothing");

        // Same size, new content, and mtime set back to what it was: ctime still moves.
        let mtime = fs::metadata(&tool)
            .expect("meta")
            .modified()
            .expect("mtime");
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&tool, b"HELLO").expect("rewrite");
        File::options()
            .write(true)
            .open(&tool)
            .expect("open")
            .set_modified(mtime)
            .expect("set mtime");
        let procs = read_processes(&fx.proc_root(), &mut hasher);
        assert_eq!(hasher.hashed(), 3, "the changed binary is hashed again");
        let want = hex::encode(Sha256::digest(b"HELLO"));
        assert_eq!(procs[0].exe_sha256, Some(want));
        assert_eq!(hasher.cached(), 2);

        // A process gone: its binary leaves the cache at the end of the cycle.
        fs::remove_dir_all(fx.proc_root().join("43")).expect("remove pid");
        read_processes(&fx.proc_root(), &mut hasher);
        assert_eq!(hasher.cached(), 1);
        assert_eq!(hasher.hashed(), 3);
    }

    #[test]
    fn large_binaries_are_not_hashed() {
        let fx = Fixture::new();
        let small = fx.bin("small", b"hell");
        let large = fx.bin("large", b"hello");
        let mut hasher = ExeHasher::with_max_bytes(4);
        assert_eq!(
            hasher.sha256(&small),
            Some(hex::encode(Sha256::digest(b"hell")))
        );
        assert_eq!(hasher.sha256(&large), None);
        assert_eq!(hasher.sha256(&large), None);
        assert_eq!(hasher.hashed(), 1, "the large file is never read");
        assert_eq!(hasher.sha256(fx.dir.path()), None, "a directory");
        assert_eq!(hasher.sha256(&fx.dir.path().join("missing")), None);
    }

    #[test]
    fn hash_capped_notices_growth() {
        let fx = Fixture::new();
        let path = fx.bin("f", b"hello");
        let mut file = File::open(&path).expect("open");
        assert_eq!(hash_capped(&mut file, 4).expect("read"), None);
        let mut file = File::open(&path).expect("open");
        let digest = hash_capped(&mut file, 5).expect("read").map(hex::encode);
        assert_eq!(digest.as_deref(), Some(HELLO_SHA256));
    }

    /// The machine's own `/proc`: the test process is there, with its binary and a hash.
    #[test]
    fn reads_this_machines_processes() {
        let proc_root = Path::new("/proc");
        if !proc_root.join("self/stat").exists() {
            eprintln!("no /proc here: skipped");
            return;
        }
        let mut hasher = ExeHasher::new();
        let procs = read_processes(proc_root, &mut hasher);
        let me = procs
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("the current process is listed");
        let exe = std::env::current_exe().expect("current exe");
        assert_eq!(me.exe.as_ref(), Some(&exe));
        assert!(!me.exe_deleted);
        let sha = me.exe_sha256.as_deref().expect("hashed");
        assert_eq!(sha.len(), 64);
        assert!(sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert!(!me.cmdline.is_empty());
        assert!(me.start_ticks > 0);
        // `/proc/<pid>` is owned by the effective uid, the same as the real one here.
        let my_uid = fs::metadata("/proc/self").expect("meta").uid();
        assert_eq!(me.uid, my_uid);
    }

    proptest! {
        #[test]
        fn stat_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_stat(&bytes);
        }

        #[test]
        fn stat_parser_never_panics_on_near_misses(
            comm in proptest::collection::vec(any::<u8>(), 0..20),
            cut in 0usize..400,
            insert in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut line = stat_line(5, &comm, 1, 2);
            let cut = cut.min(line.len());
            line.splice(cut..cut, insert);
            let _ = parse_stat(&line);
        }

        #[test]
        fn stat_round_trips(
            pid in any::<u32>(),
            ppid in any::<u32>(),
            start in any::<u64>(),
            comm in proptest::collection::vec(1u8..=255, 0..32),
        ) {
            let stat = parse_stat(&stat_line(pid, &comm, ppid, start));
            prop_assert_eq!(stat, Ok(ProcStat {
                pid,
                comm: String::from_utf8_lossy(&comm).into_owned(),
                state: 'S',
                ppid,
                start_ticks: start,
            }));
        }

        #[test]
        fn cmdline_and_status_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let args = parse_cmdline(&bytes);
            prop_assert!(args.len() <= bytes.len());
            let _ = parse_status_uid(&String::from_utf8_lossy(&bytes));
        }
    }
}
