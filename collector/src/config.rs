//! `collector.toml`: raw TOML → validated [`CollectorConfig`].
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), units are in
//! the key names, and every error names the file and the line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Archive, index, state database and TLS identity live here.
    pub data_dir: PathBuf,
    /// Address of the main HTTPS listener: it serves every segment (agent ingest, the
    /// shop, the console and API) not given a listener of its own under `[listeners]`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Client addresses (CIDR) the main listener admits; empty: every address.
    #[serde(default)]
    pub allow: Vec<ipnet::IpNet>,
    #[serde(default)]
    pub tls: TlsConfig,
    /// Listeners of their own for network segments (see [`crate::listeners`]).
    #[serde(default)]
    pub listeners: ListenersConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub index: IndexConfig,
    #[serde(default)]
    pub archive: ArchiveConfig,
    #[serde(default)]
    pub fleet: FleetConfig,
    #[serde(default)]
    pub detect: DetectConfig,
    /// Alert policies, routes and destinations (see [`crate::alert::policy`]).
    #[serde(default)]
    pub alert: crate::alert::AlertConfig,
    /// The reference shop service.
    #[serde(default)]
    pub shop: ShopConfig,
    /// The analyst console.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// This node in a cluster (with `[archive] backend = "jetstream"`).
    #[serde(default)]
    pub cluster: crate::cluster::ClusterConfig,
}

/// `[listeners]`: a segment named here is served on its own listener instead of the
/// main one, so agent ingest, the shop (a DMZ) and the management plane (console, API,
/// metrics) can each sit on their own network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersConfig {
    /// Agent enrollment and ingest.
    pub ingest: Option<SegmentListenerConfig>,
    /// The reference shop (`/shop/…`).
    pub shop: Option<SegmentListenerConfig>,
    /// The console, the management API and `/metrics` (with the shop's sign-in routes,
    /// which the console signs in through).
    pub console: Option<SegmentListenerConfig>,
}

/// `[listeners.<segment>]`: one segment's listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentListenerConfig {
    pub listen: SocketAddr,
    /// Client addresses (CIDR) admitted; empty: every address. Others are closed before
    /// the TLS handshake and counted in `yagura_http_connections_refused_total`.
    #[serde(default)]
    pub allow: Vec<ipnet::IpNet>,
    /// A PEM certificate chain and key for this listener; default: the collector's.
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
}

/// `[console]`: the analyst console (served when the shop's sign-in is enabled).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A directory of dashboard files (`*.json`) served besides the shipped ones; a file
    /// named like a shipped dashboard replaces it (relative: to the configuration file).
    pub dashboards: Option<PathBuf>,
}

/// `[shop]`: the reference shop (accounts with MFA, cart, form) and its audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `sqlite:…` or `postgres://…`; default: `shop.db` in the data directory.
    pub database_url: Option<String>,
    /// PostgreSQL only: the owner role's URL, used for migrations; the service then
    /// connects as `database_url`'s role, granted only what it needs.
    pub migrate_url: Option<String>,
    /// The field-encryption keyring (`key_id:base64` lines, mode 0600); default:
    /// `shop-field.keys` in the data directory, made at first start.
    pub field_keys_file: Option<PathBuf>,
    /// An environment variable holding the keyring instead of a file.
    pub field_keys_env: Option<String>,
    #[serde(default = "default_argon2_memory_kib")]
    pub argon2_memory_kib: u32,
    #[serde(default = "default_argon2_iterations")]
    pub argon2_iterations: u32,
    #[serde(default = "default_argon2_parallelism")]
    pub argon2_parallelism: u32,
    #[serde(default = "default_session_idle_seconds")]
    pub session_idle_seconds: u64,
    #[serde(default = "default_session_absolute_seconds")]
    pub session_absolute_seconds: u64,
    #[serde(default = "default_lockout_threshold")]
    pub lockout_threshold: u32,
    #[serde(default = "default_lockout_seconds")]
    pub lockout_seconds: u64,
    /// Failed sign-ins one address may make per `ip_window_seconds`.
    #[serde(default = "default_ip_failure_limit")]
    pub ip_failure_limit: usize,
    #[serde(default = "default_ip_window_seconds")]
    pub ip_window_seconds: u64,
    /// Roles that must pass a second factor.
    #[serde(default = "default_mfa_required_roles")]
    pub mfa_required_roles: Vec<String>,
    /// Addresses (CIDR) admin routes are served to.
    #[serde(default = "default_admin_allowlist")]
    pub admin_allowlist: Vec<ipnet::IpNet>,
}

