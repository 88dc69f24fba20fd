//! `yagura alerts list|show|ack|resolve|assign|note|suppress|reopen|outbox`: the on-call
//! responder's view of alerts, through a running collector's API (so every action is
//! recorded with the API token's name).

use clap::Subcommand;
use serde_json::{Value, json};

use super::remote::RemoteArgs;

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts, most recently changed first.
    List {
        /// open, acknowledged, resolved or suppressed.
        #[arg(long)]
        status: Option<String>,
        /// A rule id or title.
        #[arg(long)]
        rule: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// One alert with its history, sample events and notifications.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Acknowledge: you are on it (PagerDuty and chat hear so).
    Ack {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Resolve: the incident is over (PagerDuty's incident resolves with it).
    Resolve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Assign to someone (`--unassign` to clear).
    Assign {
        id: String,
        #[arg(required_unless_present = "unassign")]
        assignee: Option<String>,
        #[arg(long, conflicts_with = "assignee")]
        unassign: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Add a note to the alert's history.
    Note {
        id: String,
        text: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Mute: matches are still counted, nothing more is sent until it resolves.
    Suppress {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Back to open after an acknowledge or suppress.
    Reopen {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Notifications of the outbox (e.g. `--status failed`).
    Outbox {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Query-string encoding of one value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An alert id goes into a URL path: only the hex ids alerts have.
fn checked_id(id: &str) -> anyhow::Result<&str> {
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        anyhow::bail!("`{id}` is not an alert id")
    }
}

/// A value for the terminal: control characters (escape sequences from event fields,
/// notes or receivers' errors) are dropped.
fn text(value: &Value) -> String {
    let raw = match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    raw.chars().filter(|c| !c.is_control()).collect()
}

/// `value` as terminal text between `before` and `after`, or nothing when it is absent.
fn optional(value: &Value, before: &str, after: &str) -> String {
    if value.is_null() {
        String::new()
    } else {
        format!("{before}{}{after}", text(value))
    }
}

/// Destination, kind, status, attempts and the last error of a notification.
fn notification_line(n: &Value) -> String {
    let error = optional(&n["last_error"], " (", ")");
    format!(
        "{:<10} {:<12} {:<10} attempts {}{error}",
        text(&n["destination"]),
        text(&n["kind"]),
        text(&n["status"]),
        text(&n["attempts"])
    )
}

fn alert_line(alert: &Value) -> String {
    format!(
        "{:<32}  {:<12}  {:<8}  {:>7}  {:<16}  {}",
        text(&alert["id"]),
        text(&alert["status"]),
        text(&alert["rule"]["level"]),
        text(&alert["event_count"]),
        text(&alert["host"]),
        text(&alert["rule"]["title"]),
    )
}

pub async fn run(command: AlertsCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        AlertsCommand::List {
            status,
            rule,
            limit,
            json,
            remote,
        } => {
            let mut path = format!("/api/v1/alerts?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={}", encode(&status)));
            }
            if let Some(rule) = rule {
                path.push_str(&format!("&rule={}", encode(&rule)));
            }
            let body = remote.call(Method::GET, &path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body["alerts"])?);
                return Ok(());
            }
            println!(
                "{:<32}  {:<12}  {:<8}  {:>7}  {:<16}  RULE",
                "ID", "STATUS", "LEVEL", "EVENTS", "HOST"
            );
            for alert in body["alerts"].as_array().into_iter().flatten() {
                println!("{}", alert_line(alert));
            }
            Ok(())
        }
        AlertsCommand::Show { id, json, remote } => {
            let body = remote
                .call(Method::GET, &format!("/api/v1/alerts/{}", checked_id(&id)?))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(());
            }
            let alert = &body["alert"];
            println!("{}", text(&alert["rule"]["title"]));
            for (label, value) in [
                ("id", &alert["id"]),
                ("status", &alert["status"]),
                ("level", &alert["rule"]["level"]),
                ("rule", &alert["rule"]["id"]),
                ("runbook", &alert["rule"]["runbook"]),
                ("host", &alert["host"]),
                ("agent", &alert["agent_id"]),
                ("events", &alert["event_count"]),
                ("first seen", &alert["first_seen"]),
                ("last seen", &alert["last_seen"]),
                ("assignee", &alert["assignee"]),
            ] {
                println!("  {label:<11} {}", text(value));
            }
            for pair in alert["group"].as_array().into_iter().flatten() {
                println!("  {:<11} {}", text(&pair[0]), text(&pair[1]));
            }
            if let (Some(agent), Some(at)) =
                (alert["agent_id"].as_str(), alert["first_seen"].as_str())
                && body["inventory"].is_string()
            {
                println!("  {:<11} yagura inventory {agent} --at {at}", "inventory");
            }
            println!("history:");
            for h in body["history"].as_array().into_iter().flatten() {
                let detail = optional(&h["detail"], " — ", "");
                println!(
                    "  {}  {:<12} by {}{detail}",
                    text(&h["at"]),
                    text(&h["action"]),
                    text(&h["actor"])
                );
            }
            println!("sample events:");
            for s in body["samples"].as_array().into_iter().flatten() {
                println!("  {}  {}", text(&s["event_time"]), text(&s["event_id"]));
            }
            println!("notifications:");
            for n in body["notifications"].as_array().into_iter().flatten() {
                println!("  {}", notification_line(n));
            }
            Ok(())
        }
        AlertsCommand::Ack { id, remote } => act(&remote, &id, "ack", None).await,
        AlertsCommand::Resolve { id, reason, remote } => {
            act(&remote, &id, "resolve", Some(json!({ "reason": reason }))).await
        }
        AlertsCommand::Assign {
            id,
            assignee,
            unassign: _,
            remote,
        } => {
            act(
                &remote,
                &id,
                "assign",
                Some(json!({ "assignee": assignee })),
            )
            .await
        }
        AlertsCommand::Note { id, text, remote } => {
            act(&remote, &id, "notes", Some(json!({ "text": text }))).await
        }
        AlertsCommand::Suppress { id, remote } => act(&remote, &id, "suppress", None).await,
        AlertsCommand::Reopen { id, remote } => act(&remote, &id, "reopen", None).await,
        AlertsCommand::Outbox {
            status,
            limit,
            json,
            remote,
        } => {
            let mut path = format!("/api/v1/alerts/outbox?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={}", encode(&status)));
            }
            let body = remote.call(Method::GET, &path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(());
            }
            let counts = body["counts"]
                .as_object()
                .map(|c| {
                    c.iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            println!("outbox: {counts}");
            for n in body["notifications"].as_array().into_iter().flatten() {
                println!(
                    "{:>6}  {:<32}  {}",
                    text(&n["id"]),
                    text(&n["alert_id"]),
                    notification_line(n)
                );
            }
            Ok(())
        }
    }
}

async fn act(remote: &RemoteArgs, id: &str, verb: &str, body: Option<Value>) -> anyhow::Result<()> {
    let path = format!("/api/v1/alerts/{}/{verb}", checked_id(id)?);
    let answer = remote
        .call_with(
            reqwest::Method::POST,
            &path,
            Some(&body.unwrap_or_else(|| json!({}))),
        )
        .await?;
    let alert = &answer["alert"];
    if answer["changed"] == Value::Bool(true) {
        println!(
            "{}: {} (assignee {})",
            text(&alert["id"]),
            text(&alert["status"]),
            text(&alert["assignee"])
        );
    } else {
        println!(
            "{}: unchanged, {}",
            text(&alert["id"]),
            text(&alert["status"])
        );
    }
    Ok(())
}
