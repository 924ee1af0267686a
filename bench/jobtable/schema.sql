-- The experiment's second schema beside the real one: m2 (the message history, no queue index), a2 (attempts) and jobs.
CREATE TABLE m2 (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE m2 ADD PRIMARY KEY (id);
CREATE INDEX m2_caller_id_idx ON m2 (caller, id DESC);
CREATE INDEX m2_tags_idx ON m2 USING gin (tags);
CREATE TABLE a2 (LIKE delivery_attempts INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE a2 ADD PRIMARY KEY (message_id, attempt);
ALTER TABLE a2 ADD FOREIGN KEY (message_id) REFERENCES m2 (id) ON DELETE CASCADE;
CREATE TABLE jobs (id uuid PRIMARY KEY, due_at timestamptz NOT NULL, attempt_count int NOT NULL DEFAULT 0,
                   lease_token uuid, pending_recipients text[]);
CREATE INDEX jobs_due_idx ON jobs (due_at);
