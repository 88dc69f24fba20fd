-- Matches of detection rules, one row per match. The id is the detector's deterministic
-- match id (rule + event, or rule + group + window start), so a match found again when
-- the archive is replayed after a crash is the same row, not a second one.
CREATE TABLE detections (
    id TEXT PRIMARY KEY NOT NULL,
    rule_id TEXT,
    rule_title TEXT NOT NULL,
    level TEXT,
    kind TEXT NOT NULL,
    event_time TEXT,
    event_id TEXT,
    -- The archive record holding the event that completed the match.
    archive_offset BIGINT NOT NULL,
    body TEXT NOT NULL,
    detected_at TEXT NOT NULL
);
CREATE INDEX detections_by_detected_at ON detections (detected_at);

-- Where the live detector is in the archive and its correlation windows there, written in
-- the same transaction as the matches up to that point.
CREATE TABLE detector_state (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    archive_offset BIGINT NOT NULL,
    snapshot TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
