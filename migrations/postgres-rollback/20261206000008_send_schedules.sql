-- Undoes migration 20261206000008 (send schedules), for rolling back to a release before it. Stop every
-- posthorn process first (scale the Deployment to zero), run this with psql, then the older rollback
-- scripts if you go back further (newest first), then start the earlier release:
--
--   psql "$POSTHORN_DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/postgres-rollback/20261206000008_send_schedules.sql
BEGIN;
DROP TABLE send_schedules;
DELETE FROM _sqlx_migrations WHERE version = 20261206000008;
COMMIT;
