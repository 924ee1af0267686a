-- Streams (priority lanes): every message is `transactional` (the default) or `broadcast`. Claims take
-- transactional messages first and give broadcast ones a share of every claim, each through its own
-- slice of one index on (stream, due_at).
ALTER TABLE messages ADD COLUMN stream TEXT NOT NULL DEFAULT 'transactional'
    CHECK (stream IN ('transactional', 'broadcast'));
CREATE INDEX messages_stream_due_idx ON messages (stream, due_at) WHERE status IN ('queued', 'sending');
DROP INDEX messages_due_idx;
