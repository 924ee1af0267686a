-- The queue moves out of `messages` into a narrow table of its own: one row per unfinished message.
--
-- Claiming, retrying and releasing now rewrite a job row of a few dozen bytes with two index entries,
-- instead of the whole message row with four; and since no index of `messages` involves its status any
-- more, the one update a message gets when it is sent or fails is a HOT update (no new index entries).
-- `messages.status` stays `queued` until the message is sent, fails or is cancelled; `sending` is read
-- off the job's lease.
CREATE TABLE jobs (
    -- No foreign key: the claim joins the message anyway and drops a job whose message is gone or
    -- finished, and a key would cost an index probe of `messages` on every accept.
    message_id         uuid        PRIMARY KEY,
    -- When the job may next be claimed: its send time, its retry time, or (while leased) its lease expiry.
    due_at             timestamptz NOT NULL,
    attempt_count      integer     NOT NULL DEFAULT 0,
    -- Fences outcome writes: only the worker holding the current lease may record one.
    lease_token        uuid,
    -- Recipients still to be tried after a partial delivery; NULL means all of them.
    pending_recipients text[],
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_due_idx ON jobs (due_at);

-- Every unfinished message becomes a job, its lease (if a worker holds one) included.
INSERT INTO jobs (message_id, due_at, attempt_count, lease_token, pending_recipients, updated_at)
SELECT id, due_at, attempt_count, lease_token, pending_recipients, updated_at
  FROM messages
 WHERE status IN ('queued', 'sending');

-- `messages.due_at` is read by the previous release only. 'infinity' makes its claim find nothing, so
-- during a rolling update only this release delivers; its pods keep accepting and answering reads.
ALTER TABLE messages ALTER COLUMN due_at SET DEFAULT 'infinity';
UPDATE messages SET due_at = 'infinity' WHERE status IN ('queued', 'sending');
DROP INDEX messages_due_idx;

-- What the previous release writes with a due time (an accept, a retry, a release) is queued as a job
-- here, so nothing it accepts or gives back waits for a claim that no longer looks at `messages`. Rows
-- written by this release never match the WHEN clause, so the function never runs for them.
CREATE FUNCTION posthorn_queue_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs (message_id, due_at, attempt_count, pending_recipients)
    VALUES (NEW.id, NEW.due_at, NEW.attempt_count, NEW.pending_recipients)
    ON CONFLICT (message_id) DO UPDATE
        SET due_at = EXCLUDED.due_at,
            attempt_count = EXCLUDED.attempt_count,
            pending_recipients = EXCLUDED.pending_recipients,
            lease_token = NULL,
            updated_at = now();
    NEW.due_at := 'infinity';
    NEW.lease_token := NULL;
    RETURN NEW;
END
$$;
CREATE TRIGGER messages_queue_job BEFORE INSERT OR UPDATE ON messages
    FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.due_at <> 'infinity')
    EXECUTE FUNCTION posthorn_queue_job();
