//! PagerDuty Events API v2: `trigger` with `dedup_key` = the alert id (a retried or
//! repeated trigger joins the same incident), `acknowledge` and `resolve` with the same
//! key. Severity from the Sigma level: critical → critical, high → error, medium →
//! warning, low and informational → info.

use serde_json::{Value, json};

use super::{Message, SendError, key_fields, send_http};
use crate::alert::model::{Level, NotificationKind};

/// PagerDuty's Events API v2 endpoint.
pub const EVENTS_API: &str = "https://events.pagerduty.com/v2/enqueue";

pub struct PagerDutySink {
    http: reqwest::Client,
    url: String,
    routing_key: String,
}

impl PagerDutySink {
    pub fn new(http: reqwest::Client, url: String, routing_key: String) -> Self {
        PagerDutySink {
            http,
            url,
            routing_key,
        }
    }

    pub async fn send(&self, message: &Message<'_>) -> Result<(), SendError> {
        send_http(
            self.http
                .post(&self.url)
                .json(&body(message, &self.routing_key)),
        )
        .await
    }
}

pub fn severity(level: Option<&str>) -> &'static str {
    match Level::of(level) {
        Level::Critical => "critical",
        Level::High => "error",
        Level::Medium => "warning",
        Level::Low | Level::Informational => "info",
    }
}

/// The event for PagerDuty.
pub fn body(message: &Message<'_>, routing_key: &str) -> Value {
    let n = message.notification;
    let (action, dedup_key) = match (n.kind, message.alert) {
        (NotificationKind::Acknowledge, Some(a)) => ("acknowledge", a.id.clone()),
        (NotificationKind::Resolve, Some(a)) => ("resolve", a.id.clone()),
        (_, Some(a)) => ("trigger", a.id.clone()),
        (_, None) => ("trigger", n.delivery_id()),
    };
    if action != "trigger" {
        return json!({
            "routing_key": routing_key,
            "event_action": action,
            "dedup_key": dedup_key,
        });
    }
    // PagerDuty refuses a summary longer than 1,024 characters.
    let summary: String = message.headline().chars().take(1024).collect();
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "Yagura",
        "payload": {
            "summary": summary,
            "source": "yagura",
            "severity": "warning",
        },
    });
    if let Some(alert) = message.alert {
        let details: serde_json::Map<String, Value> = key_fields(alert)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .chain([
                ("alert_id".to_string(), json!(alert.id)),
                ("rule_id".to_string(), json!(alert.rule.id)),
                ("tags".to_string(), json!(alert.rule.tags)),
                ("runbook".to_string(), json!(alert.rule.runbook)),
            ])
            .collect();
        event["payload"] = json!({
            "summary": summary,
            // PagerDuty refuses an empty source.
            "source": alert.host.as_deref().filter(|h| !h.trim().is_empty()).unwrap_or("yagura"),
            "severity": severity(alert.rule.level.as_deref()),
            "timestamp": alert.first_seen,
            "component": alert.host,
            "class": alert.rule.title,
            "group": alert.policy,
            "custom_details": details,
        });
        if let Some(link) = message.alert_link() {
            event["client_url"] = json!(link);
            event["links"] = json!([{ "href": link, "text": "Alert in Yagura" }]);
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::sinks::tests::{alert, notification};

    #[test]
    fn trigger_and_resolve_share_the_dedup_key() {
        let alert = alert();
        let trigger = notification(NotificationKind::Trigger);
        let message = Message {
            notification: &trigger,
            alert: Some(&alert),
            summary: None,
            console_url: "https://console.example",
        };
        let body = body(&message, "R0UT1NG");
        assert_eq!(body["routing_key"], "R0UT1NG");
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["dedup_key"], "a1b2c3d4e5f60718");
        assert_eq!(body["payload"]["severity"], "error");
        assert_eq!(body["payload"]["source"], "web-1");
        assert_eq!(
            body["payload"]["summary"],
            "[HIGH] SSH brute force on web-1: 5 events"
        );
        assert_eq!(
            body["payload"]["custom_details"]["source.ip"],
            "203.0.113.9"
        );
        assert_eq!(
            body["links"][0]["href"],
            "https://console.example/alerts/a1b2c3d4e5f60718"
        );

        let resolve = notification(NotificationKind::Resolve);
        let message = Message {
            notification: &resolve,
            ..message
        };
        let body = super::body(&message, "R0UT1NG");
        assert_eq!(
            body,
            json!({ "routing_key": "R0UT1NG", "event_action": "resolve", "dedup_key": "a1b2c3d4e5f60718" })
        );
    }

    #[test]
    fn levels_map_to_severities() {
        assert_eq!(severity(Some("critical")), "critical");
        assert_eq!(severity(Some("high")), "error");
        assert_eq!(severity(Some("medium")), "warning");
        assert_eq!(severity(Some("low")), "info");
        assert_eq!(severity(Some("informational")), "info");
        assert_eq!(severity(None), "info");
    }
}
