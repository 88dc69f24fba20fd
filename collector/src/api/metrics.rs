//! `GET /metrics`: Prometheus text exposition of what an operator must be able to alert
//! on — alerts by status, the outbox by status (a failed notification shows here), and
//! the alerting counters since start. Behind the API token like every other route
//! (Prometheus sends it with `authorization.credentials`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

fn gauge_by_status(out: &mut String, name: &str, help: &str, rows: &[(String, u64)], all: &[&str]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    // Every status is present, zero included, so a rule on `failed > 0` always has a series.
    for status in all {
        let n = rows
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "{name}{{status=\"{status}\"}} {n}");
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {value}");
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.alerts.store();
    let alerts = store.alert_counts().await.map_err(ApiError::internal)?;
    let outbox = store.outbox_counts().await.map_err(ApiError::internal)?;
    let stats = state.alerts.stats();
    let mut out = String::new();
    gauge_by_status(
        &mut out,
        "yagura_alerts",
        "Alerts by status.",
        &alerts,
        &["open", "acknowledged", "suppressed", "resolved"],
    );
    gauge_by_status(
        &mut out,
        "yagura_alert_notifications",
        "Notifications of the alert outbox by status.",
        &outbox,
        &["pending", "sent", "failed", "summarized", "skipped"],
    );
    for (name, help, value) in [
        (
            "yagura_alert_matches_total",
            "Rule matches taken into alerts since start.",
            &stats.matches,
        ),
        (
            "yagura_alerts_created_total",
            "Alerts opened since start.",
            &stats.created,
        ),
        (
            "yagura_alert_notifications_sent_total",
            "Notifications delivered since start.",
            &stats.sent,
        ),
        (
            "yagura_alert_notification_retries_total",
            "Failed delivery attempts retried since start.",
            &stats.retries,
        ),
        (
            "yagura_alert_notifications_failed_total",
            "Notifications marked failed since start.",
            &stats.failed,
        ),
        (
            "yagura_alert_notifications_held_total",
            "Notifications held for a rate-limit summary since start.",
            &stats.held,
        ),
    ] {
        counter(&mut out, name, help, value.load(Ordering::Relaxed));
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
