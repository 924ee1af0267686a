#!/usr/bin/env bash
# Delivery drain rate: a backlog of N queued messages delivered into Postfix's smtp-sink, side by side
# with the baseline of Postfix's own smtp-source sending N messages into the same sink over the same
# number of connections.
#
#   bench/delivery-drain.sh [N] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh
# shellcheck source=scripts/lib/postfix.sh
source scripts/lib/postfix.sh

total=${1:-5000}
connections=${2:-4}
# Workers record outcomes while their connection serves the next message: twice as many keep the pool busy.
ensure_postgres
ensure_smtp_sink
smtp_source=$(dirname "$POSTHORN_TEST_SMTP_SINK")/smtp-source
step "building posthorn (release)"
cargo build --release --locked --quiet --bin posthorn
bin=target/release/posthorn

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
db=posthorn_bench_$$
admin=$POSTHORN_TEST_DATABASE_URL
pg_psql "$admin" -c "CREATE DATABASE $db"
cleanup() {
  [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null
  [[ -n "${sink:-}" ]] && kill "$sink" 2>/dev/null
  wait 2>/dev/null
  pg_psql "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
}
trap cleanup EXIT
url=$(pg_url_with_db "$admin" "$db")
export POSTHORN_DATABASE_URL=$url POSTHORN_JWT_SECRET=bench-secret-0123456789-0123456789-0123 POSTHORN_LOG=warn
# One benchmark caller sends far beyond any per-caller quota.
export POSTHORN_RATE_LIMIT=0 POSTHORN_PROFILE=production
sink_port=$(free_port)
"$POSTHORN_TEST_SMTP_SINK" -u postfix -c "127.0.0.1:$sink_port" 1024 >/dev/null 2>&1 &
sink=$!
sleep 0.5

# 1. Load the backlog with no upstream configured, so nothing drains while loading.
api_port=$(free_port)
POSTHORN_LISTEN=127.0.0.1:$api_port "$bin" serve &
server=$!
until curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null; do sleep 0.2; done
token=$("$bin" token --sub bench --scope send,read)
step "loading $total messages"
python3 bench/load.py 127.0.0.1 "$api_port" "$token" "$total" 16
kill "$server"; wait "$server" 2>/dev/null || true

# 2. Drain it into the sink.
step "draining into smtp-sink over $connections connections"
start=$(date +%s.%N)
POSTHORN_LISTEN=127.0.0.1:$api_port POSTHORN_SMTP_URL="smtp://127.0.0.1:$sink_port" \
  POSTHORN_SMTP_MAX_CONNECTIONS=$connections POSTHORN_WORKERS=${WORKERS:-$((connections * 2))} \
  "$bin" serve &
server=$!
while [[ "$(pg_psql -At "$url" -c "SELECT count(*) FROM message_states WHERE status <> 'sent'")" != 0 ]]; do
  sleep 0.1
done
end=$(date +%s.%N)
kill "$server"; wait "$server" 2>/dev/null || true
posthorn_rate=$(python3 -c "print(round($total / ($end - $start)))")

# 3. The baseline: smtp-source into the same sink, same message count and connections.
step "baseline: smtp-source -s $connections -m $total"
start=$(date +%s.%N)
"$smtp_source" -d -s "$connections" -m "$total" -l 1000 -f bench@example.com -t sink@example.org "127.0.0.1:$sink_port"
end=$(date +%s.%N)
baseline_rate=$(python3 -c "print(round($total / ($end - $start)))")

printf '\n%-40s %10s\n' "delivery into smtp-sink" "msg/s"
printf '%-40s %10s\n' "posthorn ($connections connections)" "$posthorn_rate"
printf '%-40s %10s\n' "smtp-source -s $connections (baseline)" "$baseline_rate"
python3 -c "print(f'{\"ratio posthorn / baseline\":40s} {$posthorn_rate / $baseline_rate:10.2f}')"
