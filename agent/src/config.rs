//! The agent's configuration: a TOML file, or a value built in code (as `yagura up` does).
//!
//! Guarantees: unknown keys are errors (`deny_unknown_fields`), every error names the file
//! and, for syntax and type errors, the line and column; [`AgentConfig::validate`] checks
//! what serde cannot (non-empty sources, valid glob patterns, non-zero limits). Fields carry
//! their unit in the name (`_ms`, `_bytes`).
//!
//! ```toml
//! state_dir = "/var/lib/yagura-agent"   # key, enrollment, spool, checkpoints
//! host_name = "web-1"                    # optional; default: the machine's hostname
//!
//! [ship]
//! batch_max_events = 1000
//! batch_max_wait_ms = 250
//! max_backoff_ms = 5000
//! request_timeout_ms = 10000
//! batches_in_flight = 8
//!
//! [spool]
//! max_bytes = 268435456
//!
//! [[sources]]
//! paths = ["/var/log/auth.log", "/tmp/x/*.log"]
//! dataset = "system.auth"
//! start_at = "beginning"                 # or "end"; only for a file with no checkpoint
//!
//! [metrics]                              # optional: Prometheus /metrics, plain HTTP
//! listen = "127.0.0.1:9464"              # loopback only unless allow_remote = true
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use yagura_shared::config_check;

/// Why a configuration could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}{}: {message}", path.display(), location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        /// 1-based line and column, when the TOML error points somewhere.
        location: Option<(usize, usize)>,
        message: String,
    },
    #[error("{}: `{key}` {reason}", path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "agent config".into()))]
    Invalid {
        /// The file, when the configuration came from one.
        path: Option<PathBuf>,
        key: String,
        reason: String,
    },
}

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Holds the agent key, the enrollment, the spool and the acked checkpoints.
    pub state_dir: PathBuf,
    /// `host.name` of every event; `None` means the machine's hostname.
    #[serde(default)]
    pub host_name: Option<String>,
    #[serde(default)]
    pub ship: ShipConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// How file changes are noticed. Default `notify`.
    #[serde(default)]
    pub watch: WatchMode,
    /// Seconds between heartbeat events (and status file updates). Default 60.
    #[serde(default = "default_heartbeat_interval_seconds")]
    pub heartbeat_interval_seconds: u64,
    /// The endpoint inventory (processes, ports, USB, users, packages, neighbours).
    #[serde(default)]
    pub inventory: InventoryConfig,
    /// The local allowlist (judged on every inventory observation).
    #[serde(default)]
    pub allowlist: Option<AllowlistConfig>,
    /// The Prometheus endpoint (off unless `listen` is set).
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[metrics]`: `GET /metrics` over plain HTTP for a local Prometheus (or its agent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The address to serve on, e.g. `127.0.0.1:9464`; no endpoint when unset.
    pub listen: Option<SocketAddr>,
    /// Allows a non-loopback `listen`. Off by default: the endpoint has no TLS and no
    /// authentication, and its figures name the tailed files.
    pub allow_remote: bool,
}

/// `[allowlist]`: the signed policy and who signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowlistConfig {
    /// The policy (TOML); its signature is the file beside it with `.sig` appended.
    pub policy: PathBuf,
    /// The collector's policy-signing public key (base64; `yagura allowlist key`).
    pub signer: String,
}

/// `[inventory]`: snapshots and change events of what is on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Off unless set (`yagura up` turns it on for its local agent).
    pub enabled: bool,
    /// Seconds between diff cycles (change events). Default 10.
    pub diff_interval_seconds: u64,
    /// Minutes between full snapshots. Default 60.
    pub snapshot_interval_minutes: u64,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            enabled: false,
            diff_interval_seconds: 10,
            snapshot_interval_minutes: 60,
        }
    }
}

/// How the agent notices that files changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// inotify wake-ups plus the periodic poll (the poll alone is correct).
    #[default]
    Notify,
    /// The periodic poll only, for file systems without inotify (NFS, some FUSE mounts).
    Poll,
}

fn default_heartbeat_interval_seconds() -> u64 {
    60
}

/// Batching and sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipConfig {
    /// A batch is sealed once it holds this many events. Default 1000.
    pub batch_max_events: usize,
    /// A partial batch is sealed this long after its first line was read. Default 250.
    pub batch_max_wait_ms: u64,
    /// A batch is sealed once its events' text reaches this many bytes. Default 4 MiB.
    pub batch_max_bytes: usize,
    /// Ceiling of the exponential retry backoff. Default 5000.
    pub max_backoff_ms: u64,
    /// Timeout of one HTTP request to the collector. Default 10000.
    pub request_timeout_ms: u64,
    /// Most unacknowledged batches sent at once, in one request (acknowledged in order).
    /// 1 sends one batch per request. Default 8, at most 64.
    pub batches_in_flight: usize,
    /// How often the collector is asked for a certificate hand-over (`yagura tls
    /// rotate`); 0 never. Default 60.
    pub handover_check_seconds: u64,
}

