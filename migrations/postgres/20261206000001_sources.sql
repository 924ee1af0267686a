-- Messages callers wrote themselves (SMTP submission, `POST /v1/send/raw`) are relayed byte for byte:
-- their bytes are kept in `raw` (NULL for a message posthorn composes from its fields). `source` says
-- which way a message came in (`api`, `smtp`, `raw`), and the view shows it.
--
-- A constant default and a nullable column: nothing is rewritten, a brief lock. The previous release
-- keeps working during a rolling update (its inserts take the default), but it cannot send a message
-- with `raw` bytes: turn on SMTP submission and the raw route once every pod runs this release.
ALTER TABLE messages
    ADD COLUMN source text NOT NULL DEFAULT 'api',
    ADD COLUMN raw bytea;

CREATE OR REPLACE VIEW message_states AS
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
