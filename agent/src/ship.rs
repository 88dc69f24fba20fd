//! The shipper: sends spooled batches to the collector, oldest first — up to
//! `batches_in_flight` of them in one request (a bundle), acknowledged in order.
//!
//! Guarantees:
//!
//! * A batch leaves the spool only after the collector answered 200 (`accepted`, or
//!   `duplicate`: it already holds that sequence), or when the collector rejected it as
//!   something it can never accept (400, 413), in which case it is kept in
//!   `spool/rejected/` and logged.
//! * Every retry sends the same bytes. Connection errors, timeouts, 408, 5xx, 429 and 503
//!   are retried forever with exponential backoff and full jitter (100 ms doubling up to
//!   `max_backoff_ms`), or after `Retry-After` seconds when the collector sends one.
//! * 401/403 (agent unknown, revoked, or key mismatch) and other unexpected statuses are
//!   logged as errors and retried every 30 seconds: nothing is dropped because of them.
//! * In a bundle, each batch gets the answer it would have had alone, and they are settled
//!   in order up to the first one to retry; the collector stops at that one too, so no
//!   batch is archived ahead of an earlier one still to come. A collector that does not
//!   know bundles (404) is sent one batch per request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use yagura_shared::bundle::{BUNDLE_CONTENT_TYPE, BatchResult, BundleAnswer, encode_bundle};

use crate::config::ShipConfig;
use crate::enroll::Enrollment;
use crate::spool::{Spool, SpoolError, SpooledBatch};
use crate::{Error, blocking, tls};

/// First retry delay ceiling.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Most bytes of batches sent in one request (the collector takes 16 MiB by default).
pub const MAX_BUNDLE_BYTES: usize = 8 << 20;
/// Pause between retries when the collector refuses the agent itself.
pub const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; longer values are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(max, base * 2^n)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay, drawing the jitter from `random` (any `u64`).
    pub fn next_delay_with(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(random % millis.saturating_add(1))
    }

    /// The next delay with jitter from the operating system's random source.
    pub fn next_delay(&mut self) -> Duration {
        let random = getrandom::u64().unwrap_or_else(|_| {
            // No entropy: fall back to half the ceiling, still bounded and growing.
            u64::try_from(self.ceiling().as_millis() / 2).unwrap_or(0)
        });
        self.next_delay_with(random)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `Retry-After` in delta-seconds, capped at [`MAX_RETRY_AFTER`]. HTTP dates and garbage
/// give `None` (the normal backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// What to do after one send attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The collector holds the batch: delete it from the spool.
    Acked { duplicate: bool },
    /// Try the same bytes again after this delay (`None`: the backoff decides).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The collector does not accept this agent: log loudly, retry slowly.
    Refused { reason: String },
    /// The batch can never be accepted: set it aside.
    Rejected { reason: String },
}

#[derive(Debug, Deserialize)]
struct IngestAnswer {
    status: Option<String>,
    sequence: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Problem {
    title: Option<String>,
    detail: Option<String>,
}

/// A human-readable reason from an RFC 9457 problem body, or the body itself.
pub(crate) fn problem_text(status: StatusCode, body: &str) -> String {
    let parsed: Option<Problem> = serde_json::from_str(body).ok();
    let text = parsed
        .and_then(|p| p.detail.or(p.title))
        .unwrap_or_else(|| {
            body.chars()
                .take(300)
                .collect::<String>()
                .trim()
                .to_string()
        });
    if text.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {text}")
    }
}

/// Classifies the collector's answer to the upload of batch `sequence`.
///
/// Any 2xx is the ack (the collector has archived the batch); its JSON body, when it
/// parses, must name the same sequence.
pub fn classify(
    status: StatusCode,
    retry_after: Option<&str>,
    body: &str,
    sequence: u64,
) -> Outcome {
    if status.is_success() {
        let answer: Option<IngestAnswer> = serde_json::from_str(body).ok();
        if let Some(answer) = &answer
            && let Some(acked) = answer.sequence
            && acked != sequence
        {
            return Outcome::Retry {
                after: None,
                reason: format!("collector acknowledged sequence {acked} for batch {sequence}"),
            };
        }
        let duplicate = answer
            .and_then(|a| a.status)
            .is_some_and(|s| s == "duplicate");
        return Outcome::Acked { duplicate };
    }
    let reason = problem_text(status, body);
    match status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Outcome::Rejected { reason },
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Outcome::Retry {
            after: retry_after.and_then(parse_retry_after),
            reason,
        },
        StatusCode::REQUEST_TIMEOUT => Outcome::Retry {
            after: None,
            reason,
        },
        s if s.is_server_error() => Outcome::Retry {
            after: retry_after.and_then(parse_retry_after),
            reason,
        },
        _ => Outcome::Refused { reason },
    }
}

