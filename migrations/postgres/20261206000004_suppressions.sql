-- The suppression list: addresses nothing is sent to, one list for the deployment. Hard bounces and
-- complaints add to it in the same transaction as the outcome or report that shows them; operators add
-- and remove entries by hand. Addresses are kept in lower case.
CREATE TABLE suppressions (
    address    text        PRIMARY KEY,
    reason     text        NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'manual')),
    -- The message whose bounce or complaint added it, and what the report said.
    message_id uuid,
    detail     text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX suppressions_reason_idx ON suppressions (reason, address);
