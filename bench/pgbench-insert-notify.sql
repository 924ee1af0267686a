-- Diagnostic for the accept section: the statement posthorn's enqueue runs (src/store/postgres/mod.rs), an
-- INSERT that notifies the workers' channel, one per transaction.
WITH inserted AS (
    INSERT INTO messages (id, caller, message_id, envelope, body, tags, metadata, due_at)
    VALUES (gen_random_uuid(), 'bench', :message_id, :envelope::jsonb, :body::jsonb, '{}', '{}', now())
    RETURNING due_at
)
SELECT pg_notify('posthorn_jobs', '') FROM inserted WHERE due_at <= now();
