#!/usr/bin/env python3
"""A scripted HTTP/1.1 server written with the standard library only, a test peer.

  raw_http.py [PORT]      (0 or nothing = a free port; prints ``LISTENING <port>``)

Its replies are written byte for byte here, for the parts of HTTP/1.1 that the
library servers cannot produce (response trailers, chunk extensions, a body
delimited by the connection's close).  Keep-alive: it reads request after
request on a connection (request bodies with Content-Length are read and
dropped) until the client closes or a reply closes.

  GET /trailers         chunked ``hello world`` + trailers
                        ``x-checksum: abc123`` and ``x-trailer-two: 2``
  GET /chunk-ext        chunked ``hello world`` with chunk extensions (``5;foo=bar``)
  GET /close-delimited  no Content-Length nor Transfer-Encoding: the body
                        ``until the end\\n`` ends when the server closes
  anything else         404, Content-Length 10, ``not found\\n``
"""

from __future__ import annotations

import asyncio
import sys

REPLIES: dict[str, tuple[bytes, bool]] = {
    # path: (raw reply, close the connection after it)
    "/trailers": (
        b"HTTP/1.1 200 OK\r\n"
        b"content-type: text/plain\r\n"
        b"transfer-encoding: chunked\r\n"
        b"trailer: x-checksum, x-trailer-two\r\n"
        b"\r\n"
        b"5\r\nhello\r\n"
        b"6\r\n world\r\n"
        b"0\r\n"
        b"x-checksum: abc123\r\n"
        b"x-trailer-two: 2\r\n"
        b"\r\n",
        False,
    ),
    "/chunk-ext": (
        b"HTTP/1.1 200 OK\r\n"
        b"content-type: text/plain\r\n"
        b"transfer-encoding: chunked\r\n"
        b"\r\n"
        b"5;foo=bar\r\nhello\r\n"
        b'6;name="quoted value"\r\n world\r\n'
        b"0;last\r\n"
        b"\r\n",
        False,
    ),
    "/close-delimited": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nuntil the end\n",
        True,
    ),
}
NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\nnot found\n",
    False,
)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            path = parts[1] if len(parts) == 3 else ""
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            reply, close = REPLIES.get(path, NOT_FOUND)
            writer.write(reply)
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def main(args: list[str]) -> None:
    port = int(args[0]) if args else 0
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("LISTENING", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
