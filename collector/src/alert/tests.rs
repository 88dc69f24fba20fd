//! Alerting against a real SQLite database (in a temporary directory) and, for the outbox,
//! a real HTTP receiver on loopback.
//!
//! What these tests prove:
//!
//! - Grouping: recorded detections of one group (rule + the policy's `by` values) are one
//!   alert with a count, paged once per destination, with at most one pending count update
//!   per destination that takes updates; another `source.ip` is another alert; a match
//!   after the alert's `for` window opens a new alert; a replayed detection is seen, not
//!   counted again.
//! - Actions: acknowledge, resolve, suppress and their history and notifications; acting
//!   twice is `Unchanged`, on an unknown id `NotFound`; quiet alerts are due for resolve only
//!   after their policy's quiet period, and never without one.
//! - Outbox order: a resolve (or acknowledge) is never due while the same alert's trigger
//!   for that destination is unsent.
//! - The sender: the rate limit holds the excess in one summary; a 4xx fails a
//!   notification at once, a 5xx is retried with backoff until the retry budget is spent;
//!   a delivery is marked sent and carries a signature the documented recipe verifies; a
//!   resolve follows its trigger.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::manager::AlertManager;
use super::model::{AlertStatus, Notification, NotificationKind, Summary};
use super::outbox::{self, DestinationSender};
use super::policy::{AlertConfig, AlertPolicies, DestinationConfig, RetryConfig, Span};
use super::sinks::webhook;
use super::store::{Action, ActionOutcome, MatchOutcome, stamp};
use super::{AlertService, AlertStore};
use crate::store::{Store, StoredDetection};

/// How long a test waits for the sender before it fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// How often it looks.
const POLL: Duration = Duration::from_millis(25);

const BRUTE_ID: &str = "9d1f3c2a-7b55-4e0e-9d7e-000000000002";
const BRUTE: &str = "SSH brute force";
const FOREVER_ID: &str = "9d1f3c2a-7b55-4e0e-9d7e-000000000003";
const FOREVER: &str = "Never quiet";
const FAST_ID: &str = "9d1f3c2a-7b55-4e0e-9d7e-000000000004";
const FAST: &str = "Fast updates";

const IP_A: &str = "203.0.113.9";
const IP_B: &str = "198.51.100.7";

const SECRET: &str = "s";

/// Policies shared by every test: `brute` groups by `source.ip` for ten minutes and
/// resolves after fifteen quiet ones; `forever` never resolves on its own; `fast` sends
/// count updates after one second.
const POLICIES: &str = r#"
[[policy]]
name = "brute"
rules = ["SSH brute*"]
by = ["source.ip"]
for = "10m"
resolve_after = "15m"
update_interval = "1m"

[[policy]]
name = "forever"
rules = ["Never quiet*"]
by = ["host.name"]
resolve_after = 0

[[policy]]
name = "fast"
rules = ["Fast updates*"]
by = ["source.ip"]
update_interval = "1s"
"#;

/// Two destinations for the store tests (never contacted): `hook` takes count updates,
/// `chat` does not.
const TWO_DESTINATIONS: &str = r#"
[destinations.chat]
type = "slack"
url = "https://hooks.slack.com/services/T/B/X"

[destinations.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
secret = "s"
"#;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
        .expect("fixed time")
        .with_timezone(&Utc)
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// A recorded match of rule `title` on an event from `host` and `ip` at `event_time`.
fn detection(id: &str, title: &str, ip: &str, host: &str, event_time: &str) -> StoredDetection {
    let rule_id = match title {
        BRUTE => BRUTE_ID,
        FOREVER => FOREVER_ID,
        _ => FAST_ID,
    };
    let event_id = format!("event-{id}");
    let body = json!({
        "rule": {"id": rule_id, "title": title, "level": "high", "tags": ["attack.t1110"]},
        "event": {
            "@timestamp": event_time,
            "event": {"id": event_id, "action": "ssh_login", "outcome": "failure"},
            "host": {"name": host},
            "source": {"ip": ip},
        },
    });
    StoredDetection {
        id: id.to_string(),
        rule_id: Some(rule_id.to_string()),
        rule_title: title.to_string(),
        level: Some("high".to_string()),
        kind: "rule".to_string(),
        event_time: Some(event_time.to_string()),
        event_id: Some(event_id),
        archive_offset: 4096,
        body: body.to_string(),
    }
}

/// A brute-force match from `ip` on `web-1`.
fn brute(id: &str, ip: &str, event_time: &str) -> StoredDetection {
    detection(id, BRUTE, ip, "web-1", event_time)
}

/// A database with the alert tables, the manager's planning and the destinations of
/// `destinations` (TOML of `[destinations.*]`).
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    service: AlertService,
    manager: AlertManager,
    config: AlertConfig,
    wants_updates: HashSet<String>,
}

impl Fixture {
    async fn new(destinations: &str, wants_updates: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open_sqlite(&dir.path().join("collector.db"))
            .await
            .expect("open the database");
        let service = AlertService::new(&store);
        let config: AlertConfig =
            toml::from_str(&format!("{POLICIES}\n{destinations}")).expect("alert config");
        let policies = AlertPolicies::new(&config).expect("valid alert config");
        let wants_updates: HashSet<String> =
            wants_updates.iter().map(|d| (*d).to_string()).collect();
        let manager = AlertManager::new(
            service.clone(),
            policies,
            Vec::new(),
            wants_updates.clone(),
            config.destinations.keys().cloned().collect(),
        );
        // The manager's position starts at the (empty) table's end, so every detection
        // recorded by the test is after it.
        assert_eq!(
            service.store().cursor().await.expect("cursor"),
            0,
            "a new database starts at rowid 0"
        );
        Fixture {
            _dir: dir,
            store,
            service,
            manager,
            config,
            wants_updates,
        }
    }

