-- Messages callers wrote themselves (SMTP submission, `POST /v1/send/raw`) are relayed byte for byte:
-- their bytes are kept in `raw` (NULL for a message posthorn composes from its fields). `source` says
-- which way a message came in (`api`, `smtp`, `raw`).
ALTER TABLE messages ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
ALTER TABLE messages ADD COLUMN raw BLOB;
