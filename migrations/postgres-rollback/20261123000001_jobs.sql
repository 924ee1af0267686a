-- Undoes migration 20261123000001 (the job table), for rolling back to a release before it: the queue's
-- state goes back onto the messages. Stop every posthorn process first (scale the Deployment to zero),
-- run this with psql, then start the earlier release:
--
--   psql "$POSTHORN_DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/postgres-rollback/20261123000001_jobs.sql
--
-- A later release applies the migration again when it starts.
BEGIN;
LOCK TABLE messages IN ACCESS EXCLUSIVE MODE;
DROP TRIGGER messages_previous_accept ON messages;
DROP FUNCTION posthorn_previous_accept();
DROP TRIGGER messages_previous_lease ON messages;
DROP FUNCTION posthorn_previous_lease();
DROP TRIGGER messages_cancel_guard ON messages;
DROP FUNCTION posthorn_cancel_guard();
UPDATE messages AS m
   SET due_at = j.due_at,
       attempt_count = j.attempt_count,
       lease_token = j.lease_token,
       pending_recipients = j.pending_recipients,
       updated_at = greatest(m.updated_at, j.updated_at),
       status = CASE WHEN j.lease_token IS NULL THEN 'queued' ELSE 'sending' END
  FROM jobs AS j
 WHERE m.id = j.message_id AND m.status IN ('queued', 'sending');
-- An unfinished message without a job (none should exist) is made due rather than left unclaimable.
UPDATE messages SET due_at = now(), status = 'queued', lease_token = NULL
 WHERE status IN ('queued', 'sending') AND due_at = 'infinity';
ALTER TABLE messages ALTER COLUMN due_at SET DEFAULT now();
DROP TABLE jobs;
CREATE INDEX messages_due_idx ON messages (due_at) WHERE status IN ('queued', 'sending');
DELETE FROM _sqlx_migrations WHERE version = 20261123000001;
COMMIT;