    fn alerts(&self) -> &AlertStore {
        self.service.store()
    }

    /// Records `detections` as the detector does.
    async fn record(&self, detections: &[StoredDetection]) {
        self.store
            .commit_detections(detections, None)
            .await
            .expect("record detections");
    }

    /// Takes every recorded detection after the manager's position into alerts, as of
    /// `now` (what `AlertManager::take_new` does, with the clock in the test's hands).
    async fn take(&self, now: DateTime<Utc>) -> Vec<MatchOutcome> {
        let cursor = self.alerts().cursor().await.expect("cursor");
        let rows = self
            .alerts()
            .detections_after(cursor, 500)
            .await
            .expect("detections after the cursor");
        let last = rows.last().map_or(cursor, |(seq, _)| *seq);
        let plans: Vec<_> = rows
            .into_iter()
            .map(|(_, d)| self.manager.plan(d))
            .collect();
        let outcomes = self
            .alerts()
            .take_matches(&plans, last, &self.wants_updates, now)
            .await
            .expect("take matches");
        assert_eq!(
            self.alerts().cursor().await.expect("cursor"),
            last,
            "the position moves with the matches"
        );
        outcomes
    }

    /// Records `detections` and takes them as of `now`.
    async fn record_and_take(
        &self,
        detections: &[StoredDetection],
        now: DateTime<Utc>,
    ) -> Vec<MatchOutcome> {
        self.record(detections).await;
        self.take(now).await
    }

    /// Offers `detections` to the store again (a replay after a crash).
    async fn replay(
        &self,
        detections: &[StoredDetection],
        now: DateTime<Utc>,
    ) -> Vec<MatchOutcome> {
        let cursor = self.alerts().cursor().await.expect("cursor");
        let plans: Vec<_> = detections
            .iter()
            .map(|d| self.manager.plan(d.clone()))
            .collect();
        self.alerts()
            .take_matches(&plans, cursor, &self.wants_updates, now)
            .await
            .expect("take replayed matches")
    }

    /// The one new alert a single brute-force match from `ip` opens at `now`.
    async fn open_alert(&self, detection_id: &str, ip: &str, now: DateTime<Utc>) -> String {
        let outcomes = self
            .record_and_take(&[brute(detection_id, ip, &stamp(now))], now)
            .await;
        match outcomes.as_slice() {
            [MatchOutcome::Created(id)] => id.clone(),
            other => panic!("expected one new alert, got {other:?}"),
        }
    }

    async fn alert(&self, id: &str) -> super::Alert {
        self.alerts()
            .alert(id)
            .await
            .expect("read the alert")
            .expect("the alert exists")
    }

    async fn notifications(&self, id: &str) -> Vec<Notification> {
        self.alerts()
            .notifications_of(id)
            .await
            .expect("notifications of the alert")
    }

    /// The destination's sender, as `collector.toml` configures it.
    fn sender(&self, name: &str) -> DestinationSender {
        let config: &DestinationConfig = self
            .config
            .destinations
            .get(name)
            .expect("destination configured");
        DestinationSender::new(name, config).expect("destination sender")
    }

    /// Starts the outbox sender for `hook`.
    fn start_sender(
        &self,
        retry: RetryConfig,
        cancel: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        // reqwest is built without a default TLS provider; the collector installs ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        outbox::start(
            &self.service,
            vec![self.sender("hook")],
            retry,
            "https://yagura.example:8443".to_string(),
            cancel.clone(),
        )
    }
}

/// The notifications of `kind` to `destination`.
fn of<'a>(
    notifications: &'a [Notification],
    kind: NotificationKind,
    destination: &str,
) -> Vec<&'a Notification> {
    notifications
        .iter()
        .filter(|n| n.kind == kind && n.destination == destination)
        .collect()
}

/// Waits until `check` gives a value, failing the test with `what` after [`DEADLINE`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Stops the sender and waits for its tasks.
async fn stop(cancel: &CancellationToken, tasks: Vec<tokio::task::JoinHandle<()>>) {
    cancel.cancel();
    for task in tasks {
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the sender stops when cancelled")
            .expect("the sender task did not panic");
    }
}

/// A request as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} present"))
            .to_str()
            .expect("header is text")
            .to_string()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// `alert.trigger`, `alert.resolve`, ….
    fn kind(&self) -> String {
        self.json()["type"]
            .as_str()
            .expect("the body has a type")
            .to_string()
    }
}

#[derive(Debug, Default)]
struct ReceiverState {
    status: AtomicU16,
    requests: Mutex<Vec<Received>>,
}

/// A webhook receiver on loopback answering `status`, recording every request.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start(status: u16, cancel: &CancellationToken) -> Receiver {
        async fn record(
            State(state): State<Arc<ReceiverState>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, &'static str) {
            state
                .requests
                .lock()
                .expect("receiver lock")
                .push(Received {
                    headers,
                    body: body.to_vec(),
                });
            let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, "receiver says so")
        }

        let state = Arc::new(ReceiverState {
            status: AtomicU16::new(status),
            requests: Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let shutdown = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .expect("the receiver serves");
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            state,
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().expect("receiver lock").clone()
    }

    /// `[destinations.hook]` sending here.
    fn destination(&self, extra: &str) -> String {
        format!(
            "[destinations.hook]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n{extra}\n",
            self.url
        )
    }
}

/// A fast retry policy, so tests do not wait for the defaults.
fn quick_retry(give_up_after: Duration) -> RetryConfig {
    RetryConfig {
        initial_delay_ms: 100,
        max_delay_ms: 200,
        give_up_after: Span(give_up_after),
    }
}

