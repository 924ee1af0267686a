-- Templates, the template a message was rendered from, batch idempotency keys, a new series of
-- attempts for a message put back in the queue, and the mark of a body dropped by retention.
CREATE TABLE templates (
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    subject    TEXT    NOT NULL,
    text       TEXT,
    html       TEXT,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER,
    PRIMARY KEY (name, version)
);

ALTER TABLE messages ADD COLUMN template TEXT;
ALTER TABLE messages ADD COLUMN template_version INTEGER;
ALTER TABLE messages ADD COLUMN body_dropped_at INTEGER;
-- The retry policy counts attempts from `series_base` and age from `series_started_at` (NULL: the
-- message's acceptance).
ALTER TABLE messages ADD COLUMN series_base INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN series_started_at INTEGER;
-- The provider of the last attempt, for redrives by provider.
ALTER TABLE messages ADD COLUMN last_provider TEXT;

-- A batch's key answers with every item's message id, in request order (null for a refused item).
ALTER TABLE idempotency_keys ADD COLUMN batch TEXT;

-- Retention finds finished messages by when they finished; a message enters these indexes when it
-- finishes, so accepting one writes neither.
CREATE INDEX messages_finished_idx ON messages (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX messages_body_kept_idx ON messages (finished_at)
    WHERE finished_at IS NOT NULL AND body_dropped_at IS NULL;
