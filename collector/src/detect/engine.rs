//! The detector: a loaded rule set evaluated on Yagura events, one at a time, in event
//! time, by `rsigma-eval`'s correlation engine (which runs the single-event rules too).
//!
//! Match ids: a single-event match is (rule, event id). A correlation keeps firing on
//! every event while its condition holds (an attack of a hundred attempts fires on the
//! tenth and every one after); those firings are one *episode* — one match — as long as
//! each comes within the correlation's timespan of the previous one, and the id is
//! (rule, group, event time the episode began). The episodes are part of the state a
//! restart imports, so a replay gives the same ids.
//!
//! Yagura owns what surrounds the library: the field mapping (applied when rules load),
//! the log source of each event (see [`logsource_of`]: a rule only sees the events of its
//! `logsource`, as Sigma means it — a `service: sshd` keyword rule never reads a web
//! server's line), event time (each event's `@timestamp` drives the correlation windows, so a replay of
//! the archive gives the same answers as the live stream did), and the identity of a
//! match: a deterministic id from the rule, the event (or the correlation's group and
//! the start of its window), so a match raised twice — after a crash and replay — is
//! recognisably the same match.

use rsigma_eval::{
    CorrelationConfig, CorrelationEngine, CorrelationEventMode, EvaluationResult, GroupByField,
    JsonEvent, Pipeline, ResultBody, TimestampFallback,
};
use rsigma_parser::LogSource;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use yagura_shared::Event;

use super::rules::RuleSet;

/// Events kept per correlation match as references (time and id).
const REFS_PER_MATCH: usize = 32;

/// A rule that matched.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Detection {
    /// Deterministic: the same match on a replay has the same id.
    pub id: String,
    pub rule: RuleRef,
    /// `detection` (one event) or `correlation` (a window of matches).
    pub kind: &'static str,
    /// Event time of the match (the event's, or the one that completed the window).
    #[serde(rename = "@timestamp")]
    pub timestamp: Option<String>,
    /// The matching event's `event.id` (the last event, for a correlation).
    pub event_id: Option<String>,
    /// Correlations: the group-by fields and values, the aggregated value and window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation: Option<CorrelationMatch>,
    /// Detections: which selections and fields matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matched_fields: Vec<(String, Value)>,
    /// The matching event (the last one, for a correlation): alerting groups by its
    /// fields and shows its host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleRef {
    pub id: Option<String>,
    pub title: String,
    pub level: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CorrelationMatch {
    #[serde(rename = "type")]
    pub kind: String,
    pub group: Vec<(String, String)>,
    pub value: f64,
    pub timespan_seconds: u64,
    /// Event time (seconds) at which this episode of firings began (see the module
    /// documentation); with the rule and group, the match's identity.
    pub window_start: Option<i64>,
}

/// Open correlation episodes, by rule and group: (began, last firing, timespan), seconds.
type Episodes = std::collections::BTreeMap<String, (i64, i64, i64)>;
/// Episodes kept before those whose timespan has passed are forgotten.
const EPISODES_KEPT: usize = 10_000;

/// Everything a restart imports: rsigma's windows and Yagura's episodes.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct DetectorState {
    rsigma: rsigma_eval::CorrelationSnapshot,
    episodes: Episodes,
}

/// A rule set compiled for evaluation, with its correlation state.
pub struct Detector {
    engine: CorrelationEngine,
    episodes: Episodes,
    /// Ids of rules that only feed correlations (`generate: false`, Sigma's default):
    /// their single-event matches are not reported.
    correlation_only: std::collections::HashSet<String>,
    detection_rules: usize,
    correlation_rules: usize,
    /// How each correlation reads its group from an event: what a cluster routes by.
    groupings: Vec<Grouping>,
    /// Rule id to rule name (correlations refer to rules by either).
    rule_names: std::collections::HashMap<String, String>,
    /// The latest event time correlated (seconds): what [`Self::evict_expired`] measures
    /// windows against.
    latest: Option<i64>,
    /// Titles of correlations fed by other correlations (not routed in a cluster).
    chained: Vec<String>,
}

/// A correlation as the cluster's router sees it: its identity, the rules that feed it
/// and its group-by fields (after the field mapping).
struct Grouping {
    key: String,
    refs: std::collections::HashSet<String>,
    group_by: Vec<GroupByField>,
}

/// One event through the stateless half of the detector (see [`Detector::route`]).
#[derive(Debug, Default)]
pub struct Routed {
    /// Its single-event matches, to report.
    pub detections: Vec<Detection>,
    /// The correlation groups it feeds, as [`group_key`]s: where it must be correlated.
    pub groups: Vec<String>,
}

