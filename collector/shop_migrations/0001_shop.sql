-- The shop's schema, in SQL both SQLite and PostgreSQL run (in PostgreSQL, inside schema
-- `shop`). Times are Unix milliseconds; ids are UUID text; flags are 0/1 integers.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('customer', 'analyst', 'admin')),
    created_at BIGINT NOT NULL,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    -- The TOTP secret, encrypted with the field keyring (bound to the user id).
    totp_secret TEXT,
    -- 0 or 1 (a portable integer: the Any driver maps no SQLite boolean).
    totp_enabled BIGINT NOT NULL DEFAULT 0 CHECK (totp_enabled IN (0, 1)),
    totp_last_step BIGINT
);

CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- Sessions by the SHA-256 of their id: a copy of this table opens no session.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    -- 'mfa' between password and second factor, 'full' after.
    stage TEXT NOT NULL CHECK (stage IN ('mfa', 'full')),
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE carts (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    updated_at BIGINT NOT NULL
);

CREATE TABLE cart_items (
    cart_id TEXT NOT NULL REFERENCES carts (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    sku TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (cart_id, sku)
);

-- Phone and address are stored encrypted (field keyring, bound to id and field).
CREATE TABLE form_submissions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    phone_enc TEXT NOT NULL,
    address_enc TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX form_submissions_by_user ON form_submissions (user_id, created_at);

-- The hash-chained audit trail: append-only.
CREATE TABLE audit_log (
    sequence BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    previous_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- How far the audit trail has been handed to the collector's archive. A batch is
-- announced (pending) before it is appended, so a crash between the two is resolved
-- at the next start without losing or repeating a record.
CREATE TABLE audit_forwarding (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    through_sequence BIGINT NOT NULL,
    pending_batch BIGINT,
    pending_through BIGINT
);
INSERT INTO audit_forwarding (id, through_sequence) VALUES (1, 0);
