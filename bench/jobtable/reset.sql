-- Before each variant: every message queued again in both schemas, tables rewritten, statistics fresh.
TRUNCATE delivery_attempts; TRUNCATE a2; DELETE FROM jobs; DELETE FROM m2;
UPDATE messages SET status = 'queued', due_at = now() - (random() * interval '1 second'), attempt_count = 0,
   sent_at = NULL, finished_at = NULL, lease_token = NULL, pending_recipients = NULL, last_error = NULL;
INSERT INTO m2 SELECT * FROM messages;
INSERT INTO jobs (id, due_at) SELECT id, due_at FROM m2;
VACUUM FULL messages; VACUUM FULL m2; VACUUM FULL jobs; ANALYZE;
CHECKPOINT;
