//! One agent process per state directory.
//!
//! Two agents on one state directory would read the same files from the same checkpoints
//! and number their batches from the same sequence: every line shipped twice, one
//! process's batch files deleted by the other's acks, `acked.json` written by both. So
//! `run` and `enroll` hold an exclusive lock on `agent.lock` in the state directory while
//! they work, and a second process is refused with the holder's pid. The lock is the
//! kernel's (`flock`), released with the process however it ends, so a SIGKILL or a power
//! cut never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::Error;

/// The lock file in the state directory. Its content (the holder's pid) is only for the
/// message a refused process prints.
pub const LOCK_FILE: &str = "agent.lock";

/// Held for as long as the state directory is in use; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes the state directory's lock, or explains who holds it. `state_dir` must exist.
pub fn acquire(state_dir: &Path) -> Result<StateLock, Error> {
    let path = state_dir.join(LOCK_FILE);
    let io = |what: &str, cause| Error::Io {
        context: format!("cannot {what} {}", path.display()),
        cause,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io("open", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::StateDirInUse {
                state_dir: state_dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "another process".into()
                } else {
                    format!("process {holder}")
                },
            });
        }
        Err(TryLockError::Error(e)) => return Err(io("lock", e)),
    }
    // Not durable on purpose: the pid only names the holder while it runs.
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .map_err(|e| io("write", e))?;
    Ok(StateLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = acquire(dir.path()).expect("first lock");
        // flock locks belong to open files: a second open in this process conflicts
        // exactly as another process's would.
        let refused = acquire(dir.path()).expect_err("second lock refused");
        let message = refused.to_string();
        assert!(
            message.contains(&format!("process {}", std::process::id()))
                && message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        drop(first);
        let again = acquire(dir.path()).expect("free again once dropped");
        drop(again);
    }

    #[test]
    fn a_missing_state_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tmp");
        let error = acquire(&dir.path().join("absent")).expect_err("no directory");
        assert!(error.to_string().contains("cannot open"), "{error}");
    }
}
