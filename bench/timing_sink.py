"""A minimal asyncio SMTP sink that records when each message arrives.

Accepts every transaction and discards it. For a message carrying a `X-Bench-Sent: <unix time>` header it
records arrival - sent, the accept-to-arrival latency. On SIGTERM or SIGINT it writes a JSON summary
(messages, stamped messages, latency percentiles in ms, the seconds from the first arrival to the last and
the most messages that arrived within any one second) to --out and exits.

    timing_sink.py --port 2525 --out summary.json [--capture first-message.eml] [--count-file count]

--capture saves the first message's content (dot-unstuffed, CRLF line ends) so that smtp-source -F can send
exactly what posthorn sends. --count-file is rewritten with the number of messages received every 0.2 s.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import time

STAMP = re.compile(rb"^X-Bench-Sent:[ \t]*([0-9.]+)", re.IGNORECASE | re.MULTILINE)


def percentile(sorted_values, fraction):
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def latency_summary(messages, latencies):
    """{"messages", "stamped", "p50_ms", "p90_ms", "p99_ms", "max_ms"} of latencies in seconds."""
    values = sorted(latencies)
    result = {"messages": messages, "stamped": len(values)}
    if values:
        result.update(
            p50_ms=round(percentile(values, 0.50) * 1000, 2),
            p90_ms=round(percentile(values, 0.90) * 1000, 2),
            p99_ms=round(percentile(values, 0.99) * 1000, 2),
            max_ms=round(values[-1] * 1000, 2),
        )
    return result


class Sink:
    def __init__(self, args):
        self.args = args
        self.messages = 0
        self.latencies = []
        self.arrivals = []
        self.captured = False

    async def session(self, reader, writer):
        writer.write(b"220 bench-sink ESMTP\r\n")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-bench-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    arrived = time.time()
                    self.messages += 1
                    self.arrivals.append(arrived)
                    headers = data.split(b"\r\n\r\n", 1)[0]
                    match = STAMP.search(headers)
                    if match:
                        self.latencies.append(arrived - float(match.group(1)))
                    if self.args.capture and not self.captured:
                        self.captured = True
                        content = data[: -len(b".\r\n")]
                        content = content.replace(b"\r\n..", b"\r\n.")
                        with open(self.args.capture, "wb") as handle:
                            handle.write(content)
                    writer.write(b"250 2.0.0 accepted\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    break
                elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    writer.write(b"250 2.0.0 ok\r\n")
                else:
                    writer.write(b"502 5.5.2 not implemented\r\n")
                if writer.transport.get_write_buffer_size() > 65536:
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def summary(self):
        result = latency_summary(self.messages, self.latencies)
        arrivals = sorted(self.arrivals)
        if arrivals:
            result["span_s"] = round(arrivals[-1] - arrivals[0], 3)
            # The most arrivals within any window of one second (a sliding window over the arrivals).
            most, start = 0, 0
            for end, at in enumerate(arrivals):
                while at - arrivals[start] >= 1.0:
                    start += 1
                most = max(most, end - start + 1)
            result["max_in_any_second"] = most
        return result


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--capture")
    parser.add_argument("--count-file")
    args = parser.parse_args()
    sink = Sink(args)
    server = await asyncio.start_server(sink.session, args.host, args.port, limit=64 << 20, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    while not stop.is_set():
        if args.count_file:
            with open(args.count_file + ".tmp", "w") as handle:
                handle.write(f"{sink.messages}\n")
            os.replace(args.count_file + ".tmp", args.count_file)
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
    server.close()
    with open(args.out, "w") as handle:
        json.dump(sink.summary(), handle)
        handle.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
