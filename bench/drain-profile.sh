#!/usr/bin/env bash
# Side-by-side drains for tuning: loads N messages once, then for each variant resets them to queued and
# drains them into smtp-sink, printing the rate, PostgreSQL commits (its own polling included) and WAL bytes
# per message. With WAITS=1 it also prints what the database sessions were waiting on (sampled every 50 ms
# by a psql per sample, which costs the machine enough CPU to lower the rate).
#
#   bench/drain-profile.sh [N] -- VARIANT...
#
# A variant is a space-separated list of POSTHORN_* settings, or "-" for the defaults; a `bin=PATH` entry
# runs another build (copy target/release/posthorn aside before rebuilding) for side-by-side drains. Each
# build gets a database of its own, loaded and migrated by that build, so builds of different schemas
# can be compared:
#
#   bench/drain-profile.sh 20000 -- - "POSTHORN_CLAIM_BATCH_SIZE=50" "POSTHORN_CLAIM_BATCH_SIZE=400"
#   bench/drain-profile.sh 20000 -- bin=/tmp/posthorn-before - bin=/tmp/posthorn-before -
#
# The SMTP URL gets ${QUERY:-} appended (QUERY='?pipelining=off'). Uses target/release/posthorn as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh
# shellcheck source=scripts/lib/postfix.sh
source scripts/lib/postfix.sh

total=${1:-20000}
shift || true
[[ "${1:-}" == "--" ]] && shift
(($# > 0)) || set -- -
bin=target/release/posthorn
[[ -x "$bin" ]] || die "$bin is missing: cargo build --release --bin posthorn"
ensure_postgres
ensure_smtp_sink

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
admin=$POSTHORN_TEST_DATABASE_URL
server="" sink="" sampler=""
declare -A databases=()
cleanup() {
  for pid in $server $sink $sampler; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for db in "${databases[@]}"; do pg_psql -d "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
}
trap cleanup EXIT
q() { pg_psql -At -d "$url" -c "$1"; }
export POSTHORN_JWT_SECRET=bench-secret-0123456789-0123456789-0123 \
  POSTHORN_LOG=warn POSTHORN_RATE_LIMIT=0 POSTHORN_PROFILE=production

# use_database BIN: points db and url at BIN's database, creating it and loading $total messages through
# BIN (no upstream configured, so nothing drains meanwhile) on first use.
use_database() {
  local run_bin=$1 port token
  if [[ -n "${databases[$run_bin]:-}" ]]; then
    db=${databases[$run_bin]}
    url=$(pg_url_with_db "$admin" "$db")
    return
  fi
  db=posthorn_profile_$$_${#databases[@]}
  databases[$run_bin]=$db
  url=$(pg_url_with_db "$admin" "$db")
  pg_psql -d "$admin" -c "CREATE DATABASE $db" >/dev/null
  port=$(free_port)
  POSTHORN_DATABASE_URL=$url POSTHORN_LISTEN=127.0.0.1:$port "$run_bin" serve 2>/dev/null &
  server=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.2; done
  token=$(POSTHORN_DATABASE_URL=$url "$run_bin" token --sub bench --scope send,read)
  step "loading $total messages into $db ($run_bin)"
  python3 bench/load.py 127.0.0.1 "$port" "$token" "$total" 16 >/dev/null
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
}

# reset: every message queued again and due now, on either schema (a job table, or the queue in messages).
reset() {
  q "TRUNCATE delivery_attempts" >/dev/null
  if [[ "$(q "SELECT to_regclass('jobs') IS NOT NULL")" == t ]]; then
    q "TRUNCATE jobs" >/dev/null
    q "UPDATE messages SET status = 'queued', attempt_count = 0, sent_at = NULL, finished_at = NULL,
              last_error = NULL" >/dev/null
    q "INSERT INTO jobs (message_id, due_at) SELECT id, now() FROM messages" >/dev/null
    q "VACUUM FULL jobs" >/dev/null
    DRAINED="SELECT NOT EXISTS (SELECT 1 FROM jobs)"
  else
    q "UPDATE messages SET status = 'queued', due_at = now(), attempt_count = 0, sent_at = NULL,
              finished_at = NULL, lease_token = NULL, pending_recipients = NULL, last_error = NULL" >/dev/null
    DRAINED="SELECT NOT EXISTS (SELECT 1 FROM messages WHERE status IN ('queued', 'sending'))"
  fi
  q "VACUUM FULL messages" >/dev/null
  q "ANALYZE" >/dev/null
  q "CHECKPOINT" >/dev/null
}
sink_port=$(free_port)
"$POSTHORN_TEST_SMTP_SINK" -u postfix -c "127.0.0.1:$sink_port" 1024 >/dev/null 2>&1 &
sink=$!
samples=$(mktemp)
for variant in "$@"; do
  settings=() words=() run_bin=$bin
  [[ "$variant" == - ]] || read -r -a words <<<"$variant"
  for word in "${words[@]}"; do
    if [[ "$word" == bin=* ]]; then run_bin=${word#bin=}; else settings+=("$word"); fi
  done
  [[ -x "$run_bin" ]] || die "$run_bin is not an executable"
  use_database "$run_bin"
  reset
  commits0=$(q "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
  wal0=$(q "SELECT pg_current_wal_lsn()")
  start=$(date +%s.%N)
  env POSTHORN_LISTEN="127.0.0.1:$(free_port)" POSTHORN_SMTP_URL="smtp://127.0.0.1:$sink_port${QUERY:-}" \
    POSTHORN_DATABASE_URL="$url" POSTHORN_SMTP_MAX_CONNECTIONS=4 POSTHORN_WORKERS=8 "${settings[@]}" \
    "$run_bin" serve 2>/dev/null &
  server=$!
  : >"$samples"
  if [[ "${WAITS:-0}" == 1 ]]; then
    (while kill -0 "$server" 2>/dev/null; do
      q "SELECT '-' UNION ALL
         SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-') || ' '
                || left(regexp_replace(query, '\s+', ' ', 'g'), 30)
           FROM pg_stat_activity
          WHERE datname = '$db' AND pid <> pg_backend_pid() AND state = 'active'" >>"$samples" 2>/dev/null || true
      sleep 0.05
    done) &
    sampler=$!
  fi
  # An index probe that stops at the first unfinished job: cheap enough to run often.
  until [[ "$(q "$DRAINED")" == t ]]; do
    kill -0 "$server" 2>/dev/null || die "posthorn ($run_bin) exited during the drain"
    sleep 0.1
  done
  end=$(date +%s.%N)
  wal=$(q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0')")
  kill "$server" "$sampler" 2>/dev/null || true
  wait "$server" "$sampler" 2>/dev/null || true
  server="" sampler=""
  # Sessions report their counters when they end.
  sleep 1
  commits1=$(q "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
  [[ "$variant" == - ]] && variant=defaults
  python3 -c "print(f'{\"$variant\"}: {$total / ($end - $start):.0f} msg/s, {($commits1 - $commits0) / $total:.3f} commits/msg, {$wal / $total:.0f} WAL bytes/msg')"
  if [[ "${WAITS:-0}" == 1 ]]; then
    echo "  sampled $(grep -c '^-$' "$samples") times; active statements by wait:"
    grep -v '^-$' "$samples" | sort | uniq -c | sort -rn | head -6 | sed 's/^/  /'
  fi
done
rm -f "$samples"
