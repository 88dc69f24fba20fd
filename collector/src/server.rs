//! Wiring of a running collector: state store, TLS, archive, indexer and the HTTPS API.
//!
//! Start order follows the data path backwards so nothing accepts data it cannot keep:
//! the store and archive are opened (and recovered) first, the collector's own signing
//! identity is loaded (or made and registered), the indexer resumes from its commit, the
//! collector-event sealer, fleet monitor and retention tasks start, and only then does
//! the listener accept connections. Stop order is the reverse: the listener drains
//! in-flight requests, the collector events still pending are sealed into the archive,
//! fleet state is persisted, then the indexer indexes everything durable and commits once
//! more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, Segments};
use crate::archive::{CollectorArchive, JetStreamArchive, SegmentArchive};
use crate::collector_events::{self, CollectorEvents};
use crate::config::CollectorConfig;
use crate::fleet::{self, AgentRegistry, FleetState};
use crate::index::Indexer;
use crate::ingest::BatchIngest;
use crate::listeners::Listening;
use crate::store::{Secret, Store};
use crate::tls::TlsIdentity;

/// What a started collector tells its caller.
#[derive(Debug, Clone)]
pub struct Started {
    /// The listener serving the console and the management API (the CLI's address).
    pub address: SocketAddr,
    pub url: String,
    /// SHA-256 of that listener's certificate.
    pub fingerprint: String,
    /// Every listener, with the segments it serves.
    pub listeners: Vec<Listening>,
    /// Made on the very first start only, and shown only then.
    pub first_run_api_token: Option<Secret>,
}

impl Started {
    /// The listener agents enroll and ship to (its certificate is the one they pin).
    pub fn ingest(&self) -> &Listening {
        self.serving(|s| s.ingest)
    }

    /// The listener serving the shop.
    pub fn shop(&self) -> &Listening {
        self.serving(|s| s.shop)
    }

    fn serving(&self, segment: impl Fn(Segments) -> bool) -> &Listening {
        self.listeners
            .iter()
            .find(|l| segment(l.segments))
            .unwrap_or(&self.listeners[0])
    }
}

/// Opens the state store of a data directory (also used by the offline CLI commands).
pub async fn open_store(config: &CollectorConfig) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    Store::open_sqlite(&config.database_path())
        .await
        .with_context(|| format!("opening {}", config.database_path().display()))
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Everything: ingest, archive, indexer, search.
    Full,
    /// Ingest and archive only, no indexer (the ingest benchmark measures this).
    IngestOnly,
    /// An ingest gateway of a cluster (`serve --role ingest`): verifies batches and
    /// appends them to the shared JetStream archive, with the agent records of the
    /// cluster's directory; no indexer, detector, shop or archive retention of its own.
    Gateway,
    /// An api node of a cluster (`serve --role api`): the management API and search,
    /// answered by fanning each search out to the indexers and merging; records the
    /// detectors' matches and runs the alert manager on them; takes no batches.
    Api,
    /// The HTTP side of a whole cluster node in one process (`serve --role all` on the
    /// JetStream archive): a gateway and an api node at once, beside an indexer and a
    /// detector the caller runs in the same process.
    ClusterAll,
}

impl RunMode {
    /// A node of a cluster on the JetStream archive.
    fn in_cluster(self) -> bool {
        matches!(self, RunMode::Gateway | RunMode::Api | RunMode::ClusterAll)
    }
}

/// Runs the collector until `shutdown` is cancelled. `started` receives the listening
/// address and credentials once the collector accepts connections.
pub async fn run(
    config: CollectorConfig,
    started: oneshot::Sender<Started>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mode = if config.index.enabled {
        RunMode::Full
    } else {
        RunMode::IngestOnly
    };
    run_with(config, started, shutdown, mode).await
}

