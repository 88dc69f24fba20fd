-- Allowlist policies assigned to agents by label. Each row is a policy as signed by the
-- collector (text and detached signature, byte for byte as agents verify them) and the
-- labels an agent must all carry to get it; the most specific match wins (most labels,
-- then name). Agents fetch nothing: ingest answers carry the policy to an agent whose
-- policy differs (see yagura_shared::policy_delivery).
CREATE TABLE allowlist_assignments (
    name TEXT PRIMARY KEY NOT NULL,
    -- JSON object of label = value; {} matches every agent
    selector TEXT NOT NULL,
    policy TEXT NOT NULL,
    signature TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    assigned_at TEXT NOT NULL
);
