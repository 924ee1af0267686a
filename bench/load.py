"""Posts N messages to a running posthorn as fast as C concurrent clients can, and prints the rate."""
import http.client
import json
import sys
import threading
import time

host, port, token, total, clients = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
body = json.dumps(
    {
        "from": "Bench <bench@example.com>",
        "to": "sink@example.org",
        "subject": "benchmark",
        "text": "A transactional message of ordinary size.\n" * 20,
    }
).encode()
counter = iter(range(total))
lock = threading.Lock()
failures = []


def worker():
    connection = http.client.HTTPConnection(host, port)
    while True:
        with lock:
            index = next(counter, None)
        if index is None:
            return
        connection.request(
            "POST", "/v1/send", body, {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        if response.status != 202:
            failures.append(response.status)


start = time.monotonic()
threads = [threading.Thread(target=worker) for _ in range(clients)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
elapsed = time.monotonic() - start
print(f"accepted {total - len(failures)} of {total} in {elapsed:.2f}s: {total / elapsed:.0f} req/s ({clients} clients)")
sys.exit(1 if failures else 0)
