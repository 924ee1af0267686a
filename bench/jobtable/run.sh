#!/usr/bin/env bash
# Schema experiment: what PostgreSQL spends per delivered (and per accepted) message with the current
# schema, where a claim and an outcome each write a new version of the wide `messages` row, against a
# narrow job table beside an unindexed-for-the-queue message history. SQL only, one backend, with
# synchronous_commit off so that the figures are the statements' own cost, not WAL flushes.
#
#   bench/jobtable/run.sh [MESSAGES]      (default 40000; needs target/release/posthorn)
#
# Prints pgbench's average latency per transaction for each variant, twice, alternating: a delivery
# transaction is a claim of 200 plus the outcome of 200; an accept transaction is a batch of 128.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh
messages=${1:-40000}
bin=target/release/posthorn
[[ -x "$bin" ]] || die "$bin is missing: cargo build --release --bin posthorn"
ensure_postgres
admin=$POSTHORN_TEST_DATABASE_URL
db=posthorn_jobtable_$$
url=$(pg_url_with_db "$admin" "$db")
pgbench=$(dirname "$_POSTHORN_PSQL")/pgbench
[[ -x "$pgbench" ]] || pgbench=$(command -v pgbench) || die "pgbench not found"
pg_psql -d "$admin" -c "CREATE DATABASE $db"
server=""
cleanup() {
  [[ -n "$server" ]] && kill "$server" 2>/dev/null
  wait 2>/dev/null || true
  pg_psql -d "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export POSTHORN_DATABASE_URL=$url POSTHORN_JWT_SECRET=bench-secret-0123456789-0123456789-0123 POSTHORN_LOG=warn \
  POSTHORN_PROFILE=production POSTHORN_LISTEN=127.0.0.1:$port
# One message accepted through the API is the template for the rest.
"$bin" serve 2>/dev/null &
server=$!
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.2; done
token=$("$bin" token --sub bench --scope send)
curl -sf -o /dev/null -X POST "http://127.0.0.1:$port/v1/send" -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' \
  --data-binary '{"from":"Bench <bench@example.com>","to":"sink@example.org","subject":"benchmark","text":"A transactional message of ordinary size.\n"}'
kill "$server"
wait "$server" 2>/dev/null || true
server=""
pg_psql -d "$url" -c "INSERT INTO messages (id, caller, status, message_id, envelope, body, tags, metadata)
  SELECT gen_random_uuid(), t.caller, 'queued', t.message_id || g, t.envelope, t.body, t.tags, t.metadata
    FROM messages AS t, generate_series(2, $messages) AS g" -f bench/jobtable/schema.sql
transactions=$((messages / 200))
for round in 1 2; do
  for variant in deliver-current deliver-narrow accept-current accept-narrow; do
    pg_psql -d "$url" -f bench/jobtable/reset.sql >/dev/null
    latency=$(PGOPTIONS="-c synchronous_commit=off" "$pgbench" -n -c 1 -t "$transactions" \
      -f "bench/jobtable/$variant.sql" "$url" 2>&1 | sed -n 's/^latency average = //p')
    echo "round $round: $variant: $latency per transaction"
  done
done
