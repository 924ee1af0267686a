-- The queue: one row per accepted message. A row is a job until it is sent, failed or cancelled.
CREATE TABLE messages (
    id            uuid        PRIMARY KEY,
    caller        text        NOT NULL,
    status        text        NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'cancelled')),
    message_id    text        NOT NULL,
    -- Addresses and subject (read by listings); bodies, headers and attachments (read by delivery).
    envelope      jsonb       NOT NULL,
    body          jsonb       NOT NULL,
    tags          text[]      NOT NULL DEFAULT '{}',
    metadata      jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    send_at       timestamptz,
    -- When the row may next be claimed: its send time, its retry time, or (while sending) its lease expiry.
    due_at        timestamptz NOT NULL DEFAULT now(),
    attempt_count integer     NOT NULL DEFAULT 0,
    -- Fences outcome writes: only the worker holding the current lease may record one.
    lease_token   uuid,
    -- Recipients still to be tried after a partial delivery; NULL means all of them.
    pending_recipients text[],
    sent_at       timestamptz,
    finished_at   timestamptz,
    last_error    text
);

-- The claim path reads only unfinished rows, so the history of sent mail never slows it down.
CREATE INDEX messages_due_idx ON messages (due_at) WHERE status IN ('queued', 'sending');
CREATE INDEX messages_caller_id_idx ON messages (caller, id DESC);
CREATE INDEX messages_tags_idx ON messages USING gin (tags);

-- One row per delivery attempt, with the SMTP reply that decided it.
CREATE TABLE delivery_attempts (
    message_id    uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    attempt       integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   integer     NOT NULL,
    provider      text        NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'unknown')),
    smtp_code     smallint,
    enhanced_code text,
    response      text,
    recipients    jsonb       NOT NULL DEFAULT '[]',
    PRIMARY KEY (message_id, attempt)
);

-- Idempotency keys, scoped per caller, written in the same transaction as the message they name.
CREATE TABLE idempotency_keys (
    caller      text        NOT NULL,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    message_id  uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
