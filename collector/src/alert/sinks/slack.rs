//! Slack incoming webhooks: a Block Kit message (header, the key fields, the runbook and
//! a button to the alert in the console) with a plain-text fallback. Incoming webhooks
//! cannot edit a posted message, so count updates and the resolve are follow-up
//! messages naming the same alert.

use serde_json::{Value, json};

use super::{Message, SendError, key_fields, send_http};

pub struct SlackSink {
    http: reqwest::Client,
    url: String,
}

impl SlackSink {
    pub fn new(http: reqwest::Client, url: String) -> Self {
        SlackSink { http, url }
    }

    pub async fn send(&self, message: &Message<'_>) -> Result<(), SendError> {
        send_http(self.http.post(&self.url).json(&body(message))).await
    }
}

/// Slack caps a section field's text at 2,000 characters and a header at 150.
fn cap(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut capped: String = text.chars().take(max - 1).collect();
    capped.push('…');
    capped
}

/// Block Kit text is mrkdwn: `&`, `<` and `>` must be escaped in what came from events.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The message body (`text` is the notification fallback; `blocks` what Slack shows).
pub fn body(message: &Message<'_>) -> Value {
    let headline = message.headline();
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": cap(&headline, 150), "emoji": false },
    })];
    if let Some(alert) = message.alert {
        // Section fields: at most ten per section.
        let fields: Vec<Value> = key_fields(alert)
            .iter()
            .take(10)
            .map(|(name, value)| {
                json!({ "type": "mrkdwn", "text": cap(&format!("*{}*\n{}", escape(name), escape(value)), 2000) })
            })
            .collect();
        blocks.push(json!({ "type": "section", "fields": fields }));
        let mut context = vec![json!({
            "type": "mrkdwn",
            "text": format!("alert `{}` · rule `{}`", alert.id, escape(alert.rule.id.as_deref().unwrap_or(&alert.rule.title))),
        })];
        if let Some(runbook) = &alert.rule.runbook {
            context
                .push(json!({ "type": "mrkdwn", "text": format!("runbook: {}", escape(runbook)) }));
        }
        blocks.push(json!({ "type": "context", "elements": context }));
        if let Some(link) = message.alert_link() {
            blocks.push(json!({
                "type": "actions",
                "elements": [{
                    "type": "button",
                    "text": { "type": "plain_text", "text": "Open in Yagura" },
                    "url": link,
                }],
            }));
        }
    } else if let Some(summary) = message.summary {
        let lines: Vec<String> = summary
            .held
            .iter()
            .take(20)
            .map(|h| {
                format!(
                    "• {} {} ({}, {} events)",
                    h.kind,
                    escape(&h.rule_title),
                    h.level.as_deref().unwrap_or("low"),
                    h.event_count
                )
            })
            .collect();
        let more = summary.held.len().saturating_sub(20);
        let mut text = lines.join("\n");
        if more > 0 {
            text.push_str(&format!("\n… and {more} more"));
        }
        blocks.push(
            json!({ "type": "section", "text": { "type": "mrkdwn", "text": cap(&text, 3000) } }),
        );
    }
    json!({ "text": headline, "blocks": blocks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::model::NotificationKind;
    use crate::alert::sinks::tests::{alert, notification};

    #[test]
    fn a_trigger_is_block_kit_with_fields_and_a_link() {
        let mut alert = alert();
        alert.group.push(("user.name".into(), "<script>&".into()));
        let n = notification(NotificationKind::Trigger);
        let message = Message {
            notification: &n,
            alert: Some(&alert),
            summary: None,
            console_url: "https://console.example",
        };
        let body = body(&message);
        assert_eq!(body["text"], "[HIGH] SSH brute force on web-1: 5 events");
        let blocks = body["blocks"].as_array().expect("blocks");
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[1]["type"], "section");
        let fields: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| f["text"].as_str().expect("text"))
            .collect();
        assert!(fields.contains(&"*level*\nhigh"), "{fields:?}");
        assert!(fields.contains(&"*source.ip*\n203.0.113.9"), "{fields:?}");
        assert!(
            fields.contains(&"*user.name*\n&lt;script&gt;&amp;"),
            "{fields:?}"
        );
        assert_eq!(blocks[2]["type"], "context");
        assert_eq!(blocks[3]["type"], "actions");
        assert_eq!(
            blocks[3]["elements"][0]["url"],
            "https://console.example/alerts/a1b2c3d4e5f60718"
        );
    }

    #[test]
    fn a_long_header_is_capped() {
        let mut alert = alert();
        alert.rule.title = "x".repeat(400);
        let n = notification(NotificationKind::Update);
        let message = Message {
            notification: &n,
            alert: Some(&alert),
            summary: None,
            console_url: "https://console.example",
        };
        let header = body(&message)["blocks"][0]["text"]["text"]
            .as_str()
            .expect("header")
            .to_string();
        assert_eq!(header.chars().count(), 150);
    }
}
