-- A narrow job table: one accept batch of 128 messages, each with its job row.
WITH ins AS (INSERT INTO m2 (id, caller, message_id, envelope, body, tags, metadata, due_at)
  SELECT gen_random_uuid(), t.caller, t.message_id, t.envelope, t.body, t.tags, t.metadata, now() FROM (SELECT * FROM m2 LIMIT 1) t, generate_series(1, 128) RETURNING id, due_at)
INSERT INTO jobs (id, due_at) SELECT id, due_at FROM ins;
