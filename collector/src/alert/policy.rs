//! `[alert]` of `collector.toml`: how matches become alerts (policies), where alerts go
//! (routes) and how each destination is reached.
//!
//! ```toml
//! [[alert.policy]]
//! name = "brute-force"
//! rules = ["SSH brute force*"]     # rule ids or titles, `*` as wildcard; none: every rule
//! tags = ["attack.t1110"]          # or any of these tags
//! by = ["source.ip"]               # matches with the same values are one alert …
//! for = "1h"                       # … while it is open and younger than this
//! resolve_after = "15m"            # resolved after this long without a match
//! update_interval = "1m"           # count updates at most this often
//!
//! [[alert.route]]
//! min_level = "high"
//! destinations = ["oncall"]
//!
//! [alert.destinations.oncall]
//! type = "pagerduty"
//! routing_key = "env:PAGERDUTY_ROUTING_KEY"
//! ```
//!
//! The first policy that names a rule applies; a rule no policy names gets the default
//! (grouped by `host.name` and `yagura.subject_agent_id`, one hour, resolved after
//! fifteen quiet minutes). A correlation's group-by values are always part of its group.
//! With no routes, every alert goes to every destination.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::model::Level;

/// A configured secret (webhook URL, routing key, signing secret, password): never in
/// logs or `Debug` output. `env:NAME` reads it from the environment at start.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }

    /// The value, with `env:NAME` resolved.
    pub fn resolve(&self) -> Result<String, String> {
        match self.0.strip_prefix("env:") {
            Some(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
            }
            None => Ok(self.0.clone()),
        }
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

/// The longest duration a policy or the retry budget may name.
const MAX_SPAN: Duration = Duration::from_secs(365 * 86_400);

/// A duration as `90`, `"90s"`, `"15m"`, `"2h"` or `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Span(Duration::from_secs(s))),
            Raw::Text(text) => parse_span(&text).map(Span).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration (e.g. 90, \"90s\", \"15m\", \"2h\", \"1d\")"
                ))
            }),
        }
    }
}

fn parse_span(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(unit).map(Duration::from_secs)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// The console's address for links in messages (default: the collector's URL).
    pub console_url: Option<String>,
    #[serde(default)]
    pub policy: Vec<PolicyConfig>,
    #[serde(default)]
    pub route: Vec<RouteConfig>,
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "default_by")]
    pub by: Vec<String>,
    #[serde(rename = "for", default = "default_for")]
    pub suppress_for: Span,
    /// `0` never resolves on its own.
    #[serde(default = "default_resolve_after")]
    pub resolve_after: Span,
    #[serde(default = "default_update_interval")]
    pub update_interval: Span,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Alerts at this level or above.
    pub min_level: Option<String>,
    /// Alerts of a rule with any of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Alerts of these rules (ids or titles, `*` as wildcard).
    #[serde(default)]
    pub rules: Vec<String>,
    pub destinations: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Slack,
    Pagerduty,
    Webhook,
    Email,
}

/// How mail reaches the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// STARTTLS required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text: only for a relay on loopback.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// Slack: the incoming webhook URL; webhook: the receiver; PagerDuty: the Events API
    /// (default `https://events.pagerduty.com/v2/enqueue`).
    pub url: Option<SecretValue>,
    /// PagerDuty: the integration's routing key.
    pub routing_key: Option<SecretValue>,
    /// Webhook: the HMAC-SHA256 signing secret.
    pub secret: Option<SecretValue>,
    /// Email: SMTP server, port (default by security), security, login, sender and
    /// recipients.
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub smtp_security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<SecretValue>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Notifications per minute; more are held and sent as one summary.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_minute: u32,
    /// Count updates (PagerDuty never gets them: its incident is the page).
    #[serde(default = "default_true")]
    pub updates: bool,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_initial_delay_ms")]
    pub initial_delay_ms: u64,
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// After this long undelivered a notification is marked failed.
    #[serde(default = "default_give_up_after")]
    pub give_up_after: Span,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_delay_ms: default_initial_delay_ms(),
            max_delay_ms: default_max_delay_ms(),
            give_up_after: default_give_up_after(),
        }
    }
}