impl Default for ShipConfig {
    fn default() -> Self {
        ShipConfig {
            batch_max_events: 1000,
            batch_max_wait_ms: 250,
            batch_max_bytes: 4 << 20,
            max_backoff_ms: 5000,
            request_timeout_ms: 10_000,
            batches_in_flight: 8,
            handover_check_seconds: 60,
        }
    }
}

/// The on-disk spool of sealed batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// The bound of the spooled batches. Default 256 MiB.
    pub max_bytes: u64,
    /// What happens at the bound. Default `block`.
    pub when_full: WhenFull,
}

/// The full-spool policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Tailing pauses (offsets hold, nothing is lost) until the collector acks batches.
    #[default]
    Block,
    /// The oldest unsent batch is dropped to make room, and a `yagura.agent.loss` event
    /// with the exact counts takes its place.
    DropOldest,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: crate::spool::DEFAULT_MAX_BYTES,
            when_full: WhenFull::default(),
        }
    }
}

/// One group of files tailed the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// File paths or glob patterns (`*`, `?`, `[..]`, `**`), resolved again every second.
    pub paths: Vec<String>,
    /// `event.dataset` of the events. Default `"generic"`.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// Where to start in a file that has no checkpoint. Default `beginning`.
    #[serde(default)]
    pub start_at: StartAt,
    /// Glob patterns of files not to tail even though `paths` matches them
    /// (e.g. `"/var/log/app/*.gz"`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Added to every event of the source as `labels.<key>`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Joins several lines into one event (stack traces, multi-line messages).
    #[serde(default)]
    pub multiline: Option<MultilineConfig>,
    /// How lines become ECS fields: `raw` (default), `syslog`, `linux-auth`,
    /// `web-access`, `web-error`, `auditd`, `postgresql`, `dns`, `json` or `auto`.
    #[serde(default = "default_parser")]
    pub parser: String,
    /// The zone of timestamps that carry none, as `+HH:MM` or `UTC`. Default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// `json` parser: the field holding the event time (dotted path).
    #[serde(default)]
    pub json_timestamp_field: Option<String>,
    /// `json` parser: the field holding the message (dotted path).
    #[serde(default)]
    pub json_message_field: Option<String>,
}

fn default_parser() -> String {
    "raw".into()
}

impl SourceConfig {
    /// The parser and its context, as configured (validated by [`AgentConfig::validate`]).
    pub fn parser_setup(
        &self,
    ) -> Result<(crate::parse::ParserKind, crate::parse::ParseContext), String> {
        let kind: crate::parse::ParserKind = self
            .parser
            .parse()
            .map_err(|e: crate::parse::UnknownParser| e.to_string())?;
        let mut context = crate::parse::ParseContext::default();
        if let Some(zone) = &self.timezone {
            context.timezone = parse_fixed_offset(zone)?;
        }
        context.json.timestamp_field = self.json_timestamp_field.clone();
        context.json.message_field = self.json_message_field.clone();
        Ok((kind, context))
    }
}