/// The identity of a correlation group: the rule (id, else title) and the group's
/// field/value pairs. A correlation match's episode is kept under it, and a cluster sends
/// every event of one group to the one detector that owns this key.
pub fn group_key(rule_key: &str, pairs: &[(String, String)]) -> String {
    let mut key = String::with_capacity(rule_key.len() + 32);
    key.push_str(rule_key);
    key.push('\u{1d}');
    key.push_str(&group_text(pairs));
    key
}

fn group_text(pairs: &[(String, String)]) -> String {
    let mut group = String::new();
    for (field, value) in pairs {
        group.push_str(field);
        group.push('\u{1f}');
        group.push_str(value);
        group.push('\u{1e}');
    }
    group
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("detection_rules", &self.detection_rules)
            .field("correlation_rules", &self.correlation_rules)
            .finish()
    }
}

impl Detector {
    /// Compiles `rules` (already checked by [`super::rules::load`]) under `pipeline`.
    pub fn new(rules: &RuleSet, pipeline: Pipeline) -> Result<Self, String> {
        let config = CorrelationConfig {
            timestamp_fields: vec!["@timestamp".into()],
            // Events without a time still get single-event detections; they cannot
            // take part in a window.
            timestamp_fallback: TimestampFallback::Skip,
            correlation_event_mode: CorrelationEventMode::Refs,
            max_correlation_events: REFS_PER_MATCH,
            ..CorrelationConfig::default()
        };
        let mut engine = CorrelationEngine::new(config);
        engine.add_pipeline(pipeline.clone());
        engine
            .add_collection(&rules.merged())
            .map_err(|e| format!("compiling the rule set: {e}"))?;
        let merged = rules.merged();
        let referenced: std::collections::HashSet<&str> = merged
            .correlations
            .iter()
            .filter(|c| !c.generate)
            .flat_map(|c| c.rules.iter().map(String::as_str))
            .collect();
        let correlation_only = merged
            .rules
            .iter()
            .filter(|r| {
                r.id.as_deref().is_some_and(|id| referenced.contains(id))
                    || r.name.as_deref().is_some_and(|n| referenced.contains(n))
            })
            .filter_map(|r| r.id.clone().or_else(|| Some(r.title.clone())))
            .collect();
        let rule_names = merged
            .rules
            .iter()
            .filter_map(|r| Some((r.id.clone()?, r.name.clone()?)))
            .collect();
        let correlation_names: std::collections::HashSet<&str> = merged
            .correlations
            .iter()
            .flat_map(|c| c.id.as_deref().into_iter().chain(c.name.as_deref()))
            .collect();
        let chained = merged
            .correlations
            .iter()
            .filter(|c| {
                c.rules
                    .iter()
                    .any(|r| correlation_names.contains(r.as_str()))
            })
            .map(|c| c.title.clone())
            .collect();
        let mut groupings = Vec::new();
        for correlation in &merged.correlations {
            let mut mapped = correlation.clone();
            rsigma_eval::pipeline::apply_pipelines_to_correlation(
                std::slice::from_ref(&pipeline),
                &mut mapped,
            )
            .map_err(|e| format!("mapping correlation {:?}: {e}", correlation.title))?;
            let compiled = rsigma_eval::correlation::compile_correlation(&mapped)
                .map_err(|e| format!("compiling correlation {:?}: {e}", correlation.title))?;
            groupings.push(Grouping {
                key: compiled
                    .id
                    .clone()
                    .unwrap_or_else(|| compiled.title.clone()),
                refs: compiled.rule_refs.iter().cloned().collect(),
                group_by: compiled.group_by,
            });
        }
        Ok(Detector {
            engine,
            episodes: Episodes::new(),
            correlation_only,
            detection_rules: rules.detection_rules(),
            correlation_rules: rules.correlation_rules(),
            groupings,
            rule_names,
            latest: None,
            chained,
        })
    }

    pub fn detection_rules(&self) -> usize {
        self.detection_rules
    }

    pub fn correlation_rules(&self) -> usize {
        self.correlation_rules
    }

    /// The correlation state (open windows, suppression), as JSON: what a restart
    /// imports to carry on where this detector stopped.
    pub fn export_state(&self) -> Result<String, String> {
        serde_json::to_string(&self.snapshot()).map_err(|e| format!("correlation state: {e}"))
    }

    /// A copy of the correlation state, to serialise elsewhere.
    pub fn snapshot(&self) -> DetectorState {
        DetectorState {
            rsigma: self.engine.export_state(),
            episodes: self.episodes.clone(),
        }
    }