fn default_by() -> Vec<String> {
    // The collector raises its events about agents (silent, gaps, refusals) as itself:
    // the agent they are about keeps them apart.
    vec!["host.name".into(), "yagura.subject_agent_id".into()]
}
fn default_for() -> Span {
    Span(Duration::from_secs(3600))
}
fn default_resolve_after() -> Span {
    Span(Duration::from_secs(900))
}
fn default_update_interval() -> Span {
    Span(Duration::from_secs(60))
}
fn default_rate_limit() -> u32 {
    30
}
fn default_true() -> bool {
    true
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_initial_delay_ms() -> u64 {
    1_000
}
fn default_max_delay_ms() -> u64 {
    30_000
}
fn default_give_up_after() -> Span {
    Span(Duration::from_secs(86_400))
}

/// Whether `pattern` (`*` matches any run of characters, case-insensitive) matches `text`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern = pattern.to_lowercase();
    let text = text.to_lowercase();
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(after) = rest.strip_prefix(part) else {
                return false;
            };
            rest = after;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The rule an alert policy or route is asked about.
#[derive(Debug, Clone, Copy)]
pub struct RuleFacts<'a> {
    pub id: Option<&'a str>,
    pub title: &'a str,
    pub level: Level,
    pub tags: &'a [String],
}

fn names_rule(rules: &[String], tags: &[String], rule: RuleFacts<'_>) -> bool {
    rules
        .iter()
        .any(|p| rule.id.is_some_and(|id| glob_matches(p, id)) || glob_matches(p, rule.title))
        || tags
            .iter()
            .any(|t| rule.tags.iter().any(|have| have.eq_ignore_ascii_case(t)))
}

/// The resolved policy an alert is made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub by: Vec<String>,
    pub suppress_for: Duration,
    pub resolve_after: Option<Duration>,
    pub update_interval: Duration,
}

/// The checked `[alert]` configuration.
#[derive(Debug, Clone)]
pub struct AlertPolicies {
    policies: Vec<PolicyConfig>,
    routes: Vec<RouteConfig>,
    destinations: Vec<String>,
}

impl AlertPolicies {
    /// Checks names and references: every error says which key is at fault.
    pub fn new(config: &AlertConfig) -> Result<Self, String> {
        for (i, policy) in config.policy.iter().enumerate() {
            if policy.name.trim().is_empty() {
                return Err(format!("alert.policy[{i}]: name is empty"));
            }
            for (key, span) in [
                ("for", policy.suppress_for),
                ("resolve_after", policy.resolve_after),
                ("update_interval", policy.update_interval),
            ] {
                if span.0 > MAX_SPAN {
                    return Err(format!(
                        "alert.policy[{i}] ({}): {key} is longer than 365 days",
                        policy.name
                    ));
                }
            }
            if policy.suppress_for.0.is_zero() {
                return Err(format!(
                    "alert.policy[{i}] ({}): `for` must be above 0",
                    policy.name
                ));
            }
            if policy.update_interval.0.is_zero() {
                return Err(format!(
                    "alert.policy[{i}] ({}): update_interval must be above 0",
                    policy.name
                ));
            }
        }
        for (i, route) in config.route.iter().enumerate() {
            if let Some(level) = &route.min_level
                && Level::parse(level).is_none()
            {
                return Err(format!(
                    "alert.route[{i}].min_level: `{level}` is not a Sigma level \
                     (informational, low, medium, high, critical)"
                ));
            }
            for name in &route.destinations {
                if !config.destinations.contains_key(name) {
                    return Err(format!(
                        "alert.route[{i}].destinations: no destination `{name}` in \
                         [alert.destinations]"
                    ));
                }
            }
        }
        for (name, destination) in &config.destinations {
            check_destination(name, destination)?;
        }
        if config.retry.give_up_after.0 > MAX_SPAN {
            return Err("alert.retry.give_up_after is longer than 365 days".into());
        }
        if config.retry.initial_delay_ms == 0
            || config.retry.max_delay_ms < config.retry.initial_delay_ms
        {
            return Err(
                "alert.retry: initial_delay_ms must be above 0 and at most max_delay_ms".into(),
            );
        }
        Ok(AlertPolicies {
            policies: config.policy.clone(),
            routes: config.route.clone(),
            destinations: config.destinations.keys().cloned().collect(),
        })
    }

