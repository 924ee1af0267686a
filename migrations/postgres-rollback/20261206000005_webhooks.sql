-- Undoes migration 20261206000005 (webhooks), for rolling back to a release before it. Stop every
-- posthorn process first (scale the Deployment to zero), run this with psql, then the older rollback
-- scripts if you go back further (newest first), then start the earlier release:
--
--   psql "$POSTHORN_DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/postgres-rollback/20261206000005_webhooks.sql
--
-- Endpoints and pending deliveries are dropped. A later release applies the migration again when it
-- starts (with no endpoints, delivering events written from then on).
BEGIN;
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;
DROP TABLE webhook_fanout;
DELETE FROM _sqlx_migrations WHERE version = 20261206000005;
COMMIT;
