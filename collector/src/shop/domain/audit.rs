//! What the shop records about every security-relevant action and every write: who
//! (user, source address, user agent), what (`event.action`), and how it ended.
//!
//! The domain names the facts; the infrastructure turns them into ECS events
//! (`event.dataset: yagura.shop.audit`) and appends them to the hash-chained trail.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::user::{Email, UserId};

/// How an action ended (`event.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// One audit record before it is chained.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// `event.action`: `login`, `lockout`, `cart_item_added`, `access_denied`, …
    pub action: &'static str,
    /// `event.category` (ECS: `authentication`, `iam`, `session`, `web`, `database`).
    pub category: &'static str,
    pub outcome: Outcome,
    pub user_id: Option<UserId>,
    /// The account named in the request (also when it does not exist: brute force
    /// against unknown names is worth seeing).
    pub user_name: Option<String>,
    pub origin: Origin,
    /// `event.reason`, for failures.
    pub reason: Option<String>,
    /// Action-specific facts, under `yagura.shop.*`.
    pub details: Map<String, Value>,
}

impl AuditEvent {
    pub fn new(action: &'static str, category: &'static str, outcome: Outcome) -> Self {
        AuditEvent {
            action,
            category,
            outcome,
            user_id: None,
            user_name: None,
            origin: Origin::default(),
            reason: None,
            details: Map::new(),
        }
    }

    pub fn user(mut self, id: UserId, email: &Email) -> Self {
        self.user_id = Some(id);
        self.user_name = Some(email.as_str().to_string());
        self
    }

    pub fn user_id(mut self, id: UserId) -> Self {
        self.user_id = Some(id);
        self
    }

    pub fn user_name(mut self, name: impl Into<String>) -> Self {
        self.user_name = Some(name.into());
        self
    }

    pub fn origin(mut self, origin: &Origin) -> Self {
        self.origin = origin.clone();
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}
