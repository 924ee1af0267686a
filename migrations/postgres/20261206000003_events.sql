-- Events: one row for every change of a message, written in the same transaction as the change. The
-- table is both the log callers read (`GET /v1/events`) and the outbox webhooks are delivered from.
--
-- Identity numbers are handed out when rows are inserted, not when they commit, so a reader that
-- followed them alone could pass an event that commits late. Each row records the transaction that wrote
-- it (`txid`); readers see only events of transactions older than every transaction still running, in
-- (txid, id) order, so what is behind a cursor never changes.
CREATE TABLE events (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    message_id uuid        NOT NULL,
    caller     text        NOT NULL,
    type       text        NOT NULL,
    recipient  text,
    data       jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_feed_idx ON events (txid, id);
CREATE INDEX events_message_idx ON events (message_id, id);
