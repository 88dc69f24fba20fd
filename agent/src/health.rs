//! Agent health: counters, the periodic heartbeat event and the status file.
//!
//! Every `heartbeat_interval_seconds` the agent puts a `yagura.agent.heartbeat` event into
//! its stream (version, uptime, memory, CPU, spool depth, per-file lag and counters), so
//! the collector's fleet view and any rule can see a struggling or silent agent; it also
//! writes the same snapshot to `state_dir/status.json`, which `yagura-agent status` prints
//! for a person on the machine. Reading memory and CPU costs two small `/proc` reads.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use yagura_shared::Event;

use crate::tail::{Checkpoint, EventContext};

/// The dataset of heartbeat events.
pub const HEARTBEAT_DATASET: &str = "yagura.agent.heartbeat";
/// The status file in the state directory.
pub const STATUS_FILE: &str = "status.json";

/// Counters shared by the stages.
#[derive(Debug)]
pub struct AgentStats {
    started: Instant,
    pub lines_read: AtomicU64,
    pub events_shipped: AtomicU64,
    pub batches_shipped: AtomicU64,
    pub events_lost: AtomicU64,
    /// The last reason a send failed, cleared by the next ack.
    pub last_ship_error: Mutex<Option<String>>,
}

impl Default for AgentStats {
    fn default() -> Self {
        AgentStats {
            started: Instant::now(),
            lines_read: AtomicU64::new(0),
            events_shipped: AtomicU64::new(0),
            batches_shipped: AtomicU64::new(0),
            events_lost: AtomicU64::new(0),
            last_ship_error: Mutex::new(None),
        }
    }
}

impl AgentStats {
    pub fn set_ship_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.last_ship_error.lock() {
            *slot = error;
        }
    }
}

/// One tailed file's progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileLag {
    pub path: String,
    pub offset: u64,
    pub size: Option<u64>,
    pub lag_bytes: u64,
}

/// A snapshot of the agent, as written to `status.json` and sent as a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub updated_at: String,
    pub version: String,
    pub agent_id: String,
    pub host_name: String,
    pub collector_url: String,
    pub uptime_seconds: u64,
    pub rss_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub spool_batches: usize,
    pub spool_bytes: u64,
    pub lag_bytes: u64,
    pub files: Vec<FileLag>,
    pub lines_read: u64,
    pub events_shipped: u64,
    pub batches_shipped: u64,
    pub events_lost: u64,
    pub last_ship_error: Option<String>,
}

/// Resident memory of this process, from `/proc/self/status`.
fn rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU time of this process, from `/proc/self/stat` (USER_HZ is 100 on
/// every Linux architecture for this interface).
pub fn cpu_seconds() -> Option<f64> {
    cpu_seconds_at("/proc/self/stat")
}

/// CPU seconds (user + system, all threads) of process `pid` so far (benchmarks of
/// child processes).
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    cpu_seconds_at(&format!("/proc/{pid}/stat"))
}

fn cpu_seconds_at(stat: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The per-file lag: how far each file's end is ahead of its checkpoint.
pub fn file_lags(checkpoints: &[Checkpoint]) -> Vec<FileLag> {
    checkpoints
        .iter()
        .map(|c| {
            let size = std::fs::metadata(&c.path).ok().map(|m| m.len());
            FileLag {
                path: c.path.clone(),
                offset: c.offset,
                size,
                lag_bytes: size.map_or(0, |s| s.saturating_sub(c.offset)),
            }
        })
        .collect()
}

/// What the snapshot is made from.
pub struct Snapshot<'a> {
    pub stats: &'a AgentStats,
    pub context: &'a EventContext,
    pub collector_url: &'a str,
    pub spool_batches: usize,
    pub spool_bytes: u64,
    pub checkpoints: &'a [Checkpoint],
}

