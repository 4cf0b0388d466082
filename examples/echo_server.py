"""A loopback Websocket echo server for the examples, from the `websockets` package.

    python examples/echo_server.py [PORT]

Binds 127.0.0.1 (port 0 picks a free one), prints ``LISTENING <port>`` once ready,
echoes every text and binary message, negotiates permessage-deflate, and answers a
plain HTTP ``GET /hello`` with 200 so the HTTP examples have something to ask.
"""

from __future__ import annotations

import asyncio
import http
import sys

from websockets.asyncio.server import serve


async def echo(ws) -> None:  # type: ignore[no-untyped-def]
    async for msg in ws:
        await ws.send(msg)


def process_request(connection, request):  # type: ignore[no-untyped-def]
    if request.path == "/hello":
        return connection.respond(http.HTTPStatus.OK, "Hello world!\n")
    return None


async def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    async with serve(echo, "127.0.0.1", port, process_request=process_request) as server:
        print("LISTENING", server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
