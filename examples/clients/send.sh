#!/usr/bin/env bash
# Sends one message with curl. POSTHORN_URL (default http://127.0.0.1:8080) and POSTHORN_TOKEN (a token
# with the send scope) come from the environment; TO and FROM may too.
set -euo pipefail
url="${POSTHORN_URL:-http://127.0.0.1:8080}"
: "${POSTHORN_TOKEN:?set POSTHORN_TOKEN to a token with the send scope}"
to="${TO:-customer@example.org}"
from="${FROM:-Shop <shop@example.com>}"
# One key per message: a retry after a timeout or a 429 is recognised, never sent twice.
key="$(cat /proc/sys/kernel/random/uuid 2>/dev/null || uuidgen)"
body=$(printf '{"from": "%s", "to": ["%s"], "subject": "Hello from curl", "text": "Sent with curl."}' "$from" "$to")
headers="$(mktemp)"
answer="$(mktemp)"
trap 'rm -f "$headers" "$answer"' EXIT
for attempt in 1 2 3 4 5; do
  status=$(curl --silent --show-error --output "$answer" --dump-header "$headers" --write-out '%{http_code}' \
    --header "Authorization: Bearer $POSTHORN_TOKEN" \
    --header "Idempotency-Key: $key" \
    --header "Content-Type: application/json" \
    --data "$body" "$url/v1/send") || status=000
  if [[ "$status" == 202 || "$status" == 200 ]]; then
    # {"id": "...", "status": "queued", ...}
    sed -n 's/.*"id" *: *"\([^"]*\)".*/\1/p' "$answer"
    exit 0
  fi
  if [[ "$status" == 429 || "$status" == 503 || "$status" == 000 ]]; then
    wait=$(sed -n 's/^[Rr]etry-[Aa]fter: *\([0-9]*\).*/\1/p' "$headers" | tr -d '\r')
    sleep "${wait:-$attempt}"
    continue
  fi
  echo "refused ($status):" >&2
  cat "$answer" >&2
  exit 1
done
echo "gave up after 5 attempts" >&2
exit 1
