-- A delivery outcome is written once, on its attempt: the message row is no longer updated when its
-- message is sent, fails or is retried.
--
-- Updating the message rewrote its whole row (addresses and bodies included) with new entries in all
-- of its indexes, for a few status columns: with the attempts' foreign-key check, a third of
-- PostgreSQL's time per delivered message. Each attempt now records what became of the message after
-- it (`status`: sent, failed, or queued for a retry), the error that goes with that, and when it was
-- recorded. The view `message_states` puts a message's current state together: from its job while it
-- has one, from its last attempt after that. The message row still changes when it is cancelled, and a
-- message finished by an earlier release keeps the outcome written on it. posthorn reads messages
-- through the view, and so can anyone querying the database by hand.
--
-- The foreign key goes too: the outcome statement writes an attempt only for a message that exists,
-- and posthorn never deletes messages (whoever deletes some by hand deletes their attempts as well:
-- `DELETE FROM delivery_attempts WHERE message_id = ...`).
--
-- During a rolling update the previous release keeps delivering correctly (its outcomes are written on
-- the message and read from there), but its pods show a message that this release sent or failed as
-- `queued` until they are replaced. To roll back to it, run
-- `migrations/postgres-rollback/20261201000001_attempt_outcomes.sql`, which writes the recorded outcomes
-- back onto the messages.
--
-- No column has a default or a constraint, so nothing is rewritten or scanned: a brief lock of both
-- tables.
ALTER TABLE delivery_attempts DROP CONSTRAINT IF EXISTS delivery_attempts_message_id_fkey;
ALTER TABLE delivery_attempts
    ADD COLUMN status text,
    ADD COLUMN error text,
    ADD COLUMN recorded_at timestamptz;

-- One row per message, as the API shows it. An attempt with a status was recorded by this release and
-- speaks for its message; an earlier release's attempts have none, and wrote the outcome on the message.
CREATE VIEW message_states AS
SELECT m.id, m.caller, m.message_id, m.envelope, m.tags, m.metadata, m.created_at, m.send_at,
       s.status,
       CASE WHEN s.status = 'queued' THEN j.due_at END AS next_attempt_at,
       greatest(m.updated_at, j.updated_at, a.recorded_at) AS updated_at,
       coalesce(CASE WHEN a.status = 'sent' THEN a.recorded_at END, m.sent_at) AS sent_at,
       coalesce(j.attempt_count, CASE WHEN a.status IS NOT NULL THEN a.attempt END, m.attempt_count)
           AS attempt_count,
       CASE WHEN a.status IS NOT NULL THEN a.error ELSE m.last_error END AS last_error
  FROM messages AS m
  LEFT JOIN jobs AS j ON j.message_id = m.id
  LEFT JOIN LATERAL (
      SELECT d.attempt, d.status, d.error, d.recorded_at
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
