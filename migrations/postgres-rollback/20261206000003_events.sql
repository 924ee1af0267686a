-- Undoes migration 20261206000003 (events), for rolling back to a release before it. Stop every posthorn
-- process first (scale the Deployment to zero), run this with psql, then the older rollback scripts if
-- you go back further (newest first), then start the earlier release:
--
--   psql "$POSTHORN_DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/postgres-rollback/20261206000003_events.sql
--
-- The event log is dropped. A later release applies the migration again when it starts (with an empty
-- log).
BEGIN;
DROP TABLE events;
DELETE FROM _sqlx_migrations WHERE version = 20261206000003;
COMMIT;
