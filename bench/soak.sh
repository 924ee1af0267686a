#!/usr/bin/env bash
# Soak: SOAK_MINUTES of steady mixed load (sends, idempotent and scheduled sends, invalid sends, reads,
# listings, scrapes) against the release binary on PostgreSQL, delivering to an SMTP peer that answers
# 250, 451 or 550 at random. Every SOAK_INTERVAL seconds it prints the process's RSS, open file
# descriptors and TCP connections (API clients, PostgreSQL, SMTP), the queue depth and the delivery
# counters from /metrics. At the end: whether the queue drained, whether RSS stayed flat (first sample vs
# last), and whether the database agrees with what the SMTP peer accepted.
#
#   bench/soak.sh                                   # 10 minutes
#   SOAK_MINUTES=2 SOAK_RATE=40 bench/soak.sh
#
#   SOAK_MINUTES        length of the load (default 10; SOAK_SECONDS overrides it)
#   SOAK_RATE           requests per second, all routes together (default 40)
#   SOAK_CLIENTS        concurrent HTTP clients (default 8)
#   SOAK_INTERVAL       seconds between samples (default 30)
#   SOAK_P451/SOAK_P550 share of 451 and 550 replies after the data (default 0.10 and 0.05)
#   SOAK_DRAIN_TIMEOUT  seconds to wait for the queue to drain after the load (default 180)
#   SOAK_RSS_GROWTH     largest RSS growth, first sample to last, still called flat (default 0.25)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh

minutes=${SOAK_MINUTES:-10}
rate=${SOAK_RATE:-40}
clients=${SOAK_CLIENTS:-8}
interval=${SOAK_INTERVAL:-30}
p451=${SOAK_P451:-0.10}
p550=${SOAK_P550:-0.05}
drain_timeout=${SOAK_DRAIN_TIMEOUT:-180}
rss_growth=${SOAK_RSS_GROWTH:-0.25}
command -v ss >/dev/null || die "ss not found (Debian: apt-get install iproute2)"
command -v curl >/dev/null || die "curl not found"

ensure_postgres
step "building posthorn (release)"
cargo build --release --locked --quiet --bin posthorn
bin=${CARGO_TARGET_DIR:-target}/release/posthorn

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d "${TMPDIR:-/tmp}/posthorn-soak.XXXXXX")
on_exit rm -rf "$work"

admin=$POSTHORN_TEST_DATABASE_URL
db=posthorn_soak_$$
pg_psql -d "$admin" -c "CREATE DATABASE $db"
on_exit pg_psql -d "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
url=$(pg_url_with_db "$admin" "$db")
pg_port=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port or 5432)' "$url")

# The SMTP peer.
smtp_port=$(free_port)
python3 bench/soak_smtp.py "$smtp_port" "$work/smtp.json" --p451 "$p451" --p550 "$p550" >"$work/smtp.out" 2>&1 &
smtp_pid=$!
on_exit kill "$smtp_pid"
for _ in $(seq 100); do grep -q READY "$work/smtp.out" 2>/dev/null && break; sleep 0.1; done
grep -q READY "$work/smtp.out" || die "the SMTP peer did not start: $(cat "$work/smtp.out")"

# posthorn, in the production profile, with retries short enough to drain within the run.
api_port=$(free_port)
secret=soak-secret-0123456789-0123456789-abcdef
# An array, so `&` starts env itself (which execs posthorn): $! is posthorn's pid.
posthorn=(env -i PATH="$PATH" HOME="${HOME:-/tmp}"
  POSTHORN_PROFILE=production
  POSTHORN_DATABASE_URL="$url"
  POSTHORN_JWT_SECRET="$secret"
  POSTHORN_LISTEN="127.0.0.1:$api_port"
  POSTHORN_SMTP_URL="smtp://127.0.0.1:$smtp_port"
  POSTHORN_SMTP_TIMEOUT=10s
  POSTHORN_RETRY_INITIAL_DELAY=2s
  POSTHORN_RETRY_MAX_DELAY=20s
  POSTHORN_RETRY_MAX_ATTEMPTS=6
  POSTHORN_LOG=warn
  POSTHORN_LOG_FORMAT=json
  "$bin")
"${posthorn[@]}" serve >/dev/null 2>"$work/posthorn.log" &
server=$!
stop_server() {
  kill -TERM "$server" 2>/dev/null || return 0
  wait "$server" 2>/dev/null || true
}
on_exit stop_server
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null || die "posthorn did not become ready: $(cat "$work/posthorn.log")"
token=$("${posthorn[@]}" token --sub soak --scope send,read --ttl 24h)

