-- Undoes migration 20261207000001 (lz4 for message bodies), for rolling back to a release before it.
-- Stop every posthorn process first (scale the Deployment to zero), run this with psql, then the older
-- rollback scripts if you go back further (newest first), then start the earlier release:
--
--   psql "$POSTHORN_DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/postgres-rollback/20261207000001_body_compression.sql
--
-- Rows written with lz4 stay readable by every release on the same server.
BEGIN;
DO $$
BEGIN
    IF current_setting('server_version_num')::integer >= 140000 THEN
        EXECUTE 'ALTER TABLE messages ALTER COLUMN body SET COMPRESSION default,
                                      ALTER COLUMN raw SET COMPRESSION default';
    END IF;
END
$$;
DELETE FROM _sqlx_migrations WHERE version = 20261207000001;
COMMIT;
