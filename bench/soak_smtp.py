"""A tiny SMTP peer for bench/soak.sh: accepts every command, and after the final dot answers 250, 451 or
550 at random in the given proportions. Standard library only.

    python3 bench/soak_smtp.py PORT STATS_FILE [--p451 0.1] [--p550 0.05] [--delay-ms 5]

Writes a JSON line of counters to STATS_FILE every second (messages by reply, connections, open
connections).
"""
import argparse
import asyncio
import json
import random
import signal

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("stats")
parser.add_argument("--p451", type=float, default=0.10)
parser.add_argument("--p550", type=float, default=0.05)
parser.add_argument("--delay-ms", type=float, default=5.0)
args = parser.parse_args()

stats = {"250": 0, "451": 0, "550": 0, "connections": 0, "open": 0, "max_open": 0}


def final_reply():
    roll = random.random()
    if roll < args.p451:
        return "451", "451 4.3.0 soak: try again later"
    if roll < args.p451 + args.p550:
        return "550", "550 5.1.1 soak: no such user"
    return "250", "250 2.0.0 soak: queued"


async def session(reader, writer):
    stats["connections"] += 1
    stats["open"] += 1
    stats["max_open"] = max(stats["max_open"], stats["open"])

    def send(line):
        writer.write(line.encode() + b"\r\n")

    try:
        send("220 soak.invalid ESMTP")
        await writer.drain()
        while True:
            raw = await reader.readline()
            if not raw:
                return
            verb = raw.decode("latin-1").strip().split(" ", 1)[0].split(":", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                send("250-soak.invalid\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES")
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                send("250 2.0.0 OK")
            elif verb == "DATA":
                send("354 go ahead")
                await writer.drain()
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    if line == b".\r\n":
                        break
                if args.delay_ms > 0:
                    await asyncio.sleep(args.delay_ms / 1000)
                code, text = final_reply()
                stats[code] += 1
                send(text)
            elif verb == "QUIT":
                send("221 2.0.0 bye")
                await writer.drain()
                return
            else:
                send("502 5.5.2 not implemented")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        stats["open"] -= 1
        writer.close()


async def report():
    while True:
        with open(args.stats, "w") as out:
            out.write(json.dumps(stats) + "\n")
        await asyncio.sleep(1)


async def main():
    server = await asyncio.start_server(session, "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reporter = asyncio.create_task(report())
    print("READY", flush=True)
    async with server:
        await stop.wait()
    reporter.cancel()
    with open(args.stats, "w") as out:
        out.write(json.dumps(stats) + "\n")


asyncio.run(main())