/// The task that empties the spool into the collector.
pub struct Shipper {
    client: reqwest::Client,
    ingest_url: String,
    spool: Arc<Mutex<Spool>>,
    batch_sealed: Arc<Notify>,
    space_freed: Arc<Notify>,
    max_backoff: Duration,
    stats: Arc<crate::health::AgentStats>,
    bundle_url: String,
    batches_in_flight: usize,
    /// Cleared when the collector does not know bundles (404/405): one batch per request.
    bundles: std::sync::atomic::AtomicBool,
    /// Set when the agent enforces an allowlist: requests name the policy held, and a
    /// policy in an answer is left here for the enforcer.
    allowlist: Option<Arc<crate::allowlist::runtime::PolicyMailbox>>,
    pins: Option<tls::Pins>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("ingest_url", &self.ingest_url)
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// A shipper to the enrolled collector, pinned to its certificate. `batch_sealed` wakes
    /// it; it signals `space_freed` after every ack.
    pub fn new(
        enrollment: &Enrollment,
        config: &ShipConfig,
        spool: Arc<Mutex<Spool>>,
        batch_sealed: Arc<Notify>,
        space_freed: Arc<Notify>,
    ) -> Result<Shipper, Error> {
        let https = enrollment.collector_url.starts_with("https://");
        if https && enrollment.fingerprint.is_none() {
            return Err(Error::BadStateFile {
                path: crate::enroll::ENROLLMENT_FILE.into(),
                reason: "no certificate fingerprint recorded for an https collector; enroll again"
                    .into(),
            });
        }
        let pins = enrollment
            .fingerprint
            .is_some()
            .then(|| tls::Pins::new(&enrollment.pins()))
            .transpose()?;
        let (client, _) = tls::pinned_client_with(
            pins.clone(),
            Duration::from_millis(config.request_timeout_ms),
        )?;
        Ok(Shipper {
            client,
            ingest_url: format!("{}/api/v1/ingest", enrollment.collector_url),
            bundle_url: format!("{}/api/v1/ingest/bundle", enrollment.collector_url),
            batches_in_flight: config.batches_in_flight.max(1),
            bundles: std::sync::atomic::AtomicBool::new(true),
            spool,
            batch_sealed,
            space_freed,
            max_backoff: Duration::from_millis(config.max_backoff_ms),
            stats: Arc::default(),
            allowlist: None,
            pins,
        })
    }

    /// The certificate fingerprints this shipper accepts (`None`: plain http), shared so
    /// a certificate hand-over reaches its connections.
    pub fn pins(&self) -> Option<tls::Pins> {
        self.pins.clone()
    }

    /// Names the allowlist policy held in every request, and hands a policy the collector
    /// assigns to `mailbox`.
    pub fn with_allowlist(
        mut self,
        mailbox: Arc<crate::allowlist::runtime::PolicyMailbox>,
    ) -> Self {
        self.allowlist = Some(mailbox);
        self
    }

