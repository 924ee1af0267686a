#!/usr/bin/env bash
# OpenAPI contract test: run `posthorn serve` on a fresh database and let
# schemathesis check every documented operation in openapi.yaml against it
# (documented status codes, content types and response schemas, no 5xx).
#
#   POSTHORN_BIN             binary to test (default: build target/debug/posthorn)
#   POSTHORN_OPENAPI         OpenAPI document (default: openapi.yaml)
#   POSTHORN_CONTRACT_SEED   fixed schemathesis seed, to replay a failure
#   POSTHORN_CONTRACT_MAX_EXAMPLES  test cases per operation (default: 50)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh
# shellcheck source=scripts/lib/python.sh
source scripts/lib/python.sh

spec=${POSTHORN_OPENAPI:-openapi.yaml}
[[ -f "$spec" ]] || die "OpenAPI document not found: $spec"
[[ -s "$spec" ]] || die "OpenAPI document is empty: $spec"
spec=$(realpath "$spec")

if [[ -n "${POSTHORN_BIN:-}" ]]; then
  bin=$POSTHORN_BIN
else
  step "cargo build --bin posthorn"
  cargo build --bin posthorn
  bin=target/debug/posthorn
fi
[[ -x "$bin" ]] || die "posthorn binary not found or not executable: $bin"

# Both return at once when test.sh has already set things up.
ensure_postgres
ensure_python_tools

work=target/contract-test
mkdir -p "$work"
log="$work/serve.log"
server_pid=""

# 200 when the URL answers 200; 0 when nothing answers. curl may be absent on
# a fresh machine, the venv's python is always there.
http_status() {
  "$POSTHORN_TEST_PYTHON" - "$1" <<'PY'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)
PY
}

free_port() {
  "$POSTHORN_TEST_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

show_log() {
  printf -- '--- last 200 lines of %s ---\n' "$log" >&2
  tail -n 200 "$log" >&2 || true
  printf -- '--- end of server log ---\n' >&2
}

stop_server() {
  [[ -n "$server_pid" ]] || return 0
  kill -0 "$server_pid" 2>/dev/null || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    warn "posthorn serve did not stop within 10 s of SIGTERM; killing it"
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
}

drop_db() {
  pg_psql -d "$POSTHORN_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" ||
    warn "could not drop database $1"
}

db="posthorn_test_contract_$$"
step "creating database $db"
pg_psql -d "$POSTHORN_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\""
on_exit drop_db "$db"

port=$(free_port)
POSTHORN_DATABASE_URL=$(pg_url_with_db "$POSTHORN_TEST_DATABASE_URL" "$db")
POSTHORN_LISTEN="127.0.0.1:$port"
POSTHORN_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
# Nothing in this test delivers mail; nothing listens there.
POSTHORN_SMTP_URL="smtp://127.0.0.1:2525"
# schemathesis sends bursts far beyond a caller's quota; 429 is documented but would make runs flaky.
POSTHORN_RATE_LIMIT=0
# The HTTP API is under test; the SMTP listener would take the development profile's port 2525.
POSTHORN_SUBMISSION_LISTEN=off
# One public form, so that /v1/forms/contact answers as a configured form does.
mkdir -p "$work"
cat >"$work/posthorn.toml" <<'TOML'
[[forms]]
id = "contact"
to = ["owner@example.com"]
from = "forms@example.com"
allowed_origins = ["https://example.com"]
TOML
POSTHORN_CONFIG="$work/posthorn.toml"
export POSTHORN_DATABASE_URL POSTHORN_LISTEN POSTHORN_JWT_SECRET POSTHORN_SMTP_URL POSTHORN_RATE_LIMIT \
  POSTHORN_SUBMISSION_LISTEN POSTHORN_CONFIG
base="http://$POSTHORN_LISTEN"

step "starting posthorn serve on $POSTHORN_LISTEN (log: $log)"
"$bin" serve >"$log" 2>&1 &
server_pid=$!
on_exit stop_server

step "waiting for GET /readyz to return 200"
deadline=$((SECONDS + 60))
until [[ "$(http_status "$base/readyz")" == 200 ]]; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    show_log
    die "posthorn serve exited before it was ready"
  fi
  if ((SECONDS >= deadline)); then
    show_log
    die "posthorn serve was not ready within 60 s"
  fi
  sleep 0.5
done

step "minting a token (sub contract, scope send,read)"
if ! token=$("$bin" token --sub contract --scope send,read --ttl 1h); then
  die "posthorn token failed"
fi
token=$(tr -d '[:space:]' <<<"$token")
[[ -n "$token" ]] || die "posthorn token printed nothing"

args=(
  run "$spec"
  --url "$base"
  --header "Authorization: Bearer $token"
  --checks "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
  --max-examples "${POSTHORN_CONTRACT_MAX_EXAMPLES:-50}"
  --request-timeout 10
)
[[ -n "${POSTHORN_CONTRACT_SEED:-}" ]] && args+=(--seed "$POSTHORN_CONTRACT_SEED")

step "schemathesis $(schemathesis --version | awk '{print $NF}') against $base (at most 600 s)"
# Run from target/contract-test: schemathesis keeps its crash cache in
# ./.schemathesis, which must not land in the work tree. It still finds a
# schemathesis.toml at the repository root.
rc=0
# The hooks (scripts/lib/contract_hooks.py) teach it to send message/rfc822 bodies.
hooks_dir="$PWD/scripts/lib"
(cd "$work" && PYTHONPATH="$hooks_dir${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=contract_hooks \
  timeout 600 schemathesis "${args[@]}") || rc=$?
if ((rc != 0)); then
  ((rc == 124)) && warn "schemathesis did not finish within 600 s"
  show_log
  die "contract test failed (schemathesis exit code $rc)"
fi
step "contract test passed"
