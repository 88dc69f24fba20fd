-- Alerts: what an on-call responder is paged for. Matches of a rule that share a group
-- key (the rule and the values of its policy's `by` fields) while the alert is open are
-- one alert with a count, not one page each. The id is deterministic (rule, group key
-- and the first match's id), so replaying detections after a crash finds the same alert.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY NOT NULL,
    rule_id TEXT,
    rule_title TEXT NOT NULL,
    level TEXT,
    tags TEXT NOT NULL,
    runbook TEXT,
    policy TEXT NOT NULL,
    group_key TEXT NOT NULL,
    group_fields TEXT NOT NULL,
    -- open, acknowledged, resolved or suppressed
    status TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    -- Wall-clock time of the last match; the alert resolves itself at resolve_at (the
    -- last match plus the policy's quiet period; NULL: never).
    last_match_at TEXT NOT NULL,
    resolve_at TEXT,
    resolve_after_seconds BIGINT,
    -- Matches of the group join this alert until then (creation plus the policy's `for`).
    suppress_until TEXT NOT NULL,
    update_interval_seconds BIGINT NOT NULL,
    event_count BIGINT NOT NULL,
    host TEXT,
    agent_id TEXT,
    assignee TEXT,
    destinations TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    resolved_at TEXT
);
CREATE INDEX alerts_by_group ON alerts (group_key, status, created_at);
CREATE INDEX alerts_by_resolve_at ON alerts (resolve_at);
CREATE INDEX alerts_by_updated ON alerts (updated_at);

-- The first matches taken into an alert (its samples, twenty; all are counted in the
-- alert's event_count).
CREATE TABLE alert_matches (
    detection_id TEXT PRIMARY KEY NOT NULL,
    alert_id TEXT NOT NULL,
    event_id TEXT,
    archive_offset BIGINT NOT NULL,
    event_time TEXT
);
CREATE INDEX alert_matches_by_alert ON alert_matches (alert_id);

-- Every change to an alert and who made it (`yagura` for the collector itself).
CREATE TABLE alert_history (
    id INTEGER PRIMARY KEY NOT NULL,
    alert_id TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX alert_history_by_alert ON alert_history (alert_id, id);

-- The durable outbox: a notification is written in the same transaction as the alert
-- change that calls for it, then sent, retried with backoff, and marked sent or failed;
-- never deleted unsent.
CREATE TABLE alert_outbox (
    id INTEGER PRIMARY KEY NOT NULL,
    alert_id TEXT,
    destination TEXT NOT NULL,
    -- trigger, update, resolve or summary
    kind TEXT NOT NULL,
    -- pending, sent, failed, summarized or skipped
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    -- A summary's text (the notifications it stands for); other kinds are rendered from
    -- the alert when sent, so a late message carries the latest count.
    detail TEXT,
    -- For a notification held by the rate limit: the summary that carries it (what comes
    -- after it for the same alert waits for that summary).
    summary_id BIGINT,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX alert_outbox_due ON alert_outbox (destination, status, id);
CREATE INDEX alert_outbox_by_status ON alert_outbox (status, id);
CREATE INDEX alert_outbox_by_alert ON alert_outbox (alert_id, destination, status);

-- How far the alert manager has read the detections table (by rowid), written in the
-- same transaction as the alerts those detections changed.
CREATE TABLE alert_cursor (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    detection_rowid BIGINT NOT NULL
);
