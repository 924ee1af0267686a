#!/usr/bin/env python3
"""A TCP proxy that delays every byte by a fixed time in each direction, keeping order: a long link in
user space, for kernels without netem.

    delay_proxy.py --listen PORT --upstream HOST:PORT --delay-ms 20 [--stats FILE]

Each chunk read from one side is written to the other side DELAY after it was read; the chunks of a
direction are written in the order they were read, so the link behaves as a long wire of unlimited
bandwidth (the round-trip time is twice the delay). Nagle is off on both sides, so no chunk waits for
another. On SIGTERM or SIGINT it writes {"connections": N, "bytes_up": B, "bytes_down": B, "chunks": N,
"late_s": S, "late_max_s": S, "late_mean_ms": MS} to FILE: how late, beyond DELAY, the chunks were
written (the event loop's timer granularity and load), so that the link's real round trip is known.
"""

import argparse
import asyncio
import collections
import json
import signal
import socket

STATS = {"connections": 0, "bytes_up": 0, "bytes_down": 0, "chunks": 0, "late_s": 0.0, "late_max_s": 0.0}


def no_delay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def pump(reader, writer, delay, counter):
    """Reads chunks as they come; each is written DELAY after it was read, in order, by a timer callback
    (one pending timer per direction, cheaper and more punctual than a sleeping task)."""
    loop = asyncio.get_running_loop()
    pending = collections.deque()
    timer = None

    def flush():
        nonlocal timer
        timer = None
        now = loop.time()
        while pending and pending[0][0] <= now:
            due, data = pending.popleft()
            if data is not None:
                STATS["chunks"] += 1
                STATS["late_s"] += now - due
                STATS["late_max_s"] = max(STATS["late_max_s"], now - due)
            if data is None:
                try:
                    if not writer.is_closing() and writer.can_write_eof():
                        writer.write_eof()
                except OSError:
                    pass  # the other side is gone already
                continue
            writer.write(data)
        if pending:
            timer = loop.call_at(pending[0][0], flush)

    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            STATS[counter] += len(data)
            pending.append((loop.time() + delay, data))
            if timer is None:
                timer = loop.call_at(pending[0][0], flush)
            # Back-pressure: stop reading while the other side's buffer is full.
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()
    except (ConnectionError, OSError):
        pass
    pending.append((loop.time() + delay, None))
    if timer is None:
        timer = loop.call_at(pending[0][0], flush)
    while pending:
        await asyncio.sleep(delay)


async def serve(client_reader, client_writer, upstream, delay):
    STATS["connections"] += 1
    no_delay(client_writer)
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError:
        client_writer.close()
        return
    no_delay(up_writer)
    await asyncio.gather(
        pump(client_reader, up_writer, delay, "bytes_up"),
        pump(up_reader, client_writer, delay, "bytes_down"),
    )
    for writer in (up_writer, client_writer):
        writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--stats")
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    upstream = (host, int(port))
    delay = args.delay_ms / 1000

    server = await asyncio.start_server(
        lambda r, w: serve(r, w, upstream, delay), "127.0.0.1", args.listen, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
        # Written before the server closes: it waits for connections still open.
        if args.stats:
            STATS["late_mean_ms"] = round(STATS["late_s"] * 1000 / max(1, STATS["chunks"]), 3)
            with open(args.stats, "w") as out:
                json.dump(STATS, out)
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