/// Waits until notification `id` is no longer pending and returns it.
async fn settled(alerts: &AlertStore, alert_id: &str, id: i64) -> Notification {
    wait_for(&format!("notification {id} to leave pending"), || async {
        alerts
            .notifications_of(alert_id)
            .await
            .expect("notifications")
            .into_iter()
            .find(|n| n.id == id && n.status != "pending")
    })
    .await
}

// --- Grouping and the `for` window -------------------------------------------------------

#[tokio::test]
async fn matches_of_one_group_are_one_alert_paged_once_with_one_update_per_destination() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let now = t0();
    let outcomes = f
        .record_and_take(
            &[
                brute("d1", IP_A, "2026-11-25T09:59:58.000Z"),
                brute("d2", IP_A, "2026-11-25T09:59:59.000Z"),
            ],
            now,
        )
        .await;
    let [MatchOutcome::Created(id), MatchOutcome::Joined(joined)] = outcomes.as_slice() else {
        panic!("expected created then joined, got {outcomes:?}");
    };
    assert_eq!(id, joined, "the second match joins the first's alert");

    let alert = f.alert(id).await;
    assert_eq!(alert.event_count, 2);
    assert_eq!(alert.status, AlertStatus::Open);
    assert_eq!(alert.policy, "brute");
    assert_eq!(
        alert.group,
        vec![("source.ip".to_string(), IP_A.to_string())]
    );
    assert_eq!(alert.host.as_deref(), Some("web-1"));
    assert_eq!(alert.destinations, vec!["chat", "hook"]);
    assert_eq!(alert.first_seen, "2026-11-25T09:59:58.000Z");
    assert_eq!(alert.last_seen, "2026-11-25T09:59:59.000Z");

    // A third match, in a later batch, still rides on the same pending update.
    let later = now + chrono::Duration::seconds(5);
    let outcomes = f
        .record_and_take(&[brute("d3", IP_A, "2026-11-25T09:59:57.000Z")], later)
        .await;
    assert_eq!(outcomes, vec![MatchOutcome::Joined(id.clone())]);
    let alert = f.alert(id).await;
    assert_eq!(alert.event_count, 3);
    assert_eq!(
        alert.first_seen, "2026-11-25T09:59:57.000Z",
        "an earlier event moves first_seen back"
    );
    assert_eq!(alert.last_seen, "2026-11-25T09:59:59.000Z");

    let notifications = f.notifications(id).await;
    for destination in ["chat", "hook"] {
        let triggers = of(&notifications, NotificationKind::Trigger, destination);
        assert_eq!(
            triggers.len(),
            1,
            "one page to {destination}: {notifications:?}"
        );
        assert_eq!(triggers[0].status, "pending");
    }
    let updates = of(&notifications, NotificationKind::Update, "hook");
    assert_eq!(
        updates.len(),
        1,
        "one update, not one per match: {notifications:?}"
    );
    assert_eq!(updates[0].status, "pending");
    assert_eq!(
        updates[0].next_attempt_at,
        stamp(now + minutes(1)),
        "the update waits for the policy's update interval"
    );
    assert!(
        of(&notifications, NotificationKind::Update, "chat").is_empty(),
        "chat takes no updates: {notifications:?}"
    );
    assert_eq!(notifications.len(), 3, "{notifications:?}");

    let history = f.alerts().history(id).await.expect("history");
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].action, "created");
    assert_eq!(history[0].actor, "yagura");
    let samples = f.alerts().samples(id).await.expect("samples");
    let sampled: Vec<&str> = samples.iter().map(|s| s.detection_id.as_str()).collect();
    assert_eq!(sampled, vec!["d1", "d2", "d3"]);
}

