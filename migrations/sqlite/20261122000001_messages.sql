-- The embedded queue: the same model as PostgreSQL's, in SQLite's types.
-- Ids are UUID text; times are microseconds since the Unix epoch (UTC); lists and maps are JSON text.
CREATE TABLE messages (
    id                 TEXT    PRIMARY KEY NOT NULL,
    caller             TEXT    NOT NULL,
    status             TEXT    NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'cancelled')),
    message_id         TEXT    NOT NULL,
    envelope           TEXT    NOT NULL,
    body               TEXT    NOT NULL,
    tags               TEXT    NOT NULL DEFAULT '[]',
    metadata           TEXT    NOT NULL DEFAULT '{}',
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    send_at            INTEGER,
    -- When the row may next be claimed: its send time, its retry time, or (while sending) its lease expiry.
    due_at             INTEGER NOT NULL,
    attempt_count      INTEGER NOT NULL DEFAULT 0,
    lease_token        TEXT,
    pending_recipients TEXT,
    sent_at            INTEGER,
    finished_at        INTEGER,
    last_error         TEXT
);

-- Only unfinished rows are in the claim index, so sent history never slows the claim path.
CREATE INDEX messages_due_idx ON messages (due_at) WHERE status IN ('queued', 'sending');
CREATE INDEX messages_caller_id_idx ON messages (caller, id DESC);

CREATE TABLE delivery_attempts (
    message_id    TEXT    NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    attempt       INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    provider      TEXT    NOT NULL,
    outcome       TEXT    NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'unknown')),
    smtp_code     INTEGER,
    enhanced_code TEXT,
    response      TEXT,
    recipients    TEXT    NOT NULL DEFAULT '[]',
    PRIMARY KEY (message_id, attempt)
);

CREATE TABLE idempotency_keys (
    caller      TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    message_id  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
