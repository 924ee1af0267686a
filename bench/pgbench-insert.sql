-- The accept baseline: one INSERT of posthorn's payload per transaction, into posthorn's own table.
-- bench/run.sh passes the payload of a real accepted message with -D envelope=... -D body=... -D message_id=...
INSERT INTO messages (id, caller, message_id, envelope, body, tags, metadata)
VALUES (gen_random_uuid(), 'bench', :message_id, :envelope::jsonb, :body::jsonb, '{}', '{}');