impl Default for ShopConfig {
    fn default() -> Self {
        ShopConfig {
            enabled: true,
            database_url: None,
            migrate_url: None,
            field_keys_file: None,
            field_keys_env: None,
            argon2_memory_kib: default_argon2_memory_kib(),
            argon2_iterations: default_argon2_iterations(),
            argon2_parallelism: default_argon2_parallelism(),
            session_idle_seconds: default_session_idle_seconds(),
            session_absolute_seconds: default_session_absolute_seconds(),
            lockout_threshold: default_lockout_threshold(),
            lockout_seconds: default_lockout_seconds(),
            ip_failure_limit: default_ip_failure_limit(),
            ip_window_seconds: default_ip_window_seconds(),
            mfa_required_roles: default_mfa_required_roles(),
            admin_allowlist: default_admin_allowlist(),
        }
    }
}

fn default_argon2_memory_kib() -> u32 {
    19 * 1024
}
fn default_argon2_iterations() -> u32 {
    2
}
fn default_argon2_parallelism() -> u32 {
    1
}
fn default_session_idle_seconds() -> u64 {
    30 * 60
}
fn default_session_absolute_seconds() -> u64 {
    12 * 3600
}
fn default_lockout_threshold() -> u32 {
    5
}
fn default_lockout_seconds() -> u64 {
    15 * 60
}
fn default_ip_failure_limit() -> usize {
    50
}
fn default_ip_window_seconds() -> u64 {
    15 * 60
}
fn default_mfa_required_roles() -> Vec<String> {
    vec!["analyst".into(), "admin".into()]
}
fn default_admin_allowlist() -> Vec<ipnet::IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// `[detect]`: the live detector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Directories (or files) of Sigma rules (relative: to the configuration file). No
    /// rules, no detector.
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// How often matches are committed (alerting reads committed matches, so this is
    /// part of the time from log line to page).
    #[serde(default = "default_detect_commit_interval_ms")]
    pub commit_interval_ms: u64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            rules: Vec::new(),
            commit_interval_ms: default_detect_commit_interval_ms(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM certificate chain to use instead of the generated self-signed one.
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    /// Names put in the generated certificate (first start only).
    #[serde(default = "default_subject_alt_names")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_decompressed_bytes: usize,
    /// Decompressed size over compressed size above which a payload is a bomb.
    #[serde(default = "default_max_decompression_ratio")]
    pub max_decompression_ratio: u32,
    /// Oldest batch creation time accepted. Generous: agents re-send batches sealed
    /// before an outage, so this bounds how long an outage may last without loss.
    #[serde(default = "default_max_batch_age_seconds")]
    pub max_batch_age_seconds: u64,
    /// How far ahead of the collector's clock a batch's creation time may be.
    #[serde(default = "default_max_clock_ahead_seconds")]
    pub max_clock_ahead_seconds: u64,
    /// Sustained events per second per agent (0: no per-agent limit).
    #[serde(default = "default_agent_events_per_second")]
    pub agent_events_per_second: u32,
    /// Events an agent may send at once above its sustained rate.
    #[serde(default = "default_agent_burst_events")]
    pub agent_burst_events: u32,
    /// Archive bytes the indexer may lag before ingest answers 429 (0: no limit).
    #[serde(default = "default_max_consumer_lag_bytes")]
    pub max_consumer_lag_bytes: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// An agent silent for longer than this is marked offline and an event raised.
    #[serde(default = "default_offline_after_seconds")]
    pub offline_after_seconds: u64,
    /// How often silence is checked and fleet state persisted.
    #[serde(default = "default_fleet_check_interval_ms")]
    pub check_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// `false` makes an ingest-only node: batches are verified, archived and acknowledged,
    /// and nothing is indexed or searchable here (search answers 404).
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    #[serde(default = "default_writer_memory_bytes")]
    pub writer_memory_bytes: usize,
    /// Days of events kept searchable: older day indices are deleted (the archive keeps
    /// its own retention).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// The oldest day indices are deleted while all of them exceed this many bytes.
    #[serde(default)]
    pub retention_max_bytes: Option<u64>,
    #[serde(default = "default_retention_check_interval_seconds")]
    pub retention_check_interval_seconds: u64,
}

