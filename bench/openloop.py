"""Fixed-rate (open-loop) HTTP load: POST a JSON body at RATE requests per second for DURATION seconds.

Requests are scheduled at fixed instants, independent of how fast answers come back, and each latency is
measured from the instant the request was due, not from when a connection was free to send it: a server
that stalls is charged for the whole queue that builds up behind it (no coordinated omission). At most one
request is in flight per connection (no pipelining), like wrk.

    openloop.py --url http://127.0.0.1:8080/v1/send --token T --body body.json --rate 500 --duration 15

Prints one JSON object: target and achieved rate, answers by status, latency percentiles in ms, and how
late requests were sent after their instant (send_lag_*: a request waits for a free connection when the
server is slow, but a large lag with connections free means the generator itself was starved of CPU).
With --stamp-header NAME, every body carries `"headers": {NAME: "<unix time the request was due>"}` (for
end-to-end latency measured at an SMTP sink, charged like the answers from the request's instant).

The loop is a bare epoll loop over non-blocking sockets rather than asyncio: on a small machine the load
generator competes with the server for CPU, and this costs a fraction of what asyncio streams do.
"""

import argparse
import collections
import json
import select
import socket
import sys
import time
from urllib.parse import urlsplit


def percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


class Connection:
    __slots__ = ("sock", "buffer", "intended", "pending")

    def __init__(self, address):
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = b""
        self.intended = None
        self.pending = b""


def parse_response(buffer):
    """(status, bytes consumed, keep-alive) of the first complete response in buffer, or None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].lower()
    length = 0
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
    total = end + 4 + length
    if len(buffer) < total:
        return None
    return int(buffer[9:12]), total, b"\r\nconnection: close" not in head


def run(args):
    url = urlsplit(args.url)
    address = (url.hostname, url.port or 80)
    path = url.path or "/"
    with open(args.body, "rb") as handle:
        document = json.load(handle)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\nAuthorization: Bearer {args.token}\r\n"
        "Content-Type: application/json\r\n"
    ).encode()
    if args.stamp_header:
        document["headers"] = {args.stamp_header: "@STAMP@"}
        before, after = json.dumps(document).encode().split(b"@STAMP@")

        def request(lag):
            # The instant the request was due, not when it was written: a request that waited for a free
            # connection is charged its wait (no coordinated omission in the end-to-end figure either).
            body = before + b"%.6f" % (time.time() - lag) + after
            return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    else:
        body = json.dumps(document).encode()
        fixed = head + b"Content-Length: %d\r\n\r\n" % len(body) + body

        def request(lag):
            return fixed

    poller = select.epoll()
    connections = {}
    idle = collections.deque()

    def open_connection():
        connection = Connection(address)
        connections[connection.sock.fileno()] = connection
        poller.register(connection.sock.fileno(), select.EPOLLIN)
        idle.append(connection)

    def close_connection(connection):
        fd = connection.sock.fileno()
        poller.unregister(fd)
        del connections[fd]
        connection.sock.close()

    for _ in range(args.connections):
        open_connection()

    lags = []  # how late each request was sent, after its intended instant

    def send(connection, intended):
        connection.intended = intended
        lag = clock() - intended
        lags.append(lag)
        data = request(lag)
        try:
            sent = connection.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            connection.pending = data[sent:]
            poller.modify(connection.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)

    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    latencies = []
    statuses = {}
    backlog = collections.deque()  # due requests waiting for a free connection: their intended times
    scheduled = 0
    answered = 0
    clock = time.monotonic
    start = clock() + 0.05
    deadline = start + args.duration + args.grace
    while answered < total:
        now = clock()
        if now > deadline:
            break
        while backlog and idle:
            send(idle.popleft(), backlog.popleft())
        # Everything due by now is either sent on a free connection or waits in the backlog.
        while scheduled < total:
            intended = start + scheduled * interval
            if intended > now:
                break
            scheduled += 1
            if idle and not backlog:
                send(idle.popleft(), intended)
            else:
                backlog.append(intended)
        if scheduled < total:
            timeout = max(0.0, start + scheduled * interval - clock())
        else:
            timeout = 0.05
        for fd, events in poller.poll(min(timeout, 0.05)):
            connection = connections.get(fd)
            if connection is None:
                continue
            if events & select.EPOLLOUT and connection.pending:
                try:
                    sent = connection.sock.send(connection.pending)
                except BlockingIOError:
                    sent = 0
                connection.pending = connection.pending[sent:]
                if not connection.pending:
                    poller.modify(fd, select.EPOLLIN)
            if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                data = connection.sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if not data:
                # The server closed the connection: a request in flight on it failed.
                if connection.intended is not None:
                    statuses[-1] = statuses.get(-1, 0) + 1
                    latencies.append(clock() - connection.intended)
                    answered += 1
                close_connection(connection)
                open_connection()
                continue
            connection.buffer += data
            parsed = parse_response(connection.buffer)
            if parsed is None:
                continue
            status, used, keep_alive = parsed
            done = clock()
            latencies.append(done - connection.intended)
            statuses[status] = statuses.get(status, 0) + 1
            answered += 1
            connection.buffer = connection.buffer[used:]
            connection.intended = None
            if not keep_alive:
                close_connection(connection)
                open_connection()
                connection = idle.pop()
            if backlog:
                send(connection, backlog.popleft())
            else:
                idle.append(connection)
    elapsed = max(clock() - start, args.duration)
    for connection in list(connections.values()):
        close_connection(connection)
    latencies.sort()
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    result = {
        "target_rate": args.rate,
        "duration": args.duration,
        "scheduled": total,
        "answered": answered,
        "ok": ok,
        "unfinished": total - answered,
        "statuses": {str(key): value for key, value in sorted(statuses.items())},
        "achieved_rate": round(ok / elapsed, 1),
        "send_lag_p99_ms": None,
        "send_lag_max_ms": None,
        "p50_ms": None,
        "p90_ms": None,
        "p99_ms": None,
        "max_ms": None,
    }
    if latencies:
        for key, fraction in (("p50_ms", 0.50), ("p90_ms", 0.90), ("p99_ms", 0.99)):
            result[key] = round(percentile(latencies, fraction) * 1000, 2)
        result["max_ms"] = round(latencies[-1] * 1000, 2)
    if lags:
        lags.sort()
        result["send_lag_p99_ms"] = round(percentile(lags, 0.99) * 1000, 2)
        result["send_lag_max_ms"] = round(lags[-1] * 1000, 2)
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
    sys.exit(run(args))


if __name__ == "__main__":
    main()
