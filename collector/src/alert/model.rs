//! What an alert is, as stored and as sent: the alert with its rule, group and counts, its
//! history, and the notifications of the outbox.

use serde::Serialize;

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Matching and paged; later matches of its group join it.
    Open,
    /// A responder took it; matches still join it, updates still go out.
    Acknowledged,
    /// Ended: by a responder, or by the quiet period of its policy.
    Resolved,
    /// Muted by a responder: matches join it and are counted, nothing is sent.
    Suppressed,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
            AlertStatus::Suppressed => "suppressed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(AlertStatus::Open),
            "acknowledged" => Some(AlertStatus::Acknowledged),
            "resolved" => Some(AlertStatus::Resolved),
            "suppressed" => Some(AlertStatus::Suppressed),
            _ => None,
        }
    }

    /// Still taking matches (not resolved).
    pub fn is_active(self) -> bool {
        self != AlertStatus::Resolved
    }
}

/// Sigma levels in order; an unknown or missing level counts as `low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "informational" | "info" => Some(Level::Informational),
            "low" => Some(Level::Low),
            "medium" => Some(Level::Medium),
            "high" => Some(Level::High),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }

    pub fn of(level: Option<&str>) -> Self {
        level.and_then(Level::parse).unwrap_or(Level::Low)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: String,
    pub rule: AlertRule,
    /// The policy that grouped it.
    pub policy: String,
    /// Hash of the rule and the values of the policy's `by` fields.
    pub group_key: String,
    /// The `by` fields and their values (and a correlation's group).
    pub group: Vec<(String, String)>,
    pub status: AlertStatus,
    /// Event times of the first and last match.
    pub first_seen: String,
    pub last_seen: String,
    pub event_count: u64,
    pub host: Option<String>,
    pub agent_id: Option<String>,
    pub assignee: Option<String>,
    /// The destinations its notifications go to.
    pub destinations: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub resolved_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRule {
    pub id: Option<String>,
    pub title: String,
    pub level: Option<String>,
    pub tags: Vec<String>,
    /// The rule's runbook (`runbooks/<rule id>.md` beside its rules), when there is one.
    pub runbook: Option<String>,
}

/// One change to an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub at: String,
    /// The API token's name, or `yagura` for the collector itself.
    pub actor: String,
    /// `created`, `acknowledged`, `resolved`, `suppressed`, `reopened`, `assigned`, `note`.
    pub action: String,
    pub detail: Option<String>,
}

/// A match taken into an alert; the event links to its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertSample {
    pub detection_id: String,
    pub event_id: Option<String>,
    pub event_time: Option<String>,
    pub archive_offset: u64,
}

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    /// A new alert: the page.
    Trigger,
    /// More matches joined the alert (its count).
    Update,
    /// A responder took the alert.
    Acknowledge,
    /// The alert ended.
    Resolve,
    /// Notifications held back by the destination's rate limit, in one message.
    Summary,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Trigger => "trigger",
            NotificationKind::Update => "update",
            NotificationKind::Acknowledge => "acknowledge",
            NotificationKind::Resolve => "resolve",
            NotificationKind::Summary => "summary",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "trigger" => Some(NotificationKind::Trigger),
            "update" => Some(NotificationKind::Update),
            "acknowledge" => Some(NotificationKind::Acknowledge),
            "resolve" => Some(NotificationKind::Resolve),
            "summary" => Some(NotificationKind::Summary),
            _ => None,
        }
    }
}

/// A notification of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub id: i64,
    pub alert_id: Option<String>,
    pub destination: String,
    pub kind: NotificationKind,
    /// `pending`, `sent`, `failed`, `summarized` (in a rate-limit summary) or `skipped`
    /// (made pointless by a later change, e.g. an update after the resolve).
    pub status: String,
    pub attempts: u64,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub detail: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

impl Notification {
    /// The id receivers can deduplicate on (`X-Yagura-Delivery`): the same on every
    /// retry of this notification.
    pub fn delivery_id(&self) -> String {
        match &self.alert_id {
            Some(alert) => format!("{alert}-{}", self.id),
            None => format!("summary-{}", self.id),
        }
    }
}

/// The alerts a rate-limit summary stands for (stored as the summary's `detail`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, Serialize)]
pub struct Summary {
    pub held: Vec<HeldNotification>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
pub struct HeldNotification {
    pub alert_id: String,
    pub kind: String,
    pub rule_title: String,
    pub level: Option<String>,
    pub event_count: u64,
}