    /// The policy for matches of `rule`.
    pub fn policy_for(&self, rule: RuleFacts<'_>) -> Policy {
        let chosen = self.policies.iter().find(|p| {
            (p.rules.is_empty() && p.tags.is_empty()) || names_rule(&p.rules, &p.tags, rule)
        });
        match chosen {
            Some(p) => Policy {
                name: p.name.clone(),
                by: p.by.clone(),
                suppress_for: p.suppress_for.0,
                resolve_after: Some(p.resolve_after.0).filter(|d| !d.is_zero()),
                update_interval: p.update_interval.0,
            },
            None => Policy {
                name: "default".into(),
                by: default_by(),
                suppress_for: default_for().0,
                resolve_after: Some(default_resolve_after().0),
                update_interval: default_update_interval().0,
            },
        }
    }

    /// The destinations an alert of `rule` goes to, in configuration order.
    pub fn destinations_for(&self, rule: RuleFacts<'_>) -> Vec<String> {
        if self.routes.is_empty() {
            return self.destinations.clone();
        }
        let mut chosen: Vec<String> = Vec::new();
        for route in &self.routes {
            let level_ok = route
                .min_level
                .as_deref()
                .and_then(Level::parse)
                .is_none_or(|min| rule.level >= min);
            let named = (route.rules.is_empty() && route.tags.is_empty())
                || names_rule(&route.rules, &route.tags, rule);
            if level_ok && named {
                for d in &route.destinations {
                    if !chosen.contains(d) {
                        chosen.push(d.clone());
                    }
                }
            }
        }
        chosen
    }
}

fn check_destination(name: &str, d: &DestinationConfig) -> Result<(), String> {
    let at = format!("alert.destinations.{name}");
    let needs = |key: &str, present: bool| {
        if present {
            Ok(())
        } else {
            Err(format!("{at}: a {:?} destination needs `{key}`", d.kind).to_lowercase())
        }
    };
    match d.kind {
        SinkKind::Slack | SinkKind::Webhook => needs("url", d.url.is_some())?,
        SinkKind::Pagerduty => needs("routing_key", d.routing_key.is_some())?,
        SinkKind::Email => {
            needs("smtp_host", d.smtp_host.is_some())?;
            needs("from", d.from.is_some())?;
            needs("to", !d.to.is_empty())?;
        }
    }
    if d.kind == SinkKind::Webhook {
        needs("secret", d.secret.is_some())?;
    }
    if let Some(url) = &d.url {
        // An `env:` URL is checked when it is resolved, at start.
        if let Ok(url) = url.resolve() {
            check_url(&at, &url)?;
        }
    }
    if d.rate_limit_per_minute == 0 {
        return Err(format!("{at}.rate_limit_per_minute must be above 0"));
    }
    Ok(())
}

