-- Undoes migration 20261206000002 (templates, batch idempotency keys, series of attempts, retention
-- marks), for rolling back to a release before it. Stop every posthorn process first (scale the
-- Deployment to zero), run this with psql, then the older rollback scripts if you go back further
-- (newest first), then start the earlier release:
--
--   psql "$POSTHORN_DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/postgres-rollback/20261206000002_api.sql
--
-- Templates are dropped (messages already rendered from them keep their text). A message put back in
-- the queue counts its attempts and age from its acceptance again under the earlier release. A message
-- whose body retention dropped is sent by no release. A later release applies the migration again
-- when it starts.
BEGIN;
LOCK TABLE messages, jobs, idempotency_keys IN ACCESS EXCLUSIVE MODE;
DROP VIEW message_states;
CREATE VIEW message_states AS
SELECT m.id, m.caller, m.message_id, m.envelope, m.tags, m.metadata, m.created_at, m.send_at,
       s.status,
       CASE WHEN s.status = 'queued' THEN j.due_at END AS next_attempt_at,
       greatest(m.updated_at, j.updated_at, a.recorded_at) AS updated_at,
       coalesce(CASE WHEN a.status = 'sent' THEN a.recorded_at END, m.sent_at) AS sent_at,
       coalesce(j.attempt_count, CASE WHEN a.status IS NOT NULL THEN a.attempt END, m.attempt_count)
           AS attempt_count,
       CASE WHEN a.status IS NOT NULL THEN a.error ELSE m.last_error END AS last_error,
       m.source
  FROM messages AS m
  LEFT JOIN jobs AS j ON j.message_id = m.id
  LEFT JOIN LATERAL (
      SELECT d.attempt, d.status, d.error, d.recorded_at
        FROM delivery_attempts AS d
       WHERE d.message_id = m.id
       ORDER BY d.attempt DESC
       LIMIT 1
  ) AS a ON true
  CROSS JOIN LATERAL (
      SELECT CASE WHEN m.status NOT IN ('queued', 'sending') THEN m.status
                  WHEN j.message_id IS NOT NULL
                      THEN CASE WHEN j.lease_token IS NULL THEN 'queued' ELSE 'sending' END
                  ELSE coalesce(a.status, 'queued')
             END AS status
  ) AS s;
-- A batch's key names no single message: the earlier release could only answer it wrongly.
DELETE FROM idempotency_keys WHERE batch IS NOT NULL;
ALTER TABLE idempotency_keys DROP COLUMN batch;
ALTER TABLE jobs DROP COLUMN series_base, DROP COLUMN series_started_at;
ALTER TABLE messages DROP COLUMN template, DROP COLUMN template_version, DROP COLUMN body_dropped_at;
DROP TABLE templates;
DELETE FROM _sqlx_migrations WHERE version = 20261206000002;
COMMIT;