#[tokio::test]
async fn another_source_ip_is_another_alert_but_another_host_is_not() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let now = t0();
    let outcomes = f
        .record_and_take(
            &[
                brute("d1", IP_A, "2026-11-25T09:59:58.000Z"),
                brute("d2", IP_B, "2026-11-25T09:59:59.000Z"),
                // The policy groups by source.ip only: another host of the same source
                // is the same incident.
                detection("d3", BRUTE, IP_A, "web-2", "2026-11-25T09:59:59.500Z"),
            ],
            now,
        )
        .await;
    let [
        MatchOutcome::Created(a),
        MatchOutcome::Created(b),
        MatchOutcome::Joined(c),
    ] = outcomes.as_slice()
    else {
        panic!("expected two new alerts and a join, got {outcomes:?}");
    };
    assert_ne!(a, b);
    assert_eq!(a, c);

    let first = f.alert(a).await;
    let second = f.alert(b).await;
    assert_eq!(first.event_count, 2);
    assert_eq!(second.event_count, 1);
    assert_ne!(first.group_key, second.group_key);
    assert_eq!(
        second.group,
        vec![("source.ip".to_string(), IP_B.to_string())]
    );
    for id in [a, b] {
        let notifications = f.notifications(id).await;
        for destination in ["chat", "hook"] {
            assert_eq!(
                of(&notifications, NotificationKind::Trigger, destination).len(),
                1,
                "each alert pages each destination once: {notifications:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_match_after_the_for_window_opens_a_new_alert() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let start = t0();
    let first = f.open_alert("d1", IP_A, start).await;

    // Nine minutes in: inside `for = "10m"`.
    let inside = start + minutes(9);
    let outcomes = f
        .record_and_take(&[brute("d2", IP_A, &stamp(inside))], inside)
        .await;
    assert_eq!(outcomes, vec![MatchOutcome::Joined(first.clone())]);

    // Eleven minutes in: past `suppress_until` (creation + 10 minutes), though the alert
    // is still open.
    let after = start + minutes(11);
    let outcomes = f
        .record_and_take(&[brute("d3", IP_A, &stamp(after))], after)
        .await;
    let [MatchOutcome::Created(second)] = outcomes.as_slice() else {
        panic!("expected a new alert past the window, got {outcomes:?}");
    };
    assert_ne!(&first, second);
    assert_eq!(f.alert(&first).await.event_count, 2);
    assert_eq!(f.alert(&first).await.status, AlertStatus::Open);
    let new = f.alert(second).await;
    assert_eq!(new.event_count, 1);
    assert_eq!(new.group_key, f.alert(&first).await.group_key);
    let notifications = f.notifications(second).await;
    assert_eq!(
        of(&notifications, NotificationKind::Trigger, "hook").len(),
        1,
        "the new alert pages again: {notifications:?}"
    );

    // The next match joins the newer alert.
    let next = start + minutes(12);
    let outcomes = f
        .record_and_take(&[brute("d4", IP_A, &stamp(next))], next)
        .await;
    assert_eq!(outcomes, vec![MatchOutcome::Joined(second.clone())]);
    assert_eq!(f.alert(&first).await.event_count, 2);
}

#[tokio::test]
async fn a_replayed_detection_is_seen_and_not_counted_again() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let now = t0();
    let detections = [
        brute("d1", IP_A, "2026-11-25T09:59:58.000Z"),
        brute("d2", IP_A, "2026-11-25T09:59:59.000Z"),
    ];
    let outcomes = f.record_and_take(&detections, now).await;
    let Some(MatchOutcome::Created(id)) = outcomes.first() else {
        panic!("expected a new alert, got {outcomes:?}");
    };
    let before = f.notifications(id).await;

    let replayed = f.replay(&detections, now + minutes(2)).await;
    assert_eq!(replayed, vec![MatchOutcome::Seen, MatchOutcome::Seen]);
    // Recording them again changes nothing either (the detector's replay after a crash).
    f.record(&detections).await;
    assert!(
        f.take(now + minutes(3)).await.is_empty(),
        "already-recorded detections are not new rows"
    );

    let alert = f.alert(id).await;
    assert_eq!(alert.event_count, 2, "a replay is not counted");
    assert_eq!(f.notifications(id).await, before, "a replay sends nothing");
    assert_eq!(f.alerts().samples(id).await.expect("samples").len(), 2);
}

// --- Actions ------------------------------------------------------------------------------

#[tokio::test]
async fn acknowledge_records_the_actor_and_notifies_every_destination() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let id = f.open_alert("d1", IP_A, t0()).await;
    let at = t0() + minutes(2);

    let outcome = f
        .alerts()
        .act(&id, &Action::Acknowledge, "alice", at)
        .await
        .expect("acknowledge");
    let ActionOutcome::Done(alert) = outcome else {
        panic!("expected the acknowledge done, got {outcome:?}");
    };
    assert_eq!(alert.status, AlertStatus::Acknowledged);
    assert_eq!(alert.updated_at, stamp(at));
    assert_eq!(f.alert(&id).await.status, AlertStatus::Acknowledged);

    let history = f.alerts().history(&id).await.expect("history");
    let last = history.last().expect("a history entry");
    assert_eq!(last.action, "acknowledged");
    assert_eq!(last.actor, "alice");
    assert_eq!(last.at, stamp(at));

    let notifications = f.notifications(&id).await;
    for destination in ["chat", "hook"] {
        let acks = of(&notifications, NotificationKind::Acknowledge, destination);
        assert_eq!(
            acks.len(),
            1,
            "one acknowledge to {destination}: {notifications:?}"
        );
        assert_eq!(acks[0].status, "pending");
    }

    // Again: nothing to do, nothing sent.
    let again = f
        .alerts()
        .act(&id, &Action::Acknowledge, "alice", at + minutes(1))
        .await
        .expect("acknowledge again");
    assert!(matches!(again, ActionOutcome::Unchanged(_)), "{again:?}");
    assert_eq!(f.notifications(&id).await, notifications);

    // Matches still join an acknowledged alert, and still update.
    let join = at + minutes(1);
    let outcomes = f
        .record_and_take(&[brute("d2", IP_A, &stamp(join))], join)
        .await;
    assert_eq!(outcomes, vec![MatchOutcome::Joined(id.clone())]);
    let notifications = f.notifications(&id).await;
    assert_eq!(
        of(&notifications, NotificationKind::Update, "hook").len(),
        1
    );
}

