#!/usr/bin/env python3
"""WebSocket echo server on the `websockets` library (new asyncio API), a test peer.

  echo_websockets.py [PORT] [--no-deflate] [--tls CERT KEY]

Binds 127.0.0.1:PORT (0 or nothing = a free port) and prints ``LISTENING <port>``
once bound.  Serves:

* ``ws[s]://127.0.0.1:PORT/<any path>``: echoes every text and binary message back;
  permessage-deflate is negotiated unless ``--no-deflate``; no message size limit.
* plain ``GET /healthz``: ``200 ok`` (so a test or a proxy can probe it over HTTP).
"""

from __future__ import annotations

import asyncio
import http
import ssl
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


async def echo(ws: ServerConnection) -> None:
    async for msg in ws:
        await ws.send(msg)


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "ok\n")
    return None


async def main(args: list[str]) -> None:
    port = int(args[0]) if args and args[0].isdigit() else 0
    compression = None if "--no-deflate" in args else "deflate"
    ctx = None
    if "--tls" in args:
        i = args.index("--tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[i + 1], args[i + 2])
    async with serve(
        echo,
        "127.0.0.1",
        port,
        compression=compression,
        max_size=None,
        process_request=process_request,
        ssl=ctx,
    ) as server:
        print("LISTENING", server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
