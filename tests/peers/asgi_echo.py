"""A small ASGI app, the application side of the hypercorn peer (``run_hypercorn.py``).

HTTP (HTTP/1.1, h2c and h2 over TLS):

  GET  /chunked      no Content-Length, 3 body messages ``chunk 0\\n``..``chunk 2\\n``
                     (chunked on HTTP/1.1, DATA frames on HTTP/2)
  GET  /trailers     body ``hello world\\n`` then trailers ``x-checksum: abc123`` and
                     ``x-trailer-two: 2``; hypercorn sends trailers on HTTP/2 only and only
                     when the request carries ``te: trailers``; elsewhere: the body alone
  GET  /headers      the request's headers as JSON [[name, value], ...]
  GET  /push         on HTTP/2: a server push of ``/pushed.txt`` (its answer is the
                     default one below, ``HTTP/2 /pushed.txt``), then ``pushed\\n``;
                     elsewhere ``pushed\\n`` alone
  GET  /cookie-set?c=...  204 with one ``set-cookie`` per ``c`` query value, as given
  GET  /cookie-echo  the request's ``cookie`` header (``UNDEF`` when it has none)
  GET  /sse?n=N&ms=M ``text/event-stream``: N events (default 3), M ms apart (default 10),
                     ``data: event <i>`` with ``id: <i>``, then the end
  GET  /sse/lone_id  ``text/event-stream``: ``id: hello`` and an empty line, then the end
  GET  /sse/mime_param  the same as ``text/event-stream;charset=utf-8``
  POST /<any>        echoes the request body (any method but GET/HEAD echoes)
  GET  /<any other>  ``HTTP/<version> <path>\\n``, e.g. ``HTTP/2 /x``
WebSocket: any path, echoes every text and binary message; on ``/ws-cookie`` the
accept sets ``ws_cookie=1`` and the first message is the request's ``cookie`` header
(``UNDEF`` when it has none).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += bytes(msg.get("body", b""))
        if not msg.get("more_body"):
            return body


async def _reply(send: Send, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def http_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = await _read_body(receive)
    path = scope["path"]
    if path == "/chunked":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        for i in range(3):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/trailers":
        can_trail = "http.response.trailers" in scope.get("extensions", {}) and any(
            k == b"te" and v == b"trailers" for k, v in scope["headers"]
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum")],
                "trailers": can_trail,
            }
        )
        await send({"type": "http.response.body", "body": b"hello world\n"})
        if can_trail:
            await send(
                {
                    "type": "http.response.trailers",
                    "headers": [(b"x-checksum", b"abc123"), (b"x-trailer-two", b"2")],
                }
            )
    elif path == "/headers":
        pairs = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        await _reply(send, 200, json.dumps(pairs).encode(), b"application/json")
    elif path == "/push":
        if "http.response.push" in scope.get("extensions", {}):
            await send(
                {
                    "type": "http.response.push",
                    "path": "/pushed.txt",
                    "headers": [(b"accept", b"text/plain")],
                }
            )
        await _reply(send, 200, b"pushed\n")
    elif path == "/cookie-set":
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        cookies = [(b"set-cookie", v.encode("latin-1")) for v in qs.get("c", [])]
        await send({"type": "http.response.start", "status": 204, "headers": cookies})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/cookie-echo":
        await _reply(send, 200, _header(scope, b"cookie") or b"UNDEF")
    elif path in ("/sse", "/sse/lone_id", "/sse/mime_param"):
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        ctype = b"text/event-stream"
        if path == "/sse":
            n, ms = int(qs.get("n", ["3"])[0]), int(qs.get("ms", ["10"])[0])
            events = [b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(n)]
        else:
            ms, events = 0, [b"id: hello\n\n"]
            if path == "/sse/mime_param":
                ctype += b";charset=utf-8"
        start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]}
        await send(start)
        for i, ev in enumerate(events):
            if i and ms:
                await asyncio.sleep(ms / 1000)
            await send({"type": "http.response.body", "body": ev, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif scope["method"] not in ("GET", "HEAD"):
        await _reply(send, 200, body, b"application/octet-stream")
    else:
        await _reply(send, 200, f"HTTP/{scope['http_version']} {path}\n".encode())


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope["headers"] if k == name), None)


async def ws_app(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    if scope["path"] == "/ws-cookie":
        await send({"type": "websocket.accept", "headers": [(b"set-cookie", b"ws_cookie=1")]})
        cookie = _header(scope, b"cookie")
        await send({"type": "websocket.send", "text": (cookie or b"UNDEF").decode("latin-1")})
    else:
        await send({"type": "websocket.accept"})
    while True:
        msg = await receive()
        if msg["type"] == "websocket.receive":
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"]})
            else:
                await send({"type": "websocket.send", "bytes": msg["bytes"]})
        elif msg["type"] == "websocket.disconnect":
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await http_app(scope, receive, send)
    elif scope["type"] == "websocket":
        await ws_app(scope, receive, send)
