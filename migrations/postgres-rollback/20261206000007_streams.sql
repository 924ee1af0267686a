-- Undoes migration 20261206000007 (streams), for rolling back to a release before it. Stop every
-- posthorn process first (scale the Deployment to zero), run this with psql, then the older rollback
-- scripts if you go back further (newest first), then start the earlier release:
--
--   psql "$POSTHORN_DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/postgres-rollback/20261206000007_streams.sql
--
-- Every message becomes transactional again; broadcast messages still queued are sent in due order.
BEGIN;
DROP VIEW message_states;
CREATE INDEX jobs_due_idx ON jobs (due_at);
DROP INDEX jobs_lane_due_idx;
ALTER TABLE jobs DROP COLUMN lane;
ALTER TABLE messages DROP COLUMN stream;
CREATE VIEW message_states AS
SELECT m.id, m.caller, m.message_id, m.envelope, m.tags, m.metadata, m.created_at, m.send_at,
       s.status,
       CASE WHEN s.status = 'queued' THEN j.due_at END AS next_attempt_at,
       greatest(m.updated_at, j.updated_at, a.recorded_at) AS updated_at,
       coalesce(CASE WHEN a.status = 'sent' THEN a.recorded_at END, m.sent_at) AS sent_at,
       coalesce(j.attempt_count, CASE WHEN a.status IS NOT NULL THEN a.attempt END, m.attempt_count)
           AS attempt_count,
       CASE WHEN a.status IS NOT NULL THEN a.error ELSE m.last_error END AS last_error,
       m.source, m.template, m.template_version, m.body_dropped_at,
       a.provider AS last_provider,
       -- When the message stopped changing: it has no job, and its last attempt (or its cancel) is
       -- this old. NULL while it is in the queue.
       CASE WHEN j.message_id IS NULL
            THEN greatest(m.updated_at, a.recorded_at, m.finished_at) END AS finished_at
  FROM messages AS m
  LEFT JOIN jobs AS j ON j.message_id = m.id
  LEFT JOIN LATERAL (
      SELECT d.attempt, d.status, d.error, d.recorded_at, d.provider
        FROM delivery_attempts AS d
       WHERE d.message_id = m.id
       ORDER BY d.attempt DESC
       LIMIT 1
  ) AS a ON true
  -- Cancelled (or finished by an earlier release): the message says so. While it has a job: sending
  -- if a worker holds the job's lease, queued otherwise. After that: what its last attempt recorded.
  -- (Only a message that was being sent when the job table was created says `sending` itself.)
  CROSS JOIN LATERAL (
      SELECT CASE WHEN m.status NOT IN ('queued', 'sending') THEN m.status
                  WHEN j.message_id IS NOT NULL
                      THEN CASE WHEN j.lease_token IS NULL THEN 'queued' ELSE 'sending' END
                  ELSE coalesce(a.status, 'queued')
             END AS status
  ) AS s;
DELETE FROM _sqlx_migrations WHERE version = 20261206000007;
COMMIT;
