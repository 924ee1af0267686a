"""Fixed-rate (open-loop) HTTP load: POST a JSON body at RATE requests per second for DURATION seconds.

Requests are scheduled at fixed instants, independent of how fast answers come back, and each latency is
measured from the instant the request was due, not from when a connection was free to send it: a server
that stalls is charged for the whole queue that builds up behind it (no coordinated omission).

    openloop.py --url http://127.0.0.1:8080/v1/send --token T --body body.json --rate 500 --duration 15

Prints one JSON object: target and achieved rate, answers by status, latency percentiles in ms.
With --stamp-header NAME, every body carries `"headers": {NAME: "<unix time the request was written>"}`
(for end-to-end latency measured at an SMTP sink).
"""

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


def percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


async def run(args):
    url = urlsplit(args.url)
    host, port, path = url.hostname, url.port or 80, url.path or "/"
    with open(args.body, "rb") as handle:
        document = json.load(handle)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {args.token}\r\n"
        "Content-Type: application/json\r\n"
    ).encode()
    if args.stamp_header:
        document["headers"] = {args.stamp_header: "@STAMP@"}
        before, after = json.dumps(document).encode().split(b"@STAMP@")

        def request():
            body = before + f"{time.time():.6f}".encode() + after
            return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    else:
        body = json.dumps(document).encode()
        fixed = head + b"Content-Length: %d\r\n\r\n" % len(body) + body

        def request():
            return fixed

    loop = asyncio.get_running_loop()
    total = int(args.rate * args.duration)
    queue = asyncio.Queue()
    latencies = []
    statuses = {}
    lag = [0.0]
    start = loop.time() + 0.1

    async def producer():
        sent = 0
        while sent < total:
            now = loop.time()
            due = min(total, int((now - start) * args.rate) + 1) if now >= start else 0
            while sent < due:
                intended = start + sent / args.rate
                lag[0] = max(lag[0], now - intended)
                queue.put_nowait(intended)
                sent += 1
            await asyncio.sleep(0.001)
        for _ in range(args.connections):
            queue.put_nowait(None)

    async def connect():
        return await asyncio.open_connection(host, port, limit=1 << 20)

    async def worker():
        reader, writer = await connect()
        while True:
            intended = await queue.get()
            if intended is None:
                break
            status = 0
            for _attempt in range(2):
                try:
                    writer.write(request())
                    line = await reader.readuntil(b"\r\n\r\n")
                    status = int(line[9:12])
                    length = 0
                    keep_alive = True
                    for header in line.split(b"\r\n")[1:]:
                        name, _, value = header.partition(b":")
                        name = name.strip().lower()
                        if name == b"content-length":
                            length = int(value)
                        elif name == b"connection" and value.strip().lower() == b"close":
                            keep_alive = False
                    if length:
                        await reader.readexactly(length)
                    if not keep_alive:
                        writer.close()
                        reader, writer = await connect()
                    break
                except (ConnectionError, asyncio.IncompleteReadError):
                    writer.close()
                    reader, writer = await connect()
                    status = -1
            latencies.append(loop.time() - intended)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    workers = [asyncio.ensure_future(worker()) for _ in range(args.connections)]
    producing = asyncio.ensure_future(producer())
    deadline = args.duration + args.grace
    done, pending = await asyncio.wait([producing, *workers], timeout=deadline + 0.1)
    for task in pending:
        task.cancel()
    elapsed = loop.time() - start
    for task in done:
        if task.exception() is not None:
            raise task.exception()
    latencies.sort()
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    answered = len(latencies)
    result = {
        "target_rate": args.rate,
        "duration": args.duration,
        "scheduled": total,
        "answered": answered,
        "ok": ok,
        "unfinished": total - answered,
        "statuses": {str(key): value for key, value in sorted(statuses.items())},
        "achieved_rate": round(ok / max(elapsed, args.duration), 1),
        "max_schedule_lag_ms": round(lag[0] * 1000, 2),
        "p50_ms": None,
        "p90_ms": None,
        "p99_ms": None,
        "max_ms": None,
    }
    if latencies:
        for key, fraction in (("p50_ms", 0.50), ("p90_ms", 0.90), ("p99_ms", 0.99)):
            result[key] = round(percentile(latencies, fraction) * 1000, 2)
        result["max_ms"] = round(latencies[-1] * 1000, 2)
    print(json.dumps(result))
    return 0 if ok == total else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--body", required=True, help="file holding the JSON message")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of scheduled load")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to wait for late answers")
    parser.add_argument("--stamp-header", default=None)
    args = parser.parse_args()
    if args.rate <= 0:
        parser.error("--rate must be positive")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
