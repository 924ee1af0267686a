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

-- The previous release's writes wait until this migration commits: none is missed by the copy below.
LOCK TABLE messages IN ACCESS EXCLUSIVE MODE;

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

-- The triggers below keep the previous release's writes during a rolling update in step with the jobs.
-- Rows written by this release never match their WHEN clauses (it writes no due time or lease on a
-- message), except a cancel, which costs one index probe.

-- A message the previous release accepts is queued as a job, and wakes the workers if it is due.
CREATE FUNCTION posthorn_previous_accept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs (message_id, due_at, attempt_count, pending_recipients)
    VALUES (NEW.id, NEW.due_at, NEW.attempt_count, NEW.pending_recipients);
    IF NEW.due_at <= now() THEN
        PERFORM pg_notify('posthorn_jobs', '');
    END IF;
    NEW.due_at := 'infinity';
    RETURN NEW;
END
$$;
CREATE TRIGGER messages_previous_accept BEFORE INSERT ON messages
    FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.due_at <> 'infinity')
    EXECUTE FUNCTION posthorn_previous_accept();

-- An outcome or a release by the previous release, for a message it claimed before this migration: it
-- applies only while that lease still holds the job. Once this release has taken the job over, the write
-- is skipped (the previous release then counts a lost lease), so it can neither unlock a job another
-- worker holds nor finish a message that worker is sending.
CREATE FUNCTION posthorn_previous_lease() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM jobs WHERE message_id = OLD.id AND lease_token = OLD.lease_token FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NEW.status = 'queued' THEN
        UPDATE jobs
           SET due_at = NEW.due_at, lease_token = NULL, attempt_count = NEW.attempt_count,
               pending_recipients = NEW.pending_recipients, updated_at = now()
         WHERE message_id = OLD.id;
        NEW.due_at := 'infinity';
    ELSE
        DELETE FROM jobs WHERE message_id = OLD.id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER messages_previous_lease BEFORE UPDATE ON messages
    FOR EACH ROW WHEN (OLD.lease_token IS NOT NULL AND NEW.lease_token IS DISTINCT FROM OLD.lease_token)
    EXECUTE FUNCTION posthorn_previous_lease();

-- No message is cancelled while a worker holds its job: this release's cancel deletes only a job no
-- worker holds; the previous release's cancel does not look at jobs, and is skipped here instead (the
-- lock waits for a claim in progress). A job left behind by a cancel is dropped by the next claim.
CREATE FUNCTION posthorn_cancel_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM jobs WHERE message_id = OLD.id FOR UPDATE;
    IF EXISTS (SELECT 1 FROM jobs WHERE message_id = OLD.id AND lease_token IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER messages_cancel_guard BEFORE UPDATE ON messages
    FOR EACH ROW WHEN (NEW.status = 'cancelled' AND OLD.status <> 'cancelled')
    EXECUTE FUNCTION posthorn_cancel_guard();
