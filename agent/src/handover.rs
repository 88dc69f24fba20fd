//! Taking the collector's certificate hand-over (see [`yagura_shared::tls_handover`]).
//!
//! Every `[ship] handover_check_seconds` the agent asks the collector for a published
//! hand-over. One that replaces the pinned certificate and verifies under its key adds
//! the next certificate's fingerprint to the pins (`enrollment.json`
//! `next_fingerprint`, and the live pin set every connection checks), so the agent keeps
//! shipping when the collector switches. Once a connection presents the next
//! certificate, it becomes the only pin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use yagura_shared::tls_handover::Handover;

use crate::enroll::Enrollment;
use crate::tls::{self, Pins, normalize_fingerprint};

/// Checks for a hand-over every `every` until `stop`.
pub async fn run(
    state_dir: PathBuf,
    pins: Pins,
    every: Duration,
    timeout: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(error) = check(&state_dir, &pins, timeout).await {
            tracing::warn!(%error, "certificate hand-over check failed");
        }
    }
}

/// One look: promote the next pin if the collector presents it, else take a new hand-over.
pub async fn check(state_dir: &Path, pins: &Pins, timeout: Duration) -> Result<(), String> {
    let mut enrollment = Enrollment::load(state_dir).map_err(|e| e.to_string())?;
    let Some(current) = enrollment.fingerprint.clone() else {
        return Ok(());
    };
    let (client, seen) =
        tls::pinned_client_with(Some(pins.clone()), timeout).map_err(|e| e.to_string())?;
    let answer = client
        .get(format!("{}/api/v1/tls/handover", enrollment.collector_url))
        .send()
        .await;
    // The certificate this connection was made with: the next one means the switch is
    // done — once the exchange went through, i.e. the server proved it holds that
    // certificate's key (anyone can present the certificate itself, it is public).
    let presented = seen.lock().ok().and_then(|s| s.clone());
    if let Some(next) = enrollment.next_fingerprint.clone()
        && answer.is_ok()
        && presented.as_deref() == Some(next.as_str())
    {
        enrollment.fingerprint = Some(next.clone());
        enrollment.next_fingerprint = None;
        enrollment.save(state_dir).map_err(|e| e.to_string())?;
        pins.set(&enrollment.pins()).map_err(|e| e.to_string())?;
        tracing::info!(fingerprint = %next, "the collector presents its new certificate; the old pin is dropped");
        return Ok(());
    }
    let response = answer.map_err(|e| crate::ship::ErrorChain(&e).to_string())?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(());
    }
    if !response.status().is_success() {
        return Err(format!("the collector answered {}", response.status()));
    }
    let handover: Handover = response.json().await.map_err(|e| e.to_string())?;
    let to = normalize_fingerprint(&handover.to_fingerprint).map_err(|e| e.to_string())?;
    if to == current || enrollment.next_fingerprint.as_deref() == Some(to.as_str()) {
        return Ok(());
    }
    tls::verify_handover(&handover, &current).map_err(|e| format!("hand-over refused: {e}"))?;
    enrollment.next_fingerprint = Some(to.clone());
    enrollment.save(state_dir).map_err(|e| e.to_string())?;
    pins.set(&enrollment.pins()).map_err(|e| e.to_string())?;
    tracing::info!(next = %to, "certificate hand-over accepted: the collector's next certificate is trusted too");
    Ok(())
}