    /// Restores state from [`Self::export_state`] (or a bare rsigma snapshot). Windows of
    /// correlations no longer loaded are dropped; a snapshot of an incompatible version
    /// is an error.
    pub fn import_state(&mut self, json: &str) -> Result<(), String> {
        let state = match serde_json::from_str::<DetectorState>(json) {
            Ok(state) => state,
            Err(_) => DetectorState {
                rsigma: serde_json::from_str(json)
                    .map_err(|e| format!("correlation state: {e}"))?,
                episodes: Episodes::new(),
            },
        };
        if !self.engine.import_state(state.rsigma) {
            return Err("correlation state written by an incompatible version".into());
        }
        self.episodes = state.episodes;
        Ok(())
    }

    /// The stateless half of [`Self::process`], for a cluster's router: the event's
    /// single-event matches, and the correlation groups it feeds. Every event of a group
    /// then goes to the one detector owning the group ([`Self::correlate`] there), so
    /// each window sees all its events however the events were spread over the nodes.
    ///
    /// Correlations fed by other correlations (chains) are not routed: their groups
    /// live where the feeding correlation fires.
    pub fn route(&self, event: Event) -> Routed {
        let mut evaluated = self.evaluate(event);
        let view = JsonEvent::borrow(&evaluated.value);
        let mut groups = Vec::new();
        for found in &evaluated.matches {
            let Some(id) = found.header.rule_id.as_deref() else {
                continue;
            };
            let mut refs = vec![id];
            if let Some(name) = self.rule_names.get(id) {
                refs.push(name.as_str());
            }
            for grouping in &self.groupings {
                if !refs.iter().any(|r| grouping.refs.contains(*r)) {
                    continue;
                }
                let pairs = rsigma_eval::GroupKey::extract(&view, &grouping.group_by, &refs)
                    .to_pairs(&grouping.group_by);
                let key = group_key(&grouping.key, &pairs);
                if !groups.contains(&key) {
                    groups.push(key);
                }
            }
        }
        let matches = std::mem::take(&mut evaluated.matches);
        let reported = matches.into_iter().filter(|r| self.reported(r));
        // Single-event matches keep no episodes.
        let detections = evaluated.detections(reported, &mut Episodes::new());
        Routed { detections, groups }
    }

    /// Titles of the correlations fed by other correlations: [`Self::route`] does not
    /// route them, so a cluster reports them only where their group and the feeding
    /// group's land together.
    pub fn chained_correlations(&self) -> &[String] {
        &self.chained
    }

    /// Forgets the windows and episodes whose timespan has passed at the latest event
    /// time correlated: what a snapshot need not carry.
    pub fn evict_expired(&mut self) {
        if let Some(now) = self.latest {
            self.engine.evict_expired(now);
            self.episodes
                .retain(|_, (_, last, span)| now.saturating_sub(*last) <= *span);
        }
    }

    /// The stateful half, for a cluster's correlating detector: the event through the
    /// correlations, reporting only the correlation matches whose group this detector
    /// owns (`owns` of the match's [`group_key`]). Other groups the event touches here
    /// see only part of their events and are never reported; single-event matches were
    /// reported by the router.
    pub fn correlate(&mut self, event: Event, owns: impl Fn(&str) -> bool) -> Vec<Detection> {
        let mut evaluated = self.evaluate(event);
        let Some(at) = evaluated.timestamp else {
            return Vec::new();
        };
        let matches = std::mem::take(&mut evaluated.matches);
        let view = JsonEvent::borrow(&evaluated.value);
        self.latest = self.latest.max(Some(at.timestamp()));
        let results = self
            .engine
            .process_with_detections(&view, matches, at.timestamp());
        let owned = results.into_iter().filter(|r| match &r.body {
            ResultBody::Correlation(body) => {
                let rule_key = r.header.rule_id.as_deref().unwrap_or(&r.header.rule_title);
                owns(&group_key(rule_key, &body.group_key))
            }
            ResultBody::Detection(_) => false,
        });
        evaluated.detections(owned, &mut self.episodes)
    }

    /// Evaluates one event; correlation windows advance to the event's `@timestamp`.
    pub fn process(&mut self, event: Event) -> Vec<Detection> {
        let mut evaluated = self.evaluate(event);
        let matches = std::mem::take(&mut evaluated.matches);
        let view = JsonEvent::borrow(&evaluated.value);
        let results = match evaluated.timestamp {
            Some(at) => self
                .engine
                .process_with_detections(&view, matches, at.timestamp()),
            None => self.engine.correlate_detections(&view, matches),
        };
        let reported: Vec<EvaluationResult> =
            results.into_iter().filter(|r| self.reported(r)).collect();
        evaluated.detections(reported, &mut self.episodes)
    }

