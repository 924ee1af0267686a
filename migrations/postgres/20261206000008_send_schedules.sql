-- Send schedules: the next free send slot of each rate-limited provider, shared by every process of the
-- deployment. A process reserves a batch of slots at a time (one short upsert), so the row is written
-- about ten times a second per process at most.
CREATE TABLE send_schedules (
    key       text        PRIMARY KEY,
    next_slot timestamptz NOT NULL
);