/// [`run`], choosing what runs.
pub async fn run_with(
    config: CollectorConfig,
    started: oneshot::Sender<Started>,
    shutdown: CancellationToken,
    mode: RunMode,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = open_store(&config).await?;
    let first_run_api_token = if store.api_token_count().await? == 0 {
        Some(store.create_api_token("first-run").await?)
    } else {
        None
    };
    let identity = match (&config.tls.cert_path, &config.tls.key_path) {
        (Some(cert), Some(key)) => TlsIdentity::load(cert, key)?,
        _ => TlsIdentity::load_or_generate(&config.tls_dir(), &config.tls.subject_alt_names)?,
    };
    // Every listener is bound before anything starts: a taken address stops the start
    // whole, before a thread or task needs stopping.
    let bound = crate::listeners::plan(&config)
        .iter()
        .map(|plan| crate::listeners::bind(plan, &identity))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let listeners: Vec<Listening> = bound.iter().map(|l| l.info.clone()).collect();
    let management = listeners
        .iter()
        .find(|l| l.segments.console)
        .unwrap_or(&listeners[0])
        .clone();
    let url = management.url.clone();
    let archive = Arc::new(match config.archive.backend {
        crate::config::ArchiveBackend::Segments => CollectorArchive::Segments(
            SegmentArchive::open(&config.archive_dir(), config.archive.segment_max_bytes)
                .context("opening the archive")?,
        ),
        crate::config::ArchiveBackend::JetStream => CollectorArchive::JetStream(Box::new(
            JetStreamArchive::open(config.archive.jetstream.clone())
                .await
                .context("opening the JetStream archive")?,
        )),
    });
    anyhow::ensure!(
        mode.in_cluster() == archive.jetstream().is_some(),
        "a collector on its own keeps a segment archive; a cluster gateway the JetStream one"
    );
    if let Some(report) = archive.segments().map(SegmentArchive::recovery_report) {
        log_recovery(report);
    }

    let collector_key = collector_events::load_or_create_key(&config.collector_key_path())
        .context("loading the collector's signing key")?;
    let collector_identity = store
        .collector_identity(
            &collector_key.public_key_base64(),
            env!("CARGO_PKG_VERSION"),
        )
        .await
        .context("registering the collector's signing identity")?;
    let events = CollectorEvents::new(collector_identity.id);

    let indexer_cancel = CancellationToken::new();
    let (index, indexer_task, indexer_stats) = match mode {
        RunMode::Full => {
            let (indexer, index) = Indexer::open(
                &config.index_dir(),
                config.indexer_options(),
                Some(events.clone()),
            )
            .context("opening the index")?;
            let stats = indexer.stats();
            let archive = Arc::clone(&archive);
            let cancel = indexer_cancel.clone();
            let runtime = tokio::runtime::Handle::current();
            let task = std::thread::Builder::new()
                .name("indexer".into())
                .spawn(move || indexer.run(archive.as_ref(), runtime, cancel))
                .context("starting the indexer")?;
            (Some(index), Some(task), Some(stats))
        }
        RunMode::IngestOnly | RunMode::Gateway | RunMode::Api | RunMode::ClusterAll => {
            (None, None, None)
        }
    };

    // Alert configuration problems (a destination whose `env:` secret is unset) stop the
    // start: a collector that cannot page must not look as if it could.
    let alert_policies = crate::alert::AlertPolicies::new(&config.alert)
        .map_err(|e| anyhow::anyhow!("[alert]: {e}"))?;
    let alert_senders = config
        .alert
        .destinations
        .iter()
        .map(|(name, destination)| crate::alert::outbox::DestinationSender::new(name, destination))
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| anyhow::anyhow!("[alert]: {e}"))?;
    let alerts = crate::alert::AlertService::new(&store);

    let detector_cancel = CancellationToken::new();
    let rule_catalog = crate::detect::RuleCatalog::default();
    let (detector_task, detector_stats) = match mode {
        // Detection is not worth refusing to ingest over: without it the collector
        // still verifies, archives and indexes.
        RunMode::Full if !config.detect.rules.is_empty() => match start_detector(
            &config,
            store.clone(),
            events.clone(),
            Arc::clone(&archive),
            rule_catalog.clone(),
            detector_cancel.clone(),
        ) {
            Ok((task, committed, stats)) => (Some((task, committed)), Some(stats)),
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "the detector is not running");
                (None, None)
            }
        },
        _ => (None, None),
    };

    let mut agents = AgentRegistry::new(store.clone());
    let mut cluster_search = None;
    // An api node records the cluster's matches (from its detectors) and alerts on them.
    let mut cluster_matches = None;
    if let Some(stream) = archive.jetstream() {
        let client = crate::archive::connect_nats(
            &stream.config().url,
            &format!("yagura-{}", config.cluster.node_name()),
        )
        .await
        .context("connecting to NATS")?;
        let context = async_nats::jetstream::new(client.clone());
        if matches!(mode, RunMode::Api | RunMode::ClusterAll) {
            cluster_matches = Some((
                context.clone(),
                crate::cluster::detector::DetectionStreams::of(stream.config()),
                stream.config().replicas,
            ));
            let leases = crate::cluster::leases::bucket(
                &context,
                &crate::cluster::node::lease_bucket_name(&stream.config().stream),
                config.cluster.lease(),
                stream.config().replicas,
            )
            .await?;
            cluster_search = Some(crate::cluster::search::FanOut::new(
                client,
                leases,
                &stream.config().stream,
                stream.config().partitions,
                config.cluster.search_timeout(),
            ));
        }
        // A gateway verifies batches of agents enrolled anywhere in the cluster; an api
        // node lists and revokes them.
        let directory = crate::cluster::directory::AgentDirectory::open(
            &context,
            &stream.config().stream,
            stream.config().replicas,
        )
        .await?;
        agents = agents.with_directory(directory);
        agents
            .publish_missing()
            .await
            .context("publishing this node's agents and identity to the directory")?;
    }
    let fleet_state = FleetState::from_persisted(store.agent_states().await?);
    let background_cancel = CancellationToken::new();
    let sealer = tokio::spawn(collector_events::run_sealer(
        events.clone(),
        collector_key,
        Arc::clone(&archive),
        background_cancel.clone(),
    ));
    let monitor = tokio::spawn(fleet::run_fleet_monitor(
        fleet_state.clone(),
        agents.clone(),
        events.clone(),
        Duration::from_secs(config.fleet.offline_after_seconds),
        Duration::from_millis(config.fleet.check_interval_ms),
        background_cancel.clone(),
    ));
    let directory_follower = {
        let agents = agents.clone();
        let cancel = background_cancel.clone();
        tokio::spawn(async move { agents.follow_directory(cancel).await })
    };
    let retention = archive.segments().is_some().then(|| {
        let archive = Arc::clone(&archive);
        let policy = config.retention();
        let every = Duration::from_secs(config.archive.retention_check_interval_seconds);
        let cancel = background_cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = cancel.cancelled() => return,
                }
                let archive = Arc::clone(&archive);
                let enforce = move || match archive.segments() {
                    Some(segments) => segments.enforce_retention(policy),
                    None => Ok(Default::default()),
                };
                match tokio::task::spawn_blocking(enforce).await {
                    Ok(Ok(report)) if report.deleted_segments > 0 => {
                        tracing::info!(?report, "archive retention");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::error!(%error, "archive retention failed"),
                    Err(error) => tracing::error!(%error, "archive retention task"),
                }
            }
        })
    });

    let app_http: Arc<api::metrics::HttpMetrics> = Default::default();
    let ingest = Arc::new(BatchIngest::new(
        Arc::clone(&archive),
        agents.clone(),
        fleet_state.clone(),
        events,
        config.ingest_limits(),
    ));
    // The shop: its own database, and its audit trail forwarded into the archive under
    // its own signing identity.
    let dashboards =
        crate::console::dashboards::Dashboards::load(config.console.dashboards.as_deref())
            .map_err(|e| anyhow::anyhow!("[console] dashboards: {e}"))?;
    let (shop_router, shop_forwarder, console) = if config.shop.enabled && !mode.in_cluster() {
        let shop = crate::shop::open(&config).await?;
        let shop_key = collector_events::load_or_create_key(&config.shop_key_path())
            .context("loading the shop's signing key")?;
        let shop_identity = store
            .service_identity(
                crate::store::SHOP_KIND,
                crate::shop::infrastructure::audit_trail::SHOP_SERVICE,
                &shop_key.public_key_base64(),
                env!("CARGO_PKG_VERSION"),
            )
            .await
            .context("registering the shop's signing identity")?;
        let forwarder = tokio::spawn(crate::shop::infrastructure::audit_forwarder::run(
            shop.repository().clone(),
            shop_key,
            shop_identity.id,
            Arc::clone(&archive),
            background_cancel.clone(),
        ));
        let console = crate::console::ConsoleAuth::new(Arc::clone(&shop));
        let state = crate::shop::http::ShopState {
            shop,
            admin_allowlist: Arc::new(config.shop.admin_allowlist.clone()),
        };
        let routers = (
            crate::shop::http::router(state.clone()),
            crate::shop::http::customer_router(state),
        );
        (Some(routers), Some(forwarder), Some(console))
    } else {
        (None, None, None)
    };
    let http = Arc::clone(&app_http);
    let routes = api::routes(
        AppState {
            store: store.clone(),
            agents,
            fleet: fleet_state,
            ingest,
            index,
            cluster_search,
            archive_dir: config.archive_dir(),
            alerts: alerts.clone(),
            allowlists: crate::fleet::allowlist::AllowlistDistribution::new(store.clone()),
            ready_max_lag_bytes: config.archive.ready_max_lag_bytes,
            ready_cache: Default::default(),
            rules: rule_catalog,
            dashboards: Arc::new(dashboards),
            console,
            indexer: indexer_stats,
            detector: detector_stats,
            http: app_http,
            tls_dir: config.tls.cert_path.is_none().then(|| config.tls_dir()),
        },
        shop_router,
    );

    let handle = axum_server::Handle::new();
    let mut servers = tokio::task::JoinSet::new();
    for listener in bound {
        let mut segments = listener.info.segments;
        // An api node takes no batches: agents ship to the gateways.
        segments.ingest &= mode != RunMode::Api;
        let app = routes.serve(segments);
        servers.spawn(listener.serve(app, handle.clone(), Arc::clone(&http)));
    }

    // Alerting follows detection: the manager takes recorded matches into alerts, one
    // sender per destination delivers the outbox.
    let alert_cancel = CancellationToken::new();
    let (detector_task, mut committed) = match detector_task {
        Some((task, committed)) => (Some(task), Some(committed)),
        None => (None, None),
    };
    let mut alert_tasks = Vec::new();
    if let Some((context, streams, replicas)) = cluster_matches {
        let (recorded, watch) = tokio::sync::watch::channel(0);
        committed = Some(watch);
        alert_tasks.push(tokio::spawn(crate::cluster::detector::feed_alerts(
            context,
            streams,
            replicas,
            store.clone(),
            recorded,
            alert_cancel.clone(),
        )));
    }
    if matches!(mode, RunMode::Full | RunMode::Api | RunMode::ClusterAll) {
        let wants_updates = alert_senders
            .iter()
            .filter(|s| {
                s.sink
                    .wants(crate::alert::NotificationKind::Update, s.updates)
            })
            .map(|s| s.name.clone())
            .collect();
        let manager = crate::alert::manager::AlertManager::new(
            alerts.clone(),
            alert_policies,
            config.detect.rules.clone(),
            wants_updates,
            config.alert.destinations.keys().cloned().collect(),
        );
        alert_tasks.push(tokio::spawn(manager.run(committed, alert_cancel.clone())));
        let console_url = config
            .alert
            .console_url
            .clone()
            .unwrap_or_else(|| url.clone());
        alert_tasks.extend(crate::alert::outbox::start(
            &alerts,
            alert_senders,
            config.alert.retry,
            console_url,
            alert_cancel.clone(),
        ));
    }
    for listener in &listeners {
        tracing::info!(
            listener = listener.name,
            url = %listener.url,
            segments = ?listener.segments.names(),
            fingerprint = %listener.fingerprint,
            "collector listening"
        );
    }
    let _ = started.send(Started {
        address: management.address,
        url,
        fingerprint: management.fingerprint,
        listeners,
        first_run_api_token,
    });

    let stopper = {
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        })
    };
    // One listener failing stops them all (and with them the collector).
    let mut served: anyhow::Result<()> = Ok(());
    while let Some(joined) = servers.join_next().await {
        let result = match joined {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(joined) => Err(anyhow::anyhow!("listener task: {joined}")),
        };
        if let Err(error) = result {
            handle.shutdown();
            if served.is_ok() {
                served = Err(error);
            }
        }
    }
    stopper.abort();
    background_cancel.cancel();
    let _ = sealer.await;
    let _ = monitor.await;
    if let Some(retention) = retention {
        let _ = retention.await;
    }
    let _ = directory_follower.await;
    if let Some(forwarder) = shop_forwarder {
        let _ = forwarder.await;
    }
    // A send cut short here is sent again at the next start (at least once).
    alert_cancel.cancel();
    for task in alert_tasks {
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    detector_cancel.cancel();
    if let Some(task) = detector_task
        && tokio::task::spawn_blocking(move || task.join())
            .await
            .map_or(true, |joined| joined.is_err())
    {
        tracing::error!("detector thread panicked");
    }
    indexer_cancel.cancel();
    let indexed = match indexer_task {
        Some(task) => Some(
            tokio::task::spawn_blocking(move || task.join())
                .await
                .context("joining the indexer")?,
        ),
        None => None,
    };
    store.close().await;
    served.context("HTTPS server")?;
    match indexed {
        Some(Ok(result)) => result.context("indexer")?,
        Some(Err(_)) => anyhow::bail!("the indexer panicked"),
        None => {}
    }
    tracing::info!("collector stopped");
    Ok(())
}

