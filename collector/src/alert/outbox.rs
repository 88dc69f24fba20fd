//! The outbox sender: one task per destination, sending its due notifications in order.
//!
//! A notification that fails with something worth retrying (connection refused, 5xx, 429)
//! is tried again after an exponential backoff — or the receiver's `Retry-After`, if
//! longer — and the destination pauses until then rather than hammer a receiver that is
//! down. Past the retry budget, or refused for good (another 4xx), it is marked `failed`:
//! logged, counted, listed by the API; never dropped silently. Over its rate limit a
//! destination holds pages and updates back in one summary, sent when the limit allows.
//!
//! Delivery is at least once: a crash after the receiver took a notification but before
//! it was marked sent sends it again on restart, with the same `X-Yagura-Delivery` id
//! (and, for PagerDuty, the same `dedup_key`) so receivers can tell.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::AlertService;
use super::model::{HeldNotification, NotificationKind, Summary};
use super::policy::{DestinationConfig, RetryConfig};
use super::sinks::{Message, SendError, Sink};

/// Notifications read per round.
const ROUND: u32 = 50;
/// The longest sleep before the outbox is looked at again without a wake-up.
const IDLE: Duration = Duration::from_secs(1);
/// The rate limit's window.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// A destination's sender.
pub struct DestinationSender {
    pub name: String,
    pub sink: Sink,
    pub rate_limit_per_minute: u32,
    pub updates: bool,
}

impl DestinationSender {
    pub fn new(name: &str, config: &DestinationConfig) -> Result<Self, String> {
        Ok(DestinationSender {
            name: name.to_string(),
            sink: Sink::new(name, config)?,
            rate_limit_per_minute: config.rate_limit_per_minute,
            updates: config.updates,
        })
    }
}

