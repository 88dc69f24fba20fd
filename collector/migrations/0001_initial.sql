-- Agents enrolled with this collector and the public key that signs their batches.
CREATE TABLE agents (
    id TEXT PRIMARY KEY NOT NULL,
    public_key TEXT NOT NULL,
    hostname TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    enrolled_at TEXT NOT NULL
);

-- Enrollment tokens: only the SHA-256 of the token is kept.
CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    uses_left INTEGER NOT NULL
);

-- API bearer tokens: only the SHA-256 of the token is kept.
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