/// Where verified batches are archived.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveBackend {
    /// Segment files in the data directory: one collector.
    #[default]
    Segments,
    /// A NATS JetStream stream shared by a cluster of collectors (`[archive.jetstream]`).
    JetStream,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// `segments` (default) or `jetstream`.
    #[serde(default)]
    pub backend: ArchiveBackend,
    /// The stream, when `backend = "jetstream"`.
    #[serde(default)]
    pub jetstream: crate::archive::JetStreamConfig,
    #[serde(default = "default_segment_max_bytes")]
    pub segment_max_bytes: u64,
    /// Segments older than this are deleted (once every consumer has passed them).
    #[serde(default)]
    pub retention_max_age_seconds: Option<u64>,
    /// The oldest segments are deleted while the archive is larger than this.
    #[serde(default)]
    pub retention_max_bytes: Option<u64>,
    #[serde(default = "default_retention_check_interval_seconds")]
    pub retention_check_interval_seconds: u64,
    /// `/health/ready` fails while a consumer of the archive (the indexer, the detector)
    /// is further behind its end than this.
    #[serde(default = "default_ready_max_lag_bytes")]
    pub ready_max_lag_bytes: u64,
}

fn default_ready_max_lag_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_true() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_subject_alt_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}
fn default_max_body_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_decompressed_bytes() -> usize {
    128 * 1024 * 1024
}
fn default_max_decompression_ratio() -> u32 {
    1_000
}
fn default_max_batch_age_seconds() -> u64 {
    7 * 86_400
}
fn default_max_clock_ahead_seconds() -> u64 {
    300
}
fn default_agent_events_per_second() -> u32 {
    50_000
}
fn default_agent_burst_events() -> u32 {
    500_000
}
fn default_max_consumer_lag_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_offline_after_seconds() -> u64 {
    180
}
fn default_fleet_check_interval_ms() -> u64 {
    5_000
}
fn default_retention_check_interval_seconds() -> u64 {
    60
}
fn default_commit_interval_ms() -> u64 {
    500
}
fn default_detect_commit_interval_ms() -> u64 {
    100
}
fn default_writer_memory_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_segment_max_bytes() -> u64 {
    256 * 1024 * 1024
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_body_bytes: default_max_body_bytes(),
            max_decompressed_bytes: default_max_decompressed_bytes(),
            max_decompression_ratio: default_max_decompression_ratio(),
            max_batch_age_seconds: default_max_batch_age_seconds(),
            max_clock_ahead_seconds: default_max_clock_ahead_seconds(),
            agent_events_per_second: default_agent_events_per_second(),
            agent_burst_events: default_agent_burst_events(),
            max_consumer_lag_bytes: default_max_consumer_lag_bytes(),
        }
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            offline_after_seconds: default_offline_after_seconds(),
            check_interval_ms: default_fleet_check_interval_ms(),
        }
    }
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            enabled: true,
            commit_interval_ms: default_commit_interval_ms(),
            writer_memory_bytes: default_writer_memory_bytes(),
            retention_days: None,
            retention_max_bytes: None,
            retention_check_interval_seconds: default_retention_check_interval_seconds(),
        }
    }
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            backend: ArchiveBackend::default(),
            jetstream: Default::default(),
            segment_max_bytes: default_segment_max_bytes(),
            retention_max_age_seconds: None,
            retention_max_bytes: None,
            retention_check_interval_seconds: default_retention_check_interval_seconds(),
            ready_max_lag_bytes: default_ready_max_lag_bytes(),
        }
    }
}