metric() { awk -v name="$1" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }' "$work/metrics"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$server/status"; }
sample() {
  local elapsed=$1 conns http pg smtp
  curl -sf "http://127.0.0.1:$api_port/metrics" >"$work/metrics" || : >"$work/metrics"
  conns=$(ss -Htnp state established 2>/dev/null | grep "pid=$server," || true)
  http=$(awk -v p=":$api_port" 'substr($3, length($3) - length(p) + 1) == p' <<<"$conns" | grep -c . || true)
  pg=$(awk -v p=":$pg_port" 'substr($4, length($4) - length(p) + 1) == p' <<<"$conns" | grep -c . || true)
  smtp=$(awk -v p=":$smtp_port" 'substr($4, length($4) - length(p) + 1) == p' <<<"$conns" | grep -c . || true)
  local rss
  rss=$(rss_kb)
  [[ -n "$rss" ]] || die "posthorn (pid $server) is gone: $(tail -n 20 "$work/posthorn.log")"
  echo "$rss" >>"$work/rss"
  printf '%6s %8.1f %5s %5s %4s %5s %7s %9s %7s %9s %8s %7s %8s\n' \
    "$elapsed" "$(awk -v kb="$rss" 'BEGIN { printf "%.1f", kb / 1024 }')" \
    "$(find "/proc/$server/fd" -mindepth 1 -maxdepth 1 | wc -l)" "$http" "$pg" "$smtp" \
    "$(metric 'posthorn_queue_depth{status="queued"}')" \
    "$(metric 'posthorn_queue_depth{status="scheduled"}')" \
    "$(metric 'posthorn_queue_depth{status="sending"}')" \
    "$(metric posthorn_messages_accepted_total)" \
    "$(metric posthorn_messages_sent_total)" \
    "$(metric posthorn_messages_failed_total)" \
    "$(metric posthorn_messages_retried_total)"
}
header() {
  printf '%6s %8s %5s %5s %4s %5s %7s %9s %7s %9s %8s %7s %8s\n' \
    "t(s)" "rss(MB)" "fds" "http" "pg" "smtp" "queued" "scheduled" "sending" "accepted" "sent" "failed" "retried"
}

seconds=${SOAK_SECONDS:-$((minutes * 60))}
step "soak: ${seconds}s at ${rate} req/s from ${clients} clients; SMTP peer answers 451 with p=${p451}, 550 with p=${p550}"
header
sample 0
python3 bench/soak_load.py 127.0.0.1 "$api_port" "$token" "$seconds" "$rate" "$clients" >"$work/load.json" &
load=$!
started=$(date +%s)
while kill -0 "$load" 2>/dev/null; do
  for _ in $(seq "$interval"); do
    kill -0 "$load" 2>/dev/null || break
    sleep 1
  done
  kill -0 "$load" 2>/dev/null && sample $(($(date +%s) - started))
done
wait "$load" || die "the load generator failed"
sample "$(($(date +%s) - started))"

step "load done; waiting up to ${drain_timeout}s for the queue to drain"
drain_started=$(date +%s)
drained=no
while (($(date +%s) - drain_started < drain_timeout)); do
  curl -sf "http://127.0.0.1:$api_port/metrics" >"$work/metrics" || true
  left=$(($(metric 'posthorn_queue_depth{status="queued"}') + $(metric 'posthorn_queue_depth{status="scheduled"}') + $(metric 'posthorn_queue_depth{status="sending"}')))
  if ((left == 0)); then
    drained=yes
    break
  fi
  sleep 2
done
drain_seconds=$(($(date +%s) - drain_started))
sample "$(($(date +%s) - started))"

step "summary"
note "load: $(cat "$work/load.json")"
note "SMTP peer: $(cat "$work/smtp.json")"
note "database: $(pg_psql -At -d "$url" -c "SELECT string_agg(status || '=' || n, ' ' ORDER BY status) FROM (SELECT status, count(*) n FROM message_states GROUP BY status) s")"
note "attempts: $(pg_psql -At -d "$url" -c "SELECT string_agg(outcome || '=' || n, ' ' ORDER BY outcome) FROM (SELECT outcome, count(*) n FROM delivery_attempts GROUP BY outcome) s")"
sent_db=$(pg_psql -At -d "$url" -c "SELECT count(*) FROM message_states WHERE status = 'sent'")
accepted_smtp=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["250"])' "$work/smtp.json")
note "messages sent per the database: $sent_db; messages the SMTP peer accepted (250): $accepted_smtp"
warnings=$(grep -c '"level":"WARN"' "$work/posthorn.log" || true)
errors=$(grep -c '"level":"ERROR"' "$work/posthorn.log" || true)
note "posthorn log: $warnings WARN, $errors ERROR lines"
if ((warnings + errors > 0)); then
  python3 - "$work/posthorn.log" <<'PY'
import collections, json, sys
seen = collections.Counter()
for line in open(sys.argv[1]):
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    seen[(entry.get("level"), entry.get("message"))] += 1
for (level, message), count in seen.most_common(10):
    print(f"      {count:6d} {level} {message}")
PY
fi
first=$(sed -n 2p "$work/rss")
last=$(tail -n 1 "$work/rss")
peak=$(sort -n "$work/rss" | tail -n 1)
flat=$(python3 -c 'import sys; f, l, g = map(float, sys.argv[1:]); print("yes" if l <= f * (1 + g) else "no")' "$first" "$last" "$rss_growth")
growth=$(python3 -c 'import sys; f, l = map(float, sys.argv[1:]); print(f"{(l - f) / f * 100:+.1f}%")' "$first" "$last")
note "queue drained: $drained (${drain_seconds}s after the load)"
note "RSS: start $(($(head -n 1 "$work/rss") / 1024)) MB, first sample under load $((first / 1024)) MB, last $((last / 1024)) MB ($growth), peak $((peak / 1024)) MB; flat (growth <= ${rss_growth}): $flat"
[[ "$drained" == yes && "$flat" == yes ]]
