-- Reports that could not be read (bounces and complaints by mail, provider notifications) are kept for
-- an operator to look at. And a message whose Message-ID the caller wrote is found by it (a provider's
-- notification names the message only so); posthorn's own Message-IDs carry the message's id.
CREATE TABLE inbound_reports (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text        NOT NULL,
    error       text        NOT NULL,
    raw         bytea       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_raw_message_id_idx ON messages (message_id) WHERE raw IS NOT NULL;