#[tokio::test]
async fn resolve_skips_pending_updates_notifies_once_and_ends_the_group() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let id = f.open_alert("d1", IP_A, t0()).await;
    let join = t0() + minutes(1);
    f.record_and_take(&[brute("d2", IP_A, &stamp(join))], join)
        .await;
    let pending_update = of(
        &f.notifications(&id).await,
        NotificationKind::Update,
        "hook",
    )
    .first()
    .map(|n| (n.id, n.status.clone()))
    .expect("a pending update");
    assert_eq!(pending_update.1, "pending");

    let at = t0() + minutes(3);
    let resolve = Action::Resolve {
        reason: Some("blocked at the firewall".into()),
    };
    let outcome = f
        .alerts()
        .act(&id, &resolve, "bob", at)
        .await
        .expect("resolve");
    let ActionOutcome::Done(alert) = outcome else {
        panic!("expected the resolve done, got {outcome:?}");
    };
    assert_eq!(alert.status, AlertStatus::Resolved);
    assert_eq!(alert.resolved_at.as_deref(), Some(stamp(at).as_str()));

    let notifications = f.notifications(&id).await;
    let update = notifications
        .iter()
        .find(|n| n.id == pending_update.0)
        .expect("the update is still listed");
    assert_eq!(update.status, "skipped", "{update:?}");
    assert!(
        notifications
            .iter()
            .all(|n| !(n.kind == NotificationKind::Update && n.status == "pending")),
        "no update left pending: {notifications:?}"
    );
    for destination in ["chat", "hook"] {
        let resolves = of(&notifications, NotificationKind::Resolve, destination);
        assert_eq!(
            resolves.len(),
            1,
            "one resolve to {destination}: {notifications:?}"
        );
        assert_eq!(resolves[0].status, "pending");
    }
    let history = f.alerts().history(&id).await.expect("history");
    let last = history.last().expect("a history entry");
    assert_eq!(
        (
            last.action.as_str(),
            last.actor.as_str(),
            last.detail.as_deref()
        ),
        ("resolved", "bob", Some("blocked at the firewall"))
    );

    // Resolving again changes nothing.
    let again = f
        .alerts()
        .act(&id, &resolve, "bob", at + minutes(1))
        .await
        .expect("resolve again");
    let ActionOutcome::Unchanged(unchanged) = again else {
        panic!("expected Unchanged, got {again:?}");
    };
    assert_eq!(unchanged.resolved_at.as_deref(), Some(stamp(at).as_str()));
    assert_eq!(f.notifications(&id).await, notifications);
    assert_eq!(f.alerts().history(&id).await.expect("history"), history);

    // A match of the group after the resolve opens a new alert (inside `for`).
    let next = t0() + minutes(4);
    let outcomes = f
        .record_and_take(&[brute("d3", IP_A, &stamp(next))], next)
        .await;
    assert!(
        matches!(outcomes.as_slice(), [MatchOutcome::Created(new)] if *new != id),
        "{outcomes:?}"
    );
    assert_eq!(f.alert(&id).await.event_count, 2);
}

#[tokio::test]
async fn a_suppressed_alert_counts_matches_but_sends_no_updates() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let id = f.open_alert("d1", IP_A, t0()).await;
    let before = f.notifications(&id).await;

    let at = t0() + minutes(1);
    let outcome = f
        .alerts()
        .act(&id, &Action::Suppress, "carol", at)
        .await
        .expect("suppress");
    assert!(
        matches!(&outcome, ActionOutcome::Done(a) if a.status == AlertStatus::Suppressed),
        "{outcome:?}"
    );
    // Suppressing sends nothing, and cancels what was still waiting to go out.
    let after = f.notifications(&id).await;
    assert_eq!(after.len(), before.len(), "suppressing sends nothing");
    assert!(
        after.iter().all(|n| n.status == "skipped"
            && n.last_error.as_deref() == Some("the alert was suppressed")),
        "{after:?}"
    );
    let history = f.alerts().history(&id).await.expect("history");
    let last = history.last().expect("a history entry");
    assert_eq!(
        (last.action.as_str(), last.actor.as_str()),
        ("suppressed", "carol")
    );

    let later = t0() + minutes(2);
    let outcomes = f
        .record_and_take(
            &[
                brute("d2", IP_A, &stamp(later)),
                brute("d3", IP_A, &stamp(later)),
            ],
            later,
        )
        .await;
    assert_eq!(
        outcomes,
        vec![
            MatchOutcome::Joined(id.clone()),
            MatchOutcome::Joined(id.clone())
        ]
    );
    let alert = f.alert(&id).await;
    assert_eq!(
        alert.event_count, 3,
        "matches of a suppressed alert are counted"
    );
    assert_eq!(alert.status, AlertStatus::Suppressed);
    let notifications = f.notifications(&id).await;
    assert!(
        notifications
            .iter()
            .all(|n| n.kind != NotificationKind::Update),
        "no update for a suppressed alert: {notifications:?}"
    );
    assert_eq!(notifications, after);
}

#[tokio::test]
async fn acting_on_an_unknown_alert_is_not_found() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    f.open_alert("d1", IP_A, t0()).await;
    for action in [
        Action::Acknowledge,
        Action::Resolve { reason: None },
        Action::Suppress,
        Action::Note("hello".into()),
    ] {
        let outcome = f
            .alerts()
            .act("00000000000000000000000000000000", &action, "alice", t0())
            .await
            .expect("act");
        assert_eq!(outcome, ActionOutcome::NotFound, "{action:?}");
    }
    assert!(
        f.alerts()
            .history("00000000000000000000000000000000")
            .await
            .expect("history")
            .is_empty()
    );
}

#[tokio::test]
async fn quiet_alerts_are_due_for_resolve_only_after_their_quiet_period() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let start = t0();
    let id = f.open_alert("d1", IP_A, start).await;
    let outcomes = f
        .record_and_take(
            &[detection("q1", FOREVER, IP_B, "db-1", &stamp(start))],
            start,
        )
        .await;
    let [MatchOutcome::Created(forever)] = outcomes.as_slice() else {
        panic!("expected a new alert, got {outcomes:?}");
    };
    let fx = &f;
    let due = |now| async move {
        fx.alerts()
            .due_for_resolve(now)
            .await
            .expect("due for resolve")
    };

    // `resolve_after = "15m"` from the last match.
    assert!(due(start + minutes(14)).await.is_empty());
    assert_eq!(due(start + minutes(15)).await, vec![id.clone()]);

    // A match at +9m (inside `for`) moves the quiet period's end to +24m.
    let join = start + minutes(9);
    let outcomes = f
        .record_and_take(&[brute("d2", IP_A, &stamp(join))], join)
        .await;
    assert_eq!(outcomes, vec![MatchOutcome::Joined(id.clone())]);
    assert!(due(start + minutes(16)).await.is_empty());
    assert!(due(start + minutes(23)).await.is_empty());
    assert_eq!(due(start + minutes(24)).await, vec![id.clone()]);

    // `resolve_after = 0`: never, however long it is quiet.
    let year = start + chrono::Duration::days(365);
    assert_eq!(due(year).await, vec![id.clone()]);
    assert!(!due(year).await.contains(forever));

    // Resolved: no longer due.
    f.alerts()
        .act(
            &id,
            &Action::Resolve { reason: None },
            "yagura",
            start + minutes(24),
        )
        .await
        .expect("resolve");
    assert!(due(year).await.is_empty());
}

