//! Where notifications go: one file per kind of receiver. Each renders a notification
//! in its receiver's documented format; this module sends it and sorts the outcome into
//! delivered, worth retrying (connection errors, 408, 429 with its `Retry-After`, 5xx)
//! or not (other 4xx: a revoked webhook or a bad routing key will not heal by waiting).

pub mod email;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::time::Duration;

use super::model::{Alert, Level, Notification, NotificationKind, Summary};
use super::policy::{DestinationConfig, SinkKind};

/// Longest wait a receiver's `Retry-After` is taken for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What a sink is given to send.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub notification: &'a Notification,
    /// The alert as it is now (absent for summaries).
    pub alert: Option<&'a Alert>,
    /// A rate-limit summary's content.
    pub summary: Option<&'a Summary>,
    /// Base URL of the console, for links.
    pub console_url: &'a str,
}

impl Message<'_> {
    /// The console page of the alert.
    pub fn alert_link(&self) -> Option<String> {
        self.alert
            .map(|a| format!("{}/alerts/{}", self.console_url.trim_end_matches('/'), a.id))
    }

    /// One line saying what happened, e.g. `[HIGH] SSH brute force on web-1: 5 events`.
    pub fn headline(&self) -> String {
        match (self.alert, self.summary) {
            (Some(alert), _) => {
                let level = Level::of(alert.rule.level.as_deref())
                    .as_str()
                    .to_uppercase();
                let host = alert
                    .host
                    .as_deref()
                    .map(|h| format!(" on {h}"))
                    .unwrap_or_default();
                let what = match self.notification.kind {
                    NotificationKind::Trigger => "",
                    NotificationKind::Update => "update: ",
                    NotificationKind::Acknowledge => "acknowledged: ",
                    NotificationKind::Resolve => "resolved: ",
                    NotificationKind::Summary => "",
                };
                format!(
                    "[{level}] {what}{}{host}: {} event{}",
                    alert.rule.title,
                    alert.event_count,
                    if alert.event_count == 1 { "" } else { "s" }
                )
            }
            (None, summary) => format!(
                "{} notification{} held by the rate limit",
                summary.map_or(0, |s| s.held.len()),
                if summary.is_some_and(|s| s.held.len() == 1) {
                    ""
                } else {
                    "s"
                }
            ),
        }
    }
}

/// Why a notification was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth another attempt, at the earliest after `after` when the receiver said so.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The receiver refused it for good.
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retry { reason, .. } => f.write_str(reason),
            SendError::Permanent(reason) => write!(f, "refused: {reason}"),
        }
    }
}

/// A destination ready to send: its secrets resolved, its client built.
pub enum Sink {
    Slack(slack::SlackSink),
    PagerDuty(pagerduty::PagerDutySink),
    Webhook(webhook::WebhookSink),
    Email(email::EmailSink),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Slack(_) => "Sink::Slack",
            Sink::PagerDuty(_) => "Sink::PagerDuty",
            Sink::Webhook(_) => "Sink::Webhook",
            Sink::Email(_) => "Sink::Email",
        })
    }
}

impl Sink {
    /// The sink of a checked destination; `env:` secrets are resolved here.
    pub fn new(name: &str, config: &DestinationConfig) -> Result<Self, String> {
        let at = format!("alert.destinations.{name}");
        let secret = |value: &Option<super::policy::SecretValue>, key: &str| {
            value
                .as_ref()
                .ok_or_else(|| format!("{at}: `{key}` is missing"))?
                .resolve()
                .map_err(|e| format!("{at}.{key}: {e}"))
        };
        let http = || {
            reqwest::Client::builder()
                .timeout(Duration::from_millis(config.timeout_ms))
                .connect_timeout(Duration::from_millis(config.timeout_ms.min(5_000)))
                .user_agent(concat!("yagura/", env!("CARGO_PKG_VERSION")))
                // A redirect would turn the POST into a GET (or https into http) and a
                // 200 at its end would count as delivered.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("{at}: HTTP client: {e}"))
        };
        Ok(match config.kind {
            SinkKind::Slack => {
                let url = secret(&config.url, "url")?;
                super::policy::check_url(&at, &url)?;
                Sink::Slack(slack::SlackSink::new(http()?, url))
            }
            SinkKind::Pagerduty => {
                let url = match &config.url {
                    Some(_) => secret(&config.url, "url")?,
                    None => pagerduty::EVENTS_API.to_string(),
                };
                super::policy::check_url(&at, &url)?;
                let key = secret(&config.routing_key, "routing_key")?;
                Sink::PagerDuty(pagerduty::PagerDutySink::new(http()?, url, key))
            }
            SinkKind::Webhook => {
                let url = secret(&config.url, "url")?;
                super::policy::check_url(&at, &url)?;
                let key = secret(&config.secret, "secret")?;
                Sink::Webhook(webhook::WebhookSink::new(http()?, url, key))
            }
            SinkKind::Email => Sink::Email(email::EmailSink::new(name, config)?),
        })
    }

