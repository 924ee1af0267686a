-- Events: one row for every change of a message, written in the same transaction as the change. One
-- writer at a time commits them in id order, so readers follow the id.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT    NOT NULL,
    caller     TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    recipient  TEXT,
    data       TEXT    NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE INDEX events_message_idx ON events (message_id, id);
