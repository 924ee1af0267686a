-- The suppression list: addresses nothing is sent to (lower case).
CREATE TABLE suppressions (
    address    TEXT    PRIMARY KEY NOT NULL,
    reason     TEXT    NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'manual')),
    message_id TEXT,
    detail     TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX suppressions_reason_idx ON suppressions (reason, address);
