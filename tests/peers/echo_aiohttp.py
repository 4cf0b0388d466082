#!/usr/bin/env python3
"""aiohttp web server, a test peer: HTTP/1.1 routes plus a WebSocket echo.

  echo_aiohttp.py [PORT]      (0 or nothing = a free port; prints ``LISTENING <port>``)

Routes (keep-alive on every one):

  GET  /                 ``hello\\n`` with Content-Length
  GET  /chunked          Transfer-Encoding: chunked, 3 chunks ``chunk 0\\n``..``chunk 2\\n``
  GET  /stream?n=N&size=S  chunked, N chunks of S bytes of ``x`` (defaults 10 x 1024)
  GET  /status/{code}    an empty reply with that status (``/status/204``, ``/status/404``...)
  GET  /redirect         301 to ``/``
  GET  /headers          the request's headers as a JSON list of [name, value] pairs,
                         in the order and case they arrived
  *    /echo             echoes the request body (any method; POST, PUT, PATCH...)
  GET  /ws               WebSocket echo, permessage-deflate accepted (compress=True)
  GET  /cookie-set?c=...   204 with one ``set-cookie`` per ``c`` query value, as given
  GET  /cookie-echo      the request's ``cookie`` header (``UNDEF`` when it has none)
  GET  /ws-cookie        WebSocket: sets ``ws_cookie=1`` in the 101, sends the upgrade
                         request's ``cookie`` header (or ``UNDEF``) first, then echoes
  GET  /sse?n=N&ms=M     ``text/event-stream``, chunked: N events (default 3), M ms apart
                         (default 10), ``data: event <i>`` with ``id: <i>``, then the end
  GET  /sse/lone_id      ``text/event-stream``: ``id: hello`` and an empty line, then the end
  GET  /sse/mime_param   the same as ``text/event-stream;charset=utf-8``
  GET  /sse/close        ``connection: close``; 3 events, then the server closes

Response trailers: aiohttp has no API to send them (its chunked writer always ends
with a bare ``0\\r\\n\\r\\n``), so trailers come from ``raw_http.py`` (HTTP/1.1) and
``asgi_echo.py`` under hypercorn (HTTP/2).
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import WSMsgType, web


async def ws_echo(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(compress=True, max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def hello(request: web.Request) -> web.StreamResponse:
    return web.Response(text="hello\n")


async def chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    resp.content_type = "text/plain"
    await resp.prepare(request)
    for i in range(3):
        await resp.write(f"chunk {i}\n".encode())
    await resp.write_eof()
    return resp


async def stream(request: web.Request) -> web.StreamResponse:
    n = int(request.query.get("n", "10"))
    size = int(request.query.get("size", "1024"))
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    resp.content_type = "application/octet-stream"
    await resp.prepare(request)
    for _ in range(n):
        await resp.write(b"x" * size)
    await resp.write_eof()
    return resp


async def status(request: web.Request) -> web.StreamResponse:
    return web.Response(status=int(request.match_info["code"]))


async def redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/")


async def headers(request: web.Request) -> web.StreamResponse:
    pairs = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers]
    return web.json_response(pairs)


async def echo_body(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    return web.Response(body=body, content_type=request.content_type or "application/octet-stream")


async def cookie_set(request: web.Request) -> web.StreamResponse:
    resp = web.Response(status=204)
    for value in request.query.getall("c", []):
        resp.headers.add("Set-Cookie", value)
    return resp


async def cookie_echo(request: web.Request) -> web.StreamResponse:
    return web.Response(text=request.headers.get("Cookie", "UNDEF"))


async def ws_cookie(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse()
    ws.headers.add("Set-Cookie", "ws_cookie=1")
    await ws.prepare(request)
    await ws.send_str(request.headers.get("Cookie", "UNDEF"))
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def _sse(request: web.Request, ctype: str, events: list[bytes], ms: int) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": ctype, "Cache-Control": "no-cache"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i, ev in enumerate(events):
        if i and ms:
            await asyncio.sleep(ms / 1000)
        await resp.write(ev)
    await resp.write_eof()
    return resp


async def sse(request: web.Request) -> web.StreamResponse:
    n = int(request.query.get("n", "3"))
    ms = int(request.query.get("ms", "10"))
    events = [b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(n)]
    return await _sse(request, "text/event-stream", events, ms)


async def sse_lone_id(request: web.Request) -> web.StreamResponse:
    return await _sse(request, "text/event-stream", [b"id: hello\n\n"], 0)


async def sse_mime_param(request: web.Request) -> web.StreamResponse:
    return await _sse(request, "text/event-stream;charset=utf-8", [b"id: hello\n\n"], 0)


async def sse_close(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    resp.force_close()
    await resp.prepare(request)
    for i in range(3):
        await resp.write(b"data: event %d\n\n" % i)
        await asyncio.sleep(0.01)
    await resp.write_eof()
    return resp


async def main(args: list[str]) -> None:
    port = int(args[0]) if args else 0
    app = web.Application(client_max_size=64 << 20)
    app.add_routes(
        [
            web.get("/", hello),
            web.get("/chunked", chunked),
            web.get("/stream", stream),
            web.get(r"/status/{code:\d{3}}", status),
            web.get("/redirect", redirect),
            web.get("/headers", headers),
            web.route("*", "/echo", echo_body),
            web.get("/ws", ws_echo),
            web.get("/cookie-set", cookie_set),
            web.get("/cookie-echo", cookie_echo),
            web.get("/ws-cookie", ws_cookie),
            web.get("/sse", sse),
            web.get("/sse/lone_id", sse_lone_id),
            web.get("/sse/mime_param", sse_mime_param),
            web.get("/sse/close", sse_close),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print("LISTENING", runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
