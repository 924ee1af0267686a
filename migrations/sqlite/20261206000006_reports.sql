-- Reports that could not be read, kept for an operator; and messages found by a Message-ID their
-- caller wrote.
CREATE TABLE inbound_reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT    NOT NULL,
    error       TEXT    NOT NULL,
    raw         BLOB    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX messages_raw_message_id_idx ON messages (message_id) WHERE raw IS NOT NULL;
