"""A webhook receiver for the tests: verifies every delivery with the standardwebhooks package (an
implementation independent of posthorn's) and answers as a plan says.

    webhook_receiver.py DIR

DIR/secrets holds the secrets to verify with, one per line (read for every request, so a test can
rotate). DIR/plan holds a JSON list of answers consumed one per request, each a status code or
{"status": 503, "retry_after": "1", "delay": 2.5}; once it is used up, every answer is 200. Every
request is appended to DIR/received.jsonl. The port is printed on the first line of stdout.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

DIR = sys.argv[1]
LOCK = threading.Lock()
STATE = {"answered": 0}


def read(name, default):
    try:
        with open(os.path.join(DIR, name)) as file:
            return file.read()
    except FileNotFoundError:
        return default


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {key.lower(): value for key, value in self.headers.items()}
        verified_with = []
        for index, secret in enumerate(read("secrets", "").split()):
            try:
                Webhook(secret).verify(body, headers)
                verified_with.append(index)
            except Exception:
                pass
        with LOCK:
            plan = json.loads(read("plan", "[]") or "[]")
            answer = plan[STATE["answered"]] if STATE["answered"] < len(plan) else 200
            STATE["answered"] += 1
        if isinstance(answer, int):
            answer = {"status": answer}
        time.sleep(answer.get("delay", 0))
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        record = {
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
            "verified": bool(verified_with),
            "verified_with": verified_with,
            "status": answer["status"],
            "body": parsed,
            "at": time.time(),
        }
        with LOCK:
            with open(os.path.join(DIR, "received.jsonl"), "a") as out:
                out.write(json.dumps(record) + "\n")
        self.send_response(answer["status"])
        if "retry_after" in answer:
            self.send_header("Retry-After", answer["retry_after"])
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok" if answer["status"] < 300 else b"not now")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