    /// The event as the rules see it, with its single-event matches (rules of its log
    /// source only).
    fn evaluate(&self, event: Event) -> Evaluated {
        let timestamp = event.timestamp();
        let event_id = event.id().map(|id| id.to_string());
        let logsource = logsource_of(&event);
        let value = Value::Object(event.into_map());
        let matches = self
            .engine
            .engine()
            .evaluate_with_logsource(&JsonEvent::borrow(&value), &logsource);
        Evaluated {
            value,
            timestamp,
            event_id,
            matches,
        }
    }

    /// Whether a result is reported: correlations always, single-event matches unless
    /// their rule only feeds correlations.
    fn reported(&self, result: &EvaluationResult) -> bool {
        result.is_correlation()
            || !self.correlation_only.contains(
                result
                    .header
                    .rule_id
                    .as_deref()
                    .unwrap_or(&result.header.rule_title),
            )
    }
}

/// One event evaluated: its JSON, time, id and single-event matches.
struct Evaluated {
    value: Value,
    timestamp: Option<chrono::DateTime<chrono::Utc>>,
    event_id: Option<String>,
    matches: Vec<EvaluationResult>,
}

impl Evaluated {
    /// Results on this event as matches, the event attached.
    fn detections(
        &self,
        results: impl IntoIterator<Item = EvaluationResult>,
        episodes: &mut Episodes,
    ) -> Vec<Detection> {
        let stamp = self.timestamp.map(yagura_shared::event::format_timestamp);
        results
            .into_iter()
            .map(|result| {
                let context = MatchContext {
                    timestamp: stamp.clone(),
                    event_id: self.event_id.clone(),
                    at: self.timestamp.map(|t| t.timestamp()),
                };
                let mut found = detection(result, context, episodes);
                found.event = Some(self.value.clone());
                found
            })
            .collect()
    }
}

/// Services named by the program that wrote a syslog line (`process.name`).
const PROGRAM_SERVICES: &[(&str, &str)] = &[
    ("sshd", "sshd"),
    ("sudo", "sudo"),
    ("cron", "cron"),
    ("CRON", "cron"),
    ("crond", "cron"),
    ("vsftpd", "vsftpd"),
    ("clamd", "clamav"),
    ("freshclam", "clamav"),
    ("guacd", "guacamole"),
];

/// The Sigma log source of a Yagura event: product `linux` (the agent's platform, unless
/// `host.os.type` says otherwise); the category from ECS `event.category` and
/// `event.type` (process start → `process_creation`, file creation → `file_event`,
/// network connection → `network_connection`, DNS → `dns`, web access → `webserver`); the service from what wrote
/// the line (auditd records → `auditd`, a syslog program such as `sshd` or `sudo`, else the
/// dataset: auth logs → `auth`, PostgreSQL logs → `postgresql`, shell histories → `shell`,
/// other syslog → `syslog`).
/// Yagura's own events (`event.dataset` `yagura.collector.…`, `yagura.agent.…`) are
/// product `yagura`, service `collector` or `agent`.
/// A rule names the dimensions it needs; an event missing one of them is not its event.
pub fn logsource_of(event: &Event) -> LogSource {
    let has = |field: &str, wanted: &str| match event.get(field) {
        Some(Value::String(s)) => s == wanted,
        Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(wanted)),
        _ => false,
    };
    let category = if has("event.category", "process") && has("event.type", "start") {
        Some("process_creation")
    } else if has("event.category", "file") && has("event.type", "creation") {
        Some("file_event")
    } else if has("event.category", "network")
        && (has("event.type", "connection") || has("event.type", "start"))
    {
        Some("network_connection")
    } else if has("event.category", "network") && event.get("dns.question.name").is_some() {
        Some("dns")
    } else if has("event.category", "web") {
        Some("webserver")
    } else {
        None
    };
    let dataset = event.get_str("event.dataset").unwrap_or_default();
    // Yagura's own events: product `yagura`, service `collector` or `agent`.
    if let Some(rest) = dataset.strip_prefix("yagura.") {
        let service = rest.split('.').next().unwrap_or_default();
        return LogSource {
            product: Some("yagura".into()),
            service: Some(service.to_string()),
            category: category.map(str::to_string),
            ..LogSource::default()
        };
    }
    let program = event.get_str("process.name").unwrap_or_default();
    let service = if event.get("auditd").is_some() || dataset.starts_with("auditd") {
        Some("auditd")
    } else if let Some((_, service)) = PROGRAM_SERVICES.iter().find(|(p, _)| *p == program) {
        Some(*service)
    } else if dataset.contains("auth") {
        Some("auth")
    } else if dataset.contains("postgres") {
        Some("postgresql")
    } else if dataset.contains("shell") || dataset.contains("bash_history") {
        Some("shell")
    } else if dataset.contains("syslog") || event.get("log.syslog").is_some() {
        Some("syslog")
    } else {
        None
    };
    LogSource {
        product: Some(
            event
                .get_str("host.os.type")
                .unwrap_or("linux")
                .to_ascii_lowercase(),
        ),
        category: category.map(str::to_string),
        service: service.map(str::to_string),
        ..LogSource::default()
    }
}

