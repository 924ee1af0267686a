#!/usr/bin/env bash
# posthorn benchmarks. Every figure is printed next to a baseline measured side by side, in the same run,
# on the same machine, and as a ratio to it. This is a script that prints figures, not a test.
#
#   bench/run.sh                   every section: accept delivery e2e depth resources
#   bench/run.sh accept delivery   only these sections (in the order given)
#
# Sections:
#   accept     sustained durable POST /v1/send rate (the best of wrk closed loops over 64, 128 and 256
#              connections) against pgbench doing one INSERT of the same payload per transaction with 64
#              clients; p50/p99 latency at 50 %, 70 % and 100 % of that maximum (fixed-rate load: oha
#              with latency correction, installed once into target/bench-tools; bench/openloop.py if it
#              cannot be installed), each step beside a commit probe (one pgbench client, 100 one-row
#              commits/s on a table of its own) that shows whether the server's commits stalled when
#              posthorn's answers did
#   delivery   drain rate of a queued backlog into Postfix's smtp-sink, against smtp-source sending the same
#              message over as many connections, and against a private Postfix instance relaying the same
#              backlog to the same sink (bench/postfix/)
#   e2e        the accept-only maximum A (wrk, no upstream), the drain-only maximum D (a backlog into
#              smtp-sink) and the end-to-end maximum (fixed-rate steps accepted while delivering, the queue
#              bounded) beside A*D/(A+D); then accept-to-arrival latency at Postfix's smtp-sink (arrival read
#              off the files it writes, by bench/dump_latency.py) at 50 % of the end-to-end maximum and at
#              1000 msg/s, beside the same commit probe
#   depth      accept and drain rates with 100k (and optionally 1M) rows of sent history and as many
#              scheduled messages in the table, against the same on an empty table
#   resources  RSS idle and under load (accept at the maximum rate while delivering), CPU split between
#              posthorn, PostgreSQL and the load generator
#   embedded   accept (wrk, BENCH_CONNECTIONS) and drain (into smtp-sink) on the embedded SQLite store,
#              against raw SQLite inserts of the same row (WAL, synchronous=FULL, one per transaction,
#              bench/sqlite_insert.py) and smtp-source sending as many copies of the same message
#   big        1 MB and 10 MB messages (a base64 attachment each): accept rate against dd writing the same
#              bytes with one fdatasync each, drain rate against smtp-source, and posthorn's peak RSS with
#              32 concurrent 10 MB sends against 5 x 32 x the message
#   wan        drains to an upstream 40 ms away that speaks TLS on connect (bench/delay_proxy.py, 20 ms each
#              way, in front of stunnel4 in front of smtp-sink) over 4, 16 and 64 connections, beside the
#              physical bound for that many connections (one round trip per message), smtp-source over the
#              same link (plain text) and Postfix relaying over it with TLS; TLS handshakes per message
#   submission messages/s submitted over SMTP (AUTH, then MAIL/RCPT/DATA pipelined per message) by 8
#              sessions, against the same backlog submitted as JSON over 8 HTTP connections, both from
#              bench/submission_load.py (one kind of client, so the protocols are compared, not tools)
#
# Environment (all optional):
#   BENCH_DURATION=15           seconds of each measured load step
#   BENCH_CONNECTIONS=64        HTTP connections of the load generators, and pgbench clients
#   BENCH_ACCEPT_CONNECTIONS=   connection counts of the accept maximum's closed loops (default: 1, 2 and 4
#                               times BENCH_CONNECTIONS); the best is the maximum, and the fixed-rate
#                               steps keep that many connections open
#   BENCH_SMTP_CONNECTIONS=4    SMTP connections: posthorn's pool, smtp-source -s, Postfix's concurrency limit
#   BENCH_MESSAGES=20000        backlog of the delivery section (for each of posthorn, smtp-source, Postfix)
#   BENCH_E2E_RATE=             e2e only: the latency at this fixed rate, no maxima
#   BENCH_E2E_ACCEPT_CONNECTIONS=  wrk connections of the accept-only maximum (default: 2 x BENCH_CONNECTIONS)
#   BENCH_E2E_DRAIN_MESSAGES=   backlog of the drain-only maximum (default: BENCH_MESSAGES)
#   BENCH_E2E_CONNECTIONS=      HTTP connections of the e2e generator (default: 4 times BENCH_CONNECTIONS)
#   BENCH_SUBMISSION_SESSIONS=8 SMTP sessions (and HTTP connections) of the submission section
#   BENCH_DEPTH_ROWS=100000     history size of the depth section (sent rows, and as many scheduled ones)
#   BENCH_BATCH_SIZE=100        messages per POST /v1/send/batch in the batch section
#   BENCH_BATCH_CONNECTIONS=8   wrk connections sending batches
#   BENCH_WEBHOOK_EVENTS=5000   events delivered to one endpoint in the webhooks section
#   BENCH_LANES_BACKLOG=50000   broadcast messages queued ahead of the lanes section's transactional probes
#   BENCH_RATE_MESSAGES=1500    messages the ratelimit section drains through one provider limited to
#   BENCH_RATE_LIMIT=50         this many per second, by three replicas together
#   BENCH_WAN_DELAY_MS=20       wan: the delay of each direction (the round trip is twice this)
#   BENCH_WAN_CONNECTIONS="4 16 64"  wan: the connection counts measured
#   BENCH_WAN_PER_CONNECTION=200     wan: messages per connection posthorn drains (smtp-source sends 25 per
#                               connection, BENCH_WAN_SOURCE_PER_CONNECTION; Postfix relays 40,
#                               BENCH_WAN_POSTFIX_PER_CONNECTION: both need several round trips a message)
#   BENCH_DEPTH_1M=0            1: also measure with 1,000,000 + 1,000,000 rows (adds ~2 minutes on 2 cores)
#   BENCH_DEPTH_BUDGET=600      seconds after which the depth section starts no further step
#   BENCH_BUILD=1               0: use target/release/posthorn as it is
#   BENCH_BIN=                  another posthorn binary to measure (with BENCH_BUILD=0)
#   BENCH_WAIT_QUIET=900        seconds to wait for running cargo/rustc processes to end before building
#                               and before measuring (0: do not wait)
#   BENCH_CHECKPOINT=1          0: no CHECKPOINT before each measured step (see settle_server)
#   BENCH_OUT=target/bench      results (results.tsv, results.md), raw JSON and logs
#   POSTHORN_TEST_DATABASE_URL  the PostgreSQL server (default: the local one on 5432, else a throwaway one;
#                               see scripts/lib/postgres.sh); baselines run on the same server
#   BENCH_PG_SSLMODE=disable    sslmode of every database connection the benchmark makes (unless the URL
#                               has one): prefer uses TLS where the server offers it
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh
# shellcheck source=scripts/lib/postfix.sh
source scripts/lib/postfix.sh

ALL_SECTIONS=(accept delivery e2e depth resources submission batch webhooks lanes ratelimit embedded big wan)
DURATION=${BENCH_DURATION:-15}
CONNS=${BENCH_CONNECTIONS:-64}
E2E_CONNS=${BENCH_E2E_CONNECTIONS:-$((CONNS * 4))}
E2E_ACCEPT_CONNS=${BENCH_E2E_ACCEPT_CONNECTIONS:-$((CONNS * 2))}
read -r -a ACCEPT_CONNS <<<"${BENCH_ACCEPT_CONNECTIONS:-$CONNS $((CONNS * 2)) $((CONNS * 4))}"
SMTP_CONNS=${BENCH_SMTP_CONNECTIONS:-4}
MESSAGES=${BENCH_MESSAGES:-20000}
E2E_DRAIN_MESSAGES=${BENCH_E2E_DRAIN_MESSAGES:-$MESSAGES}
DEPTH_ROWS=${BENCH_DEPTH_ROWS:-100000}
SUBMISSION_SESSIONS=${BENCH_SUBMISSION_SESSIONS:-8}
BATCH_SIZE=${BENCH_BATCH_SIZE:-100}
BATCH_CONNS=${BENCH_BATCH_CONNECTIONS:-8}
WEBHOOK_EVENTS=${BENCH_WEBHOOK_EVENTS:-5000}
LANES_BACKLOG=${BENCH_LANES_BACKLOG:-50000}
RATE_MESSAGES=${BENCH_RATE_MESSAGES:-1500}
RATE_LIMIT=${BENCH_RATE_LIMIT:-50}
DEPTH_1M=${BENCH_DEPTH_1M:-0}
WAN_DELAY_MS=${BENCH_WAN_DELAY_MS:-20}
read -r -a WAN_CONNECTIONS <<<"${BENCH_WAN_CONNECTIONS:-4 16 64}"
WAN_PER_CONNECTION=${BENCH_WAN_PER_CONNECTION:-200}
WAN_SOURCE_PER_CONNECTION=${BENCH_WAN_SOURCE_PER_CONNECTION:-25}
WAN_POSTFIX_PER_CONNECTION=${BENCH_WAN_POSTFIX_PER_CONNECTION:-40}
DEPTH_BUDGET=${BENCH_DEPTH_BUDGET:-600}
WAIT_QUIET=${BENCH_WAIT_QUIET:-900}
CHECKPOINT_FIRST=${BENCH_CHECKPOINT:-1}
OUT=${BENCH_OUT:-$ROOT/target/bench}
BIN=${BENCH_BIN:-$ROOT/target/release/posthorn}

sections=("$@")
((${#sections[@]})) || sections=("${ALL_SECTIONS[@]}")
for s in "${sections[@]}"; do
  [[ " ${ALL_SECTIONS[*]} " == *" $s "* ]] || die "unknown section '$s' (one of: ${ALL_SECTIONS[*]})"
done

# Nothing from the caller's environment configures the posthorn processes started here.
while read -r name; do
  [[ "$name" == POSTHORN_TEST_* ]] || unset "$name"
done < <(compgen -e | grep '^POSTHORN_' || true)
export POSTHORN_PROFILE=production POSTHORN_RATE_LIMIT=0 POSTHORN_LOG=warn POSTHORN_SHUTDOWN_GRACE=5s
POSTHORN_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export POSTHORN_JWT_SECRET

mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: >"$RESULTS"
: >"$OUT/posthorn.log"

# ---------------------------------------------------------------------------------------------------------
# Helpers

calc() { python3 -c "import math; print($1)"; }
# jget FILE KEY: a value of a JSON object (KEY may be a.b.c).
jget() {
  python3 -c 'import json, sys
value = json.load(open(sys.argv[1]))
for part in sys.argv[2].split("."):
    value = value.get(part) if isinstance(value, dict) else None
print("" if value is None else value)' "$1" "$2"
}
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fmt_ratio() { calc "'%.2fx' % ($1 / $2) if $2 else 'n/a'"; }
# verdict VALUE OP LIMIT: yes or no.
verdict() { calc "'yes' if $1 $2 $3 else 'no'"; }

# row SECTION FIGURE VALUE BASELINE RATIO TARGET MET: one line of the final table.
row() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
  printf '    %s | %s | %s | %s | %s | %s | %s\n' "$@"
}

# wait_until SECONDS WHAT COMMAND...: run COMMAND every 0.2 s (WAIT_STEP) until it succeeds; die after
# SECONDS.
wait_until() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((EPOCHSECONDS + limit))
  # No helper process per poll (they would take CPU from what is being measured).
  until "$@" >/dev/null 2>&1; do
    ((EPOCHSECONDS <= deadline)) || die "timed out after ${limit}s waiting for $what"
    sleep "${WAIT_STEP:-0.2}"
  done
}

# Background processes: started by bg, stopped by stop_pid or at exit.
BG_PIDS=()
alive() {
  local state
  state=$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "$state" != Z ]]
}
stop_pid() {
  local pid=$1 i
  [[ -n "$pid" ]] || return 0
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
}
stop_all() {
  local pid
  for pid in "${BG_PIDS[@]}"; do stop_pid "$pid"; done
}

