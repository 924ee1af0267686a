-- Undoes migration 20261201000001 (outcomes recorded on attempts), for rolling back to a release before
-- it: the outcome of every message finished or retried since goes back onto the message, where that
-- release reads it. Stop every posthorn process first (scale the Deployment to zero), run this with
-- psql, then start the earlier release:
--
--   psql "$POSTHORN_DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/postgres-rollback/20261201000001_attempt_outcomes.sql
--
-- To go back further, run the older rollback scripts after this one, newest first. A later release
-- applies the migration again when it starts.
BEGIN;
LOCK TABLE messages, delivery_attempts IN ACCESS EXCLUSIVE MODE;
DROP VIEW message_states;
-- A message's last attempt speaks for it if this release recorded it (an earlier release's attempts
-- have no status, and that release wrote the outcome on the message). A cancelled message keeps its
-- status; its attempts (retries, all of them) still give it its count and last error.
UPDATE messages AS m
   SET status = CASE WHEN a.status = 'queued' THEN m.status ELSE a.status END,
       attempt_count = a.attempt,
       sent_at = CASE WHEN a.status = 'sent' THEN a.recorded_at ELSE m.sent_at END,
       finished_at = CASE WHEN a.status <> 'queued' THEN a.recorded_at ELSE m.finished_at END,
       last_error = a.error,
       updated_at = greatest(m.updated_at, a.recorded_at)
  FROM (SELECT DISTINCT ON (message_id) message_id, attempt, status, error, recorded_at
          FROM delivery_attempts
         ORDER BY message_id, attempt DESC) AS a
 WHERE m.id = a.message_id AND a.status IS NOT NULL AND m.status IN ('queued', 'sending', 'cancelled');
ALTER TABLE delivery_attempts DROP COLUMN status, DROP COLUMN error, DROP COLUMN recorded_at;
-- Attempts of messages deleted by hand would stop the foreign key from coming back.
DELETE FROM delivery_attempts AS d WHERE NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.id = d.message_id);
ALTER TABLE delivery_attempts
    ADD CONSTRAINT delivery_attempts_message_id_fkey
    FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE;
DELETE FROM _sqlx_migrations WHERE version = 20261201000001;
COMMIT;
