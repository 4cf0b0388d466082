"""The HTTP/2 benchmark server: hypercorn serving a tiny ASGI app.

    python -m benchmarks.asgi_server PORT

Every HTTP request (any path, any method) gets ``200`` with the same 100 B body as
nginx's ``/small.txt`` (``servers.SMALL_BODY``) and a ``content-length``; the
request body, if any, is read and dropped.  Binds 127.0.0.1:PORT itself and hands
the socket to hypercorn as ``fd://N`` (as ``tests/peers/run_hypercorn.py`` does; the
harness must not import from ``tests/``).  Hypercorn's defaults otherwise (one
worker, the stock asyncio loop, ``h2_max_concurrent_streams`` 100), except no access
log and no limit on the requests per connection (``keep_alive_max_requests``).
HTTP/1.1 and h2c (prior knowledge or Upgrade), no TLS.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from .servers import SMALL_BODY

Message = dict[str, Any]

START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(SMALL_BODY)).encode()),
    ],
}
BODY = {"type": "http.response.body", "body": SMALL_BODY}


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "http":
        while (await receive()).get("more_body"):
            pass
        await send(START)
        await send(BODY)
    elif scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def main(args: list[str]) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(args[0])))
    sock.listen(1024)
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = "-"
    # hypercorn closes a connection after 1000 requests (GOAWAY on HTTP/2): a run would
    # lose its connection mid-way (as nginx's keepalive_requests, lifted in nginx.conf.in)
    config.keep_alive_max_requests = 1 << 40
    print("LISTENING", sock.getsockname()[1], flush=True)
    asyncio.run(serve(app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main(sys.argv[1:])