/// `UTC`, `Z` or `+HH:MM` / `-HH:MM`.
fn parse_fixed_offset(text: &str) -> Result<chrono::FixedOffset, String> {
    if matches!(text, "UTC" | "utc" | "Z" | "z") {
        return chrono::FixedOffset::east_opt(0).ok_or_else(|| "bad zone".to_string());
    }
    let bad = || format!("time zone `{text}`: expected UTC or an offset such as +01:00");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (hours, minutes) = rest.split_once(':').ok_or_else(bad)?;
    let hours: i32 = hours.parse().map_err(|_| bad())?;
    let minutes: i32 = minutes.parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    chrono::FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(bad)
}

/// How lines are joined into one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// `start`: a line matching `pattern` begins a new event and the lines after it that do
    /// not match belong to it. `continue`: a line matching `pattern` belongs to the event
    /// before it.
    pub mode: MultilineMode,
    /// A regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// An event waiting for more lines is handed out this long after its last line.
    /// Default 1000.
    #[serde(default = "default_flush_timeout_ms")]
    pub flush_timeout_ms: u64,
    /// Most lines joined into one event; the event is handed out at this count. Default 500.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultilineMode {
    Start,
    Continue,
}

fn default_flush_timeout_ms() -> u64 {
    1000
}

fn default_max_lines() -> usize {
    500
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            paths: Vec::new(),
            dataset: default_dataset(),
            start_at: StartAt::default(),
            exclude: Vec::new(),
            labels: std::collections::BTreeMap::new(),
            multiline: None,
            parser: default_parser(),
            timezone: None,
            json_timestamp_field: None,
            json_message_field: None,
        }
    }
}

fn default_dataset() -> String {
    "generic".into()
}

/// Where tailing starts in a file the agent has no checkpoint for.
///
/// Applies to the files found when the agent starts; a file that appears later is new
/// by definition and is always read from its beginning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
}

