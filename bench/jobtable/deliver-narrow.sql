-- A narrow job table: the claim updates small job rows (2 indexes); the outcome deletes them, marks the message sent and adds the attempt.
WITH due AS (SELECT id FROM jobs WHERE due_at <= now() ORDER BY due_at LIMIT 200 FOR UPDATE SKIP LOCKED),
 claimed AS (UPDATE jobs AS j SET attempt_count = j.attempt_count + 1, lease_token = '00000000-0000-7000-8000-000000000001', due_at = now() + interval '5 minutes'
   FROM due WHERE j.id = due.id RETURNING j.id, j.attempt_count, j.pending_recipients)
SELECT c.id, c.attempt_count, m.message_id, m.envelope, m.body, m.created_at, c.pending_recipients FROM claimed c JOIN m2 m ON m.id = c.id;
WITH o AS (SELECT id FROM jobs WHERE lease_token IS NOT NULL LIMIT 200),
 done AS (DELETE FROM jobs AS j USING o WHERE j.id = o.id AND j.lease_token = '00000000-0000-7000-8000-000000000001' RETURNING j.id),
 updated AS (UPDATE m2 AS m SET status = 'sent', updated_at = now(), sent_at = now(), finished_at = now(), last_error = NULL FROM done WHERE m.id = done.id RETURNING m.id)
INSERT INTO a2 (message_id, attempt, started_at, duration_ms, provider, outcome, smtp_code, enhanced_code, response, recipients)
SELECT id, 1, now(), 3, 'smtp', 'sent', 250, '2.0.0', '2.0.0 Ok: queued as 1234', '[{"address":"sink@example.org","outcome":"sent","smtp_code":250}]' FROM updated;
