-- Webhooks: endpoints, and one delivery per event and endpoint. The events table is the outbox: a
-- fan-out step reads it from a cursor (in the order the feed reads it) and writes the deliveries in the
-- same transaction that moves the cursor, so every event reaches every endpoint once, whatever stops
-- when. Deliveries are claimed with leases, like jobs.
CREATE TABLE webhook_endpoints (
    id                  uuid        PRIMARY KEY,
    url                 text        NOT NULL,
    description         text        NOT NULL DEFAULT '',
    -- Event types to deliver; empty: all.
    events              text[]      NOT NULL DEFAULT '{}',
    -- Callers whose messages' events to deliver; empty: every caller's.
    callers             text[]      NOT NULL DEFAULT '{}',
    secret              text        NOT NULL,
    -- After a rotation, deliveries carry a signature with the previous secret too, until then.
    previous_secret     text,
    previous_secret_until timestamptz,
    enabled             boolean     NOT NULL DEFAULT true,
    disabled_reason     text,
    -- The first failure since the last success.
    failing_since       timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id    bigint      NOT NULL,
    status      text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    due_at      timestamptz NOT NULL DEFAULT now(),
    attempts    integer     NOT NULL DEFAULT 0,
    lease_token uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (due_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);

-- Every attempt of a delivery, with what the endpoint answered.
CREATE TABLE webhook_attempts (
    delivery_id bigint      NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    status_code integer,
    latency_ms  integer     NOT NULL,
    error       text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Where the fan-out stands in the event feed (one row).
CREATE TABLE webhook_fanout (
    id       integer PRIMARY KEY CHECK (id = 1),
    txid     xid8    NOT NULL,
    event_id bigint  NOT NULL
);
-- Events written before webhooks existed are not delivered.
INSERT INTO webhook_fanout (id, txid, event_id)
SELECT 1,
       coalesce((SELECT txid FROM events ORDER BY txid DESC, id DESC LIMIT 1), '0'::xid8),
       coalesce((SELECT id FROM events ORDER BY txid DESC, id DESC LIMIT 1), 0);