impl ListenersConfig {
    /// The segments given a listener of their own, by name.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, &SegmentListenerConfig)> {
        [
            ("ingest", &self.ingest),
            ("shop", &self.shop),
            ("console", &self.console),
        ]
        .into_iter()
        .filter_map(|(name, listener)| listener.as_ref().map(|l| (name, l)))
    }

    fn named_mut(&mut self) -> impl Iterator<Item = &mut SegmentListenerConfig> {
        [&mut self.ingest, &mut self.shop, &mut self.console]
            .into_iter()
            .flatten()
    }
}

impl CollectorConfig {
    /// Embedded defaults around a data directory (what `yagura up` runs with).
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        CollectorConfig {
            data_dir,
            listen: default_listen(),
            allow: Vec::new(),
            listeners: ListenersConfig::default(),
            tls: TlsConfig {
                subject_alt_names: default_subject_alt_names(),
                ..TlsConfig::default()
            },
            ingest: IngestConfig::default(),
            index: IndexConfig::default(),
            archive: ArchiveConfig::default(),
            fleet: FleetConfig::default(),
            detect: DetectConfig::default(),
            alert: crate::alert::AlertConfig::default(),
            shop: ShopConfig::default(),
            console: ConsoleConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Every problem of a configuration text with its line and key: all the parse errors
    /// (see [`yagura_shared::config_check::every_problem`]), else the first failed
    /// check (located by the key it names first).
    pub fn problems(text: &str, path: &Path) -> Vec<yagura_shared::config_check::ConfigProblem> {
        use yagura_shared::config_check::{ConfigProblem, every_problem, line_of_key};
        let parse_errors = every_problem(text, |text| {
            toml::from_str::<CollectorConfig>(text)
                .err()
                .map(|e| ConfigProblem::at(text, e.span().map(|s| s.start), e.message()))
        });
        if !parse_errors.is_empty() {
            return parse_errors;
        }
        match Self::parse(text, path) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { message, .. }) => {
                let key = message
                    .split_whitespace()
                    .next()
                    .map(|k| k.trim_matches(|c: char| c == '`' || c == ':' || c == ','))
                    .filter(|k| line_of_key(text, k).is_some());
                vec![match key {
                    Some(key) => ConfigProblem::of_key(text, key, message.clone()),
                    None => ConfigProblem::at(text, None, message),
                }]
            }
            Err(other) => vec![ConfigProblem::at(text, None, other.to_string())],
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: CollectorConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| yagura_shared::config_check::line_column(text, span.start))
                .unwrap_or((0, 0));
            let key = e
                .span()
                .and_then(|span| yagura_shared::config_check::key_at(text, span.start));
            ConfigError::Parse {
                path: path.display().to_string(),
                line,
                column,
                message: match key {
                    Some(key) => format!("`{key}`: {}", e.message().trim()),
                    None => e.message().trim().to_string(),
                },
            }
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        };
        if config.tls.cert_path.is_some() != config.tls.key_path.is_some() {
            return Err(invalid("tls.cert_path and tls.key_path go together".into()));
        }
        // The main listener is bound only while some segment is left to it.
        let mut addresses = Vec::new();
        if config.listeners.named().count() < 3 {
            addresses.push(("listen".to_string(), config.listen));
        }
        for (name, listener) in config.listeners.named() {
            if listener.cert_path.is_some() != listener.key_path.is_some() {
                return Err(invalid(format!(
                    "listeners.{name}.cert_path and listeners.{name}.key_path go together"
                )));
            }
            let key = format!("listeners.{name}.listen");
            if let Some((other, _)) = addresses
                .iter()
                .find(|(_, a)| *a == listener.listen && a.port() != 0)
            {
                return Err(invalid(format!(
                    "{key}: {} is already the address of {other}",
                    listener.listen
                )));
            }
            addresses.push((key, listener.listen));
        }
        if config.ingest.max_body_bytes < 1024 {
            return Err(invalid(
                "ingest.max_body_bytes must be at least 1024".into(),
            ));
        }
        if config.ingest.max_decompression_ratio == 0 {
            return Err(invalid(
                "ingest.max_decompression_ratio must be above 0".into(),
            ));
        }
        if config.fleet.check_interval_ms == 0
            || config.archive.retention_check_interval_seconds == 0
        {
            return Err(invalid(
                "fleet.check_interval_ms and archive.retention_check_interval_seconds must be \
                 above 0"
                    .into(),
            ));
        }
        if config
            .index
            .retention_days
            .is_some_and(|d| d == 0 || d > 36_500)
        {
            return Err(invalid(
                "index.retention_days must be between 1 and 36500".into(),
            ));
        }
        if config.index.retention_check_interval_seconds == 0 {
            return Err(invalid(
                "index.retention_check_interval_seconds must be above 0".into(),
            ));
        }
        if config.index.commit_interval_ms == 0 || config.detect.commit_interval_ms == 0 {
            return Err(invalid(
                "index.commit_interval_ms and detect.commit_interval_ms must be above 0".into(),
            ));
        }
        if let Some(problem) = config.archive.jetstream.problems().into_iter().next() {
            return Err(invalid(format!("archive.jetstream: {problem}")));
        }
        if let Some(problem) = config.cluster.problems().into_iter().next() {
            return Err(invalid(format!("cluster: {problem}")));
        }
        crate::alert::AlertPolicies::new(&config.alert).map_err(invalid)?;
        for role in &config.shop.mfa_required_roles {
            if crate::shop::domain::user::Role::parse(role).is_none() {
                return Err(invalid(format!(
                    "shop.mfa_required_roles: {role:?} is not customer, analyst or admin"
                )));
            }
        }
        if let Some(url) = &config.shop.database_url {
            crate::shop::infrastructure::database::Backend::of_url(url)
                .map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(parent) = path.parent() {
            if let Some(file) = &mut config.shop.field_keys_file
                && file.is_relative()
            {
                *file = parent.join(&*file);
            }
            if config.data_dir.is_relative() {
                config.data_dir = parent.join(&config.data_dir);
            }
            for dir in &mut config.detect.rules {
                if dir.is_relative() {
                    *dir = parent.join(&*dir);
                }
            }
            if let Some(dir) = &mut config.console.dashboards
                && dir.is_relative()
            {
                *dir = parent.join(&*dir);
            }
            for listener in config.listeners.named_mut() {
                for file in [&mut listener.cert_path, &mut listener.key_path]
                    .into_iter()
                    .flatten()
                {
                    if file.is_relative() {
                        *file = parent.join(&*file);
                    }
                }
            }
        }
        crate::console::dashboards::Dashboards::load(config.console.dashboards.as_deref())
            .map_err(|e| invalid(format!("console.dashboards: {e}")))?;
        Ok(config)
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.data_dir.join("archive")
    }
    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("state.db")
    }
    /// The shop's database URL: configured, or `shop.db` in the data directory.
    pub fn shop_database_url(&self) -> String {
        self.shop.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("shop.db").display()
            )
        })
    }
    /// The shop's field-encryption keyring file.
    pub fn shop_field_keys_path(&self) -> PathBuf {
        self.shop
            .field_keys_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("shop-field.keys"))
    }
    /// The shop audit trail's own Ed25519 signing key (mode 0600).
    pub fn shop_key_path(&self) -> PathBuf {
        self.data_dir.join("shop.key")
    }
    /// The collector's own Ed25519 signing key (mode 0600).
    pub fn collector_key_path(&self) -> PathBuf {
        self.data_dir.join("collector.key")
    }

    /// The ingest limits this configuration sets.
    pub fn ingest_limits(&self) -> crate::ingest::IngestLimits {
        let i = &self.ingest;
        crate::ingest::IngestLimits {
            max_body_bytes: i.max_body_bytes,
            max_decompressed_bytes: i.max_decompressed_bytes,
            max_decompression_ratio: i.max_decompression_ratio,
            max_batch_age: std::time::Duration::from_secs(i.max_batch_age_seconds),
            max_clock_ahead: std::time::Duration::from_secs(i.max_clock_ahead_seconds),
            agent_events_per_second: i.agent_events_per_second,
            agent_burst_events: i.agent_burst_events,
            max_consumer_lag_bytes: i.max_consumer_lag_bytes,
        }
    }

    /// How the indexer runs, from `[index]` and `[ingest]`.
    pub fn indexer_options(&self) -> crate::index::IndexerOptions {
        crate::index::IndexerOptions {
            writer_memory_bytes: self.index.writer_memory_bytes,
            commit_interval: std::time::Duration::from_millis(self.index.commit_interval_ms),
            max_decompressed: self.ingest.max_decompressed_bytes,
            retention: crate::index::IndexRetention {
                max_age_days: self.index.retention_days,
                max_bytes: self.index.retention_max_bytes,
            },
            retention_check_interval: std::time::Duration::from_secs(
                self.index.retention_check_interval_seconds,
            ),
        }
    }

    /// The archive retention this configuration sets.
    pub fn retention(&self) -> crate::archive::RetentionPolicy {
        crate::archive::RetentionPolicy {
            max_age: self
                .archive
                .retention_max_age_seconds
                .map(std::time::Duration::from_secs),
            max_bytes: self.archive.retention_max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_relative_data_dir() {
        let c = CollectorConfig::parse(
            "data_dir = \"data\"\n",
            Path::new("/etc/yagura/collector.toml"),
        )
        .expect("parse");
        assert_eq!(c.data_dir, PathBuf::from("/etc/yagura/data"));
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.index.commit_interval_ms, 500);
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let err = CollectorConfig::parse(
            "data_dir = \"/d\"\n[ingest]\nmax_body_byte = 5\n",
            Path::new("c.toml"),
        )
        .expect_err("typo");
        let text = err.to_string();
        assert!(text.starts_with("c.toml:3:"), "{text}");
        assert!(text.contains("max_body_byte"), "{text}");
    }

    #[test]
    fn segment_listeners_parse_and_are_checked() {
        let c = CollectorConfig::parse(
            "data_dir = \"/d\"\nlisten = \"0.0.0.0:8443\"\n\
             [listeners.shop]\nlisten = \"203.0.113.10:443\"\n\
             cert_path = \"tls/shop.crt\"\nkey_path = \"tls/shop.key\"\n\
             [listeners.console]\nlisten = \"10.9.0.5:9443\"\nallow = [\"10.9.0.0/24\", \"fd00::/8\"]\n",
            Path::new("/etc/yagura/collector.toml"),
        )
        .expect("parse");
        let named: Vec<_> = c.listeners.named().map(|(name, _)| name).collect();
        assert_eq!(named, ["shop", "console"]);
        let shop = c.listeners.shop.as_ref().expect("shop");
        assert_eq!(
            shop.cert_path.as_deref(),
            Some(Path::new("/etc/yagura/tls/shop.crt"))
        );
        let console = c.listeners.console.as_ref().expect("console");
        assert_eq!(console.allow.len(), 2);
        assert!(c.listeners.ingest.is_none());

        let half_tls = CollectorConfig::parse(
            "data_dir = \"/d\"\n[listeners.ingest]\nlisten = \"10.1.0.5:8443\"\ncert_path = \"a.crt\"\n",
            Path::new("c.toml"),
        )
        .expect_err("key missing");
        assert!(
            half_tls
                .to_string()
                .contains("listeners.ingest.cert_path and listeners.ingest.key_path"),
            "{half_tls}"
        );
        let same_address = CollectorConfig::parse(
            "data_dir = \"/d\"\nlisten = \"10.1.0.5:8443\"\n[listeners.ingest]\nlisten = \"10.1.0.5:8443\"\n",
            Path::new("c.toml"),
        )
        .expect_err("same address twice");
        assert!(
            same_address.to_string().contains(
                "listeners.ingest.listen: 10.1.0.5:8443 is already the address of listen"
            ),
            "{same_address}"
        );
        let bad_cidr = CollectorConfig::parse(
            "data_dir = \"/d\"\n[listeners.console]\nlisten = \"10.9.0.5:9443\"\nallow = [\"10.9.0.0/33\"]\n",
            Path::new("c.toml"),
        )
        .expect_err("bad CIDR");
        assert!(bad_cidr.to_string().starts_with("c.toml:4:"), "{bad_cidr}");
    }
}