    /// Leaves a policy carried by a successful answer in the mailbox.
    fn take_policy(&self, body: &str) {
        #[derive(serde::Deserialize)]
        struct Extras {
            allowlist: Option<yagura_shared::policy_delivery::DeliveredPolicy>,
        }
        let Some(mailbox) = &self.allowlist else {
            return;
        };
        if !body.contains("\"allowlist\"") {
            return;
        }
        match serde_json::from_str::<Extras>(body) {
            Ok(Extras {
                allowlist: Some(policy),
            }) => {
                tracing::info!(assignment = %policy.name, sha256 = %policy.sha256, "allowlist policy received from the collector");
                mailbox.deliver(policy);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable allowlist policy in an answer"),
        }
    }

    /// Counts shipped batches and events, and records send errors, into `stats`.
    pub fn with_stats(mut self, stats: Arc<crate::health::AgentStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Ships until `stop` is cancelled, or until `drain` is cancelled and the spool is
    /// empty.
    pub async fn run(self, drain: CancellationToken, stop: CancellationToken) {
        let mut backoff = Backoff::new(BACKOFF_BASE, self.max_backoff);
        loop {
            if stop.is_cancelled() {
                return;
            }
            let spool = Arc::clone(&self.spool);
            let count = if self.bundles.load(std::sync::atomic::Ordering::Relaxed) {
                self.batches_in_flight
            } else {
                1
            };
            let next = blocking(move || lock(&spool).oldest_batches(count, MAX_BUNDLE_BYTES)).await;
            let batches = match next {
                Ok(Ok(batches)) if !batches.is_empty() => batches,
                Ok(Ok(_)) => {
                    if drain.is_cancelled() {
                        return;
                    }
                    tokio::select! {
                        _ = self.batch_sealed.notified() => {}
                        _ = drain.cancelled() => {}
                        _ = stop.cancelled() => return,
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the spool");
                    if !sleep_or_stop(backoff.next_delay(), &stop).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool task failed");
                    if !sleep_or_stop(backoff.next_delay(), &stop).await {
                        return;
                    }
                    continue;
                }
            };
            let shipped = if batches.len() == 1 {
                self.ship_one(&batches[0], &mut backoff, &stop).await
            } else {
                self.ship_bundle(&batches, &mut backoff, &stop).await
            };
            if !shipped {
                return;
            }
        }
    }

    /// Sends several batches in one request and settles them in order, up to the first
    /// one that must be retried (after its delay; the loop then resends from there).
    /// Returns false when stopped.
    async fn ship_bundle(
        &self,
        batches: &[SpooledBatch],
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> bool {
        let body = encode_bundle(batches.iter().map(|b| b.bytes.as_slice()));
        let sent = tokio::select! {
            sent = self.post(&self.bundle_url, BUNDLE_CONTENT_TYPE, body) => sent,
            _ = stop.cancelled() => return false,
        };
        let outcomes: Vec<Outcome> = match sent {
            Err(outcome) => vec![outcome],
            Ok((status, _, _))
                if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED =>
            {
                tracing::info!(
                    "the collector does not take bundles; sending one batch per request"
                );
                self.bundles
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                return true;
            }
            Ok((status, _, _)) if status == StatusCode::PAYLOAD_TOO_LARGE => {
                // The bundle is over this collector's limit: the first batch alone says
                // whether it is the batch itself.
                return self.ship_one(&batches[0], backoff, stop).await;
            }
            Ok((status, retry_after, body)) if status.is_success() => {
                match serde_json::from_str::<BundleAnswer>(&body) {
                    Ok(answer) => answer
                        .results
                        .iter()
                        .zip(batches)
                        .map(|(result, batch)| batch_outcome(result, batch.sequence))
                        .collect(),
                    Err(e) => vec![Outcome::Retry {
                        after: retry_after.as_deref().and_then(parse_retry_after),
                        reason: format!("unreadable bundle answer: {e}"),
                    }],
                }
            }
            Ok((status, retry_after, body)) => vec![classify(
                status,
                retry_after.as_deref(),
                &body,
                batches[0].sequence,
            )],
        };
        // The leading run of acknowledged batches is recorded at once (one durable write);
        // the rest, from the first that is not acked, one by one as before.
        let acked = outcomes
            .iter()
            .take_while(|o| matches!(o, Outcome::Acked { .. }))
            .count();
        if acked > 0
            && let Some(delay) = self.settle_acked(&batches[..acked], backoff).await
        {
            return sleep_or_stop(delay, stop).await;
        }
        for (batch, outcome) in batches.iter().zip(outcomes).skip(acked) {
            if let Some(delay) = self.settle(batch, outcome, backoff).await {
                return sleep_or_stop(delay, stop).await;
            }
        }
        true
    }

    /// Deletes `batches` (the oldest, in order), which the collector acknowledged, from
    /// the spool. Returns the delay before sending them again when that fails.
    async fn settle_acked(
        &self,
        batches: &[SpooledBatch],
        backoff: &mut Backoff,
    ) -> Option<Duration> {
        let sequences: Vec<u64> = batches.iter().map(|b| b.sequence).collect();
        let (first, last) = (sequences[0], sequences[sequences.len() - 1]);
        tracing::debug!(first, last, "batches acknowledged");
        let spool = Arc::clone(&self.spool);
        // The durable write of `acked.json` happens without the spool's lock, which the
        // producer takes on every step.
        let record = move || {
            let record = lock(&spool).prepare_ack(&sequences)?;
            record.write()?;
            Ok::<_, SpoolError>(lock(&spool).settle_ack(record))
        };
        match blocking(record).await {
            Ok(Ok(files)) => {
                // Recorded: the files go in the background, the next bundle need not wait.
                drop(tokio::task::spawn_blocking(move || files.delete()));
                use std::sync::atomic::Ordering::Relaxed;
                self.stats
                    .batches_shipped
                    .fetch_add(batches.len() as u64, Relaxed);
                self.stats.events_shipped.fetch_add(
                    batches.iter().map(|b| u64::from(b.event_count)).sum(),
                    Relaxed,
                );
                self.stats.set_ship_error(None);
                backoff.reset();
                self.space_freed.notify_one();
                return None;
            }
            Ok(Err(e)) => {
                tracing::error!(first, last, error = %e, "cannot record the ack; will resend")
            }
            Err(e) => tracing::error!(first, last, error = %e, "ack task failed; will resend"),
        }
        Some(backoff.next_delay())
    }

    /// Sends one batch until it is settled. Returns false when stopped.
    async fn ship_one(
        &self,
        batch: &SpooledBatch,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> bool {
        loop {
            let outcome = tokio::select! {
                outcome = self.send(batch) => outcome,
                _ = stop.cancelled() => return false,
            };
            let Some(delay) = self.settle(batch, outcome, backoff).await else {
                return true;
            };
            if !sleep_or_stop(delay, stop).await {
                return false;
            }
        }
    }

    /// Acts on the collector's answer for `batch`: deletes it from the spool when acked,
    /// sets it aside when rejected for good. Returns the delay before sending it again, or
    /// `None` when it is settled.
    async fn settle(
        &self,
        batch: &SpooledBatch,
        outcome: Outcome,
        backoff: &mut Backoff,
    ) -> Option<Duration> {
        let sequence = batch.sequence;
        Some(match outcome {
            Outcome::Acked { duplicate } => {
                tracing::debug!(
                    sequence,
                    events = batch.event_count,
                    duplicate,
                    "batch acknowledged"
                );
                return self
                    .settle_acked(std::slice::from_ref(batch), backoff)
                    .await;
            }
            Outcome::Rejected { reason } => {
                let spool = Arc::clone(&self.spool);
                match blocking(move || lock(&spool).reject(sequence)).await {
                    Ok(Ok(path)) => {
                        tracing::error!(
                            sequence,
                            events = batch.event_count,
                            path = %path.display(),
                            %reason,
                            "collector rejected the batch for good; set aside"
                        );
                        self.space_freed.notify_one();
                        return None;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(sequence, error = %e, "cannot set the rejected batch aside")
                    }
                    Err(e) => tracing::error!(sequence, error = %e, "reject task failed"),
                }
                backoff.next_delay()
            }
            Outcome::Refused { reason } => {
                self.stats
                    .set_ship_error(Some(format!("collector refuses this agent: {reason}")));
                tracing::error!(
                    sequence,
                    %reason,
                    "COLLECTOR REFUSES THIS AGENT (unknown, revoked or key mismatch?); retrying in 30 s"
                );
                UNAUTHORIZED_RETRY
            }
            Outcome::Retry { after, reason } => {
                self.stats.set_ship_error(Some(reason.clone()));
                let delay = after.unwrap_or_else(|| backoff.next_delay());
                tracing::warn!(sequence, %reason, retry_in_ms = delay.as_millis() as u64, "send failed; retrying");
                delay
            }
        })
    }

    async fn send(&self, batch: &SpooledBatch) -> Outcome {
        match self
            .post(
                &self.ingest_url,
                "application/octet-stream",
                batch.bytes.clone(),
            )
            .await
        {
            Ok((status, retry_after, body)) => {
                classify(status, retry_after.as_deref(), &body, batch.sequence)
            }
            Err(outcome) => outcome,
        }
    }

    /// Posts `body`; the status, `Retry-After` and body of the answer, or the retry a
    /// transport failure calls for.
    async fn post(
        &self,
        url: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Option<String>, String), Outcome> {
        let mut request = self.client.post(url).header(CONTENT_TYPE, content_type);
        if let Some(mailbox) = &self.allowlist {
            request = request.header(
                yagura_shared::policy_delivery::ALLOWLIST_HEADER,
                mailbox.held(),
            );
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| Outcome::Retry {
                after: None,
                reason: ErrorChain(&e).to_string(),
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match response.text().await {
            Ok(body) => {
                if status.is_success() {
                    self.take_policy(&body);
                }
                body
            }
            Err(e) if status.is_success() => {
                // The status is the ack; a body lost in transit does not change it.
                tracing::debug!(error = %e, "could not read the ack body");
                String::new()
            }
            Err(e) => {
                return Err(Outcome::Retry {
                    after: None,
                    reason: format!("{status}, body unreadable: {e}"),
                });
            }
        };
        Ok((status, retry_after, body))
    }
}

/// The outcome of one batch of a bundle, read as if it had been sent alone.
pub fn batch_outcome(result: &BatchResult, sequence: u64) -> Outcome {
    let status = StatusCode::from_u16(result.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = if status.is_success() {
        serde_json::json!({"status": result.outcome, "sequence": result.sequence})
    } else {
        serde_json::json!({"detail": result.detail})
    };
    let retry_after = result.retry_after_seconds.map(|s| s.to_string());
    classify(status, retry_after.as_deref(), &body.to_string(), sequence)
}

/// Displays an error with all its sources (`a: b: c`).
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sleeps, unless stopped first. Returns false when stopped.
async fn sleep_or_stop(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let ceilings: Vec<u128> = (0..7)
            .map(|_| {
                let c = b.ceiling().as_millis();
                // The largest random value lands exactly on the ceiling.
                assert_eq!(b.clone().next_delay_with(c as u64).as_millis(), c);
                b.next_delay_with(0);
                c
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_millis(1000));
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        assert_eq!(
            b.next_delay_with(0),
            Duration::ZERO,
            "full jitter reaches zero"
        );
    }

    #[test]
    fn backoff_survives_many_attempts() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_seconds_are_parsed_and_capped() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn bundle_results_read_as_single_answers() {
        let result = |status: u16, sequence: Option<u64>, outcome: Option<&str>| BatchResult {
            status,
            sequence,
            outcome: outcome.map(str::to_string),
            detail: Some("why".into()),
            retry_after_seconds: Some(3),
        };
        assert_eq!(
            batch_outcome(&result(200, Some(4), Some("duplicate")), 4),
            Outcome::Acked { duplicate: true }
        );
        // An ack naming another sequence is not an ack of this batch.
        assert!(matches!(
            batch_outcome(&result(200, Some(5), Some("accepted")), 4),
            Outcome::Retry { .. }
        ));
        assert_eq!(
            batch_outcome(&result(429, Some(4), None), 4),
            Outcome::Retry {
                after: Some(Duration::from_secs(3)),
                reason: "429 Too Many Requests: why".into()
            }
        );
        assert!(matches!(
            batch_outcome(&result(400, None, None), 4),
            Outcome::Rejected { .. }
        ));
        assert!(matches!(
            batch_outcome(&result(401, None, None), 4),
            Outcome::Refused { .. }
        ));
    }

    #[test]
    fn statuses_are_classified() {
        let ok = classify(
            StatusCode::OK,
            None,
            r#"{"status":"accepted","sequence":7}"#,
            7,
        );
        assert_eq!(ok, Outcome::Acked { duplicate: false });
        let dup = classify(
            StatusCode::OK,
            None,
            r#"{"status":"duplicate","sequence":7}"#,
            7,
        );
        assert_eq!(dup, Outcome::Acked { duplicate: true });
        assert!(matches!(
            classify(
                StatusCode::OK,
                None,
                r#"{"status":"accepted","sequence":6}"#,
                7
            ),
            Outcome::Retry { .. }
        ));
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, Some("2"), "", 7),
            Outcome::Retry {
                after: Some(Duration::from_secs(2)),
                reason: "503 Service Unavailable".into()
            }
        );
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, None, "", 7),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, None, "", 7),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(StatusCode::REQUEST_TIMEOUT, None, "", 7),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, None, "", 7),
            Outcome::Refused { .. }
        ));
        let rejected = classify(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            r#"{"title":"Payload Too Large","detail":"batch exceeds 8 MiB"}"#,
            7,
        );
        assert_eq!(
            rejected,
            Outcome::Rejected {
                reason: "413 Payload Too Large: batch exceeds 8 MiB".into()
            }
        );
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, None, "bad", 7),
            Outcome::Rejected { .. }
        ));
    }
}