    /// Whether this receiver gets notifications of `kind` at all.
    pub fn wants(&self, kind: NotificationKind, updates: bool) -> bool {
        match (self, kind) {
            // PagerDuty's incident is the page; counts would be noise (and each trigger
            // with the same dedup_key adds to the incident's log).
            (Sink::PagerDuty(_), NotificationKind::Update) => false,
            (_, NotificationKind::Update) => updates,
            _ => true,
        }
    }

    pub async fn send(&self, message: &Message<'_>) -> Result<(), SendError> {
        match self {
            Sink::Slack(sink) => sink.send(message).await,
            Sink::PagerDuty(sink) => sink.send(message).await,
            Sink::Webhook(sink) => sink.send(message).await,
            Sink::Email(sink) => sink.send(message).await,
        }
    }
}

/// Sends a prepared request and sorts the answer.
pub async fn send_http(request: reqwest::RequestBuilder) -> Result<(), SendError> {
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            return Err(SendError::Retry {
                // Without the URL: a Slack webhook's URL is its secret.
                reason: format!("not delivered: {}", describe(&error.without_url())),
                after: None,
            });
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let after = retry_after(response.headers());
    // The start of the body says why; the rest is not read (a receiver's error page can
    // be large).
    let mut head: Vec<u8> = Vec::new();
    while head.len() < 1024 {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let body: String = String::from_utf8_lossy(&head)
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(200)
        .collect();
    let reason = format!("HTTP {status}: {}", body.trim());
    if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Err(SendError::Retry { reason, after })
    } else {
        Err(SendError::Permanent(reason))
    }
}

/// The error with its causes (reqwest's own message is often just "error sending
/// request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` as seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Fields worth showing of an alert: its group, host and count, in a fixed order.
pub fn key_fields(alert: &Alert) -> Vec<(String, String)> {
    let mut fields = vec![
        (
            "level".to_string(),
            Level::of(alert.rule.level.as_deref()).as_str().to_string(),
        ),
        ("status".to_string(), alert.status.as_str().to_string()),
        ("events".to_string(), alert.event_count.to_string()),
    ];
    if let Some(host) = &alert.host {
        fields.push(("host.name".to_string(), host.clone()));
    }
    for (field, value) in &alert.group {
        if field != "host.name" {
            fields.push((field.clone(), value.clone()));
        }
    }
    fields.push(("first seen".to_string(), alert.first_seen.clone()));
    fields.push(("last seen".to_string(), alert.last_seen.clone()));
    fields
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alert::model::{AlertRule, AlertStatus};

    pub fn alert() -> Alert {
        Alert {
            id: "a1b2c3d4e5f60718".into(),
            rule: AlertRule {
                id: Some("9d1f3c2a-7b55-4e0e-9d7e-000000000002".into()),
                title: "SSH brute force".into(),
                level: Some("high".into()),
                tags: vec!["attack.t1110".into()],
                runbook: Some("runbooks/9d1f3c2a-7b55-4e0e-9d7e-000000000002.md".into()),
            },
            policy: "brute".into(),
            group_key: "k".into(),
            group: vec![("source.ip".into(), "203.0.113.9".into())],
            status: AlertStatus::Open,
            first_seen: "2026-11-25T10:00:00.000Z".into(),
            last_seen: "2026-11-25T10:00:09.000Z".into(),
            event_count: 5,
            host: Some("web-1".into()),
            agent_id: Some("0b4c1c7e-0000-4000-8000-000000000001".into()),
            assignee: None,
            destinations: vec!["pager".into()],
            created_at: "2026-11-25T10:00:10.000Z".into(),
            updated_at: "2026-11-25T10:00:10.000Z".into(),
            resolved_at: None,
        }
    }

    pub fn notification(kind: NotificationKind) -> Notification {
        Notification {
            id: 7,
            alert_id: Some("a1b2c3d4e5f60718".into()),
            destination: "pager".into(),
            kind,
            status: "pending".into(),
            attempts: 0,
            next_attempt_at: "2026-11-25T10:00:10.000Z".into(),
            last_error: None,
            detail: None,
            created_at: "2026-11-25T10:00:10.000Z".into(),
            sent_at: None,
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates_and_is_capped() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "3".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "86400".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        headers.insert(reqwest::header::RETRY_AFTER, soon.parse().expect("header"));
        let wait = retry_after(&headers).expect("date");
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "soon".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[tokio::test]
    async fn a_failed_send_never_names_the_url() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        let url = format!("http://127.0.0.1:{port}/services/T000/B000/S3CRETT0KEN");
        let request = reqwest::Client::new().post(&url).body("{}");
        match send_http(request).await {
            Err(SendError::Retry { reason, .. }) => {
                assert!(!reason.contains("S3CRETT0KEN"), "{reason}");
                assert!(reason.starts_with("not delivered"), "{reason}");
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn headlines_say_level_rule_host_and_count() {
        let alert = alert();
        let n = notification(NotificationKind::Trigger);
        let message = Message {
            notification: &n,
            alert: Some(&alert),
            summary: None,
            console_url: "https://yagura.example:8443/",
        };
        assert_eq!(
            message.headline(),
            "[HIGH] SSH brute force on web-1: 5 events"
        );
        assert_eq!(
            message.alert_link().as_deref(),
            Some("https://yagura.example:8443/alerts/a1b2c3d4e5f60718")
        );
    }
}