/// Loads the rules of `[detect] rules` and starts the live detector on its own thread. A
/// rule file with an error is reported (`file:line: message`) and left out; the others
/// run.
fn start_detector(
    config: &CollectorConfig,
    store: Store,
    events: CollectorEvents,
    archive: Arc<CollectorArchive>,
    catalog: crate::detect::RuleCatalog,
    cancel: CancellationToken,
) -> anyhow::Result<(
    std::thread::JoinHandle<()>,
    tokio::sync::watch::Receiver<u64>,
    Arc<crate::detect::DetectorStats>,
)> {
    let pipeline = crate::detect::ecs_pipeline().map_err(anyhow::Error::msg)?;
    let rules = crate::detect::load_rules(&config.detect.rules, &pipeline)
        .map_err(|problem| anyhow::anyhow!("loading detection rules: {problem}"))?;
    for problem in &rules.errors {
        tracing::error!(%problem, "detection rule file left out");
    }
    let detector =
        crate::detect::Detector::new(&rules, pipeline.clone()).map_err(anyhow::Error::msg)?;
    catalog.loaded(&config.detect.rules, &rules, &pipeline);
    tracing::info!(
        files = rules.files.len(),
        rules = rules.detection_rules(),
        correlations = rules.correlation_rules(),
        "detection rules loaded"
    );
    let live = crate::detect::LiveDetector::new(
        detector,
        store,
        Duration::from_millis(config.detect.commit_interval_ms),
        config.ingest.max_decompressed_bytes,
    )
    .with_reload(config.detect.rules.clone(), Some(events), catalog);
    let committed = live.committed();
    let stats = live.stats();
    let runtime = tokio::runtime::Handle::current();
    let task = std::thread::Builder::new()
        .name("detector".into())
        .spawn(move || {
            if let Err(error) = live.run(archive.as_ref(), runtime, cancel) {
                // Said now, not at shutdown; and a stopped detector must not hold
                // ingest (backpressure) or archive retention back.
                tracing::error!(%error, "the detector stopped");
                crate::archive::Archive::release_consumer(
                    archive.as_ref(),
                    crate::detect::DETECTOR_CONSUMER,
                );
            }
        })
        .context("starting the detector")?;
    Ok((task, committed, stats))
}

/// Says what opening the segment archive recovered.
fn log_recovery(report: &crate::archive::RecoveryReport) {
    if report.truncated_bytes > 0 {
        // On stdout too: an operator (and the end-to-end tests) must see it.
        println!(
            "archive recovery: cut a torn final record of {} bytes at offset {} (never \
             acknowledged); {} records before it intact",
            report.truncated_bytes, report.end_offset, report.records
        );
    }
    tracing::info!(
        segments = report.segments,
        records = report.records,
        end_offset = report.end_offset,
        truncated_bytes = report.truncated_bytes,
        "archive recovered"
    );
}