# Databases: one fresh database per section (per step in depth), dropped at the end of it and at exit.
DBS=()
new_db() {
  DB=posthorn_bench_$1_$$
  pg_psql "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
  DBS+=("$DB")
  DB_URL=$(pg_url_with_db "$ADMIN_URL" "$DB")
}
drop_db() { pg_psql "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" 2>/dev/null || true; }
drop_all_dbs() {
  local db
  for db in "${DBS[@]}"; do drop_db "$db"; done
}
# Databases of earlier runs of this script that were killed before their cleanup.
reap_stale_dbs() {
  local db pid
  while read -r db; do
    pid=${db##*_}
    [[ "$pid" =~ ^[0-9]+$ && ! -d /proc/$pid ]] || continue
    note "dropping $db, left by an earlier run"
    drop_db "$db"
  done < <(pg_psql -At "$ADMIN_URL" -c "SELECT datname FROM pg_database
             WHERE datname ~ '^posthorn_bench_(accept|delivery|e2e|depth[0-9]+|resources|submission|batch|webhooks|lanes|ratelimit|embedded|big|wan)_[0-9]+$'")
}
sql() { pg_psql -At "$DB_URL" -c "$1"; }
reset_messages() { pg_psql "$DB_URL" -c "TRUNCATE messages, jobs CASCADE" -c "VACUUM ANALYZE messages, jobs"; }

# start_posthorn [VAR=VALUE...]: posthorn serve on DB_URL and a free port; sets PH_PID and PH_PORT.
start_posthorn() {
  PH_PORT=$(free_port)
  env "${NO_TEST_ENV[@]}" POSTHORN_DATABASE_URL="$DB_URL" POSTHORN_LISTEN="127.0.0.1:$PH_PORT" "$@" "$BIN" serve \
    >>"$OUT/posthorn.log" 2>&1 &
  PH_PID=$!
  BG_PIDS+=("$PH_PID")
  wait_until 60 "posthorn to be ready" curl -sf -o /dev/null "http://127.0.0.1:$PH_PORT/readyz"
}
stop_posthorn() { stop_pid "$PH_PID"; PH_PID=""; }
send_one() {
  curl -sf -o /dev/null -X POST "http://127.0.0.1:$PH_PORT/v1/send" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' --data-binary "@$BODY"
}

# start_sampler NAME ARGS...: bench/procstat.py in the background until stop_sampler; writes $OUT/NAME.cpu.json.
start_sampler() {
  local name=$1
  shift
  SAMPLER_OUT=$OUT/$name.cpu.json
  local pg=()
  [[ -n "$PG_MASTER" ]] && pg=(--pg-master "$PG_MASTER" --pg-db "$DB")
  python3 bench/procstat.py --out "$SAMPLER_OUT" "${pg[@]}" "$@" &
  SAMPLER_PID=$!
  BG_PIDS+=("$SAMPLER_PID")
  sleep 0.3
}
stop_sampler() { stop_pid "$SAMPLER_PID"; }
# cpu_split FILE: "posthorn 95%, postgres 60%, wrk 30%, other 10%" (percent of one core).
cpu_split() {
  python3 -c 'import json, sys
data = json.load(open(sys.argv[1]))
shares = data["cpu_pct_of_one_core"]
parts = ["%s %.0f%%" % (name, value) for name, value in shares.items() if name != "other" and value >= 0.5]
top = ", ".join("%s %.0f%%" % item for item in data.get("other_top", {}).items() if item[1] >= 1)
parts.append("other %.0f%%" % shares["other"] + (" [%s]" % top if top else ""))
print(", ".join(parts) + " of one core (%d cores)" % data["cores"])' "$1"
}
# cpu_per FILE GROUP RATE: CPU microseconds of GROUP per unit of work, at RATE units per second.
cpu_per() { cpu_each "$1" "$2" "$(calc "$3 * $(jget "$1" wall_s)")"; }
# cpu_each FILE GROUP COUNT: CPU microseconds of GROUP per unit, COUNT units done in the sampled window
# (which may be longer than the work: a drain's sampler starts before T0 and stops after the poll).
cpu_each() {
  python3 -c 'import json, sys
data = json.load(open(sys.argv[1]))
print(round(data["cpu_s"].get(sys.argv[2], 0) * 1e6 / float(sys.argv[3])))' "$@"
}

# run_wrk PORT SECONDS NAME [CONNECTIONS]: closed-loop POSTs over CONNECTIONS (default $CONNS)
# connections; $OUT/NAME.json.
run_wrk() {
  local port=$1 seconds=$2 name=$3 conns=${4:-$CONNS} path=${5:-/v1/send} body=${6:-$BODY}
  BENCH_TOKEN=$TOKEN BENCH_BODY_FILE=$body timeout $((seconds + 60)) \
    wrk -t"$(nproc)" -c"$conns" -d"${seconds}s" --timeout 10s -s bench/wrk-post.lua \
    "http://127.0.0.1:$port$path" >"$OUT/$name.txt" 2>&1 || true
  sed -n 's/^WRK_JSON //p' "$OUT/$name.txt" >"$OUT/$name.json"
  [[ -s "$OUT/$name.json" ]] || {
    cat "$OUT/$name.txt" >&2
    die "wrk printed no summary"
  }
  WRK_RATE=$(calc "round($(jget "$OUT/$name.json" requests) / ($(jget "$OUT/$name.json" duration_us) / 1e6))")
  WRK_ERRORS=$(python3 -c 'import json, sys
data = json.load(open(sys.argv[1]))
print(sum(data[key] for key in ("status_errors", "timeouts", "connect_errors", "read_errors", "write_errors")))' \
    "$OUT/$name.json")
}

# run_openloop PORT RATE SECONDS NAME CONNECTIONS [ARGS...]: fixed-rate POSTs over CONNECTIONS
# connections; $OUT/NAME.json.
run_openloop() {
  local port=$1 rate=$2 seconds=$3 name=$4 conns=$5
  shift 5
  timeout $((seconds + 90)) python3 bench/openloop.py --url "http://127.0.0.1:$port/v1/send" --token "$TOKEN" \
    --body "$BODY" --rate "$rate" --duration "$seconds" --connections "$conns" "$@" >"$OUT/$name.json" || true
  [[ -s "$OUT/$name.json" ]] || die "openloop.py printed no summary"
}

# run_fixed PORT RATE SECONDS NAME CONNECTIONS: fixed-rate POSTs for the accept latency steps;
# $OUT/NAME.json in openloop.py's form. oha (compiled, with latency correction) when ensure_oha found it:
# the Python generator falls behind its own schedule when the machine is busy (its send lag shows it),
# and then measures itself.
run_fixed() {
  local port=$1 rate=$2 seconds=$3 name=$4 conns=$5
  if [[ -z "$OHA" ]]; then
    run_openloop "$@"
    return
  fi
  timeout $((seconds + 90)) "$OHA" -q "$rate" --latency-correction -w -c "$conns" -z "${seconds}s" --no-tui \
    --output-format json -m POST -T application/json -H "Authorization: Bearer $TOKEN" -D "$BODY" \
    "http://127.0.0.1:$port/v1/send" >"$OUT/$name.oha.json" 2>"$OUT/$name.oha.err" || true
  [[ -s "$OUT/$name.oha.json" ]] || die "oha printed no summary (see $OUT/$name.oha.err)"
  python3 bench/oha_summary.py "$OUT/$name.oha.json" "$rate" "$seconds" >"$OUT/$name.json"
}
# generator_note FILE: which generator produced a fixed-rate summary, and how well it kept its schedule.
generator_note() {
  if [[ "$(jget "$1" generator)" == oha ]]; then
    echo "generator oha -q, latency from each request's scheduled time"
  else
    echo "generator bench/openloop.py, its send lag p99 $(jget "$1" send_lag_p99_ms) ms"
  fi
}

# ensure_oha: sets OHA to oha's path, installing it once under target/bench-tools (cargo install, a few
# minutes); empty when it cannot be had, and the fixed-rate steps then use bench/openloop.py.
ensure_oha() {
  local candidate
  for candidate in "$ROOT/target/bench-tools/bin/oha" "$(command -v oha || true)"; do
    OHA=$candidate
    # -w and --output-format json are what run_fixed needs (oha 1.x).
    [[ -x "$OHA" ]] && "$OHA" --help 2>/dev/null | grep -q -- '--output-format' && return 0
  done
  step "cargo install oha --locked (once, into target/bench-tools)"
  if cargo install oha --locked --version '^1' --root "$ROOT/target/bench-tools" >"$OUT/oha-install.log" 2>&1; then
    OHA=$ROOT/target/bench-tools/bin/oha
    return 0
  fi
  warn "oha could not be installed (see $OUT/oha-install.log); the fixed-rate accept steps use bench/openloop.py"
  OHA=""
}

# run_pgbench SCRIPT CLIENTS SECONDS NAME: pgbench on DB_URL with the payload of a real row; sets PGB_TPS.
run_pgbench() {
  local script=$1 clients=$2 seconds=$3 name=$4
  timeout $((seconds + 60)) "$PGBENCH" -n -M prepared -c "$clients" -j "$(nproc)" -T "$seconds" -f "$script" \
    -D "envelope=$PAYLOAD_ENVELOPE" -D "body=$PAYLOAD_BODY" -D "message_id=$PAYLOAD_MESSAGE_ID" \
    "$DB_URL" >"$OUT/$name.txt" 2>&1 || {
    cat "$OUT/$name.txt" >&2
    die "pgbench failed"
  }
  PGB_TPS=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$OUT/$name.txt" | head -n 1)
  PGB_TPS=$(calc "round($PGB_TPS)")
}

# start_commit_probe NAME SECONDS: one pgbench client making PROBE_RATE one-row commits a second on a table
# of its own (bench/pgbench-probe.sql), beside a measured step; stop_commit_probe NAME writes the summary of
# their latencies to $OUT/NAME.probe.json. When posthorn's latency shows a stall, the probe's shows
# whether the server's commits stalled at the same time.
PROBE_RATE=100
start_commit_probe() {
  local name=$1 seconds=$2
  sql "CREATE TABLE IF NOT EXISTS bench_commit_probe (at timestamptz NOT NULL)" >/dev/null
  rm -f "$OUT/$name.probe".[0-9]*
  timeout $((seconds + 60)) "$PGBENCH" -n -c 1 -R "$PROBE_RATE" -T "$seconds" -l --log-prefix="$OUT/$name.probe" \
    -f bench/pgbench-probe.sql "$DB_URL" >"$OUT/$name.probe.txt" 2>&1 &
  PROBE_PID=$!
  BG_PIDS+=("$PROBE_PID")
}
stop_commit_probe() {
  local name=$1
  wait "$PROBE_PID" || true
  python3 bench/probe_summary.py "$OUT/$name.probe".[0-9]* >"$OUT/$name.probe.json"
}
# probe_note NAME: "server commits meanwhile (...): p99 X / max Y ms at T" for a row.
probe_note() {
  local file=$OUT/$1.probe.json
  if [[ "$(jget "$file" commits)" == 0 ]]; then
    echo "commit probe: no commits logged (see $OUT/$1.probe.txt)"
    return
  fi
  echo "the server's own commits meanwhile (probe: pgbench, 1 client, $PROBE_RATE one-row commits/s): p99 $(jget "$file" p99_ms) / max $(jget "$file" max_ms) ms (at $(jget "$file" worst_at)), $(jget "$file" over_50ms) over 50 ms"
}

# The payload of a real accepted message (the first row), for pgbench and for SQL-made rows.
load_payload() {
  TEMPLATE_ID=$(sql "SELECT id FROM messages ORDER BY id LIMIT 1")
  [[ -n "$TEMPLATE_ID" ]] || die "no message row to copy"
  PAYLOAD_ENVELOPE=$(sql "SELECT envelope::text FROM messages WHERE id = '$TEMPLATE_ID'")
  PAYLOAD_BODY=$(sql "SELECT body::text FROM messages WHERE id = '$TEMPLATE_ID'")
  PAYLOAD_MESSAGE_ID=$(sql "SELECT message_id FROM messages WHERE id = '$TEMPLATE_ID'")
}

# A UUIDv7 (as posthorn makes) for time TS, in SQL.
UUID7="(lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7' || substr(md5(random()::text), 1, 3)
        || '8' || substr(md5(random()::text), 1, 15))::uuid"
# copy_rows CALLER COUNT STATUS DUE [AGE]: COUNT copies of the template row; DUE is an SQL expression of ts
# (the row's creation time, spread over AGE before now). A queued row gets its job, due at its send time
# (DUE, when it is days ahead) or its creation time.
copy_rows() {
  local caller=$1 count=$2 status=$3 due=$4 age=${5:-0 seconds}
  local sent="NULL" finished="NULL" attempts=0 send_at="NULL"
  if [[ "$status" == sent ]]; then sent="g.ts + interval '2 seconds'" finished=$sent attempts=1; fi
  if [[ "$due" == *days* ]]; then send_at=g.due; fi
  sql "INSERT INTO messages (id, caller, status, message_id, envelope, body, tags, metadata, created_at, updated_at,
                             send_at, attempt_count, sent_at, finished_at)
       SELECT g.id, t.caller || '$caller', '$status', '<' || replace(g.id::text, '-', '') || '@example.com>',
              t.envelope, t.body, t.tags, t.metadata, g.ts, g.ts, $send_at, $attempts, $sent, $finished
         FROM (SELECT $UUID7 AS id, ts, $due AS due
                 FROM (SELECT now() - interval '$age' * (n::float8 / $count) AS ts
                         FROM generate_series($count, 1, -1) AS n) AS times) AS g,
              messages AS t
        WHERE t.id = '$TEMPLATE_ID'" >/dev/null
  [[ "$status" != queued ]] || sql "INSERT INTO jobs (message_id, due_at, updated_at)
       SELECT id, coalesce(send_at, created_at), created_at FROM messages
        WHERE caller = (SELECT caller FROM messages WHERE id = '$TEMPLATE_ID') || '$caller'
       ON CONFLICT (message_id) DO NOTHING" >/dev/null
}
# delete_messages CONDITION: the messages matching CONDITION (SQL over messages), and their jobs.
delete_messages() {
  sql "DELETE FROM jobs WHERE message_id IN (SELECT id FROM messages WHERE $1);
       DELETE FROM messages WHERE $1" >/dev/null
}
queue_empty() { [[ "$(sql "SELECT count(*) FROM jobs")" == 0 ]]; }
pf_queued() { [[ "$(find "$1/queue/deferred" -type f | wc -l)" -ge "$2" ]]; }
pf_empty() { [[ "$(find "$1/queue/incoming" "$1/queue/active" "$1/queue/deferred" -type f | wc -l)" == 0 ]]; }
# The backlog rows: caller "bench-backlog". Nothing else is due (scheduled rows are days ahead), and the
# check is an index probe (jobs_due_idx) that stops at the first row, cheap enough to run every 0.2 s.
backlog_empty() {
  [[ "$(sql "SELECT NOT EXISTS (SELECT 1 FROM jobs WHERE due_at <= now() + interval '1 hour')")" == t ]]
}

# drain NAME [URL_QUERY [VAR=VALUE...]]: the backlog becomes due at an instant T0 a few seconds ahead; posthorn is started
# (sink as upstream, no polling) and ready before T0, and is told at T0 (NOTIFY, as an enqueue would). The
# drain is timed from that NOTIFY to the commit of the last outcome (its sent_at): the drain of a running
# gateway, not its start-up, and not the poll that notices the end. Sets DRAIN_RATE.
drain() {
  local name=$1 query=${2:-} count start end failed t0 late
  shift $(($# < 2 ? $# : 2))
  count=$(sql "SELECT count(*) FROM messages WHERE caller = 'bench-backlog' AND status = 'queued'")
  t0=$(sql "SELECT extract(epoch FROM now() + interval '8 seconds')")
  # Distinct due times, 1 µs apart in the backlog's order and ending at T0, as a stream of enqueues would
  # leave them (SQL-made rows all share one timestamp, and a key repeated 20000 times is not what the
  # claim's index sees in service).
  sql "UPDATE jobs AS j SET due_at = to_timestamp($t0) - (b.n - 1) * interval '1 microsecond'
         FROM (SELECT id, row_number() OVER (ORDER BY id DESC) AS n FROM messages
                WHERE caller = 'bench-backlog' AND status = 'queued') AS b
        WHERE j.message_id = b.id" >/dev/null
  sql "VACUUM ANALYZE messages, jobs" >/dev/null
  start_posthorn POSTHORN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT$query" POSTHORN_SMTP_MAX_CONNECTIONS="$SMTP_CONNS" \
    POSTHORN_WORKERS=$((SMTP_CONNS * 2)) POSTHORN_POLL_INTERVAL=1h "$@"
  late=$(calc "int($(now) > $t0 - 0.5)")
  [[ "$late" == 0 ]] || warn "posthorn was ready less than 0.5 s before T0: this drain's figure may be too high"
  sleep "$(calc "max(0, $t0 - 0.4 - $(now))")"
  start_sampler "$name" --pid "posthorn=$PH_PID" --match 'smtp-sink=smtp-sink .*'"$SINK_PORT"
  sleep "$(calc "max(0, $t0 - $(now))")"
  # On the database's clock, as sent_at is; the notification goes out when this statement commits.
  start=$(sql "SELECT extract(epoch FROM clock_timestamp()) FROM (SELECT pg_notify('posthorn_jobs', '')) AS n")
  # Polled once a second: each poll is a client process and a database session of its own (~5 % of the
  # machine at five a second, taken from the drain it measures), and the figure comes from sent_at, not
  # from when the poll saw the end.
  WAIT_STEP=1 wait_until 900 "the backlog to drain" backlog_empty
  stop_sampler
  stop_posthorn
  # message_states: each message with its current state (its outcome is recorded on its last attempt).
  failed=$(sql "SELECT count(*) FROM message_states WHERE caller = 'bench-backlog' AND status <> 'sent'")
  [[ "$failed" == 0 ]] || warn "$failed backlog messages were not sent"
  end=$(sql "SELECT extract(epoch FROM max(sent_at)) FROM message_states WHERE caller = 'bench-backlog'")
  [[ -n "$end" ]] || die "no backlog message was sent"
  DRAIN_RATE=$(calc "round($count / ($end - $start))")
  DRAIN_SPAN_RATE=$(sql "SELECT round(($count - 1) / extract(epoch FROM max(sent_at) - min(sent_at)))
                           FROM message_states WHERE caller = 'bench-backlog'")
  local first
  first=$(sql "SELECT round((extract(epoch FROM min(sent_at)) - $start) * 1000) FROM message_states
                WHERE caller = 'bench-backlog'")
  note "$name: $count messages in $(calc "round($end - $start, 2)") s: $DRAIN_RATE msg/s (first to last send: $DRAIN_SPAN_RATE msg/s; first outcome $first ms after the NOTIFY)"
}

start_sink() {
  SINK_PORT=$(free_port)
  "$POSTHORN_TEST_SMTP_SINK" -u postfix -c "127.0.0.1:$SINK_PORT" 1024 >/dev/null 2>&1 &
  SINK_PID=$!
  BG_PIDS+=("$SINK_PID")
  wait_until 10 "smtp-sink" tcp_open 127.0.0.1 "$SINK_PORT"
}

# start_timing_sink NAME [--capture FILE]: bench/timing_sink.py; its summary goes to $OUT/NAME.json at stop.
start_timing_sink() {
  local name=$1
  shift
  TSINK_PORT=$(free_port)
  TSINK_OUT=$OUT/$name.json
  rm -f "$TSINK_OUT"
  python3 bench/timing_sink.py --port "$TSINK_PORT" --out "$TSINK_OUT" --count-file "$OUT/$name.count" "$@" &
  TSINK_PID=$!
  BG_PIDS+=("$TSINK_PID")
  wait_until 10 "the timing sink" tcp_open 127.0.0.1 "$TSINK_PORT"
}
stop_timing_sink() {
  stop_pid "$TSINK_PID"
  [[ -s "$TSINK_OUT" ]] || die "the timing sink wrote no summary"
}

# capture_message NAME FILE [VAR=VALUE...]: one message ($BODY) through a posthorn started for it (with the
# VAR=VALUEs) into the timing sink: the exact bytes posthorn sends, in FILE, and with bare LF line ends in
# FILE's .txt sibling (for smtp-source -F and Postfix). Mints TOKEN; posthorn is stopped again.
capture_message() {
  local name=$1 file=$2
  shift 2
  start_timing_sink "$name" --capture "$file"
  start_posthorn POSTHORN_SMTP_URL="smtp://127.0.0.1:$TSINK_PORT" "$@"
  mint_token
  send_one
  wait_until 60 "the captured message at the sink" test -s "$file"
  stop_posthorn
  stop_timing_sink
  tr -d '\r' <"$file" >"${file%.eml}.txt"
}

mint_token() { TOKEN=$(env "${NO_TEST_ENV[@]}" "$BIN" token --sub bench --scope send,read --ttl 6h); }
# The test helpers export POSTHORN_TEST_* variables, which posthorn would warn about.
NO_TEST_ENV=(-u POSTHORN_TEST_DATABASE_URL -u POSTHORN_TEST_SMTP_SINK -u POSTHORN_TEST_PG_DIR)

# Wait until the machine is quiet: no cargo or rustc running and, over 2 s, less than a quarter of one core
# busy. Another build or test run would skew every figure. The waits of a whole run share one budget of
# BENCH_WAIT_QUIET seconds; once it is spent, measurements go ahead (the "other" CPU figures show the noise).
# Then the server checkpoints (settle_server).
QUIET_LEFT=$WAIT_QUIET
busy_pct() { # percent of one core the whole machine is busy over 2 s
  python3 -c 'import os, time
def busy():
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return sum(fields[:8]) - fields[3] - fields[4]
start = busy(); time.sleep(2); print(round((busy() - start) * 100 / os.sysconf("SC_CLK_TCK") / 2))'
}
machine_quiet() { ! pgrep -x cargo >/dev/null && ! pgrep -x rustc >/dev/null && (($(busy_pct) < 25)); }
wait_quiet() {
  local what=$1 announced=0
  while ! machine_quiet; do
    if ((QUIET_LEFT <= 0)); then
      warn "the machine is busy ($what); measuring anyway (see the 'other' CPU figures)"
      return 0
    fi
    if ((!announced)); then
      note "waiting up to ${QUIET_LEFT}s for the machine to be quiet ($what)"
      announced=1
    fi
    sleep 3
    QUIET_LEFT=$((QUIET_LEFT - 5))
  done
  settle_server
}
# settle_server: with BENCH_CHECKPOINT=1 (wait_quiet calls it, so before each measured step), a
# CHECKPOINT, so that a step does not pay for the checkpoint its predecessor's writes brought on (with the
# stock max_wal_size = 1GB a checkpoint starts every ~540 MB of WAL, every 9-16 s at the accept maximum).
# BENCH_CHECKPOINT=0 measures the steps as the checkpoints fall.
settle_server() {
  ((CHECKPOINT_FIRST)) && [[ -n "${DB_URL:-}" ]] || return 0
  sql "CHECKPOINT" >/dev/null 2>&1 || warn "CHECKPOINT failed (the role may lack pg_checkpoint); measuring anyway"
}

# ---------------------------------------------------------------------------------------------------------
# Sections

section_embedded() {
  step "embedded: accept and drain on the SQLite default (WAL, synchronous=FULL); baselines raw SQLite inserts and smtp-source"
  # A PostgreSQL database only for the helpers that name one; posthorn runs on SQLite here.
  new_db embedded
  local dir=$OUT/embedded
  rm -rf "$dir"
  mkdir -p "$dir"
  local url="sqlite://$dir/posthorn.db"
  # The message posthorn sends (for smtp-source -F), captured from a scratch database.
  capture_message embedded-capture "$OUT/message.eml" POSTHORN_DATABASE_URL="sqlite://$dir/scratch.db"

  # Accept: nothing delivers meanwhile (no upstream in the production profile: messages wait).
  start_posthorn POSTHORN_DATABASE_URL="$url"
  run_wrk "$PH_PORT" 3 embedded-warmup
  wait_quiet "embedded accept"
  start_sampler embedded-accept --pid "posthorn=$PH_PID" --match 'wrk=^wrk '
  run_wrk "$PH_PORT" "$DURATION" embedded-accept "$CONNS"
  stop_sampler
  local accept=$WRK_RATE accept_errors=$WRK_ERRORS accept_cpu=$SAMPLER_OUT
  local accept_json=$OUT/embedded-accept.json
  note "posthorn on SQLite, $CONNS connections: $accept req/s (errors: $accept_errors), p99 $(jget "$accept_json" p99_ms) ms"
  stop_posthorn

  # Baseline: the same row, one INSERT per transaction, WAL and synchronous=FULL.
  wait_quiet "embedded baseline"
  python3 bench/sqlite_insert.py --db "$dir/baseline.db" --payload-from "$dir/posthorn.db" --seconds "$DURATION" \
    >"$OUT/embedded-baseline.json"
  local base
  base=$(jget "$OUT/embedded-baseline.json" rate)
  note "raw SQLite inserts (WAL, synchronous=FULL, one per transaction): $base tx/s"
  row embedded "durable POST /v1/send on the embedded SQLite store, wrk $CONNS connections (errors $accept_errors; p50 / p99 $(jget "$accept_json" p50_ms) / $(jget "$accept_json" p99_ms) ms)" \
    "$accept req/s" "bench/sqlite_insert.py: the same row, 1 INSERT/tx, WAL, synchronous=FULL: $base tx/s" \
    "$(fmt_ratio "$accept" "$base")" ">= 1.0x" "$(verdict "$accept / $base" '>=' 1.0)"
  row embedded "CPU at the accept maximum: $(cpu_split "$accept_cpu")" \
    "posthorn $(cpu_per "$accept_cpu" posthorn "$accept") us/req" "-" "-" "-" "-"

  # Drain: what was accepted, into smtp-sink; then smtp-source with as many copies.
  start_sink
  local queued start end span rate
  queued=$(python3 -c 'import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(db.execute("SELECT count(*) FROM messages WHERE status = '"'"'queued'"'"'").fetchone()[0])' "$dir/posthorn.db")
  wait_quiet "embedded drain"
  start=$(now)
  start_posthorn POSTHORN_DATABASE_URL="$url" POSTHORN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT" \
    POSTHORN_SMTP_MAX_CONNECTIONS="$SMTP_CONNS" POSTHORN_WORKERS=$((SMTP_CONNS * 2))
  start_sampler embedded-drain --pid "posthorn=$PH_PID" --match 'smtp-sink=smtp-sink .*'"$SINK_PORT"
  WAIT_STEP=1 wait_until 900 "the embedded backlog to drain" sqlite_drained "$dir/posthorn.db"
  stop_sampler
  local drain_cpu=$SAMPLER_OUT
  stop_posthorn
  # From posthorn's start (its start-up included: a few tens of ms) to the last message's sent_at.
  end=$(python3 -c 'import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(db.execute("SELECT max(sent_at) FROM messages").fetchone()[0] / 1e6)' "$dir/posthorn.db")
  rate=$(calc "round($queued / ($end - $start))")
  note "posthorn on SQLite: $queued messages in $(calc "round($end - $start, 2)") s: $rate msg/s"
  local saved=$MESSAGES
  MESSAGES=$queued
  wait_quiet "embedded smtp-source"
  source_drain embedded-smtp-source
  MESSAGES=$saved
  row embedded "drain of the $queued accepted messages ($(wc -c <"$OUT/message.eml") bytes) into smtp-sink, $SMTP_CONNS conns, SQLite store (from posthorn's start to the last sent_at)" \
    "$rate msg/s" "smtp-source -d -s $SMTP_CONNS, as many messages: $SOURCE_RATE msg/s" \
    "$(fmt_ratio "$rate" "$SOURCE_RATE")" ">= 0.6x" "$(verdict "$rate / $SOURCE_RATE" '>=' 0.6)"
  row embedded "CPU while draining on SQLite: $(cpu_split "$drain_cpu")" \
    "posthorn $(cpu_each "$drain_cpu" posthorn "$queued") us/msg" "-" "-" "-" "-"
  stop_pid "$SINK_PID"
  drop_db "$DB"
}

# sqlite_drained DB: nothing left to send in the embedded store.
sqlite_drained() {
  python3 -c 'import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
left = db.execute("SELECT count(*) FROM messages WHERE status IN ('"'"'queued'"'"', '"'"'sending'"'"')").fetchone()[0]
sys.exit(0 if left == 0 else 1)' "$1"
}

section_big() {
  step "big: 1 MB and 10 MB messages (one attachment each): accept and drain rates, and peak RSS with 32 concurrent 10 MB sends"
  new_db big
  local size body conns
  for size in 1 10; do
    body=$OUT/body-${size}mb.json
    # A message of about SIZE MB on the wire: an attachment of random bytes (incompressible), base64.
    python3 -c 'import base64, json, os, sys
size = int(sys.argv[2]) * 1024 * 1024
raw = os.urandom(size * 3 // 4 - 2048)
json.dump({"from": "Bench <bench@example.com>", "to": "sink@example.org", "subject": "big benchmark",
           "text": "See the attachment.",
           "attachments": [{"filename": "data.bin", "content_type": "application/octet-stream",
                            "content": base64.b64encode(raw).decode()}]}, open(sys.argv[1], "w"))' "$body" "$size"
  done
  start_sink
  start_posthorn
  mint_token
  local results=()
  for size in 1 10; do
    body=$OUT/body-${size}mb.json
    conns=$((size == 1 ? 16 : 4))
    reset_messages
    wait_quiet "big accept ${size} MB"
    start_sampler "big-accept-$size" --pid "posthorn=$PH_PID" --match 'wrk=^wrk '
    run_wrk "$PH_PORT" "$DURATION" "big-accept-$size" "$conns" /v1/send "$body"
    stop_sampler
    local rate=$WRK_RATE errors=$WRK_ERRORS cpu=$SAMPLER_OUT
    local bytes
    bytes=$(stat -c %s "$body")
    # Baseline: the disk's own rate for durable writes of this size (dd, one fdatasync per message), in
    # the bench's output directory.
    local dir=$OUT
    local start end count=$((size == 1 ? 200 : 20))
    start=$(now)
    for ((i = 0; i < count; i++)); do
      dd if="$body" of="$dir/posthorn-bench-dd.tmp" bs=1M oflag=dsync conv=fdatasync status=none
    done
    end=$(now)
    rm -f "$dir/posthorn-bench-dd.tmp"
    local disk
    disk=$(calc "round($count / ($end - $start), 1)")
    row big "accept of ${size} MB messages (${bytes} bytes of JSON, a base64 attachment), wrk $conns connections (errors $errors; p50 / p99 $(jget "$OUT/big-accept-$size.json" p50_ms) / $(jget "$OUT/big-accept-$size.json" p99_ms) ms; $(calc "round($rate * $bytes / 1048576)") MB/s)" \
      "$rate req/s" "dd of the same bytes with one fdatasync each: $disk files/s ($(calc "round($disk * $bytes / 1048576)") MB/s)" \
      "$(fmt_ratio "$rate" "$disk")" "-" "-"
    row big "CPU accepting ${size} MB messages: $(cpu_split "$cpu")" \
      "posthorn $(cpu_per "$cpu" posthorn "$rate") us/msg, postgres $(cpu_per "$cpu" postgres "$rate") us/msg" "-" "-" "-" "-"
    # Drain what was accepted.
    local queued
    queued=$(sql "SELECT count(*) FROM jobs")
    stop_posthorn
    wait_quiet "big drain ${size} MB"
    start=$(now)
    start_posthorn POSTHORN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT" POSTHORN_SMTP_MAX_CONNECTIONS="$SMTP_CONNS" \
      POSTHORN_WORKERS=$((SMTP_CONNS * 2))
    WAIT_STEP=1 wait_until 900 "the big backlog to drain" queue_empty
    end=$(sql "SELECT extract(epoch FROM max(sent_at)) FROM message_states")
    local drained
    drained=$(calc "round($queued / ($end - $start), 1)")
    # smtp-source with one of them, as many times, over as many connections.
    stop_posthorn
    BODY=$body capture_message "big-capture-$size" "$OUT/big-$size.eml"
    start=$(now)
    timeout 900 "$SMTP_SOURCE" -d -s "$SMTP_CONNS" -m "$queued" -F "$OUT/big-$size.txt" -f bench@example.com \
      -t sink@example.org "127.0.0.1:$SINK_PORT"
    end=$(now)
    local source
    source=$(calc "round($queued / ($end - $start), 1)")
    row big "drain of the $queued accepted ${size} MB messages into smtp-sink, $SMTP_CONNS conns (from posthorn's start)" \
      "$drained msg/s" "smtp-source -d -s $SMTP_CONNS, the same message as many times: $source msg/s" \
      "$(fmt_ratio "$drained" "$source")" "-" "-"
    stop_posthorn
    start_posthorn
  done
  # Peak RSS: a fresh process, 32 concurrent 10 MB sends for the step's duration.
  stop_posthorn
  reset_messages
  start_posthorn
  wait_quiet "big rss"
  local idle peak
  idle=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$PH_PID/status")
  run_wrk "$PH_PORT" "$DURATION" big-rss 32 /v1/send "$OUT/body-10mb.json"
  peak=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$PH_PID/status")
  local bound=$((5 * 32 * $(stat -c %s "$OUT/body-10mb.json") / 1024))
  row big "peak RSS of posthorn with 32 concurrent 10 MB sends ($WRK_RATE req/s, errors $WRK_ERRORS; idle before: $((idle / 1024)) MB)" \
    "$((peak / 1024)) MB" "5 x 32 x the message: $((bound / 1024)) MB" "$(fmt_ratio "$peak" "$bound")" "< 1.0x" "$(verdict "$peak / $bound" '<' 1.0)"
  stop_posthorn
  stop_pid "$SINK_PID"
  drop_db "$DB"
}

# start_delay_proxy NAME UPSTREAM_PORT DELAY_MS: bench/delay_proxy.py in front of 127.0.0.1:UPSTREAM_PORT,
# DELAY_MS each way; sets PROXY_PORT, PROXY_PID and PROXY_STATS (its connection count, written at stop).
start_delay_proxy() {
  local name=$1 upstream=$2 delay=$3
  PROXY_PORT=$(free_port)
  PROXY_STATS=$OUT/$name.proxy.json
  rm -f "$PROXY_STATS"
  python3 bench/delay_proxy.py --listen "$PROXY_PORT" --upstream "127.0.0.1:$upstream" --delay-ms "$delay" \
    --stats "$PROXY_STATS" &
  PROXY_PID=$!
  BG_PIDS+=("$PROXY_PID")
  wait_until 10 "the delay proxy" tcp_open 127.0.0.1 "$PROXY_PORT"
}
stop_delay_proxy() {
  stop_pid "$PROXY_PID"
  [[ -s "$PROXY_STATS" ]] || die "the delay proxy wrote no statistics"
  PROXY_CONNECTIONS=$(jget "$PROXY_STATS" connections)
  PROXY_LATE_MS=$(jget "$PROXY_STATS" late_mean_ms)
}

# wan_tls DIR: a CA and a certificate for 127.0.0.1 signed by it (RSA 2048, as providers' are), for stunnel.
wan_tls() {
  local dir=$1
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 2 -subj /CN=bench-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$dir/server.key" -out "$dir/server.csr" -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
}

# source_over PORT NAME CONNECTIONS COUNT [SAMPLER ARGS...]: smtp-source sends COUNT copies of posthorn's
# message to PORT over CONNECTIONS connections, one command per round trip; sets SOURCE_RATE (and
# SAMPLER_OUT, which also samples what the extra arguments name).
source_over() {
  local port=$1 name=$2 conns=$3 count=$4 start end
  shift 4
  start_sampler "$name" --match 'smtp-source=^\S*smtp-source ' "$@"
  start=$(now)
  timeout 900 "$SMTP_SOURCE" -d -s "$conns" -m "$count" -F "$OUT/message.txt" -f bench@example.com \
    -t sink@example.org "127.0.0.1:$port"
  end=$(now)
  stop_sampler
  SOURCE_RATE=$(calc "round($count / ($end - $start))")
  note "$name: smtp-source -d -s $conns, $count messages: $SOURCE_RATE msg/s"
}

# section_wan: drains to an upstream 40 ms away (a delay proxy of 20 ms each way, bench/delay_proxy.py) that
# speaks TLS on connect (stunnel4 in front of smtp-sink), at several connection counts, beside the physical
# bound for that many connections, smtp-source over the same link (plain text: it has no TLS) and Postfix
# relaying over the same link with TLS (smtp_tls_wrappermode, its TLS connections reused).
section_wan() {
  local rtt=$((WAN_DELAY_MS * 2))
  step "wan: drains over a link with $rtt ms round trips to a TLS upstream, at ${WAN_CONNECTIONS[*]} connections"
  new_db wan
  start_sink
  local dir
  dir=$(mktemp -d /tmp/posthorn-bench-wan.XXXXXX)
  on_exit rm -rf "$dir"
  wan_tls "$dir"
  local tls_port
  tls_port=$(free_port)
  printf '%s\n' "foreground = yes" "pid =" "output = $dir/stunnel.log" "debug = 4" \
    "socket = l:TCP_NODELAY=1" "socket = r:TCP_NODELAY=1" "[sink]" "accept = 127.0.0.1:$tls_port" \
    "connect = 127.0.0.1:$SINK_PORT" "cert = $dir/server.pem" "key = $dir/server.key" >"$dir/stunnel.conf"
  "$STUNNEL" "$dir/stunnel.conf" >/dev/null 2>&1 &
  local stunnel_pid=$!
  BG_PIDS+=("$stunnel_pid")
  wait_until 10 "stunnel" tcp_open 127.0.0.1 "$tls_port"

  # The message posthorn sends, for smtp-source and Postfix.
  capture_message wan-capture "$OUT/message.eml"
  load_payload

  # The proxy must not be the bound: its rate with no delay beside the sink's own, smtp-source at the widest
  # width (one command per round trip: four exchanges per message through the proxy).
  local widest=${WAN_CONNECTIONS[-1]}
  local probe=$((widest * 150))
  wait_quiet "wan: the proxy's own rate"
  source_over "$SINK_PORT" wan-direct "$widest" "$probe" --match 'proxy=delay_proxy\.py'
  local direct=$SOURCE_RATE
  start_delay_proxy wan-nodelay "$SINK_PORT" 0
  source_over "$PROXY_PORT" wan-nodelay "$widest" "$probe" --match 'proxy=delay_proxy\.py'
  local proxied=$SOURCE_RATE proxy_cpu
  proxy_cpu=$(cpu_each "$SAMPLER_OUT" proxy "$probe")
  stop_delay_proxy
  row wan "the delay proxy with no delay (bench/delay_proxy.py, Python asyncio): smtp-source -d -s $widest through it, $probe messages, four exchanges each (proxy CPU $proxy_cpu us/msg)" \
    "$proxied msg/s" "smtp-sink direct: $direct msg/s" "$(fmt_ratio "$proxied" "$direct")" \
    "well above every bound below" "-"

  local conns count rate bound handshakes src pf pf_count ph_cpu pf_handshakes
  for conns in "${WAN_CONNECTIONS[@]}"; do
    count=$((conns * WAN_PER_CONNECTION))
    # The physical bound: posthorn needs one round trip per message on a warm connection (the next
    # message's MAIL, RCPT and DATA go out with this one's data and final dot; the replies to all four
    # come back together, ending with the 354 that lets the next data go).
    MESSAGES=$count load_backlog
    start_delay_proxy "wan-posthorn-$conns" "$tls_port" "$WAN_DELAY_MS"
    wait_quiet "wan: posthorn, $conns connections"
    drain "wan-posthorn-$conns" "" POSTHORN_SMTP_URL="smtps://127.0.0.1:$PROXY_PORT" \
      POSTHORN_SMTP_TLS_CA_FILE="$dir/ca.pem" POSTHORN_SMTP_MAX_CONNECTIONS="$conns" POSTHORN_WORKERS=$((conns * 2))
    rate=$DRAIN_RATE
    ph_cpu=$SAMPLER_OUT
    stop_delay_proxy
    handshakes=$PROXY_CONNECTIONS
    # The link as it was: the proxy writes each chunk a little after its 20 ms (timer granularity, load).
    local link_rtt
    link_rtt=$(calc "round($rtt + 2 * $PROXY_LATE_MS, 2)")
    bound=$(calc "round($conns / ($link_rtt / 1000))")

    start_delay_proxy "wan-smtp-source-$conns" "$SINK_PORT" "$WAN_DELAY_MS"
    wait_quiet "wan: smtp-source, $conns connections"
    source_over "$PROXY_PORT" "wan-smtp-source-$conns" "$conns" $((conns * WAN_SOURCE_PER_CONNECTION)) \
      --match 'proxy=delay_proxy\.py'
    src=$SOURCE_RATE
    stop_delay_proxy

    pf_count=$((conns * WAN_POSTFIX_PER_CONNECTION))
    start_delay_proxy "wan-postfix-$conns" "$tls_port" "$WAN_DELAY_MS"
    # shellcheck disable=SC2016 # ${data_directory} is Postfix's, expanded by Postfix
    postfix_drain "wan-postfix-$conns" "$pf_count" "$conns" "$PROXY_PORT" \
      'smtp_tls_security_level = encrypt' 'smtp_tls_wrappermode = yes' 'smtp_tls_connection_reuse = yes' \
      'smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache' "smtp_tls_CAfile = $dir/ca.pem"
    pf=$PF_RATE
    stop_delay_proxy
    pf_handshakes=$PROXY_CONNECTIONS

    row wan "posthorn draining $count messages over $conns TLS connections (smtps) to a sink $rtt ms away: $handshakes TLS handshakes, $(calc "'%.3f' % ($handshakes / $count)") per message; CPU $(cpu_split "$ph_cpu")" \
      "$rate msg/s" "physical bound $conns / (1 round trip x $link_rtt ms, the proxy's $rtt ms + its measured lateness) = $bound msg/s ($(calc "round($conns / ($rtt / 1000))") at exactly $rtt ms)" "$(fmt_ratio "$rate" "$bound")" \
      ">= 0.8x" "$(verdict "$rate / $bound" '>=' 0.8)"
    row wan "the same link and $conns connections: smtp-source -d -s $conns, plain text (it has no TLS), one command per round trip" \
      "$rate msg/s" "smtp-source: $src msg/s" "$(fmt_ratio "$rate" "$src")" "> 1x" "$(verdict "$rate / $src" '>' 1)"
    row wan "the same link and $conns connections: Postfix $(postconf -d -h mail_version) relaying with TLS (smtp_tls_wrappermode, connections reused through tlsproxy; $pf_handshakes TLS handshakes for $pf_count messages)" \
      "$rate msg/s" "Postfix: $pf msg/s" "$(fmt_ratio "$rate" "$pf")" "> 1x" "$(verdict "$rate / $pf" '>' 1)"
  done
  stop_pid "$stunnel_pid"
  stop_pid "$SINK_PID"
  drop_db "$DB"
}

section_accept() {
  step "accept: durable POST /v1/send rate and latency; baseline pgbench, one INSERT per transaction"
  new_db accept
  start_posthorn
  mint_token
  run_wrk "$PH_PORT" 3 accept-warmup
  stop_posthorn
  load_payload

  # Baseline before and after posthorn; their mean is the figure.
  reset_messages
  wait_quiet "accept baseline"
  start_sampler accept-pgbench --match 'pgbench=^\S*pgbench '
  run_pgbench bench/pgbench-insert.sql "$CONNS" "$DURATION" accept-pgbench-1
  stop_sampler
  local base1=$PGB_TPS pgb_cpu=$SAMPLER_OUT
  note "pgbench (before): $base1 tx/s"

  reset_messages
  start_posthorn
  run_wrk "$PH_PORT" 3 accept-warmup2
  # The maximum: the best closed-loop rate over the connection counts of ACCEPT_CONNS (the first is
  # pgbench's client count; more connections give more concurrent requests to share a commit).
  local conns best_conns="" max=0 max_errors=0 max_json="" max_cpu="" durable=yes sweep="" at_base_conns=""
  local before_rows after_rows answered
  for conns in "${ACCEPT_CONNS[@]}"; do
    wait_quiet "accept with $conns connections"
    start_sampler "accept-max-c$conns" --pid "posthorn=$PH_PID" --match 'wrk=^wrk '
    before_rows=$(sql "SELECT count(*) FROM messages")
    run_wrk "$PH_PORT" "$DURATION" "accept-max-c$conns" "$conns"
    stop_sampler
    after_rows=$(sql "SELECT count(*) FROM messages")
    answered=$(jget "$OUT/accept-max-c$conns.json" requests)
    # Every 202 is a committed row (the table may hold a few more: requests cut off by wrk's end).
    [[ $((after_rows - before_rows)) -ge $((answered - WRK_ERRORS)) ]] || durable=no
    note "posthorn, $conns connections: $WRK_RATE req/s (errors: $WRK_ERRORS), p50 $(jget "$OUT/accept-max-c$conns.json" p50_ms) ms, p99 $(jget "$OUT/accept-max-c$conns.json" p99_ms) ms"
    sweep+="${sweep:+, }$conns: $WRK_RATE"
    [[ -n "$at_base_conns" ]] || at_base_conns=$WRK_RATE
    if ((WRK_RATE > max)); then
      max=$WRK_RATE max_errors=$WRK_ERRORS best_conns=$conns
      max_json=$OUT/accept-max-c$conns.json max_cpu=$SAMPLER_OUT
    fi
  done
  # The fixed-rate steps keep as many connections open as gave the maximum.

  local pct rate name
  for pct in 50 70 100; do
    rate=$(calc "max(1, round($max * $pct / 100))")
    name=accept-open-$pct
    wait_quiet "accept at $pct %"
    start_sampler "$name" --pid "posthorn=$PH_PID" --match 'openloop=openloop\.py' --match 'oha=^\S*oha '
    start_commit_probe "$name" "$DURATION"
    # As many connections as gave the maximum.
    run_fixed "$PH_PORT" "$rate" "$DURATION" "$name" "$best_conns"
    stop_commit_probe "$name"
    stop_sampler
    note "fixed rate $rate req/s: achieved $(jget "$OUT/$name.json" achieved_rate), p50 $(jget "$OUT/$name.json" p50_ms) ms, p99 $(jget "$OUT/$name.json" p99_ms) ms, $(generator_note "$OUT/$name.json"), answers $(jget "$OUT/$name.json" statuses)"
    note "$(probe_note "$name")"
  done
  stop_posthorn

  reset_messages
  wait_quiet "accept baseline"
  run_pgbench bench/pgbench-insert.sql "$CONNS" "$DURATION" accept-pgbench-2
  local base2=$PGB_TPS
  note "pgbench (after): $base2 tx/s"
  # Diagnostic: posthorn with as many database connections as pgbench has clients.
  reset_messages
  start_posthorn POSTHORN_DATABASE_MAX_CONNECTIONS="$CONNS"
  run_wrk "$PH_PORT" 3 accept-bigpool-warmup
  run_wrk "$PH_PORT" "$DURATION" accept-bigpool
  stop_posthorn
  local bigpool=$WRK_RATE
  note "posthorn with POSTHORN_DATABASE_MAX_CONNECTIONS=$CONNS: $bigpool req/s"

  local base
  base=$(calc "round(($base1 + $base2) / 2)")
  row accept "sustained durable POST /v1/send, the best of wrk closed loops over ${ACCEPT_CONNS[*]} connections (req/s by connections: $sweep; best at $best_conns, errors $max_errors; rows >= 202s: $durable)" \
    "$max req/s" "pgbench 1 INSERT/tx, $CONNS clients: $base tx/s ($base1 / $base2)" \
    "$(fmt_ratio "$max" "$base")" ">= 1.5x" "$(verdict "$max / $base" '>=' 1.5)"
  row accept "the same at pgbench's concurrency (wrk, ${ACCEPT_CONNS[0]} connections)" \
    "$at_base_conns req/s" "$base tx/s" "$(fmt_ratio "$at_base_conns" "$base")" "-" "-"
  row accept "latency p50 / p99 at 100 %, closed loop (wrk, $best_conns conns)" \
    "$(calc "round($(jget "$max_json" p50_ms), 2)") / $(calc "round($(jget "$max_json" p99_ms), 2)") ms" "-" "-" "-" "-"
  for pct in 50 70 100; do
    name=accept-open-$pct
    local p99 target="-" met="-"
    p99=$(jget "$OUT/$name.json" p99_ms)
    if [[ "$pct" == 70 ]]; then
      target="p99 <= 50 ms"
      met=$(verdict "${p99:-1e9}" '<=' 50)
    fi
    row accept "latency p50 / p99 at $pct % = $(calc "round($(jget "$OUT/$name.json" target_rate))") req/s fixed rate (achieved $(jget "$OUT/$name.json" achieved_rate); non-202: $(calc "$(jget "$OUT/$name.json" scheduled) - $(jget "$OUT/$name.json" ok)"); $(generator_note "$OUT/$name.json"); CPU: $(cpu_split "$OUT/$name.cpu.json"); $(probe_note "$name"))" \
      "$(jget "$OUT/$name.json" p50_ms) / $p99 ms" "-" "-" "$target" "$met"
  done
  row accept "diagnostic: posthorn with POSTHORN_DATABASE_MAX_CONNECTIONS=$CONNS instead of 10" "$bigpool req/s" \
    "$base tx/s" "$(fmt_ratio "$bigpool" "$base")" "-" "-"
  row accept "CPU at max: $(cpu_split "$max_cpu")" \
    "posthorn $(cpu_per "$max_cpu" posthorn "$max") us/req, postgres $(cpu_per "$max_cpu" postgres "$max") us/req, wrk $(cpu_per "$max_cpu" wrk "$max") us/req" \
    "pgbench: postgres $(cpu_per "$pgb_cpu" postgres "$base1") us/tx, pgbench $(cpu_per "$pgb_cpu" pgbench "$base1") us/tx ($(cpu_split "$pgb_cpu"))" "-" "-" "-"
  drop_db "$DB"
}

section_delivery() {
  step "delivery: drain a $MESSAGES-message backlog into smtp-sink over $SMTP_CONNS connections"
  new_db delivery
  start_sink
  # One message through posthorn into the timing sink: the exact bytes posthorn sends, for smtp-source -F.
  capture_message delivery-capture "$OUT/message.eml"
  local size
  size=$(wc -c <"$OUT/message.eml")
  note "posthorn's message is $size bytes"
  load_payload

  # Two rounds, each posthorn then smtp-source: the figures are their means (the machine is shared, and
  # one drain of a few seconds moves by 20 % between runs).
  local round rate1 rate2 source1 source2 rate_cpu source_cpu
  for round in 1 2; do
    load_backlog
    wait_quiet "delivery"
    drain "delivery-posthorn-$round"
    local drained=$DRAIN_RATE drain_cpu=$SAMPLER_OUT
    # Baseline 1: smtp-source, same message, same sink, same connections.
    wait_quiet "smtp-source"
    source_drain "delivery-smtp-source-$round"
    if [[ "$round" == 1 ]]; then
      rate1=$drained rate_cpu=$drain_cpu source1=$SOURCE_RATE source_cpu=$SAMPLER_OUT
    else
      rate2=$drained source2=$SOURCE_RATE
    fi
  done
  local rate source_rate
  rate=$(calc "round(($rate1 + $rate2) / 2)")
  source_rate=$(calc "round(($source1 + $source2) / 2)")
  DELIVERY_MAX=$rate

  # Diagnostic: the same backlog with one SMTP command per round trip.
  load_backlog
  wait_quiet "delivery without pipelining"
  drain delivery-posthorn-stepwise "?pipelining=off"
  local stepwise=$DRAIN_RATE

  # Diagnostic: the same backlog with posthorn's database connections over TLS, where the server offers it.
  load_backlog
  wait_quiet "delivery over TLS to the database"
  drain delivery-posthorn-tls "" POSTHORN_DATABASE_URL="$(pg_url_set_param "$DB_URL" sslmode prefer)"
  local over_tls=$DRAIN_RATE base_sslmode=default
  [[ "$DB_URL" =~ [?\&]sslmode=([^&]*) ]] && base_sslmode=${BASH_REMATCH[1]}

  # Baseline 2: Postfix relaying the same backlog to the same sink.
  postfix_drain
  local pf_rate=$PF_RATE pf_cpu=$PF_CPU

  row delivery "drain of $MESSAGES queued messages ($size bytes) into smtp-sink, $SMTP_CONNS conns (mean of two rounds: $rate1 / $rate2)" \
    "$rate msg/s" "smtp-source -d -s $SMTP_CONNS: $source_rate msg/s ($source1 / $source2)" "$(fmt_ratio "$rate" "$source_rate")" \
    ">= 0.6x" "$(verdict "$rate / $source_rate" '>=' 0.6)"
  row delivery "the same backlog, against Postfix $(postconf -d -h mail_version) relaying to the sink (concurrency $SMTP_CONNS)" \
    "$rate msg/s" "Postfix: $pf_rate msg/s" "$(fmt_ratio "$rate" "$pf_rate")" ">= 3x" \
    "$(verdict "$rate / $pf_rate" '>=' 3)"
  row delivery "diagnostic: the same drain with ?pipelining=off (one SMTP command per round trip)" \
    "$stepwise msg/s" "pipelined: $rate msg/s" "$(fmt_ratio "$stepwise" "$rate")" "-" "-"
  row delivery "diagnostic: the same drain with the database connections over TLS (sslmode=prefer; the server's ssl = $(sql "SHOW ssl"))" \
    "$over_tls msg/s" "sslmode=$base_sslmode: $rate msg/s" "$(fmt_ratio "$over_tls" "$rate")" "-" "-"
  row delivery "CPU while posthorn drains: $(cpu_split "$rate_cpu")" \
    "posthorn $(cpu_each "$rate_cpu" posthorn "$MESSAGES") us/msg, postgres $(cpu_each "$rate_cpu" postgres "$MESSAGES") us/msg, smtp-sink $(cpu_each "$rate_cpu" smtp-sink "$MESSAGES") us/msg" \
    "smtp-source: $(cpu_split "$source_cpu"), smtp-sink $(cpu_each "$source_cpu" smtp-sink "$MESSAGES") us/msg, smtp-source $(cpu_each "$source_cpu" smtp-source "$MESSAGES") us/msg; Postfix: $(cpu_split "$pf_cpu")" "-" "-" "-"
  stop_pid "$SINK_PID"
  drop_db "$DB"
}

# load_backlog: $MESSAGES queued backlog rows, replacing the previous backlog and its attempts (drain
# vacuums and analyzes the table before it starts).
load_backlog() {
  sql "TRUNCATE delivery_attempts" >/dev/null
  delete_messages "caller = 'bench-backlog'"
  copy_rows -backlog "$MESSAGES" queued ts
}

# source_drain NAME: smtp-source sends $MESSAGES copies of posthorn's message into the sink over $SMTP_CONNS
# connections; sets SOURCE_RATE (and SAMPLER_OUT).
source_drain() {
  source_over "$SINK_PORT" "$1" "$SMTP_CONNS" "$MESSAGES" --match 'smtp-sink=smtp-sink .*'"$SINK_PORT"
}

# postfix_drain [NAME COUNT CONCURRENCY UPSTREAM_PORT [SETTING...]]: a private Postfix instance loaded with
# COUNT messages (delivery deferred), then released to relay them to 127.0.0.1:UPSTREAM_PORT over at most
# CONCURRENCY connections, with the extra main.cf SETTINGs; the time until its queue is empty gives PF_RATE
# (and PF_CPU). Defaults: delivery-postfix, $MESSAGES, $SMTP_CONNS, the sink. Uses $OUT/message.txt.
postfix_drain() {
  local name=${1:-delivery-postfix} count=${2:-$MESSAGES} concurrency=${3:-$SMTP_CONNS} upstream=${4:-$SINK_PORT}
  shift $(($# < 4 ? $# : 4))
  local dir port start end n queued setting
  dir=$(mktemp -d /tmp/posthorn-bench-postfix.XXXXXX)
  chmod 755 "$dir"
  mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
  chown postfix "$dir/data"
  port=$(free_port)
  sed -e "s#@DIR@#$dir#g" -e "s#@SMTPD_PORT@#$port#g" -e "s#@SINK_PORT@#$upstream#g" \
    -e "s#@CONCURRENCY@#$concurrency#g" bench/postfix/main.cf.template >"$dir/etc/main.cf"
  sed -e "s#@SMTPD_PORT@#$port#g" bench/postfix/master.cf >"$dir/etc/master.cf"
  # The queue and data directories live outside the configuration directory, which postfix wants root-owned.
  sed -i -e "s#^queue_directory = .*#queue_directory = $dir/queue#" -e "s#^data_directory = .*#data_directory = $dir/data#" \
    "$dir/etc/main.cf"
  postconf -c "$dir/etc" -e 'defer_transports = smtp relay'
  for setting in "$@"; do postconf -c "$dir/etc" -e "$setting"; done
  on_exit postfix_stop "$dir"
  postfix -c "$dir/etc" start >/dev/null 2>&1 || {
    cat "$dir/maillog" >&2 || true
    die "the private Postfix did not start"
  }
  wait_until 30 "Postfix's smtpd" tcp_open 127.0.0.1 "$port"
  note "Postfix: loading $count messages (delivery deferred)"
  timeout 900 "$SMTP_SOURCE" -d -s 8 -m "$count" -F "$OUT/message.txt" -f bench@example.com \
    -t sink@example.org "127.0.0.1:$port"
  wait_until 300 "Postfix to queue the backlog" pf_queued "$dir" "$count"
  postconf -c "$dir/etc" -e 'defer_transports ='
  postfix -c "$dir/etc" reload >/dev/null 2>&1
  sleep 1
  wait_quiet "Postfix drain"
  start_sampler "$name" --tree "postfix=$(tr -d ' ' <"$dir/queue/pid/master.pid")" \
    --match 'smtp-sink=smtp-sink .*'"$SINK_PORT"
  start=$(now)
  postqueue -c "$dir/etc" -f
  wait_until 900 "Postfix to empty its queue" pf_empty "$dir"
  end=$(now)
  stop_sampler
  PF_CPU=$SAMPLER_OUT
  n=$(grep -c 'status=sent' "$dir/maillog" || true)
  [[ "$n" == "$count" ]] || warn "Postfix logged $n deliveries of $count"
  queued=$count
  PF_RATE=$(calc "round($queued / ($end - $start))")
  note "Postfix: $queued messages in $(calc "round($end - $start, 2)") s: $PF_RATE msg/s"
  cp "$dir/maillog" "$OUT/$name-maillog" 2>/dev/null || true
  postfix_stop "$dir"
}
postfix_stop() {
  local dir=$1
  [[ -d "$dir" ]] || return 0
  postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -f "$dir/queue/pid/master.pid" ]] || break
    alive "$(tr -d ' ' <"$dir/queue/pid/master.pid")" || break
    sleep 0.2
  done
  rm -rf "$dir"
}

section_e2e() {
  if [[ -n "${BENCH_E2E_RATE:-}" ]]; then
    DELIVERY_MAX="not measured"
    e2e_at "$BENCH_E2E_RATE" e2e "BENCH_E2E_RATE" "-"
    return
  fi
  e2e_maxima
  local half
  half=$(calc "max(1, round($E2E_MAX / 2))")
  e2e_at "$half" e2e "50 % of the end-to-end maximum ($E2E_MAX msg/s)" "p99 <= 150 ms" 150
  e2e_at 1000 e2e-1000 "1000 msg/s" "p99 <= 20 ms" 20
}

# e2e_maxima: in one run, A = the accept-only maximum (posthorn with no upstream, wrk closed loop over
# E2E_CONNS connections), D = the drain-only maximum (a queued backlog into smtp-sink) and E2E_MAX = the most
# msg/s accepted and delivered at once with a bounded queue (fixed-rate steps, e2e_sustains), beside the
# bound A*D/(A+D) of the two sharing the same cores. Sets E2E_MAX and DELIVERY_MAX.
e2e_maxima() {
  step "e2e: the drain-only, accept-only and end-to-end maxima"
  new_db e2e_max
  start_sink
  start_posthorn
  mint_token
  send_one
  stop_posthorn
  load_payload
  MESSAGES=$E2E_DRAIN_MESSAGES load_backlog
  wait_quiet "e2e: the drain-only maximum"
  drain e2e-drain-only
  local drain_max=$DRAIN_RATE drain_cpu=$SAMPLER_OUT
  DELIVERY_MAX=$drain_max

  start_posthorn
  run_wrk "$PH_PORT" 3 e2e-accept-warmup "$E2E_ACCEPT_CONNS"
  reset_messages >/dev/null
  wait_quiet "e2e: the accept-only maximum"
  start_sampler e2e-accept-only --pid "posthorn=$PH_PID" --match 'wrk=^wrk '
  run_wrk "$PH_PORT" "$DURATION" e2e-accept-only "$E2E_ACCEPT_CONNS"
  stop_sampler
  stop_posthorn
  local accept_max=$WRK_RATE accept_cpu=$SAMPLER_OUT
  note "accept only: $accept_max req/s over $E2E_ACCEPT_CONNS connections ($WRK_ERRORS errors)"
  reset_messages >/dev/null
  sql "TRUNCATE delivery_attempts" >/dev/null

  local bound
  bound=$(calc "round($accept_max * $drain_max / ($accept_max + $drain_max))")
  note "A = $accept_max, D = $drain_max: A*D/(A+D) = $bound msg/s"
  # Steps of 10 % of the bound: up from 80 % while they hold, down while they do not.
  local fraction=0.8 best=0 worst="" rate tried=""
  while :; do
    rate=$(calc "round($bound * $fraction)")
    if e2e_sustains "$rate"; then
      best=$rate
      tried+="${tried:+, }$rate ok"
      [[ -z "$worst" ]] || break
      fraction=$(calc "round($fraction + 0.1, 2)")
      (($(calc "int($fraction > 1.31)"))) && break
    else
      worst=$rate
      tried+="${tried:+, }$rate ($E2E_WHY)"
      ((best == 0)) || break
      fraction=$(calc "round($fraction - 0.1, 2)")
      (($(calc "int($fraction < 0.19)"))) && break
    fi
  done
  E2E_MAX=$best
  ((E2E_MAX > 0)) || E2E_MAX=$(calc "round($bound * 0.2)")
  stop_pid "$SINK_PID"
  drop_db "$DB"

  row e2e "accept-only maximum: wrk closed loop over $E2E_ACCEPT_CONNS connections, posthorn with no upstream ($(cpu_split "$accept_cpu"))" \
    "A = $accept_max msg/s" "-" "-" "-" "-"
  row e2e "drain-only maximum: $E2E_DRAIN_MESSAGES queued messages into smtp-sink over $SMTP_CONNS connections ($(cpu_split "$drain_cpu"))" \
    "D = $drain_max msg/s" "-" "-" "-" "-"
  row e2e "end-to-end maximum: the highest fixed rate (steps of 10 % of A*D/(A+D)) accepted and delivered at once for ${DURATION}s with the queue bounded (tried: $tried)" \
    "$E2E_MAX msg/s" "A*D/(A+D) = $bound msg/s" "$(fmt_ratio "$E2E_MAX" "$bound")" ">= 0.9x" \
    "$(verdict "$E2E_MAX / $bound" '>=' 0.9)"
}

# e2e_sustains RATE: posthorn accepts RATE msg/s (bench/openloop.py, fixed rate) for DURATION seconds while
# delivering into smtp-sink; it sustains the rate when the generator achieved it with every answer a 202, and
# when the load ends fewer than half a second's messages are still queued (a queue that grows by 5 % of the
# rate leaves 0.75 s of them after 15 s). Sets E2E_WHY when it does not.
e2e_sustains() {
  local rate=$1 name=e2e-step-$1
  start_posthorn POSTHORN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT" POSTHORN_SMTP_MAX_CONNECTIONS="$SMTP_CONNS" \
    POSTHORN_WORKERS=$((SMTP_CONNS * 2))
  wait_quiet "e2e at $rate msg/s"
  start_sampler "$name" --pid "posthorn=$PH_PID" --match 'openloop=openloop\.py' --match 'smtp-sink=smtp-sink .*'"$SINK_PORT"
  run_openloop "$PH_PORT" "$rate" "$DURATION" "$name" "$E2E_CONNS"
  local left
  left=$(sql "SELECT count(*) FROM jobs")
  stop_sampler
  local achieved ok
  achieved=$(jget "$OUT/$name.json" achieved_rate)
  ok=$(jget "$OUT/$name.json" ok)
  wait_until 300 "the queue to drain" queue_empty
  stop_posthorn
  reset_messages >/dev/null
  sql "TRUNCATE delivery_attempts" >/dev/null
  note "e2e at $rate msg/s: achieved $achieved msg/s, $ok answered 202, $left still queued at the end ($(cpu_split "$SAMPLER_OUT"))"
  E2E_WHY=""
  if (($(calc "int($achieved < $rate * 0.97)"))); then
    E2E_WHY="achieved $achieved"
  elif (($(calc "int($ok < $rate * $DURATION * 0.97)"))); then
    E2E_WHY="$ok answered 202"
  elif (($(calc "int($left > $rate / 2)"))); then
    E2E_WHY="$left left queued"
  fi
  [[ -z "$E2E_WHY" ]]
}

# start_dump_sink NAME: Postfix's smtp-sink writing every message it receives to a file of its own (in
# memory, under /dev/shm where there is one); stop_dump_sink reads the arrival times off the files into
# $OUT/NAME.json (bench/dump_latency.py) and removes them. Sets DSINK_PORT and DSINK_OUT.
start_dump_sink() {
  local name=$1 base=/dev/shm
  [[ -d "$base" && -w "$base" ]] || base=$OUT
  DSINK_DIR=$(mktemp -d "$base/posthorn-bench-$name.XXXXXX")
  chown postfix "$DSINK_DIR" 2>/dev/null || true
  DSINK_OUT=$OUT/$name.json
  DSINK_PORT=$(free_port)
  "$POSTHORN_TEST_SMTP_SINK" -u postfix -d "$DSINK_DIR/%H%M%S." -c "127.0.0.1:$DSINK_PORT" 1024 >/dev/null 2>&1 &
  DSINK_PID=$!
  BG_PIDS+=("$DSINK_PID")
  on_exit rm -rf "$DSINK_DIR"
  wait_until 10 "smtp-sink" tcp_open 127.0.0.1 "$DSINK_PORT"
}
stop_dump_sink() {
  stop_pid "$DSINK_PID"
  python3 bench/dump_latency.py "$DSINK_DIR" >"$DSINK_OUT"
  rm -rf "$DSINK_DIR"
  [[ -s "$DSINK_OUT" ]] || die "no arrival times were read from smtp-sink's files"
}

# e2e_at RATE NAME LABEL TARGET: accept-to-arrival latency at a fixed rate into smtp-sink. The generator
# stamps each request with the instant it was due (X-Bench-Sent), so a request that waited for a free
# connection is charged its wait; smtp-sink's file for the message says when it arrived. The generator
# keeps E2E_CONNS connections open, enough that it does not hold requests back for want of one. (The
# Python timing sink this replaced took a third of a core at these rates, from the machine it was
# measuring.)
e2e_at() {
  local rate=$1 name=$2 label=$3 target=$4 limit=${5:-150}
  step "e2e: accept-to-arrival latency at $rate msg/s ($label; drain rate: $DELIVERY_MAX msg/s)"
  new_db "${name//-/_}"
  start_dump_sink "$name"
  start_posthorn POSTHORN_SMTP_URL="smtp://127.0.0.1:$DSINK_PORT" POSTHORN_SMTP_MAX_CONNECTIONS="$SMTP_CONNS" \
    POSTHORN_WORKERS=$((SMTP_CONNS * 2))
  mint_token
  run_openloop "$PH_PORT" "$(calc "max(1, round($rate / 4))")" 3 "$name-warmup" "$E2E_CONNS"
  wait_quiet "$name"
  start_sampler "$name" --pid "posthorn=$PH_PID" --match 'openloop=openloop\.py' --match 'smtp-sink=smtp-sink .*'"$DSINK_PORT"
  start_commit_probe "$name" "$DURATION"
  run_openloop "$PH_PORT" "$rate" "$DURATION" "$name-load" "$E2E_CONNS" --stamp-header X-Bench-Sent
  stop_commit_probe "$name"
  local accepted
  accepted=$(jget "$OUT/$name-load.json" ok)
  wait_until 300 "every message to arrive" queue_empty
  stop_sampler
  stop_posthorn
  stop_dump_sink
  local p50 p99 met="-"
  p50=$(jget "$DSINK_OUT" p50_ms)
  p99=$(jget "$DSINK_OUT" p99_ms)
  [[ "$target" == "-" ]] || met=$(verdict "${p99:-1e9}" '<=' "$limit")
  note "arrived $(jget "$DSINK_OUT" stamped) stamped of $accepted accepted: p50 $p50 ms, p99 $p99 ms, max $(jget "$DSINK_OUT" max_ms) ms"
  row e2e "accept-to-arrival at $rate msg/s fixed rate = $label ($(jget "$DSINK_OUT" stamped) of $accepted arrived; achieved $(jget "$OUT/$name-load.json" achieved_rate) msg/s over $E2E_CONNS connections, generator send lag p99 $(jget "$OUT/$name-load.json" send_lag_p99_ms) ms; accept p99 $(jget "$OUT/$name-load.json" p99_ms) ms; $(probe_note "$name"))" \
    "p50 $p50 / p99 $p99 ms" "-" "-" "$target" "$met"
  row e2e "CPU during $name: $(cpu_split "$SAMPLER_OUT")" "-" "-" "-" "-" "-"
  drop_db "$DB"
}

# depth_step ROWS: accept and drain rates with ROWS sent + ROWS scheduled rows in the table.
depth_step() {
  local rows=$1
  new_db "depth$rows"
  start_posthorn
  mint_token
  send_one
  stop_posthorn
  load_payload
  if ((rows > 0)); then
    local t0
    t0=$(now)
    note "depth: inserting $rows sent rows (with their attempts) and $rows scheduled rows"
    copy_rows -history "$rows" sent "ts + interval '1 second'" "30 days"
    sql "INSERT INTO delivery_attempts (message_id, attempt, started_at, duration_ms, provider, outcome, smtp_code,
                                        enhanced_code, response)
         SELECT id, 1, created_at + interval '1 second', 12, 'smtp://127.0.0.1:25', 'sent', 250, '2.0.0', '250 2.0.0 Ok'
           FROM messages WHERE caller = 'bench-history'" >/dev/null
    copy_rows -scheduled "$rows" queued "ts + interval '20 days' + random() * interval '9 days'" "1 day"
    note "depth: inserted in $(calc "round($(now) - $t0, 1)") s"
  fi
  sql "VACUUM ANALYZE" >/dev/null
  # A history is written long before it is measured: its WAL must not be flushed during the measurement.
  sql "CHECKPOINT" >/dev/null || warn "CHECKPOINT failed (not a superuser?): the bulk load may still be flushed"
  wait_quiet "depth $rows"
  start_posthorn
  run_wrk "$PH_PORT" 3 "depth$rows-warmup"
  run_wrk "$PH_PORT" "$DURATION" "depth$rows-accept"
  DEPTH_ACCEPT=$WRK_RATE
  stop_posthorn
  # The messages just accepted are not part of the history: remove them before the drain.
  delete_messages "caller = 'bench' AND id <> '$TEMPLATE_ID'"
  sql "VACUUM ANALYZE messages, jobs" >/dev/null
  copy_rows -backlog "$MESSAGES" queued ts
  drain "depth$rows-drain"
  DEPTH_DRAIN=$DRAIN_RATE
  note "depth $rows: accept $DEPTH_ACCEPT req/s, drain $DEPTH_DRAIN msg/s"
  drop_db "$DB"
}

section_depth() {
  local steps=("$DEPTH_ROWS") started
  [[ "$DEPTH_1M" == 1 ]] && steps+=(1000000)
  step "depth: accept and drain rates with ${steps[*]} rows of history and of scheduled messages"
  started=$(now)
  start_sink
  depth_step 0
  local base_accept=$DEPTH_ACCEPT base_drain=$DEPTH_DRAIN rows
  for rows in "${steps[@]}"; do
    if [[ "$(calc "int($(now) - $started > $DEPTH_BUDGET)")" == 1 ]]; then
      warn "depth: ${DEPTH_BUDGET}s budget spent; skipping $rows rows"
      row depth "$rows sent + $rows scheduled rows" "skipped (BENCH_DEPTH_BUDGET)" "-" "-" "-" "-"
      continue
    fi
    depth_step "$rows"
    row depth "accept rate with $rows sent + $rows scheduled rows (wrk, $CONNS conns)" "$DEPTH_ACCEPT req/s" \
      "empty table: $base_accept req/s" "$(fmt_ratio "$DEPTH_ACCEPT" "$base_accept")" ">= 0.8x" \
      "$(verdict "$DEPTH_ACCEPT / $base_accept" '>=' 0.8)"
    row depth "drain rate ($MESSAGES msgs) with $rows sent + $rows scheduled rows" "$DEPTH_DRAIN msg/s" \
      "empty table: $base_drain msg/s" "$(fmt_ratio "$DEPTH_DRAIN" "$base_drain")" ">= 0.8x" \
      "$(verdict "$DEPTH_DRAIN / $base_drain" '>=' 0.8)"
  done
  stop_pid "$SINK_PID"
}

rss_mib() { calc "round($(awk '/^VmRSS:/ {print $2}' "/proc/$1/status") / 1024, 1)"; }

section_resources() {
  step "resources: RSS idle and under load; CPU split"
  new_db resources
  start_sink
  start_posthorn POSTHORN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT" POSTHORN_SMTP_MAX_CONNECTIONS="$SMTP_CONNS" \
    POSTHORN_WORKERS=$((SMTP_CONNS * 2))
  mint_token
  sleep 5
  local idle
  idle=$(rss_mib "$PH_PID")
  note "idle RSS after start: $idle MiB"
  wait_quiet "resources"
  start_sampler resources-load --pid "posthorn=$PH_PID" --match 'wrk=^wrk ' --match 'smtp-sink=smtp-sink .*'"$SINK_PORT"
  run_wrk "$PH_PORT" "$DURATION" resources-load
  stop_sampler
  local load_json=$SAMPLER_OUT peak hwm sent
  peak=$(calc "round($(jget "$load_json" rss_max_kib.posthorn) / 1024, 1)")
  hwm=$(calc "round($(jget "$load_json" hwm_kib.posthorn) / 1024, 1)")
  sent=$(sql "SELECT count(*) FROM message_states WHERE status = 'sent'")
  wait_until 600 "the queue to drain after the load" queue_empty
  sleep 5
  local after
  after=$(rss_mib "$PH_PID")
  stop_posthorn
  note "under load: RSS peak $peak MiB (VmHWM $hwm), after the load $after MiB; $WRK_RATE req/s accepted, $sent sent meanwhile"
  row resources "RSS idle (VmRSS 5 s after start; $after MiB once the load is over)" "$idle MiB" "-" "-" "<= 30 MiB" \
    "$(verdict "$idle" '<=' 30)"
  row resources "RSS under load: accept at max ($WRK_RATE req/s) while delivering ($sent sent during it); VmHWM $hwm MiB" \
    "$peak MiB" "-" "-" "<= 200 MiB" "$(verdict "$peak" '<=' 200)"
  row resources "CPU split under that load: $(cpu_split "$load_json")" "-" "-" "-" "-" "-"
  stop_pid "$SINK_PID"
  drop_db "$DB"
}

# ---------------------------------------------------------------------------------------------------------
# Setup

step "tools"
command -v wrk >/dev/null || apt_install wrk
OHA=""
[[ " ${sections[*]} " == *" accept "* ]] && ensure_oha
ensure_smtp_sink
SMTP_SOURCE=$(dirname "$POSTHORN_TEST_SMTP_SINK")/smtp-source
STUNNEL=""
if [[ " ${sections[*]} " == *" wan "* ]]; then
  command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || apt_install stunnel4
  STUNNEL=$(command -v stunnel4 || command -v stunnel)
fi
# section_submission: the same backlog submitted over SMTP and as JSON, each from the same load script.
section_submission() {
  step "submission: $MESSAGES messages over $SUBMISSION_SESSIONS SMTP sessions; baseline the same as JSON over $SUBMISSION_SESSIONS HTTP connections"
  new_db submission
  local smtp_port json smtp
  smtp_port=$(free_port)
  start_posthorn POSTHORN_SUBMISSION_LISTEN="127.0.0.1:$smtp_port"
  mint_token
  wait_quiet "submission as JSON"
  start_sampler submission-json --pid "posthorn=$PH_PID" --match 'load=submission_load'
  json=$(python3 bench/submission_load.py json "127.0.0.1:$PH_PORT" "$TOKEN" "$SUBMISSION_SESSIONS" "$MESSAGES")
  stop_sampler
  local json_cpu=$SAMPLER_OUT
  note "JSON: $json"
  reset_messages >/dev/null
  wait_quiet "submission over SMTP"
  start_sampler submission-smtp --pid "posthorn=$PH_PID" --match 'load=submission_load'
  smtp=$(python3 bench/submission_load.py smtp "127.0.0.1:$smtp_port" "$TOKEN" "$SUBMISSION_SESSIONS" "$MESSAGES")
  stop_sampler
  note "SMTP: $smtp"
  stop_posthorn
  local smtp_rate json_rate
  smtp_rate=$(calc "round($(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rate"])' "$smtp"))")
  json_rate=$(calc "round($(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rate"])' "$json"))")
  row submission "messages/s over $SUBMISSION_SESSIONS SMTP sessions (AUTH once, MAIL/RCPT/DATA pipelined; CPU: $(cpu_split "$SAMPLER_OUT")) vs the same as JSON over $SUBMISSION_SESSIONS HTTP connections (CPU: $(cpu_split "$json_cpu"))" \
    "$smtp_rate msg/s" "$json_rate msg/s" "$(fmt_ratio "$smtp_rate" "$json_rate")" "-" "-"
}

# section_batch: messages accepted per second in batches (one transaction each) against single sends on
# the same server; both answered only after the commit.
section_batch() {
  step "batch: durable messages/s in batches of $BATCH_SIZE (POST /v1/send/batch, $BATCH_CONNS connections) vs single sends (POST /v1/send, $CONNS connections)"
  new_db batch
  local batch_body=$OUT/batch.json
  python3 -c 'import json, sys
message = json.load(open(sys.argv[1]))
json.dump([message] * int(sys.argv[3]), open(sys.argv[2], "w"))' "$BODY" "$batch_body" "$BATCH_SIZE"
  start_posthorn POSTHORN_MAX_BATCH="$BATCH_SIZE"
  mint_token
  run_wrk "$PH_PORT" 3 batch-warmup
  run_wrk "$PH_PORT" 3 batch-warmup-batches "$BATCH_CONNS" /v1/send/batch "$batch_body"
  reset_messages >/dev/null
  wait_quiet "single sends"
  start_sampler batch-single --pid "posthorn=$PH_PID" --match 'wrk=^wrk '
  run_wrk "$PH_PORT" "$DURATION" batch-single "$CONNS"
  stop_sampler
  local single=$WRK_RATE single_cpu=$SAMPLER_OUT
  note "single sends: $single msg/s (errors: $WRK_ERRORS)"
  reset_messages >/dev/null
  wait_quiet "batches"
  local before after
  before=$(sql "SELECT count(*) FROM messages")
  start_sampler batch-batches --pid "posthorn=$PH_PID" --match 'wrk=^wrk '
  run_wrk "$PH_PORT" "$DURATION" batch-batches "$BATCH_CONNS" /v1/send/batch "$batch_body"
  stop_sampler
  after=$(sql "SELECT count(*) FROM messages")
  local batches=$WRK_RATE errors=$WRK_ERRORS rate durable=yes answered
  answered=$(jget "$OUT/batch-batches.json" requests)
  rate=$(calc "round($answered * $BATCH_SIZE / ($(jget "$OUT/batch-batches.json" duration_us) / 1e6))")
  [[ $((after - before)) -ge $(((answered - errors) * BATCH_SIZE)) ]] || durable=no
  note "batches: $batches batches/s = $rate msg/s (errors: $errors), p50 $(jget "$OUT/batch-batches.json" p50_ms) ms, p99 $(jget "$OUT/batch-batches.json" p99_ms) ms"
  stop_posthorn
  row batch "messages/s accepted in batches of $BATCH_SIZE ($batches batches/s over $BATCH_CONNS connections, p50 / p99 $(jget "$OUT/batch-batches.json" p50_ms) / $(jget "$OUT/batch-batches.json" p99_ms) ms per batch; errors $errors; rows >= 202s x $BATCH_SIZE: $durable; CPU: $(cpu_split "$SAMPLER_OUT")) vs single sends over $CONNS connections (CPU: $(cpu_split "$single_cpu"))" \
    "$rate msg/s" "$single msg/s" "$(fmt_ratio "$rate" "$single")" "-" "-"
  row batch "CPU per message" "posthorn $(cpu_per "$SAMPLER_OUT" posthorn "$rate") us, postgres $(cpu_per "$SAMPLER_OUT" postgres "$rate") us" \
    "posthorn $(cpu_per "$single_cpu" posthorn "$single") us, postgres $(cpu_per "$single_cpu" postgres "$single") us" "-" "-" "-"
  drop_db "$DB"
}

# section_webhooks: events delivered to one webhook endpoint (signed, with their outcomes recorded),
# against the same receiver taking the same body from wrk over as many connections as posthorn keeps in
# flight to one endpoint.
section_webhooks() {
  step "webhooks: $WEBHOOK_EVENTS events to one endpoint (4 in flight); baseline wrk posting to the same receiver over 4 connections"
  new_db webhooks
  local sink_out=$OUT/webhook-sink.port sink_pid sink_port
  python3 bench/webhook_sink.py >"$sink_out" &
  sink_pid=$!
  BG_PIDS+=("$sink_pid")
  wait_until 10 "the webhook sink" test -s "$sink_out"
  sink_port=$(head -n 1 "$sink_out")
  start_posthorn POSTHORN_WEBHOOK_ALLOW_HTTP=true POSTHORN_WEBHOOK_ALLOW_PRIVATE=true \
    POSTHORN_MAX_BATCH=100
  local admin
  admin=$(env "${NO_TEST_ENV[@]}" "$BIN" token --sub bench --scope admin --ttl 6h)
  # The events to deliver: accepted messages, written before the endpoint exists.
  python3 - "$PH_PORT" "$admin" "$WEBHOOK_EVENTS" "$BODY" <<'PY'
import json, sys, urllib.request
port, token, total, body = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.load(open(sys.argv[4]))
for start in range(0, total, 100):
    batch = json.dumps([body] * min(100, total - start)).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/send/batch", data=batch, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert urllib.request.urlopen(request).status == 202
PY
  local endpoint
  endpoint=$(curl -sf -X POST "http://127.0.0.1:$PH_PORT/v1/webhooks" -H "Authorization: Bearer $admin" \
    -H 'content-type: application/json' \
    -d "{\"url\": \"http://127.0.0.1:$sink_port/hook\", \"events\": [\"email.accepted\"]}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  wait_quiet "webhook deliveries"
  start_sampler webhooks --pid "posthorn=$PH_PID" --match 'sink=webhook_sink'
  local started ended count=0
  started=$(now)
  curl -sf -X POST "http://127.0.0.1:$PH_PORT/v1/webhooks/$endpoint/replay" -H "Authorization: Bearer $admin" \
    -H 'content-type: application/json' -d '{"since": "2000-01-01T00:00:00Z"}' >/dev/null
  local give_up=$((SECONDS + 300))
  while ((count < WEBHOOK_EVENTS && SECONDS < give_up)); do
    sleep 0.05
    count=$(curl -sf "http://127.0.0.1:$sink_port/count" || echo 0)
  done
  ended=$(now)
  stop_sampler
  local webhook_cpu=$SAMPLER_OUT
  stop_posthorn
  local rate
  rate=$(calc "round($count / ($ended - $started))")
  note "webhooks: $count of $WEBHOOK_EVENTS delivered in $(calc "round($ended - $started, 2)") s: $rate deliveries/s"
  # Baseline: the same receiver, the same body, as many connections.
  local hook_body=$OUT/webhook-body.json
  python3 -c 'import json, sys; json.dump({"type": "email.accepted", "created_at": "2026-12-06T10:00:00Z",
    "data": {"message_id": "01a24928-5d9e-70c2-a96d-002cb7929b1c", "caller": "bench", "source": "api"}},
    open(sys.argv[1], "w"))' "$hook_body"
  wait_quiet "webhook baseline"
  TOKEN=unused run_wrk "$sink_port" "$DURATION" webhook-wrk 4 /hook "$hook_body"
  local baseline=$WRK_RATE
  stop_pid "$sink_pid"
  row webhooks "events delivered to one endpoint, signed, each attempt recorded ($count of $WEBHOOK_EVENTS; CPU: $(cpu_split "$webhook_cpu"))" \
    "$rate deliveries/s" "wrk, 4 connections, same receiver: $baseline req/s" "$(fmt_ratio "$rate" "$baseline")" "-" "-"
  drop_db "$DB"
}

# sent_count_is N [CONDITION]: whether N messages (matching CONDITION, SQL over message_states) are sent.
sent_count_is() {
  [[ "$(sql "SELECT count(*) FROM message_states WHERE status = 'sent' AND ${2:-true}")" -ge "$1" ]]
}
# count_file_reaches FILE N: whether the count a timing sink writes to FILE is N or more.
count_file_reaches() { [[ "$(cat "$1" 2>/dev/null || echo 0)" -ge "$2" ]]; }

# section_lanes: transactional messages sent while a large broadcast backlog drains: each one's time
# from accept to sent (the sink's 250), against the same with the backlog transactional too (no lane to
# pass it by); and how fast the broadcast backlog went meanwhile (it must not stop).
section_lanes() {
  step "lanes: transactional accept-to-sent under a $LANES_BACKLOG-message broadcast backlog; baseline the same backlog transactional"
  new_db lanes
  start_sink
  start_posthorn POSTHORN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT"
  mint_token
  send_one
  wait_until 30 "the first message to be sent" sent_count_is 1
  stop_posthorn
  load_payload
  local mode probes=40 p50 p99 bulk_rate
  declare -A P50 P99 BULK
  for mode in broadcast transactional; do
    sql "TRUNCATE delivery_attempts" >/dev/null
    delete_messages "caller <> (SELECT caller FROM messages WHERE id = '$TEMPLATE_ID')"
    copy_rows -lanes "$LANES_BACKLOG" queued ts
    sql "UPDATE messages SET stream = '$mode' WHERE caller LIKE '%-lanes';
         UPDATE jobs SET lane = $([[ $mode == broadcast ]] && echo 1 || echo 0)" >/dev/null
    sql "VACUUM ANALYZE messages, jobs" >/dev/null
    wait_quiet "lanes ($mode backlog)"
    start_posthorn POSTHORN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT" POSTHORN_SMTP_MAX_CONNECTIONS="$SMTP_CONNS" \
      POSTHORN_WORKERS=$((SMTP_CONNS * 2))
    # The backlog is due and draining; transactional probes at 20/s behind it.
    python3 - "$PH_PORT" "$TOKEN" "$BODY" "$probes" <<'PY'
import json, sys, time, urllib.request
port, token, body, count = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read(), int(sys.argv[4])
start = time.monotonic()
for n in range(count):
    time.sleep(max(0, start + n * 0.05 - time.monotonic()))
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/send", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert urllib.request.urlopen(request).status == 202
PY
    wait_until 300 "the probes to be sent" sent_count_is "$probes" "caller = 'bench' AND id <> '$TEMPLATE_ID'"
    read -r p50 p99 < <(sql "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)),
                                    round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))
                               FROM (SELECT extract(epoch FROM sent_at - created_at) * 1000 AS ms
                                       FROM message_states
                                      WHERE caller = 'bench' AND id <> '$TEMPLATE_ID') AS p" | tr '|' ' ')
    # Backlog messages sent while the probes were: from the first probe's accept to the last one's send.
    bulk_rate=$(sql "SELECT round(count(*) / greatest(extract(epoch FROM max(p.sent_at) - min(p.created_at)), 0.001))
                       FROM delivery_attempts AS d,
                            (SELECT min(created_at) AS created_at, max(sent_at) AS sent_at FROM message_states
                              WHERE caller = 'bench' AND id <> '$TEMPLATE_ID') AS p
                      WHERE d.status = 'sent' AND d.recorded_at BETWEEN p.created_at AND p.sent_at
                        AND d.message_id IN (SELECT id FROM messages WHERE caller LIKE '%-lanes')")
    stop_posthorn
    P50[$mode]=$p50 P99[$mode]=$p99 BULK[$mode]=$bulk_rate
    note "$mode backlog: probes p50 $p50 ms, p99 $p99 ms; backlog sent meanwhile: $bulk_rate msg/s"
    delete_messages "caller = 'bench' AND id <> '$TEMPLATE_ID'"
  done
  row lanes "transactional accept-to-sent p50 / p99 while $LANES_BACKLOG broadcast messages drain ($probes probes at 20/s; the backlog went on at ${BULK[broadcast]} msg/s meanwhile)" \
    "${P50[broadcast]} / ${P99[broadcast]} ms" "the same backlog transactional: ${P50[transactional]} / ${P99[transactional]} ms" \
    "$(fmt_ratio "${P99[broadcast]}" "${P99[transactional]}")" "p99 <= 2000 ms" "$(verdict "${P99[broadcast]}" '<=' 2000)"
  stop_pid "$SINK_PID"
  drop_db "$DB"
}

# section_ratelimit: three replicas drain a backlog through one provider with rate_limit N/s: the drain
# should take (messages - 1) / N seconds, with no more than N (+20 %) messages at the sink in any second.
section_ratelimit() {
  step "ratelimit: three replicas drain $RATE_MESSAGES messages through one provider limited to $RATE_LIMIT/s"
  new_db ratelimit
  start_timing_sink ratelimit-first
  local paced=(POSTHORN_PROVIDERS__PACED__URL="smtp://127.0.0.1:$TSINK_PORT"
    POSTHORN_PROVIDERS__PACED__RATE_LIMIT="$RATE_LIMIT/s")
  start_posthorn "${paced[@]}"
  mint_token
  send_one
  wait_until 30 "the first message to be sent" sent_count_is 1
  stop_posthorn
  stop_timing_sink
  load_payload
  copy_rows -ratelimit "$RATE_MESSAGES" queued ts
  sql "VACUUM ANALYZE messages, jobs" >/dev/null
  start_timing_sink ratelimit
  paced=(POSTHORN_PROVIDERS__PACED__URL="smtp://127.0.0.1:$TSINK_PORT"
    POSTHORN_PROVIDERS__PACED__RATE_LIMIT="$RATE_LIMIT/s")
  wait_quiet "ratelimit"
  local replicas=() replica
  for replica in 1 2 3; do
    start_posthorn "${paced[@]}" POSTHORN_WORKERS=4
    replicas+=("$PH_PID")
  done
  wait_until $((RATE_MESSAGES / RATE_LIMIT * 3 + 60)) "the backlog at the sink" \
    count_file_reaches "$OUT/ratelimit.count" "$RATE_MESSAGES"
  for replica in "${replicas[@]}"; do stop_pid "$replica"; done
  PH_PID=""
  stop_timing_sink
  local span most expected
  span=$(jget "$TSINK_OUT" span_s)
  most=$(jget "$TSINK_OUT" max_in_any_second)
  expected=$(calc "round(($RATE_MESSAGES - 1) / $RATE_LIMIT, 2)")
  note "ratelimit: $RATE_MESSAGES messages in $span s (expected $expected s), at most $most in any second"
  row ratelimit "drain of $RATE_MESSAGES messages by three replicas through one provider with rate_limit $RATE_LIMIT/s, first to last arrival at the sink (at most $most in any one second)" \
    "$span s" "the limit's own schedule: $expected s" "$(fmt_ratio "$span" "$expected")" \
    "1.00x +- 10 %, <= $((RATE_LIMIT * 6 / 5)) a second" \
    "$(calc "'yes' if abs($span / $expected - 1) <= 0.1 and $most <= $RATE_LIMIT * 1.2 else 'no'")"
  drop_db "$DB"
}

[[ -x "$SMTP_SOURCE" ]] || die "smtp-source is missing next to $POSTHORN_TEST_SMTP_SINK"
command -v postfix >/dev/null || die "postfix is missing (apt-get install postfix)"
ensure_postgres
# PostgreSQL runs on this machine: posthorn, pgbench and the scripts connect without TLS, as a gateway
# beside its database would. Debian's server offers TLS and libpq and sqlx take it by default, which costs
# both sides CPU for every byte; BENCH_PG_SSLMODE=prefer measures with it (and the delivery section shows
# a drain over TLS either way). An sslmode already in POSTHORN_TEST_DATABASE_URL is kept.
ADMIN_URL=$(pg_url_with_param "$POSTHORN_TEST_DATABASE_URL" sslmode "${BENCH_PG_SSLMODE:-disable}")
on_exit drop_all_dbs
on_exit stop_all # runs first: processes stop before their databases are dropped
server_version=$(pg_psql -At "$ADMIN_URL" -c "SHOW server_version_num")
PGBENCH=""
for candidate in "/usr/lib/postgresql/$((server_version / 10000))/bin/pgbench" /usr/lib/postgresql/*/bin/pgbench; do
  [[ -x "$candidate" ]] && PGBENCH=$candidate && break
done
if [[ -z "$PGBENCH" ]]; then
  command -v pgbench >/dev/null && pgbench --version >/dev/null 2>&1 && PGBENCH=$(command -v pgbench)
fi
if [[ -z "$PGBENCH" ]]; then
  apt_install postgresql-contrib
  PGBENCH=$(find /usr/lib/postgresql/*/bin -name pgbench | sort -V | tail -n 1)
fi
[[ -x "$PGBENCH" ]] || die "pgbench not found"
PG_MASTER=""
data_dir=$(pg_psql -At "$ADMIN_URL" -c "SHOW data_directory" 2>/dev/null || true)
[[ -n "$data_dir" && -r "$data_dir/postmaster.pid" ]] && PG_MASTER=$(head -n 1 "$data_dir/postmaster.pid")
[[ -n "$PG_MASTER" ]] || warn "the PostgreSQL server's processes are not visible here: its CPU is not measured"
pg_settings=$(pg_psql -At "$ADMIN_URL" -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
  WHERE name IN ('fsync', 'synchronous_commit', 'max_connections', 'shared_buffers', 'wal_sync_method')")
reap_stale_dbs

wait_quiet "build"
if [[ "${BENCH_BUILD:-1}" == 1 ]]; then
  step "cargo build --release --locked --bin posthorn"
  cargo build --release --locked --bin posthorn
fi
[[ -x "$BIN" ]] || die "$BIN is missing"

BODY=$OUT/body.json
python3 -c 'import json, sys
json.dump({"from": "Bench <bench@example.com>", "to": "sink@example.org", "subject": "benchmark",
           "text": "A transactional message of ordinary size.\n" * 20}, open(sys.argv[1], "w"))' "$BODY"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock migrations 2>/dev/null || commit="$commit+uncommitted changes"
started_at=$(date -u '+%Y-%m-%d %H:%M UTC')
run_start=$(now)
for s in "${sections[@]}"; do
  "section_$s"
done

# ---------------------------------------------------------------------------------------------------------
# The table

{
  echo "posthorn $commit, $started_at, $(nproc) cores, $(calc "round(($(now) - $run_start) / 60, 1)") min"
  echo "command: bench/run.sh ${*:-}  (BENCH_DURATION=$DURATION BENCH_CONNECTIONS=$CONNS BENCH_SMTP_CONNECTIONS=$SMTP_CONNS BENCH_MESSAGES=$MESSAGES BENCH_DEPTH_ROWS=$DEPTH_ROWS BENCH_DEPTH_1M=$DEPTH_1M BENCH_CHECKPOINT=$CHECKPOINT_FIRST BENCH_ACCEPT_CONNECTIONS=\"${ACCEPT_CONNS[*]}\")"
  echo "PostgreSQL $(pg_psql -At "$ADMIN_URL" -c "SHOW server_version"): $pg_settings"
  echo
  echo "| section | figure | posthorn | baseline | ratio | target | met? |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  while IFS=$'\t' read -r section figure value baseline ratio target met; do
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$section" "$figure" "$value" "$baseline" "$ratio" "$target" "$met"
  done <"$RESULTS"
} >"$OUT/results.md"
echo
cat "$OUT/results.md"
echo
note "raw figures, JSON and logs: $OUT"