impl AgentConfig {
    /// A configuration with defaults everywhere and no sources.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            state_dir: state_dir.into(),
            host_name: None,
            ship: ShipConfig::default(),
            spool: SpoolConfig::default(),
            sources: Vec::new(),
            watch: WatchMode::default(),
            heartbeat_interval_seconds: default_heartbeat_interval_seconds(),
            inventory: InventoryConfig::default(),
            allowlist: None,
            metrics: MetricsConfig::default(),
        }
    }

    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let config = Self::parse(&text, path)?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, reason, .. } => ConfigError::Invalid {
                path: Some(path.to_path_buf()),
                key,
                reason,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|span| span.start);
            let key = offset.and_then(|o| config_check::key_at(text, o));
            let message = e.message().trim();
            ConfigError::Parse {
                path: path.to_path_buf(),
                location: offset.map(|o| config_check::line_column(text, o)),
                message: match key {
                    Some(key) => format!("`{key}`: {message}"),
                    None => message.to_string(),
                },
            }
        })
    }

    /// Every problem of a configuration text, each with its line and key: all the
    /// parse errors (see [`config_check::every_problem`]), else the first failed check.
    pub fn problems(text: &str) -> Vec<config_check::ConfigProblem> {
        let parse_errors = config_check::every_problem(text, |text| {
            toml::from_str::<AgentConfig>(text).err().map(|e| {
                config_check::ConfigProblem::at(text, e.span().map(|s| s.start), e.message())
            })
        });
        if !parse_errors.is_empty() {
            return parse_errors;
        }
        match toml::from_str::<AgentConfig>(text).map(|c| c.validate()) {
            Ok(Err(ConfigError::Invalid { key, reason, .. })) => {
                vec![config_check::ConfigProblem::of_key(text, &key, reason)]
            }
            Ok(Err(other)) => vec![config_check::ConfigProblem::at(
                text,
                None,
                other.to_string(),
            )],
            _ => Vec::new(),
        }
    }

    /// Checks what the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: &str| ConfigError::Invalid {
            path: None,
            key,
            reason: reason.to_string(),
        };
        if self.state_dir.as_os_str().is_empty() {
            return Err(invalid("state_dir".into(), "must not be empty"));
        }
        if let Some(host) = &self.host_name
            && host.trim().is_empty()
        {
            return Err(invalid("host_name".into(), "must not be empty when set"));
        }
        if self.ship.batch_max_events == 0 {
            return Err(invalid(
                "ship.batch_max_events".into(),
                "must be at least 1",
            ));
        }
        if self.ship.batch_max_bytes < 1024 {
            return Err(invalid(
                "ship.batch_max_bytes".into(),
                "must be at least 1024",
            ));
        }
        if self.inventory.diff_interval_seconds == 0
            || self.inventory.snapshot_interval_minutes == 0
        {
            return Err(ConfigError::Invalid {
                path: None,
                key: "inventory".into(),
                reason: "diff_interval_seconds and snapshot_interval_minutes must be above 0"
                    .into(),
            });
        }
        if let Some(allowlist) = &self.allowlist {
            if !self.inventory.enabled {
                return Err(ConfigError::Invalid {
                    path: None,
                    key: "allowlist".into(),
                    reason: "needs [inventory] enabled = true (it judges what the inventory sees)"
                        .into(),
                });
            }
            if let Err(error) = yagura_shared::verifying_key_from_base64(&allowlist.signer) {
                return Err(ConfigError::Invalid {
                    path: None,
                    key: "allowlist.signer".into(),
                    reason: error.to_string(),
                });
            }
        }
        if let Some(listen) = self.metrics.listen
            && !listen.ip().is_loopback()
            && !self.metrics.allow_remote
        {
            return Err(invalid(
                "metrics.listen".into(),
                "is not a loopback address: the endpoint is plain HTTP without \
                 authentication; set allow_remote = true to serve it to the network",
            ));
        }
        if self.heartbeat_interval_seconds == 0 {
            return Err(invalid(
                "heartbeat_interval_seconds".into(),
                "must be at least 1",
            ));
        }
        if self.ship.max_backoff_ms == 0 {
            return Err(invalid("ship.max_backoff_ms".into(), "must be at least 1"));
        }
        if self.ship.request_timeout_ms == 0 {
            return Err(invalid(
                "ship.request_timeout_ms".into(),
                "must be at least 1",
            ));
        }
        if !(1..=yagura_shared::bundle::MAX_BUNDLE_BATCHES).contains(&self.ship.batches_in_flight) {
            return Err(invalid(
                "ship.batches_in_flight".into(),
                "must be between 1 and 64",
            ));
        }
        if self.spool.max_bytes == 0 {
            return Err(invalid("spool.max_bytes".into(), "must be at least 1"));
        }
        for (i, source) in self.sources.iter().enumerate() {
            if let Err(reason) = source.parser_setup() {
                let key = if reason.contains("parser") {
                    "parser"
                } else {
                    "timezone"
                };
                return Err(invalid(format!("sources[{i}].{key}"), &reason));
            }
            if let Some(multiline) = &source.multiline {
                if let Err(e) = regex::Regex::new(&multiline.pattern) {
                    return Err(invalid(
                        format!("sources[{i}].multiline.pattern"),
                        &e.to_string(),
                    ));
                }
                if multiline.max_lines == 0 {
                    return Err(invalid(
                        format!("sources[{i}].multiline.max_lines"),
                        "must be at least 1",
                    ));
                }
            }
            for (j, pattern) in source.exclude.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(pattern) {
                    return Err(invalid(
                        format!("sources[{i}].exclude[{j}]"),
                        &e.to_string(),
                    ));
                }
            }
            if source.paths.is_empty() {
                return Err(invalid(
                    format!("sources[{i}].paths"),
                    "must list at least one path",
                ));
            }
            if source.dataset.trim().is_empty() {
                return Err(invalid(
                    format!("sources[{i}].dataset"),
                    "must not be empty",
                ));
            }
            for (j, pattern) in source.paths.iter().enumerate() {
                let key = format!("sources[{i}].paths[{j}]");
                if !Path::new(pattern).is_absolute() {
                    return Err(invalid(key, "must be an absolute path"));
                }
                if let Err(e) = glob::Pattern::new(pattern) {
                    return Err(ConfigError::Invalid {
                        path: None,
                        key,
                        reason: format!("is not a valid glob pattern: {e}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The configured host name, or the machine's.
    pub fn resolved_host_name(&self) -> String {
        match &self.host_name {
            Some(name) => name.trim().to_string(),
            None => system_hostname(),
        }
    }
}

/// The machine's hostname from the kernel (`/proc/sys/kernel/hostname`, then
/// `/etc/hostname`); `"localhost"` when neither can be read.
pub fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let config = AgentConfig::parse(text, Path::new("agent.toml"))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn sources_take_multiline_exclude_labels_and_spool_policy() {
        let config = parse(
            r#"
state_dir = "/var/lib/yagura-agent"
watch = "poll"
[spool]
when_full = "drop_oldest"
[[sources]]
paths = ["/var/log/app/*.log"]
exclude = ["/var/log/app/*.debug.log"]
labels = { env = "prod", team = "payments" }
[sources.multiline]
mode = "start"
pattern = '^\d{4}-\d{2}-\d{2}'
"#,
        )
        .expect("valid");
        assert_eq!(config.watch, WatchMode::Poll);
        assert_eq!(config.spool.when_full, WhenFull::DropOldest);
        let source = &config.sources[0];
        assert_eq!(
            source.labels.get("team").map(String::as_str),
            Some("payments")
        );
        let multiline = source.multiline.as_ref().expect("multiline");
        assert_eq!(
            (
                multiline.mode,
                multiline.flush_timeout_ms,
                multiline.max_lines
            ),
            (MultilineMode::Start, 1000, 500)
        );
        let bad = parse(
            "state_dir = \"/s\"\n[[sources]]\npaths = [\"/l/a.log\"]\n[sources.multiline]\nmode = \"start\"\npattern = \"([\"\n",
        )
        .expect_err("bad regex");
        assert!(
            bad.to_string().contains("sources[0].multiline.pattern"),
            "{bad}"
        );
    }

    #[test]
    fn full_example_parses_with_units() {
        let config = parse(
            r#"
state_dir = "/var/lib/yagura-agent"
host_name = "web-1"
[ship]
batch_max_events = 10
batch_max_wait_ms = 50
max_backoff_ms = 1000
request_timeout_ms = 2000
[spool]
max_bytes = 1048576
[[sources]]
paths = ["/var/log/auth.log", "/tmp/x/*.log"]
dataset = "system.auth"
start_at = "end"
"#,
        )
        .expect("parses");
        assert_eq!(config.host_name.as_deref(), Some("web-1"));
        assert_eq!(config.ship.batch_max_events, 10);
        assert_eq!(config.ship.request_timeout_ms, 2000);
        assert_eq!(config.spool.max_bytes, 1 << 20);
        assert_eq!(config.sources[0].start_at, StartAt::End);
        assert_eq!(config.sources[0].paths.len(), 2);
    }

    #[test]
    fn defaults_apply() {
        let config = parse("state_dir = \"/s\"\n[[sources]]\npaths = [\"/a.log\"]\n").expect("ok");
        assert_eq!(config.ship, ShipConfig::default());
        assert_eq!(config.ship.batch_max_events, 1000);
        assert_eq!(config.ship.batch_max_wait_ms, 250);
        assert_eq!(config.ship.max_backoff_ms, 5000);
        assert_eq!(config.spool.max_bytes, 256 << 20);
        assert_eq!(config.sources[0].dataset, "generic");
        assert_eq!(config.sources[0].start_at, StartAt::Beginning);
        assert_eq!(config, {
            let mut c = AgentConfig::new("/s");
            c.sources.push(SourceConfig {
                paths: vec!["/a.log".into()],
                ..SourceConfig::default()
            });
            c
        });
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let err = parse("state_dir = \"/s\"\n[ship]\nbatch_max_evnts = 3\n").expect_err("unknown");
        let text = err.to_string();
        assert!(text.starts_with("agent.toml:3:1"), "{text}");
        assert!(text.contains("batch_max_evnts"), "{text}");
    }

    #[test]
    fn type_error_and_missing_state_dir_are_reported() {
        let err = parse("state_dir = 3\n").expect_err("type");
        assert!(err.to_string().starts_with("agent.toml:1:13"), "{err}");
        let err = parse("host_name = \"x\"\n").expect_err("missing");
        assert!(err.to_string().contains("state_dir"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let err =
            parse("state_dir = \"/s\"\n[[sources]]\npaths = [\"/a/[x.log\"]\n").expect_err("glob");
        assert!(err.to_string().contains("sources[0].paths[0]"), "{err}");
        let err = parse("state_dir = \"/s\"\n[[sources]]\npaths = []\n").expect_err("empty");
        assert!(err.to_string().contains("sources[0].paths"), "{err}");
        let err =
            parse("state_dir = \"/s\"\n[[sources]]\npaths = [\"rel.log\"]\n").expect_err("rel");
        assert!(err.to_string().contains("absolute"), "{err}");
        let err = parse("state_dir = \"/s\"\n[ship]\nbatches_in_flight = 65\n").expect_err("65");
        assert!(err.to_string().contains("ship.batches_in_flight"), "{err}");
        let err = parse("state_dir = \"/s\"\n[ship]\nbatch_max_events = 0\n").expect_err("zero");
        assert!(err.to_string().contains("ship.batch_max_events"), "{err}");
    }

    #[test]
    fn metrics_listen_is_loopback_unless_remote_is_allowed() {
        let base = "state_dir = \"/s\"\n[metrics]\n";
        assert_eq!(
            parse(base).expect("empty section").metrics,
            MetricsConfig::default()
        );
        let local = parse(&format!("{base}listen = \"127.0.0.1:9464\"\n")).expect("loopback");
        assert_eq!(
            local.metrics.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        parse(&format!("{base}listen = \"[::1]:9464\"\n")).expect("IPv6 loopback");
        let err = parse(&format!("{base}listen = \"0.0.0.0:9464\"\n")).expect_err("remote");
        assert!(err.to_string().contains("metrics.listen"), "{err}");
        assert!(err.to_string().contains("allow_remote"), "{err}");
        parse(&format!(
            "{base}listen = \"0.0.0.0:9464\"\nallow_remote = true\n"
        ))
        .expect("remote allowed");
        let err = parse(&format!("{base}listen = \"localhost\"\n")).expect_err("no port");
        assert!(err.to_string().contains("metrics.listen"), "{err}");
        let err = parse(&format!("{base}lisen = \"127.0.0.1:1\"\n")).expect_err("unknown");
        assert!(err.to_string().contains("lisen"), "{err}");
        // The problems check-config prints name the key and its line.
        let problems = AgentConfig::problems(&format!("{base}listen = \"10.0.0.1:9464\"\n"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, Some(3), "{problems:?}");
        assert!(
            problems[0].to_string().contains("metrics.listen"),
            "{problems:?}"
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("agent.toml");
        let err = AgentConfig::load(&path).expect_err("missing file");
        assert!(err.to_string().contains("agent.toml"), "{err}");
        std::fs::write(&path, "state_dir = \"/s\"\n[ship]\nbatch_max_events = 0\n").expect("write");
        let err = AgentConfig::load(&path).expect_err("invalid");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
