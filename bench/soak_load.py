"""Mixed load for bench/soak.sh: a steady request rate for a fixed time, from several client threads.
Standard library only.

    python3 bench/soak_load.py HOST PORT TOKEN SECONDS RATE [CLIENTS]

The mix per request: 55 % POST /v1/send (a fifth with an Idempotency-Key, some of them repeated; one in
ten scheduled a few seconds ahead), 5 % invalid sends (422), 20 % GET /v1/messages/{id} of a recent
message, 10 % GET /v1/messages?limit=20, 5 % GET /metrics, 5 % GET /readyz. Prints the answers by
route and status, and the latency percentiles of the sends, as one JSON object.
"""
import collections
import datetime
import http.client
import json
import random
import sys
import threading
import time
import uuid

host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seconds, rate = float(sys.argv[4]), float(sys.argv[5])
clients = int(sys.argv[6]) if len(sys.argv) > 6 else 8

lock = threading.Lock()
answers = collections.Counter()
send_latencies = []
recent_ids = collections.deque(maxlen=500)
recent_keys = collections.deque(maxlen=50)
errors = collections.Counter()


def message(index):
    body = {
        "from": "Soak <soak@example.com>",
        "to": [f"user{index % 97}@example.org"],
        "subject": f"soak {index}",
        "text": "A transactional message of ordinary size.\n" * 20,
        "tags": ["soak"],
        "metadata": {"index": str(index)},
    }
    if index % 10 == 0:
        at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=random.randint(2, 20))
        body["send_at"] = at.isoformat(timespec="seconds").replace("+00:00", "Z")
    if index % 7 == 0:
        body["html"] = f"<p>soak {index}</p>"
    return body


def request(connection, method, path, body=None, headers=None):
    all_headers = {"Authorization": "Bearer " + token}
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    connection.request(method, path, json.dumps(body).encode() if body is not None else None, all_headers)
    response = connection.getresponse()
    data = response.read()
    return response.status, data


def one(connection, index):
    roll = random.random()
    if roll < 0.55:
        headers = {}
        body = message(index)
        if random.random() < 0.2:
            with lock:
                reuse = recent_keys[-1] if recent_keys and random.random() < 0.3 else None
            if reuse:
                key, body = reuse
            else:
                key = "soak-" + uuid.uuid4().hex
                with lock:
                    recent_keys.append((key, body))
            headers["Idempotency-Key"] = key
        started = time.monotonic()
        status, data = request(connection, "POST", "/v1/send", body, headers)
        took = time.monotonic() - started
        with lock:
            send_latencies.append(took)
            if status == 202:
                recent_ids.append(json.loads(data)["id"])
        return "send", status
    if roll < 0.60:
        status, _ = request(connection, "POST", "/v1/send", {"from": "nobody", "to": "x", "subject": "bad"})
        return "send-invalid", status
    if roll < 0.80:
        with lock:
            chosen = random.choice(recent_ids) if recent_ids else None
        if chosen is None:
            return "get-none", 0
        status, _ = request(connection, "GET", f"/v1/messages/{chosen}")
        return "get", status
    if roll < 0.90:
        status, _ = request(connection, "GET", "/v1/messages?limit=20&tag=soak")
        return "list", status
    if roll < 0.95:
        status, _ = request(connection, "GET", "/metrics")
        return "metrics", status
    status, _ = request(connection, "GET", "/readyz")
    return "readyz", status


counter = iter(range(10**9))
deadline = time.monotonic() + seconds
interval = clients / rate


def worker():
    connection = http.client.HTTPConnection(host, port, timeout=30)
    next_at = time.monotonic() + random.random() * interval
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        if next_at > now:
            time.sleep(next_at - now)
        next_at += interval
        with lock:
            index = next(counter)
        try:
            route, status = one(connection, index)
            with lock:
                answers[f"{route} {status}"] += 1
        except (OSError, http.client.HTTPException) as error:
            with lock:
                errors[type(error).__name__] += 1
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=30)


threads = [threading.Thread(target=worker) for _ in range(clients)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
latencies = sorted(send_latencies)


def percentile(p):
    return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 1) if latencies else None


print(
    json.dumps(
        {
            "requests": sum(answers.values()),
            "answers": dict(sorted(answers.items())),
            "transport_errors": dict(errors),
            "send_ms": {"p50": percentile(0.5), "p99": percentile(0.99), "max": percentile(1.0)},
        }
    )
)
