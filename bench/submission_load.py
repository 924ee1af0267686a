#!/usr/bin/env python3
"""Submits a backlog of messages to posthorn over SMTP or as JSON over HTTP, from one process, and prints
the rate as JSON: {"messages", "seconds", "rate", "errors"}.

Both ways use the same kind of client (asyncio streams, one connection per task, one message after
another on it), so the figures compare the protocols rather than two tools.

  submission_load.py smtp HOST:PORT TOKEN SESSIONS MESSAGES   AUTH PLAIN as `bench`, then
                                                              MAIL/RCPT/DATA pipelined per message
  submission_load.py json HOST:PORT TOKEN CONNECTIONS MESSAGES  POST /v1/send, HTTP/1.1 keep-alive
"""

import asyncio
import base64
import json
import sys
import time

TEXT = "A transactional message of ordinary size.\r\n" * 20
MIME = (
    "From: Bench <bench@example.com>\r\nTo: sink@example.org\r\nSubject: benchmark\r\n\r\n" + TEXT
).encode()
JSON_BODY = json.dumps(
    {
        "from": "Bench <bench@example.com>",
        "to": "sink@example.org",
        "subject": "benchmark",
        "text": TEXT.replace("\r\n", "\n"),
    }
).encode()


async def reply(reader):
    """One SMTP reply (all its lines); its code."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def smtp_session(host, port, token, count, errors):
    reader, writer = await asyncio.open_connection(host, port)
    await reply(reader)
    writer.write(b"EHLO bench.example\r\n")
    await reply(reader)
    credentials = base64.b64encode(b"\0bench\0" + token.encode()).decode()
    writer.write(f"AUTH PLAIN {credentials}\r\n".encode())
    if await reply(reader) != 235:
        raise RuntimeError("AUTH failed")
    envelope = b"MAIL FROM:<bench@example.com>\r\nRCPT TO:<sink@example.org>\r\nDATA\r\n"
    for _ in range(count):
        writer.write(envelope)
        codes = [await reply(reader) for _ in range(3)]
        if codes != [250, 250, 354]:
            errors.append(codes)
            continue
        writer.write(MIME + b".\r\n")
        if await reply(reader) != 250:
            errors.append("data")
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def json_connection(host, port, token, count, errors):
    reader, writer = await asyncio.open_connection(host, port)
    request = (
        f"POST /v1/send HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(JSON_BODY)}\r\n\r\n"
    ).encode() + JSON_BODY
    for _ in range(count):
        writer.write(request)
        status = await reader.readline()
        length = 0
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b""):
                break
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        await reader.readexactly(length)
        if status.split()[1:2] != [b"202"]:
            errors.append(status)
    writer.close()


async def main():
    mode, address, token, connections, messages = sys.argv[1:6]
    host, port = address.rsplit(":", 1)
    connections, messages = int(connections), int(messages)
    share = [messages // connections + (1 if i < messages % connections else 0) for i in range(connections)]
    errors = []
    task = smtp_session if mode == "smtp" else json_connection
    started = time.monotonic()
    await asyncio.gather(*(task(host, int(port), token, n, errors) for n in share))
    seconds = time.monotonic() - started
    print(
        json.dumps(
            {"messages": messages, "seconds": seconds, "rate": messages / seconds, "errors": len(errors)}
        )
    )


asyncio.run(main())
