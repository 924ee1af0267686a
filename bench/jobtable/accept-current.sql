-- The current schema: one accept batch of 128 messages.
INSERT INTO messages (id, caller, message_id, envelope, body, tags, metadata, due_at)
SELECT gen_random_uuid(), t.caller, t.message_id, t.envelope, t.body, t.tags, t.metadata, now() FROM (SELECT * FROM messages LIMIT 1) t, generate_series(1, 128);