// --- Outbox order -------------------------------------------------------------------------

#[tokio::test]
async fn a_resolve_is_not_due_while_its_trigger_is_unsent() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let start = t0();
    let id = f.open_alert("d1", IP_A, start).await;
    f.alerts()
        .act(&id, &Action::Acknowledge, "alice", start + minutes(1))
        .await
        .expect("acknowledge");
    f.alerts()
        .act(
            &id,
            &Action::Resolve { reason: None },
            "alice",
            start + minutes(2),
        )
        .await
        .expect("resolve");
    let now = start + minutes(3);
    let kinds = |due: Vec<Notification>| -> Vec<(NotificationKind, String)> {
        due.into_iter().map(|n| (n.kind, n.destination)).collect()
    };
    let fx = &f;
    let due = |destination: &'static str, at| async move {
        fx.alerts().due(destination, at, 50).await.expect("due")
    };

    let first = due("hook", now).await;
    assert_eq!(
        kinds(first.clone()),
        vec![(NotificationKind::Trigger, "hook".to_string())],
        "only the trigger is due while it is unsent"
    );
    let trigger = first[0].id;

    // The trigger failed an attempt and waits for its retry: still nothing overtakes it.
    f.alerts()
        .mark_retry(trigger, 1, now + minutes(10), "HTTP 503")
        .await
        .expect("mark retry");
    assert!(
        due("hook", now + minutes(1)).await.is_empty(),
        "a resolve must not overtake a trigger waiting for its retry"
    );

    // Another destination's trigger does not hold this one's back, and vice versa.
    assert_eq!(
        kinds(due("chat", now).await),
        vec![(NotificationKind::Trigger, "chat".to_string())]
    );

    f.alerts()
        .mark_sent(trigger, 2, now + minutes(1))
        .await
        .expect("mark sent");
    let next = due("hook", now + minutes(1)).await;
    assert_eq!(
        kinds(next.clone()),
        vec![(NotificationKind::Acknowledge, "hook".to_string())],
        "the acknowledge follows the trigger, the resolve waits for it"
    );
    f.alerts()
        .mark_sent(next[0].id, 1, now + minutes(1))
        .await
        .expect("mark sent");
    assert_eq!(
        kinds(due("hook", now + minutes(1)).await),
        vec![(NotificationKind::Resolve, "hook".to_string())],
        "the resolve is due once everything before it is sent"
    );
    // Chat's trigger is still unsent: its resolve still waits.
    assert_eq!(
        kinds(due("chat", now + minutes(1)).await),
        vec![(NotificationKind::Trigger, "chat".to_string())]
    );
}

// --- The sender ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_triggers_are_held_in_one_summary() {
    let cancel = CancellationToken::new();
    let receiver = Receiver::start(200, &cancel).await;
    let f = Fixture::new(
        &receiver.destination("rate_limit_per_minute = 2"),
        &["hook"],
    )
    .await;
    let now = Utc::now();
    let detections: Vec<StoredDetection> = (0..5)
        .map(|i| {
            brute(
                &format!("d{i}"),
                &format!("192.0.2.{}", 10 + i),
                &stamp(now),
            )
        })
        .collect();
    let outcomes = f.record_and_take(&detections, now).await;
    let ids: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            MatchOutcome::Created(id) => id.clone(),
            other => panic!("expected five new alerts, got {other:?}"),
        })
        .collect();

    let tasks = f.start_sender(quick_retry(Duration::from_secs(60)), &cancel);
    let alerts = f.alerts().clone();
    let summarized = wait_for("three triggers held for the summary", || async {
        let held = alerts
            .outbox(Some("summarized"), 100)
            .await
            .expect("outbox");
        (held.len() == 3).then_some(held)
    })
    .await;
    wait_for("two triggers delivered", || async {
        (receiver.requests().len() >= 2).then_some(())
    })
    .await;
    // The summary is due when the window frees up (a minute): nothing else goes out now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(&cancel, tasks).await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "exactly the limit is delivered");
    let delivered: Vec<String> = requests
        .iter()
        .map(|r| {
            assert_eq!(r.kind(), "alert.trigger");
            r.json()["alert"]["id"]
                .as_str()
                .expect("alert id")
                .to_string()
        })
        .collect();
    assert_eq!(delivered, ids[..2].to_vec(), "the oldest pages go first");

    let sent = alerts.outbox(Some("sent"), 100).await.expect("outbox");
    assert_eq!(sent.len(), 2);
    let mut held_ids: Vec<String> = summarized
        .iter()
        .map(|n| {
            assert_eq!(n.kind, NotificationKind::Trigger);
            n.alert_id.clone().expect("a trigger has its alert")
        })
        .collect();
    held_ids.sort();
    let mut expected_held = ids[2..].to_vec();
    expected_held.sort();
    assert_eq!(held_ids, expected_held);

    let pending = alerts.outbox(Some("pending"), 100).await.expect("outbox");
    let summaries: Vec<&Notification> = pending
        .iter()
        .filter(|n| n.kind == NotificationKind::Summary)
        .collect();
    assert_eq!(summaries.len(), 1, "one summary: {pending:?}");
    assert_eq!(pending.len(), 1, "nothing else pending: {pending:?}");
    let summary = summaries[0];
    assert_eq!(summary.alert_id, None);
    assert_eq!(summary.destination, "hook");
    let detail: Summary = serde_json::from_str(summary.detail.as_deref().expect("summary detail"))
        .expect("summary detail is a Summary");
    let mut listed: Vec<String> = detail.held.iter().map(|h| h.alert_id.clone()).collect();
    listed.sort();
    assert_eq!(listed, expected_held, "the summary lists the held alerts");
    for held in &detail.held {
        assert_eq!(held.kind, "trigger");
        assert_eq!(held.rule_title, BRUTE);
        assert_eq!(held.level.as_deref(), Some("high"));
        assert_eq!(held.event_count, 1);
    }
    for n in &summarized {
        assert_eq!(
            n.last_error.as_deref(),
            Some(format!("rate limit: in summary {}", summary.id).as_str())
        );
    }
    let stats = f.service.stats();
    assert_eq!(stats.sent.load(Ordering::Relaxed), 2);
    assert_eq!(stats.held.load(Ordering::Relaxed), 3);
}