/// The event a result was found on.
struct MatchContext {
    timestamp: Option<String>,
    event_id: Option<String>,
    /// Event time, seconds.
    at: Option<i64>,
}

/// The episode a correlation firing at `now` belongs to: the one of `key` if its last
/// firing is within `timespan`, else a new one beginning now. Returns its start.
fn episode(episodes: &mut Episodes, key: String, now: i64, timespan: i64) -> i64 {
    let start = match episodes.get(&key) {
        Some(&(start, last, _)) if now - last <= timespan => start,
        _ => now,
    };
    episodes.insert(key, (start, now, timespan));
    if episodes.len() > EPISODES_KEPT {
        episodes.retain(|_, (_, last, span)| now - *last <= *span);
    }
    start
}

fn detection(
    result: EvaluationResult,
    context: MatchContext,
    episodes: &mut Episodes,
) -> Detection {
    let MatchContext {
        timestamp,
        event_id,
        at,
    } = context;
    let header = &result.header;
    let rule = RuleRef {
        id: header.rule_id.clone(),
        title: header.rule_title.clone(),
        level: header.level.map(|l| format!("{l:?}").to_lowercase()),
        tags: header.tags.clone(),
    };
    let rule_key = rule.id.clone().unwrap_or_else(|| rule.title.clone());
    let mut hash = Sha256::new();
    hash.update(rule_key.as_bytes());
    hash.update([0]);
    let (kind, correlation, matched_fields) = match result.body {
        ResultBody::Detection(body) => {
            hash.update(b"detection\0");
            hash.update(event_id.as_deref().unwrap_or_default().as_bytes());
            let fields = body
                .matched_fields
                .into_iter()
                .map(|m| (m.field, m.value))
                .collect();
            ("detection", None, fields)
        }
        ResultBody::Correlation(body) => {
            let group = group_text(&body.group_key);
            let oldest_ref = body
                .event_refs
                .as_ref()
                .and_then(|refs| refs.iter().map(|r| r.timestamp).min());
            let now = at.or(oldest_ref).unwrap_or_default();
            let timespan = i64::try_from(body.timespan_secs).unwrap_or(i64::MAX);
            let start = episode(episodes, format!("{rule_key}\u{1d}{group}"), now, timespan);
            let window_start = Some(start);
            hash.update(b"correlation\0");
            hash.update(group.as_bytes());
            hash.update(start.to_be_bytes());
            let kind = serde_json::to_value(body.correlation_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (
                "correlation",
                Some(CorrelationMatch {
                    kind,
                    group: body.group_key,
                    value: body.aggregated_value,
                    timespan_seconds: body.timespan_secs,
                    window_start,
                }),
                Vec::new(),
            )
        }
    };
    Detection {
        id: hex::encode(&hash.finalize()[..16]),
        rule,
        kind,
        timestamp,
        event_id,
        correlation,
        matched_fields,
        event: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::detect::rules::{RuleFile, RuleSet, ecs_pipeline};

    /// A failed-SSH-login rule feeding an event_count correlation (three per source
    /// address in five minutes): the detection tests' common rule set.
    pub(crate) const BRUTE_FORCE: &str = r#"
title: SSH login failed
id: 7b7a0f53-5a8e-4c44-9d7c-0a0c5d8f0001
name: ssh_login_failed
logsource:
    product: linux
    service: sshd
detection:
    selection:
        event.action: ssh_login
        event.outcome: failure
    condition: selection
level: low
---
title: SSH brute force
id: 7b7a0f53-5a8e-4c44-9d7c-0a0c5d8f0002
correlation:
    type: event_count
    rules:
        - ssh_login_failed
    group-by:
        - source.ip
    timespan: 5m
    condition:
        gte: 3
level: high
"#;

    fn detector(yaml: &str) -> Detector {
        let mut collection = rsigma_parser::parse_sigma_yaml(yaml).expect("rules");
        crate::detect::rules::temporal_needs_every_rule(&mut collection);
        let set = RuleSet {
            files: vec![RuleFile {
                path: "inline.yml".into(),
                collection,
            }],
            ..RuleSet::default()
        };
        Detector::new(&set, ecs_pipeline().expect("pipeline")).expect("detector")
    }

    fn failed_login(at: &str, ip: &str, n: u32) -> Event {
        let mut e = Event::new(
            chrono::DateTime::parse_from_rfc3339(at)
                .expect("time")
                .with_timezone(&chrono::Utc),
        );
        e.set_str("event.dataset", "system.auth");
        e.set_str("process.name", "sshd");
        e.set_str("event.action", "ssh_login");
        e.set_str("event.outcome", "failure");
        e.set_str("source.ip", ip);
        e.set_str("user.name", format!("user{n}"));
        e
    }

    fn stream() -> Vec<Event> {
        vec![
            failed_login("2026-11-25T10:00:00Z", "203.0.113.9", 1),
            failed_login("2026-11-25T10:00:30Z", "198.51.100.7", 2),
            failed_login("2026-11-25T10:01:00Z", "203.0.113.9", 3),
            failed_login("2026-11-25T10:02:00Z", "203.0.113.9", 4),
        ]
    }

    /// A cluster's split of the detector: every event routed (single-event matches
    /// reported there) and correlated only on the partition of each group it feeds, on
    /// three correlators, finds exactly what one detector finds on the whole stream.
    #[test]
    fn routing_by_group_and_correlating_per_partition_equals_one_detector() {
        let rules = format!(
            "{BRUTE_FORCE}---\ntitle: Failed login of user7\nid: 7b7a0f53-5a8e-4c44-9d7c-0a0c5d8f0003\n\
             logsource:\n    product: linux\n    service: sshd\ndetection:\n    selection:\n        \
             user.name: user7\n    condition: selection\nlevel: medium\n"
        );
        // Collected once: every event keeps its id however often it is read.
        let stream: Vec<Event> = (0..120u32)
            .map(|n| {
                let at = format!("2026-11-25T10:{:02}:{:02}Z", n / 4, (n % 4) * 15);
                let ip = format!("203.0.113.{}", n % 7);
                failed_login(&at, &ip, n % 9)
            })
            .collect();
        let events = || stream.iter().cloned();
        let ids = |found: Vec<Detection>| -> Vec<(String, &'static str)> {
            found.into_iter().map(|d| (d.id, d.kind)).collect()
        };
        let mut whole = detector(&rules);
        let mut expected: Vec<_> = events().flat_map(|e| ids(whole.process(e))).collect();
        expected.sort();
        expected.dedup();
        assert!(expected.iter().any(|(_, kind)| *kind == "correlation"));
        assert!(expected.iter().any(|(_, kind)| *kind == "detection"));

        const PARTITIONS: u32 = 3;
        let router = detector(&rules);
        let mut correlators: Vec<Detector> = (0..PARTITIONS).map(|_| detector(&rules)).collect();
        let partition =
            |group: &str| crate::cluster::detector::correlate_partition(group, PARTITIONS);
        let mut found = Vec::new();
        let mut used = std::collections::BTreeSet::new();
        for event in events() {
            let routed = router.route(event.clone());
            found.extend(ids(routed.detections));
            let targets: std::collections::BTreeSet<u32> =
                routed.groups.iter().map(|g| partition(g)).collect();
            for q in targets {
                used.insert(q);
                let owns = |group: &str| partition(group) == q;
                found.extend(ids(correlators[q as usize].correlate(event.clone(), owns)));
            }
        }
        found.sort();
        found.dedup();
        assert!(used.len() > 1, "the groups all landed on one partition");
        assert_eq!(found, expected);
    }

    /// event_count per group: the third failure from one address within five minutes
    /// fires, the other address does not; a replay of the same events from a fresh
    /// detector gives the same match ids.
    #[test]
    fn event_count_fires_per_group_in_event_time_with_stable_ids() {
        let run = || {
            let mut detector = detector(BRUTE_FORCE);
            stream()
                .into_iter()
                .flat_map(|e| {
                    let mut e = e;
                    // The same event ids on both runs.
                    let id = format!(
                        "0190d4b0-0000-7000-8000-{:012}",
                        e.timestamp().map_or(0, |t| t.timestamp())
                    );
                    e.set_str("event.id", id);
                    detector.process(e)
                })
                .collect::<Vec<_>>()
        };
        let first = run();
        let correlations: Vec<&Detection> =
            first.iter().filter(|d| d.kind == "correlation").collect();
        assert_eq!(correlations.len(), 1, "{first:#?}");
        let c = correlations[0];
        assert_eq!(c.rule.title, "SSH brute force");
        assert_eq!(c.timestamp.as_deref(), Some("2026-11-25T10:02:00.000000Z"));
        let group = &c.correlation.as_ref().expect("correlation").group;
        assert_eq!(
            group,
            &vec![("source.ip".to_string(), "203.0.113.9".to_string())]
        );
        assert_eq!(
            first.iter().filter(|d| d.kind == "detection").count(),
            0,
            "the detection rule only feeds the correlation (generate: false)"
        );
        let ids: Vec<&str> = first.iter().map(|d| d.id.as_str()).collect();
        let again = run();
        assert_eq!(ids, again.iter().map(|d| d.id.as_str()).collect::<Vec<_>>());
    }

    /// Two detection rules (`a` and `b`, on `event.action`) and one correlation over them
    /// grouped by `user.name` in ten minutes; `body` is the correlation's type and
    /// condition.
    fn pair(body: &str) -> Detector {
        detector(&format!(
            "title: A\nid: aaaaaaaa-0000-4000-8000-000000000001\nname: rule_a\nlogsource:\n    product: linux\ndetection:\n    selection:\n        event.action: a\n    condition: selection\nlevel: low\n---\ntitle: B\nid: aaaaaaaa-0000-4000-8000-000000000002\nname: rule_b\nlogsource:\n    product: linux\ndetection:\n    selection:\n        event.action: b\n    condition: selection\nlevel: low\n---\ntitle: C\nid: aaaaaaaa-0000-4000-8000-000000000003\ncorrelation:\n{body}    group-by:\n        - user.name\n    timespan: 10m\nlevel: high\n"
        ))
    }

    fn act(second: i64, action: &str, user: &str) -> Event {
        let base = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let mut e = Event::new(base + chrono::Duration::seconds(second));
        e.set_str("event.action", action);
        e.set_str("user.name", user);
        e.set_str("source.port", format!("{}", 1000 + second));
        e
    }

    /// How many times the correlation fired over `events`.
    fn fired(detector: &mut Detector, events: Vec<Event>) -> usize {
        events
            .into_iter()
            .flat_map(|e| detector.process(e))
            .filter(|d| d.kind == "correlation")
            .count()
    }

    const TEMPORAL: &str = "    type: temporal\n    rules:\n        - rule_a\n        - rule_b\n";
    const ORDERED: &str =
        "    type: temporal_ordered\n    rules:\n        - rule_a\n        - rule_b\n";

    /// (correlation, events as (second, action, user), firings): temporal needs every
    /// rule in any order, temporal_ordered in order — both within one group (the two
    /// bugs seen elsewhere: ignoring group-by, firing on the reverse order) and window.
    #[test]
    fn temporal_and_temporal_ordered_respect_order_group_and_window() {
        /// An event: second, `event.action`, `user.name`.
        type Act<'a> = (i64, &'a str, &'a str);
        let cases: [(&str, [Act; 2], usize); 6] = [
            (TEMPORAL, [(0, "b", "alice"), (5, "a", "alice")], 1),
            (TEMPORAL, [(0, "a", "alice"), (5, "b", "bob")], 0),
            (TEMPORAL, [(0, "a", "alice"), (700, "b", "alice")], 0),
            (ORDERED, [(0, "a", "alice"), (5, "b", "alice")], 1),
            (ORDERED, [(0, "b", "alice"), (5, "a", "alice")], 0),
            (ORDERED, [(0, "a", "alice"), (5, "b", "bob")], 0),
        ];
        for (body, events, want) in cases {
            let mut d = pair(body);
            let stream = events.iter().map(|(s, a, u)| act(*s, a, u)).collect();
            assert_eq!(fired(&mut d, stream), want, "{} {events:?}", body.trim());
        }
    }

    #[test]
    fn value_count_counts_distinct_values_per_group() {
        let body = "    type: value_count\n    rules:\n        - rule_a\n    condition:\n        field: source.port\n        gte: 3\n";
        let mut d = pair(body);
        let same_port: Vec<Event> = (0..5)
            .map(|_| {
                let mut e = act(0, "a", "alice");
                e.set_str("source.port", "22");
                e
            })
            .collect();
        assert_eq!(
            fired(&mut d, same_port),
            0,
            "five events, one distinct value"
        );
        let mut d = pair(body);
        assert_eq!(
            fired(
                &mut d,
                vec![
                    act(0, "a", "alice"),
                    act(1, "a", "bob"),
                    act(2, "a", "alice"),
                    act(3, "a", "alice")
                ]
            ),
            1,
            "alice reaches three distinct ports at her third event; bob never"
        );
    }

    #[test]
    fn event_count_counts_per_group_in_its_window() {
        let body =
            "    type: event_count\n    rules:\n        - rule_a\n    condition:\n        gte: 3\n";
        let mut d = pair(body);
        assert_eq!(
            fired(
                &mut d,
                vec![
                    act(0, "a", "alice"),
                    act(1, "a", "bob"),
                    act(2, "a", "alice"),
                    act(3, "a", "bob")
                ]
            ),
            0
        );
        let mut d = pair(body);
        assert_eq!(
            fired(
                &mut d,
                vec![
                    act(0, "a", "alice"),
                    act(300, "a", "alice"),
                    act(900, "a", "alice")
                ]
            ),
            0,
            "three events, never three in ten minutes"
        );
        let mut d = pair(body);
        assert!(
            fired(
                &mut d,
                vec![
                    act(0, "a", "alice"),
                    act(300, "a", "alice"),
                    act(590, "a", "alice")
                ]
            ) >= 1
        );
    }

    #[test]
    fn value_sum_adds_a_numeric_field_per_group() {
        let body = "    type: value_sum\n    rules:\n        - rule_a\n    condition:\n        field: source.port\n        gte: 3000\n";
        let mut d = pair(body);
        // Ports 1000, 1001: 2001 — below; a third event (1002) makes 3003.
        assert_eq!(
            fired(&mut d, vec![act(0, "a", "alice"), act(1, "a", "alice")]),
            0
        );
        assert_eq!(fired(&mut d, vec![act(2, "a", "alice")]), 1);
    }

    #[test]
    fn value_avg_and_value_median_aggregate_a_numeric_field_per_group() {
        // Ports are 1000 + second.
        for kind in ["value_avg", "value_median"] {
            let above = format!(
                "    type: {kind}\n    rules:\n        - rule_a\n    condition:\n        field: source.port\n        gte: 1010\n"
            );
            let mut d = pair(&above);
            assert_eq!(fired(&mut d, vec![act(0, "a", "alice")]), 0, "{kind}: 1000");
            assert_eq!(
                fired(&mut d, vec![act(5, "a", "bob")]),
                0,
                "{kind}: bob's 1005, his own group"
            );
            assert_eq!(
                fired(&mut d, vec![act(20, "a", "alice"), act(30, "a", "alice")]),
                2,
                "{kind}: alice's 1000 and 1020 (1010), then with 1030 (1016.7, median 1020)"
            );
        }
    }

    /// A sustained brute force fires the correlation on every failure past the tenth;
    /// all those firings are one match (one id), also across an export and import of the
    /// state half-way; a new burst after the timespan is a new match.
    #[test]
    fn a_sustained_attack_is_one_match_and_a_later_burst_another() {
        let ids = |detector: &mut Detector, events: Vec<Event>| -> Vec<String> {
            events
                .into_iter()
                .flat_map(|e| detector.process(e))
                .filter(|d| d.kind == "correlation")
                .map(|d| d.id)
                .collect()
        };
        let at = |second: i64| {
            let mut e = failed_login("2026-11-25T10:00:00Z", "203.0.113.9", 0);
            e.set_str(
                "@timestamp",
                yagura_shared::event::format_timestamp(
                    chrono::DateTime::from_timestamp(1_795_600_800 + second, 0).expect("time"),
                ),
            );
            e
        };
        let mut d = detector(BRUTE_FORCE);
        let first: Vec<String> = ids(&mut d, (0..25).map(|i| at(i * 5)).collect());
        let state = d.export_state().expect("export");
        let mut resumed = detector(BRUTE_FORCE);
        resumed.import_state(&state).expect("import");
        let rest = ids(&mut resumed, (25..50).map(|i| at(i * 5)).collect());
        assert_eq!(first.len(), 23, "fires from the third failure on");
        assert_eq!(rest.len(), 25);
        let all: std::collections::HashSet<&String> = first.iter().chain(&rest).collect();
        assert_eq!(all.len(), 1, "one attack, one match");
        // Twenty minutes of quiet (longer than the five-minute timespan), then again.
        let later = ids(
            &mut resumed,
            (0..3).map(|i| at(50 * 5 + 1200 + i)).collect(),
        );
        assert_eq!(later.len(), 1);
        assert!(!all.contains(&later[0]), "a new episode, a new match");
    }

    #[test]
    fn log_sources_follow_ecs_categories_and_the_writing_program() {
        let mut e = Event::new(chrono::Utc::now());
        e.set("event.category", serde_json::json!(["process"]));
        e.set("event.type", serde_json::json!(["start"]));
        let ls = logsource_of(&e);
        assert_eq!(ls.category.as_deref(), Some("process_creation"));
        assert_eq!(ls.product.as_deref(), Some("linux"));
        assert_eq!(ls.service, None);
        e.set(
            "auditd.record_types",
            serde_json::json!(["SYSCALL", "EXECVE"]),
        );
        assert_eq!(logsource_of(&e).service.as_deref(), Some("auditd"));
        let mut s = Event::new(chrono::Utc::now());
        s.set_str("event.dataset", "system.auth");
        s.set_str("process.name", "sudo");
        assert_eq!(logsource_of(&s).service.as_deref(), Some("sudo"));
        s.set_str("process.name", "login");
        assert_eq!(logsource_of(&s).service.as_deref(), Some("auth"));
    }
}
