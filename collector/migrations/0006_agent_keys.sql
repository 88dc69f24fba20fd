-- Keys an agent signed with before it rotated to its current one (agents.public_key).
-- Each covers the sequence numbers below until_sequence (and from the previous retired
-- key's until_sequence on), so batches archived before a rotation keep verifying — at
-- ingest while the agent's spool drains, and in custody checks for as long as they are
-- kept.
CREATE TABLE agent_retired_keys (
    agent_id TEXT NOT NULL REFERENCES agents (id),
    public_key TEXT NOT NULL,
    until_sequence INTEGER NOT NULL,
    retired_at TEXT NOT NULL,
    PRIMARY KEY (agent_id, until_sequence)
);

-- Every rotation done, as asked: a retried request is recognised by its new key and
-- sequence (and checked against the key it moved from), even when two rotations share a
-- sequence number and only the first key kept a range above.
CREATE TABLE agent_key_rotations (
    agent_id TEXT NOT NULL REFERENCES agents (id),
    from_key TEXT NOT NULL,
    to_key TEXT NOT NULL,
    from_sequence INTEGER NOT NULL,
    rotated_at TEXT NOT NULL,
    PRIMARY KEY (agent_id, to_key)
);
