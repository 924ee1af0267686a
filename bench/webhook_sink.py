"""A webhook receiver for the benchmark: answers every POST 204 at once on a kept-alive connection,
and counts them. Prints its port on the first line; `GET /count` answers the count so far.

    webhook_sink.py
"""

import asyncio
import sys

COUNT = 0


async def handle(reader, writer):
    global COUNT
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            request_line, *lines = head.split(b"\r\n")
            for line in lines:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            if request_line.startswith(b"GET /count"):
                body = str(COUNT).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            else:
                COUNT += 1
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