/// The wait before attempt `attempts + 1`: `initial · 2^(attempts-1)`, capped.
pub fn backoff(retry: &RetryConfig, attempts: u64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    let delay = retry.initial_delay_ms.saturating_mul(1u64 << exponent);
    Duration::from_millis(delay.min(retry.max_delay_ms))
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What one attempt came to.
enum Attempt {
    Done,
    /// The destination waits this long before its next attempt.
    Pause(Duration),
}

struct Worker {
    service: AlertService,
    destination: DestinationSender,
    retry: RetryConfig,
    console_url: String,
    /// When recent sends happened, for the rate limit.
    sent: VecDeque<tokio::time::Instant>,
}

impl Worker {
    async fn attempt(
        &mut self,
        notification: super::model::Notification,
    ) -> Result<Attempt, crate::store::StoreError> {
        let store = self.service.store().clone();
        let stats = self.service.stats();
        let now = Utc::now();
        let name = self.destination.name.clone();
        let alert = match &notification.alert_id {
            Some(id) => store.alert(id).await?,
            None => None,
        };
        let attempts = notification.attempts + 1;
        if notification.alert_id.is_some() && alert.is_none() {
            store
                .mark_unsent(notification.id, "failed", attempts, "its alert is gone")
                .await?;
            return Ok(Attempt::Done);
        }
        if !self
            .destination
            .sink
            .wants(notification.kind, self.destination.updates)
        {
            store
                .mark_unsent(
                    notification.id,
                    "skipped",
                    notification.attempts,
                    "not sent to this kind of destination",
                )
                .await?;
            return Ok(Attempt::Done);
        }
        if matches!(
            notification.kind,
            NotificationKind::Update | NotificationKind::Acknowledge | NotificationKind::Resolve
        ) && let Some(alert_id) = &notification.alert_id
            && !store.was_triggered(alert_id, &name).await?
        {
            store
                .mark_unsent(
                    notification.id,
                    "skipped",
                    notification.attempts,
                    "this destination was never paged for the alert",
                )
                .await?;
            return Ok(Attempt::Done);
        }
        // Pages and count updates are held over the limit; an acknowledge or resolve
        // never is (held, it would leave the receiver's incident open). PagerDuty gets
        // every page as it is: its incidents are keyed by the alert, and a summary would
        // be an incident nothing ever resolves.
        let limited = matches!(
            notification.kind,
            NotificationKind::Trigger | NotificationKind::Update
        ) && !matches!(self.destination.sink, Sink::PagerDuty(_));
        let clock = tokio::time::Instant::now();
        while self
            .sent
            .front()
            .is_some_and(|at| clock.duration_since(*at) >= RATE_WINDOW)
        {
            self.sent.pop_front();
        }
        if limited && self.sent.len() >= self.destination.rate_limit_per_minute as usize {
            let free_in = self.sent.front().map_or(Duration::ZERO, |at| {
                RATE_WINDOW.saturating_sub(clock.duration_since(*at))
            });
            let send_at = now + chrono::Duration::from_std(free_in).unwrap_or_default();
            let held = HeldNotification {
                alert_id: notification.alert_id.clone().unwrap_or_default(),
                kind: notification.kind.as_str().to_string(),
                rule_title: alert
                    .as_ref()
                    .map(|a| a.rule.title.clone())
                    .unwrap_or_default(),
                level: alert.as_ref().and_then(|a| a.rule.level.clone()),
                event_count: alert.as_ref().map_or(0, |a| a.event_count),
            };
            store
                .hold_in_summary(notification.id, &name, held, send_at, now)
                .await?;
            stats.held.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(destination = %name, notification = notification.id, "rate limit reached: notification held for the summary");
            return Ok(Attempt::Done);
        }
        let summary: Option<Summary> = notification
            .detail
            .as_deref()
            .filter(|_| notification.kind == NotificationKind::Summary)
            .and_then(|d| serde_json::from_str(d).ok());
        let message = Message {
            notification: &notification,
            alert: alert.as_ref(),
            summary: summary.as_ref(),
            console_url: &self.console_url,
        };
        // A resolve or suppress may have cancelled it since it was read.
        if store.notification_status(notification.id).await?.as_deref() != Some("pending") {
            return Ok(Attempt::Done);
        }
        let started = std::time::Instant::now();
        let outcome = self.destination.sink.send(&message).await;
        match outcome {
            Ok(()) => {
                store
                    .mark_sent(notification.id, attempts, Utc::now())
                    .await?;
                self.sent.push_back(tokio::time::Instant::now());
                stats.sent.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    destination = %name,
                    notification = notification.id,
                    kind = notification.kind.as_str(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "notification sent"
                );
                Ok(Attempt::Done)
            }
            Err(SendError::Permanent(reason)) => {
                store
                    .mark_unsent(notification.id, "failed", attempts, &reason)
                    .await?;
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(destination = %name, notification = notification.id, %reason, "notification refused by its receiver: marked failed");
                Ok(Attempt::Done)
            }
            Err(SendError::Retry { reason, after }) => {
                let created = parse_time(&notification.created_at).unwrap_or(now);
                let age = (now - created).to_std().unwrap_or_default();
                if age >= self.retry.give_up_after.0 {
                    store
                        .mark_unsent(notification.id, "failed", attempts, &reason)
                        .await?;
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(destination = %name, notification = notification.id, attempts, %reason, "notification undelivered past its retry budget: marked failed");
                    return Ok(Attempt::Done);
                }
                let wait = backoff(&self.retry, attempts).max(after.unwrap_or_default());
                let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
                store
                    .mark_retry(notification.id, attempts, next, &reason)
                    .await?;
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(destination = %name, notification = notification.id, attempts, wait_ms = wait.as_millis() as u64, %reason, "notification not delivered; retrying");
                Ok(Attempt::Pause(wait))
            }
        }
    }

    async fn run(mut self, cancel: CancellationToken) {
        let mut wakeups = self.service.outbox_wakeups();
        let name = self.destination.name.clone();
        loop {
            let mut pause: Option<Duration> = None;
            let due = self.service.store().due(&name, Utc::now(), ROUND).await;
            let count = match due {
                Ok(due) => {
                    let count = due.len();
                    for notification in due {
                        if cancel.is_cancelled() {
                            return;
                        }
                        match self.attempt(notification).await {
                            Ok(Attempt::Done) => {}
                            Ok(Attempt::Pause(wait)) => {
                                pause = Some(wait);
                                break;
                            }
                            Err(error) => {
                                tracing::error!(destination = %name, %error, "outbox: database error; retrying");
                                pause = Some(IDLE);
                                break;
                            }
                        }
                    }
                    count
                }
                Err(error) => {
                    tracing::error!(destination = %name, %error, "outbox: database error; retrying");
                    pause = Some(IDLE);
                    0
                }
            };
            if let Some(wait) = pause {
                // Paused: a wake-up does not shorten it (the receiver asked for the wait
                // or is down).
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return,
                }
                continue;
            }
            if count as u32 >= ROUND {
                continue;
            }
            let until_due = match self.service.store().next_due(&name).await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                _ => IDLE,
            };
            if until_due.is_zero() && count > 0 {
                continue;
            }
            let wait = until_due.clamp(Duration::from_millis(10), IDLE);
            tokio::select! {
                _ = wakeups.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}

/// Starts one sender per destination; they stop with `cancel`.
pub fn start(
    service: &AlertService,
    destinations: Vec<DestinationSender>,
    retry: RetryConfig,
    console_url: String,
    cancel: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    destinations
        .into_iter()
        .map(|destination| {
            let worker = Worker {
                service: service.clone(),
                destination,
                retry,
                console_url: console_url.clone(),
                sent: VecDeque::new(),
            };
            tokio::spawn(worker.run(cancel.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry = RetryConfig {
            initial_delay_ms: 1_000,
            max_delay_ms: 30_000,
            ..RetryConfig::default()
        };
        let waits: Vec<u64> = (1..=7)
            .map(|a| backoff(&retry, a).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
        );
        assert_eq!(backoff(&retry, u64::MAX), Duration::from_millis(30_000));
    }
}
