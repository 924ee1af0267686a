-- Undoes migration 20261206000004 (the suppression list), for rolling back to a release before it. Stop
-- every posthorn process first (scale the Deployment to zero), run this with psql, then the older
-- rollback scripts if you go back further (newest first), then start the earlier release:
--
--   psql "$POSTHORN_DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/postgres-rollback/20261206000004_suppressions.sql
--
-- The list is dropped: the earlier release sends to every address again. Export it first if you will
-- come back (`COPY suppressions TO ...`).
BEGIN;
DROP TABLE suppressions;
DELETE FROM _sqlx_migrations WHERE version = 20261206000004;
COMMIT;