/// HTTPS, or plain HTTP to a receiver on this machine only.
pub fn check_url(at: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{at}.url: not a URL ({e})"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = parsed.host_str().is_some_and(|host| {
                host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "{at}.url: plain http is only allowed to a loopback receiver; use https"
                ))
            }
        }
        other => Err(format!("{at}.url: scheme `{other}` is not http(s)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        alert: AlertConfig,
    }

    fn parse(text: &str) -> AlertConfig {
        toml::from_str::<File>(text).expect("alert config").alert
    }

    fn rule<'a>(title: &'a str, level: Level, tags: &'a [String]) -> RuleFacts<'a> {
        RuleFacts {
            id: Some("9d1f3c2a-7b55-4e0e-9d7e-000000000002"),
            title,
            level,
            tags,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_matches("SSH brute*", "ssh brute force"));
        assert!(glob_matches("*brute*", "SSH brute force"));
        assert!(glob_matches("*force", "SSH brute force"));
        assert!(glob_matches("exact", "EXACT"));
        assert!(!glob_matches("ssh*x", "ssh brute force"));
        assert!(!glob_matches("brute*", "ssh brute"));
    }

    #[test]
    fn spans() {
        assert_eq!(parse_span("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_span("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_span("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_span("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_span("1w"), None);
        assert_eq!(parse_span("0"), Some(Duration::ZERO));
        assert_eq!(parse_span("m"), None);
    }

    #[test]
    fn the_first_policy_naming_a_rule_applies_else_the_default() {
        let config = parse(
            r#"
            [[alert.policy]]
            name = "brute"
            rules = ["ssh brute*"]
            by = ["source.ip"]
            for = "10m"
            resolve_after = 0
            [[alert.policy]]
            name = "mitre"
            tags = ["attack.t1110"]
            "#,
        );
        let policies = AlertPolicies::new(&config).expect("valid");
        let tags = vec!["attack.t1110".to_string()];
        let p = policies.policy_for(rule("SSH brute force", Level::High, &[]));
        assert_eq!(p.name, "brute");
        assert_eq!(p.by, vec!["source.ip".to_string()]);
        assert_eq!(p.suppress_for, Duration::from_secs(600));
        assert_eq!(p.resolve_after, None);
        assert_eq!(
            policies.policy_for(rule("Other", Level::Low, &tags)).name,
            "mitre"
        );
        let d = policies.policy_for(rule("Other", Level::Low, &[]));
        assert_eq!(d.name, "default");
        assert_eq!(
            d.by,
            vec![
                "host.name".to_string(),
                "yagura.subject_agent_id".to_string()
            ]
        );
    }

    #[test]
    fn routes_by_level_and_tags_without_duplicates() {
        let config = parse(
            r#"
            [[alert.route]]
            min_level = "high"
            destinations = ["pager", "chat"]
            [[alert.route]]
            tags = ["attack.t1110"]
            destinations = ["chat", "hook"]
            [alert.destinations.pager]
            type = "pagerduty"
            routing_key = "k"
            [alert.destinations.chat]
            type = "slack"
            url = "https://hooks.slack.com/services/T/B/X"
            [alert.destinations.hook]
            type = "webhook"
            url = "http://127.0.0.1:9/hook"
            secret = "s"
            "#,
        );
        let policies = AlertPolicies::new(&config).expect("valid");
        let tags = vec!["attack.t1110".to_string()];
        assert_eq!(
            policies.destinations_for(rule("x", Level::Critical, &tags)),
            vec!["pager", "chat", "hook"]
        );
        assert_eq!(
            policies.destinations_for(rule("x", Level::Medium, &tags)),
            vec!["chat", "hook"]
        );
        assert!(
            policies
                .destinations_for(rule("x", Level::Medium, &[]))
                .is_empty()
        );
    }

    #[test]
    fn bad_configurations_name_the_key_at_fault() {
        let unknown = parse("[[alert.route]]\ndestinations = [\"nowhere\"]\n");
        let error = AlertPolicies::new(&unknown).expect_err("unknown destination");
        assert!(
            error.contains("alert.route[0].destinations") && error.contains("nowhere"),
            "{error}"
        );

        let plain = parse(
            "[alert.destinations.x]\ntype = \"slack\"\nurl = \"http://hooks.example.com/x\"\n",
        );
        let error = AlertPolicies::new(&plain).expect_err("plain http off loopback");
        assert!(error.contains("alert.destinations.x.url"), "{error}");

        let unsigned =
            parse("[alert.destinations.x]\ntype = \"webhook\"\nurl = \"https://a.example/\"\n");
        let error = AlertPolicies::new(&unsigned).expect_err("webhook without secret");
        assert!(error.contains("secret"), "{error}");

        let level = parse("[[alert.route]]\nmin_level = \"severe\"\ndestinations = []\n");
        assert!(AlertPolicies::new(&level).is_err());

        assert!(
            toml::from_str::<AlertConfig>("[[policy]]\nname = \"x\"\nfor = \"soon\"\n").is_err()
        );
        let forever = parse("[[alert.policy]]\nname = \"x\"\nfor = \"100000000d\"\n");
        let error = AlertPolicies::new(&forever).expect_err("a span past a year");
        assert!(error.contains("for is longer than 365 days"), "{error}");
        assert!(
            toml::from_str::<AlertConfig>("[[policy]]\nname = \"x\"\nfour = \"1h\"\n").is_err()
        );
    }

    #[test]
    fn secrets_never_print() {
        let config =
            parse("[alert.destinations.x]\ntype = \"pagerduty\"\nrouting_key = \"R0UT1NGKEY\"\n");
        assert!(!format!("{config:?}").contains("R0UT1NGKEY"));
    }
}
