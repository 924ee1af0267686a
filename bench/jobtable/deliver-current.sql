-- The current schema: one claim of 200 due jobs, then the outcome of 200 leased jobs (sent, with an attempt row).
WITH due AS (SELECT id FROM messages WHERE status IN ('queued','sending') AND due_at <= now() ORDER BY due_at LIMIT 200 FOR UPDATE SKIP LOCKED)
UPDATE messages AS m SET status = 'sending', attempt_count = m.attempt_count + 1, lease_token = '00000000-0000-7000-8000-000000000001', due_at = now() + interval '5 minutes', updated_at = now()
FROM due WHERE m.id = due.id RETURNING m.id, m.attempt_count, m.message_id, m.envelope, m.body, m.created_at, m.pending_recipients;
WITH o AS (SELECT id FROM messages WHERE status = 'sending' LIMIT 200),
 updated AS (UPDATE messages AS m SET status = 'sent', lease_token = NULL, updated_at = now(), pending_recipients = NULL, sent_at = now(), finished_at = now(), last_error = NULL
   FROM o WHERE m.id = o.id AND m.lease_token = '00000000-0000-7000-8000-000000000001' RETURNING m.id)
INSERT INTO delivery_attempts (message_id, attempt, started_at, duration_ms, provider, outcome, smtp_code, enhanced_code, response, recipients)
SELECT id, 1, now(), 3, 'smtp', 'sent', 250, '2.0.0', '2.0.0 Ok: queued as 1234', '[{"address":"sink@example.org","outcome":"sent","smtp_code":250}]' FROM updated;
