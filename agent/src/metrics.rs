//! `[metrics] listen`: a Prometheus endpoint on the agent's host, off unless configured.
//!
//! `GET /metrics` over plain HTTP on the configured address only (loopback unless
//! `allow_remote = true`: the figures carry file paths, and there is no authentication),
//! everything else 404. Read at scrape time from what the agent already keeps:
//!
//! * `yagura_agent_lines_read_total`, `yagura_agent_events_shipped_total`,
//!   `yagura_agent_batches_shipped_total`, `yagura_agent_events_lost_total`
//!   ([`AgentStats`]);
//! * `yagura_agent_spool_batches` and `yagura_agent_spool_bytes`: sealed batches not yet
//!   acknowledged by the collector;
//! * `yagura_agent_file_lag_bytes{path}`: how far each tailed file's end is ahead of its
//!   checkpoint (published by the producer at most once a second; files being drained
//!   after a rotation are left out, their path names the new file);
//! * `yagura_agent_build_info{version}` and the standard `process_*` figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use yagura_shared::metrics::{Exposition, ProcessStats};

use crate::health::{AgentStats, file_lags};
use crate::spool::Spool;
use crate::tail::Checkpoint;

/// The tailer's checkpoints as the producer last published them (see
/// [`crate::health`]), for the per-file lag.
pub type PublishedCheckpoints = Arc<Mutex<Vec<Checkpoint>>>;

/// What a scrape reads.
#[derive(Clone)]
pub struct MetricsSource {
    /// The agent's counters.
    pub stats: Arc<AgentStats>,
    /// The spool (its depth in batches and bytes).
    pub spool: Arc<Mutex<Spool>>,
    /// The checkpoints the producer publishes.
    pub checkpoints: PublishedCheckpoints,
}

/// The exposition of one scrape (blocking: `/proc` and a `stat` per tailed file).
pub fn exposition(source: &MetricsSource) -> Exposition {
    let mut out = Exposition::default();
    let stats = &source.stats;
    for (name, help, value) in [
        (
            "yagura_agent_lines_read_total",
            "Lines read from the tailed files.",
            &stats.lines_read,
        ),
        (
            "yagura_agent_events_shipped_total",
            "Events in the batches the collector acknowledged.",
            &stats.events_shipped,
        ),
        (
            "yagura_agent_batches_shipped_total",
            "Batches the collector acknowledged.",
            &stats.batches_shipped,
        ),
        (
            "yagura_agent_events_lost_total",
            "Events recorded as lost (dropped batches, unreadable spool files, files \
             truncated or rotated away before they were read).",
            &stats.events_lost,
        ),
    ] {
        out.counter(name, help)
            .sample(&[], value.load(Ordering::Relaxed));
    }
    let (batches, bytes) = {
        let spool = source.spool.lock().unwrap_or_else(|p| p.into_inner());
        (spool.len() as u64, spool.bytes())
    };
    out.gauge(
        "yagura_agent_spool_batches",
        "Sealed batches in the spool, not yet acknowledged by the collector.",
    )
    .sample(&[], batches);
    out.gauge(
        "yagura_agent_spool_bytes",
        "Bytes of the sealed batches in the spool.",
    )
    .sample(&[], bytes);
    let checkpoints: Vec<Checkpoint> = source
        .checkpoints
        .lock()
        .map(|c| c.iter().filter(|c| !c.retired).cloned().collect())
        .unwrap_or_default();
    // One series per path, whatever the tailer holds for it.
    let mut lags: BTreeMap<String, u64> = BTreeMap::new();
    for lag in file_lags(&checkpoints) {
        *lags.entry(lag.path).or_insert(0) += lag.lag_bytes;
    }
    let lag = out.gauge(
        "yagura_agent_file_lag_bytes",
        "Bytes of a tailed file past the agent's checkpoint: written, not yet read.",
    );
    for (path, bytes) in &lags {
        lag.sample(&[("path", path.as_str())], *bytes);
    }
    out.gauge(
        "yagura_agent_build_info",
        "The agent's version, as a label (the value is always 1).",
    )
    .sample(&[("version", crate::VERSION)], 1u64);
    ProcessStats::read().add_to(&mut out);
    out
}

async fn metrics(State(source): State<MetricsSource>) -> Response {
    let encoded = tokio::task::spawn_blocking(move || exposition(&source).encode()).await;
    match encoded {
        Ok(Ok(text)) => (
            [(header::CONTENT_TYPE, yagura_shared::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Ok(Err(_)) | Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The endpoint's router: `GET /metrics`, nothing else.
pub fn router(source: MetricsSource) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(source)
}

/// Binds `address` and serves `/metrics` until `stop` is cancelled. A bind that fails is
/// logged, not fatal: shipping logs matters more than being measured.
pub async fn serve(address: SocketAddr, source: MetricsSource, stop: CancellationToken) {
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%address, %error, "cannot serve metrics on this address");
            return;
        }
    };
    let bound = listener.local_addr().unwrap_or(address);
    tracing::info!(address = %bound, "serving metrics on /metrics");
    let served = axum::serve(listener, router(source))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "the metrics endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_counters_spool_depth_file_lag_and_process() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("app \"x\".log");
        std::fs::write(&log, b"0123456789\n").expect("write");
        let stats = Arc::new(AgentStats::default());
        stats.lines_read.store(12, Ordering::Relaxed);
        stats.events_lost.store(2, Ordering::Relaxed);
        let spool = Spool::open(&dir.path().join("state")).expect("spool");
        let path = log.display().to_string();
        let source = MetricsSource {
            stats,
            spool: Arc::new(Mutex::new(spool)),
            checkpoints: Arc::new(Mutex::new(vec![
                Checkpoint {
                    path: path.clone(),
                    offset: 4,
                    ..Checkpoint::default()
                },
                // A rotated file still being drained: its path now names another file.
                Checkpoint {
                    path: path.clone(),
                    offset: 0,
                    retired: true,
                    ..Checkpoint::default()
                },
            ])),
        };
        let text = exposition(&source).encode().expect("encode");
        let escaped = path.replace('\\', "\\\\").replace('"', "\\\"");
        for line in [
            "yagura_agent_lines_read_total 12\n".to_string(),
            "yagura_agent_events_lost_total 2\n".to_string(),
            "yagura_agent_spool_batches 0\n".to_string(),
            "yagura_agent_spool_bytes 0\n".to_string(),
            format!("yagura_agent_file_lag_bytes{{path=\"{escaped}\"}} 7\n"),
            format!(
                "yagura_agent_build_info{{version=\"{}\"}} 1\n",
                crate::VERSION
            ),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert_eq!(text.matches("yagura_agent_file_lag_bytes{").count(), 1);
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().expect("tmp");
        let source = MetricsSource {
            stats: Arc::default(),
            spool: Arc::new(Mutex::new(Spool::open(dir.path()).expect("spool"))),
            checkpoints: Arc::default(),
        };
        let app = router(source);
        let request = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let ok = app
            .clone()
            .oneshot(request("/metrics"))
            .await
            .expect("answer");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some(yagura_shared::metrics::CONTENT_TYPE)
        );
        let other = app.oneshot(request("/status")).await.expect("answer");
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
    }
}
