//! Wiring of a running collector: state store, TLS, archive, indexer and the HTTPS API.
//!
//! Start order follows the data path backwards so nothing accepts data it cannot keep:
//! the store and archive are opened (and recovered) first, the indexer resumes from its
//! commit, and only then does the listener accept connections. Stop order is the reverse:
//! the listener drains in-flight requests, then the indexer indexes everything durable and
//! commits once more.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::archive::SegmentArchive;
use crate::config::CollectorConfig;
use crate::fleet::AgentRegistry;
use crate::index::Indexer;
use crate::ingest::{BatchIngest, IngestLimits};
use crate::store::{Secret, Store};
use crate::tls::TlsIdentity;

/// What a started collector tells its caller.
#[derive(Debug, Clone)]
pub struct Started {
    pub address: SocketAddr,
    pub url: String,
    /// SHA-256 of the collector certificate, for agents to pin.
    pub fingerprint: String,
    /// Made on the very first start only, and shown only then.
    pub first_run_api_token: Option<Secret>,
}

/// Opens the state store of a data directory (also used by the offline CLI commands).
pub async fn open_store(config: &CollectorConfig) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    Store::open_sqlite(&config.database_path())
        .await
        .with_context(|| format!("opening {}", config.database_path().display()))
}

/// Runs the collector until `shutdown` is cancelled. `started` receives the listening
/// address and credentials once the collector accepts connections.
pub async fn run(
    config: CollectorConfig,
    started: oneshot::Sender<Started>,
    shutdown: CancellationToken,
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
    let archive = Arc::new(
        SegmentArchive::open(&config.archive_dir(), config.archive.segment_max_bytes)
            .context("opening the archive")?,
    );
    let report = archive.recovery_report();
    tracing::info!(
        segments = report.segments,
        records = report.records,
        end_offset = report.end_offset,
        truncated_bytes = report.truncated_bytes,
        "archive recovered"
    );
    let (indexer, index) = Indexer::open(
        &config.index_dir(),
        config.index.writer_memory_bytes,
        Duration::from_millis(config.index.commit_interval_ms),
        config.ingest.max_decompressed_bytes,
    )
    .context("opening the index")?;
    let indexer_cancel = CancellationToken::new();
    let indexer_task = {
        let archive = Arc::clone(&archive);
        let cancel = indexer_cancel.clone();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("indexer".into())
            .spawn(move || indexer.run(archive.as_ref(), runtime, cancel))
            .context("starting the indexer")?
    };

    let agents = AgentRegistry::new(store.clone());
    let ingest = Arc::new(BatchIngest::new(
        Arc::clone(&archive),
        agents.clone(),
        IngestLimits {
            max_body_bytes: config.ingest.max_body_bytes,
            max_decompressed_bytes: config.ingest.max_decompressed_bytes,
        },
    ));
    let app = api::router(AppState {
        store: store.clone(),
        agents,
        ingest,
        index,
    });

    let listener =
        TcpListener::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(identity.server_config()?);
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls)?
        .handle(handle.clone())
        .serve(app.into_make_service());
    let url = format!("https://{address}");
    tracing::info!(%url, fingerprint = %identity.fingerprint, "collector listening");
    let _ = started.send(Started {
        address,
        url,
        fingerprint: identity.fingerprint.clone(),
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
    let served = server.await;
    stopper.abort();
    indexer_cancel.cancel();
    let indexed = tokio::task::spawn_blocking(move || indexer_task.join())
        .await
        .context("joining the indexer")?;
    store.close().await;
    served.context("HTTPS server")?;
    match indexed {
        Ok(result) => result.context("indexer")?,
        Err(_) => anyhow::bail!("the indexer panicked"),
    }
    tracing::info!("collector stopped");
    Ok(())
}