/// An alert paged to a webhook whose receiver answers `status`, before any sender runs.
struct Hooked {
    cancel: CancellationToken,
    receiver: Receiver,
    f: Fixture,
    id: String,
    trigger: super::Notification,
}

async fn hooked_alert(status: u16) -> Hooked {
    let cancel = CancellationToken::new();
    let receiver = Receiver::start(status, &cancel).await;
    let f = Fixture::new(&receiver.destination(""), &["hook"]).await;
    let id = f.open_alert("d1", IP_A, Utc::now()).await;
    let trigger = of(
        &f.notifications(&id).await,
        NotificationKind::Trigger,
        "hook",
    )[0]
    .clone();
    Hooked {
        cancel,
        receiver,
        f,
        id,
        trigger,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notification_is_failed_at_once() {
    let Hooked {
        cancel,
        receiver,
        f,
        id,
        trigger,
    } = hooked_alert(400).await;
    let trigger = trigger.id;

    let tasks = f.start_sender(quick_retry(Duration::from_secs(60)), &cancel);
    let done = settled(f.alerts(), &id, trigger).await;
    // Give a (wrong) retry the time it would take to show.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop(&cancel, tasks).await;

    assert_eq!(done.status, "failed", "{done:?}");
    assert_eq!(done.attempts, 1, "a 4xx is not retried: {done:?}");
    let error = done.last_error.as_deref().expect("the failure is recorded");
    assert!(
        error.contains("400"),
        "the HTTP status is in the error: {error}"
    );
    assert_eq!(receiver.requests().len(), 1, "tried once");
    let stats = f.service.stats();
    assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.retries.load(Ordering::Relaxed), 0);
    assert_eq!(stats.sent.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_past_the_retry_budget_fails_the_notification_after_retries() {
    let Hooked {
        cancel,
        receiver,
        f,
        id,
        trigger,
    } = hooked_alert(503).await;
    let trigger = trigger.id;

    let tasks = f.start_sender(quick_retry(Duration::from_secs(1)), &cancel);
    let done = settled(f.alerts(), &id, trigger).await;
    stop(&cancel, tasks).await;

    assert_eq!(done.status, "failed", "{done:?}");
    assert!(done.attempts > 1, "retried before giving up: {done:?}");
    // Backoff of 100 ms then 200 ms over a one-second budget: a handful of attempts, not
    // a hammering.
    assert!(done.attempts <= 12, "the backoff spaces attempts: {done:?}");
    assert_eq!(done.sent_at, None);
    let error = done.last_error.as_deref().expect("the failure is recorded");
    assert!(error.contains("503"), "{error}");

    let requests = receiver.requests();
    assert_eq!(
        requests.len() as u64,
        done.attempts,
        "every attempt reached the receiver"
    );
    let delivery = format!("{id}-{trigger}");
    for request in &requests {
        assert_eq!(
            request.header(webhook::DELIVERY_HEADER),
            delivery,
            "every retry carries the same delivery id"
        );
    }
    let stats = f.service.stats();
    assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.retries.load(Ordering::Relaxed), done.attempts - 1);
    assert_eq!(stats.sent.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_notification_is_sent_and_signed() {
    let Hooked {
        cancel,
        receiver,
        f,
        id,
        trigger,
    } = hooked_alert(200).await;

    let tasks = f.start_sender(quick_retry(Duration::from_secs(60)), &cancel);
    let done = settled(f.alerts(), &id, trigger.id).await;
    stop(&cancel, tasks).await;

    assert_eq!(done.status, "sent", "{done:?}");
    assert_eq!(done.attempts, 1);
    assert_eq!(done.last_error, None);
    let sent_at = done.sent_at.as_deref().expect("sent_at is set");
    assert!(
        DateTime::parse_from_rfc3339(sent_at).is_ok() && sent_at >= done.created_at.as_str(),
        "{done:?}"
    );

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let timestamp = request.header(webhook::TIMESTAMP_HEADER);
    let signature = request.header(webhook::SIGNATURE_HEADER);
    assert!(
        webhook::verify(SECRET.as_bytes(), &timestamp, &request.body, &signature),
        "the signature verifies with the destination's secret"
    );
    assert!(!webhook::verify(
        b"another secret",
        &timestamp,
        &request.body,
        &signature
    ));
    let age = Utc::now().timestamp() - timestamp.parse::<i64>().expect("a Unix time");
    assert!((0..60).contains(&age), "the timestamp is fresh: {age}");
    assert_eq!(
        request.header(webhook::DELIVERY_HEADER),
        trigger.delivery_id()
    );
    assert_eq!(request.header("content-type"), "application/json");
    let body = request.json();
    assert_eq!(body["type"], "alert.trigger");
    assert_eq!(body["alert"]["id"], id.as_str());
    assert_eq!(body["alert"]["rule"]["title"], BRUTE);
    assert_eq!(
        body["link"],
        format!("https://yagura.example:8443/alerts/{id}").as_str()
    );
    assert_eq!(f.service.stats().sent.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_delivers_the_resolve_after_its_trigger() {
    let cancel = CancellationToken::new();
    let receiver = Receiver::start(200, &cancel).await;
    let f = Fixture::new(&receiver.destination(""), &["hook"]).await;
    let id = f.open_alert("d1", IP_A, Utc::now()).await;
    let outcome = f
        .service
        .act(&id, &Action::Resolve { reason: None }, "alice")
        .await
        .expect("resolve");
    assert!(matches!(outcome, ActionOutcome::Done(_)), "{outcome:?}");

    let tasks = f.start_sender(quick_retry(Duration::from_secs(60)), &cancel);
    let alerts = f.alerts().clone();
    let notifications = wait_for("trigger and resolve sent", || async {
        let all = alerts.notifications_of(&id).await.expect("notifications");
        all.iter().all(|n| n.status != "pending").then_some(all)
    })
    .await;
    stop(&cancel, tasks).await;

    assert!(
        notifications.iter().all(|n| n.status == "sent"),
        "{notifications:?}"
    );
    let kinds: Vec<String> = receiver.requests().iter().map(Received::kind).collect();
    assert_eq!(kinds, vec!["alert.trigger", "alert.resolve"]);
}

/// "Muted by a responder: matches join it and are counted, nothing is sent" (model.rs):
/// a count update scheduled before the alert was suppressed must not go out after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_scheduled_before_a_suppress_is_not_sent_after_it() {
    let cancel = CancellationToken::new();
    let receiver = Receiver::start(200, &cancel).await;
    let f = Fixture::new(&receiver.destination(""), &["hook"]).await;
    let now = Utc::now();
    let outcomes = f
        .record_and_take(&[detection("f1", FAST, IP_A, "web-1", &stamp(now))], now)
        .await;
    let [MatchOutcome::Created(id)] = outcomes.as_slice() else {
        panic!("expected a new alert, got {outcomes:?}");
    };
    let tasks = f.start_sender(quick_retry(Duration::from_secs(60)), &cancel);
    wait_for("the page delivered", || async {
        (receiver.requests().len() == 1).then_some(())
    })
    .await;

    // A match joins (its update due a second later), then the responder mutes the alert.
    let later = Utc::now();
    let outcomes = f
        .record_and_take(
            &[detection("f2", FAST, IP_A, "web-1", &stamp(later))],
            later,
        )
        .await;
    assert_eq!(outcomes, vec![MatchOutcome::Joined(id.clone())]);
    let update = of(&f.notifications(id).await, NotificationKind::Update, "hook")[0].id;
    let outcome = f
        .service
        .act(id, &Action::Suppress, "carol")
        .await
        .expect("suppress");
    assert!(matches!(outcome, ActionOutcome::Done(_)), "{outcome:?}");

    let done = settled(f.alerts(), id, update).await;
    stop(&cancel, tasks).await;
    let kinds: Vec<String> = receiver.requests().iter().map(Received::kind).collect();
    assert_eq!(kinds, vec!["alert.trigger"], "nothing after the suppress");
    assert_ne!(done.status, "sent", "{done:?}");
}

/// A destination taken out of the configuration leaves nothing pending forever: its
/// notifications are failed, visibly.
#[tokio::test]
async fn notifications_for_an_unconfigured_destination_are_failed() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let id = f.open_alert("d1", IP_A, t0()).await;
    let failed = f
        .alerts()
        .fail_unconfigured(&["chat".to_string()])
        .await
        .expect("fail unconfigured");
    assert_eq!(failed, 1);
    let notifications = f.notifications(&id).await;
    let hook = notifications
        .iter()
        .find(|n| n.destination == "hook")
        .expect("the hook's page");
    assert_eq!(hook.status, "failed");
    assert_eq!(
        hook.last_error.as_deref(),
        Some("destination no longer configured")
    );
    let chat = notifications
        .iter()
        .find(|n| n.destination == "chat")
        .expect("the chat's page");
    assert_eq!(chat.status, "pending");
}

/// A flood of matches is counted in full but keeps only the first matches as samples
/// (the table does not grow with the flood).
#[tokio::test]
async fn a_flood_is_counted_but_only_the_first_matches_are_kept_as_samples() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let now = t0();
    let flood: Vec<StoredDetection> = (0..30)
        .map(|i| brute(&format!("d{i}"), IP_A, &stamp(now)))
        .collect();
    let outcomes = f.record_and_take(&flood, now).await;
    let MatchOutcome::Created(id) = &outcomes[0] else {
        panic!("the first match opens the alert: {outcomes:?}");
    };
    assert_eq!(f.alert(id).await.event_count, 30);
    let samples = f.alerts().samples(id).await.expect("samples");
    assert_eq!(samples.len(), super::store::SAMPLES as usize);
    assert_eq!(samples[0].detection_id, "d0");
}

/// Delivered notifications are deleted after their time; failed and pending ones stay.
#[tokio::test]
async fn pruning_the_outbox_keeps_what_was_not_delivered() {
    let f = Fixture::new(TWO_DESTINATIONS, &["hook"]).await;
    let id = f.open_alert("d1", IP_A, t0()).await;
    let notifications = f.notifications(&id).await;
    let (sent, kept) = (&notifications[0], &notifications[1]);
    f.alerts()
        .mark_sent(sent.id, 1, t0())
        .await
        .expect("mark sent");
    assert_eq!(
        f.alerts().prune_outbox(t0()).await.expect("prune"),
        0,
        "nothing older than the cut-off"
    );
    assert_eq!(
        f.alerts()
            .prune_outbox(t0() + minutes(1))
            .await
            .expect("prune"),
        1
    );
    let left = f.notifications(&id).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, kept.id);
    assert_eq!(left[0].status, "pending");
}
