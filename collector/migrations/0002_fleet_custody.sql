-- Labels given to an enrollment token are copied to every agent enrolled with it.
ALTER TABLE enrollment_tokens ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';

-- `kind` is 'agent' for enrolled endpoints and 'collector' for the collector's own
-- signing identity (the batches of events it raises itself).
ALTER TABLE agents ADD COLUMN kind TEXT NOT NULL DEFAULT 'agent';
ALTER TABLE agents ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN revoked_at TEXT;

-- Fleet state, written by the collector's fleet monitor every few seconds from memory
-- (last seen, heartbeat figures, connectivity). One row per agent that ever sent a batch.
CREATE TABLE agent_state (
    agent_id TEXT PRIMARY KEY NOT NULL,
    last_seen_at TEXT NOT NULL,
    last_peer TEXT NOT NULL,
    last_sequence BIGINT NOT NULL,
    connectivity TEXT NOT NULL,
    agent_version TEXT,
    uptime_seconds BIGINT,
    spool_batches BIGINT,
    spool_bytes BIGINT,
    lag_bytes BIGINT,
    heartbeat_at TEXT
);
