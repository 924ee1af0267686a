-- Streams (priority lanes): every message is `transactional` (the default) or `broadcast`, and its job
-- carries the lane it is claimed in (0 first, then 1). Claims take lane 0 first and give lane 1 a share
-- of every claim, through one index on (lane, due_at) that replaces the one on due_at alone (a claim
-- of the previous release, which orders by due_at only, sorts the due jobs during a rolling update).
ALTER TABLE messages ADD COLUMN stream text NOT NULL DEFAULT 'transactional'
    CHECK (stream IN ('transactional', 'broadcast'));
ALTER TABLE jobs ADD COLUMN lane smallint NOT NULL DEFAULT 0;
CREATE INDEX jobs_lane_due_idx ON jobs (lane, due_at);
DROP INDEX jobs_due_idx;

CREATE OR REPLACE VIEW message_states AS
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
            THEN greatest(m.updated_at, a.recorded_at, m.finished_at) END AS finished_at,
       -- Appended (a view keeps its columns' order): the message's stream.
       m.stream
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
