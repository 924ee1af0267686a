"""Sends one message with requests. POSTHORN_URL (default http://127.0.0.1:8080) and POSTHORN_TOKEN (a
token with the send scope) come from the environment; TO and FROM may too."""

import os
import sys
import time
import uuid

import requests

url = os.environ.get("POSTHORN_URL", "http://127.0.0.1:8080")
token = os.environ["POSTHORN_TOKEN"]
message = {
    "from": os.environ.get("FROM", "Shop <shop@example.com>"),
    "to": [os.environ.get("TO", "customer@example.org")],
    "subject": "Hello from Python",
    "text": "Sent with requests.",
}
# One key per message: a retry after a timeout or a 429 is recognised, never sent twice.
headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}

for attempt in range(1, 6):
    try:
        response = requests.post(f"{url}/v1/send", json=message, headers=headers, timeout=30)
    except requests.ConnectionError:
        time.sleep(attempt)
        continue
    if response.status_code in (200, 202):
        print(response.json()["id"])
        sys.exit(0)
    if response.status_code in (429, 503):
        time.sleep(int(response.headers.get("Retry-After", attempt)))
        continue
    # Every refusal is an RFC 9457 problem document with a stable type.
    problem = response.json()
    sys.exit(f"refused: {response.status_code} {problem['type']}: {problem['detail']}")
sys.exit("gave up after 5 attempts")