impl Status {
    pub fn take(s: Snapshot<'_>) -> Status {
        let files = file_lags(s.checkpoints);
        Status {
            updated_at: Utc::now().to_rfc3339(),
            version: crate::VERSION.to_string(),
            agent_id: s.context.agent_id.to_string(),
            host_name: s.context.host_name.clone(),
            collector_url: s.collector_url.to_string(),
            uptime_seconds: s.stats.started.elapsed().as_secs(),
            rss_bytes: rss_bytes(),
            cpu_seconds: cpu_seconds(),
            spool_batches: s.spool_batches,
            spool_bytes: s.spool_bytes,
            lag_bytes: files.iter().map(|f| f.lag_bytes).sum(),
            files,
            lines_read: s.stats.lines_read.load(Ordering::Relaxed),
            events_shipped: s.stats.events_shipped.load(Ordering::Relaxed),
            batches_shipped: s.stats.batches_shipped.load(Ordering::Relaxed),
            events_lost: s.stats.events_lost.load(Ordering::Relaxed),
            last_ship_error: s.stats.last_ship_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// The heartbeat event of this snapshot.
    pub fn heartbeat(&self, context: &EventContext) -> Event {
        let mut event = Event::new(Utc::now());
        context.stamp(&mut event);
        event.set_str("event.dataset", HEARTBEAT_DATASET);
        event.set_str("event.action", "heartbeat");
        event.set_str(
            "message",
            format!(
                "agent heartbeat: up {} s, spool {} batches, lag {} bytes",
                self.uptime_seconds, self.spool_batches, self.lag_bytes
            ),
        );
        let counters = json!({
            "uptime_seconds": self.uptime_seconds,
            "rss_bytes": self.rss_bytes,
            "cpu_seconds": self.cpu_seconds,
            "spool": { "batches": self.spool_batches, "bytes": self.spool_bytes },
            "lag_bytes": self.lag_bytes,
            "files": self.files,
            "lines_read": self.lines_read,
            "events_shipped": self.events_shipped,
            "batches_shipped": self.batches_shipped,
            "events_lost": self.events_lost,
        });
        event.set("yagura.agent", counters);
        if let Some(error) = &self.last_ship_error {
            event.set("yagura.agent.last_ship_error", Value::String(error.clone()));
        }
        event
    }

    /// Writes `status.json` atomically (a reader never sees half a file).
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::durable::write_atomic(&state_dir.join(STATUS_FILE), &bytes, 0o600)
    }

    pub fn read(state_dir: &Path) -> std::io::Result<Status> {
        let bytes = std::fs::read(state_dir.join(STATUS_FILE))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// The snapshot for a person.
    pub fn render(&self, now: chrono::DateTime<Utc>) -> String {
        let age = chrono::DateTime::parse_from_rfc3339(&self.updated_at)
            .map(|t| (now - t.with_timezone(&Utc)).num_seconds())
            .unwrap_or(-1);
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
        let mut out = String::new();
        out.push_str(&format!(
            "yagura-agent {} — agent {} on {}\n",
            self.version, self.agent_id, self.host_name
        ));
        out.push_str(&format!(
            "  status as of      {} ({age} s ago)\n",
            self.updated_at
        ));
        out.push_str(&format!("  collector         {}\n", self.collector_url));
        out.push_str(&format!("  uptime            {} s\n", self.uptime_seconds));
        if let Some(rss) = self.rss_bytes {
            out.push_str(&format!("  memory (RSS)      {}\n", mib(rss)));
        }
        if let Some(cpu) = self.cpu_seconds {
            out.push_str(&format!("  CPU time          {cpu:.2} s\n"));
        }
        out.push_str(&format!(
            "  spool             {} batches, {}\n",
            self.spool_batches,
            mib(self.spool_bytes)
        ));
        out.push_str(&format!(
            "  counters          {} lines read, {} events shipped in {} batches, {} events lost\n",
            self.lines_read, self.events_shipped, self.batches_shipped, self.events_lost
        ));
        match &self.last_ship_error {
            Some(e) => out.push_str(&format!("  last send error   {e}\n")),
            None => out.push_str("  last send error   none\n"),
        }
        out.push_str(&format!(
            "  files             {} (lag {} bytes in all)\n",
            self.files.len(),
            self.lag_bytes
        ));
        for f in &self.files {
            out.push_str(&format!(
                "    {}  offset {}  lag {} bytes\n",
                f.path, f.offset, f.lag_bytes
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn snapshot_heartbeat_and_status_file_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        std::fs::write(&log, b"0123456789\n").expect("write");
        let stats = AgentStats::default();
        stats.lines_read.store(7, Ordering::Relaxed);
        let context = EventContext {
            host_name: "h1".into(),
            agent_id: Uuid::now_v7(),
        };
        let checkpoints = vec![Checkpoint {
            path: log.display().to_string(),
            offset: 4,
            ..Checkpoint::default()
        }];
        let status = Status::take(Snapshot {
            stats: &stats,
            context: &context,
            collector_url: "https://c:8443",
            spool_batches: 2,
            spool_bytes: 300,
            checkpoints: &checkpoints,
        });
        assert_eq!(status.lag_bytes, 7);
        assert!(status.rss_bytes.is_some_and(|r| r > 0));
        let event = status.heartbeat(&context);
        event.validate().expect("valid");
        assert_eq!(event.dataset(), Some(HEARTBEAT_DATASET));
        assert_eq!(event.get("yagura.agent.lines_read"), Some(&Value::from(7)));
        assert_eq!(
            event.get("yagura.agent.spool.batches"),
            Some(&Value::from(2))
        );
        assert_eq!(event.get("yagura.agent.lag_bytes"), Some(&Value::from(7)));
        status.write(dir.path()).expect("write");
        let back = Status::read(dir.path()).expect("read");
        let text = back.render(Utc::now());
        assert!(text.contains("7 lines read"), "{text}");
        assert!(text.contains("lag 7 bytes"), "{text}");
    }
}
