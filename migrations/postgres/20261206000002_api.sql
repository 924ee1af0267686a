-- What the API's second round needs: templates, the template a message was rendered from, batch
-- idempotency keys, a new series of attempts for a message put back in the queue, and the mark of a
-- body dropped by retention.
--
-- Every new column is nullable or has a constant default, so nothing is rewritten: a brief lock. The
-- previous release keeps working during a rolling update (it never writes the new columns; a job it
-- inserts starts its series at the message's acceptance, as before).

-- Templates, deployment-wide. Every change is a new version; deleting marks every version deleted and
-- keeps the rows (a message records the version it was rendered from).
CREATE TABLE templates (
    name       text        NOT NULL,
    version    integer     NOT NULL,
    subject    text        NOT NULL,
    text       text,
    html       text,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (name, version)
);

ALTER TABLE messages
    ADD COLUMN template text,
    ADD COLUMN template_version integer,
    -- Set when retention dropped the body (and the caller's own bytes): the message can no longer be
    -- sent again.
    ADD COLUMN body_dropped_at timestamptz;

-- A message put back in the queue after it failed starts a new series of attempts: its attempts keep
-- their numbers (the old ones are kept), but the retry policy counts attempts from `series_base` and
-- age from `series_started_at` (NULL: the message's acceptance).
ALTER TABLE jobs
    ADD COLUMN series_base integer NOT NULL DEFAULT 0,
    ADD COLUMN series_started_at timestamptz;

-- A batch's idempotency key answers with every item's message id, in request order (null for an item
-- that was refused); NULL for the key of a single message, which names it in `message_id`.
ALTER TABLE idempotency_keys ADD COLUMN batch jsonb;

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
