"""An in-process HTTP/1.1 + Websocket echo server (h11 and wsproto), for tests.

One thread accepts on 127.0.0.1 port 0; each connection gets a thread that
speaks HTTP/1.1 with h11 (keep-alive, pipelining) and, after a Websocket
upgrade, Websocket with wsproto (echo, permessage-deflate when offered).
Nothing here is fast or hardened: it is a peer for tests on the same machine.

Routes (any method unless said):

=====================  ==================================================================
``GET /hello``         200 ``text/plain`` ``Hello world!\\n``
``/status/<code>``     that status (200-599), empty body
``/headers``           200 ``application/json``: the request headers as ``[[name, value]...]``
``/chunked``           200, chunked: ``chunk 1\\n``, ``chunk 2\\n``, ``chunk 3\\n``
``/trailers``          200, chunked ``Hello world!\\n`` then a trailer ``x-checksum: 6f2e1d``
``/close``             200 ``bye\\n`` with ``connection: close``, then closes
anything else          200, the request body back, ``content-type`` as sent (else
                       ``application/octet-stream``), ``x-echo-method`` and
                       ``x-echo-target`` headers
Websocket upgrade      any path: every text/binary message echoed, pings answered,
                       close echoed
=====================  ==================================================================
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from typing import Any, Protocol

import h11

from .._process import Pid
from .._process import self as _self
from ._origin import _close_opened

__all__ = ["EchoServer"]


class _TLSLike(Protocol):
    def server_context(self) -> ssl.SSLContext: ...

    @property
    def tls_opts(self) -> dict[str, Any]: ...


class EchoServer:
    """A loopback HTTP/1.1 and Websocket echo server running in this process.

    ``tls``: an ``ssl.SSLContext`` or a ``TLSPair`` to serve HTTPS/WSS;
    ``deflate``: accept permessage-deflate when the client offers it.  Listens at
    once on ``host`` (127.0.0.1) and ``port``; ``stop()`` or leaving a ``with``
    block ends every connection.  ``requests`` lists ``(method, target)`` of the
    requests served, in order (upgrades included).
    """

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | _TLSLike | None = None,
        deflate: bool = True,
        name: str = "echo",
    ) -> None:
        self.name = name
        self.deflate = deflate
        self.client_tls_opts: dict[str, Any] | None = None
        if tls is None or isinstance(tls, ssl.SSLContext):
            self.tls = tls
        else:
            self.tls = tls.server_context()
            self.client_tls_opts = tls.tls_opts
        self.host = "127.0.0.1"
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._opened: list[tuple[Pid, Pid]] = []
        self._stopping = False
        self._lsock = socket.create_server((self.host, 0))
        self.port: int = self._lsock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=name, daemon=True)
        self._thread.start()

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def url(self, path: str = "/") -> str:
        """``http[s]://127.0.0.1:<port><path>``."""
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def ws_url(self, path: str = "/") -> str:
        """``ws[s]://127.0.0.1:<port><path>``."""
        return f"{'wss' if self.tls is not None else 'ws'}://{self.host}:{self.port}{path}"

    def open(self, opts: dict[str, Any] | None = None) -> Pid:
        """``gunpy.open`` to this server (``retry`` 0; TLS options filled in with a
        ``TLSPair``); the connection is closed by ``stop()`` if still alive."""
        from .. import _api

        o: dict[str, Any] = {"retry": 0}
        if self.tls is not None:
            o["transport"] = "tls"
            if self.client_tls_opts is not None:
                o["tls_opts"] = self.client_tls_opts
        o.update(opts or {})
        res = _api.open(self.host, self.port, o)
        if res[0] != "ok":
            raise AssertionError(f"gunpy.open refused the options: {res!r}")
        conn: Pid = res[1]
        self._opened.append((conn, _self()))
        return conn

    def __repr__(self) -> str:
        return f"<EchoServer {self.name} {self.url()}>"

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the gunpy connections opened with ``open()``, then every socket."""
        if self._stopping:
            return
        _close_opened(self._opened)
        self._stopping = True
        with contextlib.suppress(OSError):
            self._lsock.shutdown(socket.SHUT_RDWR)
        self._lsock.close()
        self._thread.join(2.0)
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(2.0)

    # -- serving ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._lsock.accept()
            except OSError:
                return
            if self._stopping:
                sock.close()
                return
            t = threading.Thread(
                target=self._serve, args=(sock,), name=f"{self.name}-conn", daemon=True
            )
            with self._lock:
                self._socks.add(sock)
                self._threads.append(t)
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        raw = sock
        try:
            sock.settimeout(30)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True)
                except (OSError, ValueError):
                    return
                with self._lock:
                    self._socks.add(sock)
            self._http(sock)
        except OSError:
            pass
        finally:
            with self._lock:
                self._socks.discard(raw)
                self._socks.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()
            with contextlib.suppress(OSError):
                raw.close()

    def _http(self, sock: socket.socket) -> None:
        h = h11.Connection(h11.SERVER)
        req: h11.Request | None = None
        body: list[bytes] = []
        while True:
            try:
                ev = h.next_event()
            except h11.RemoteProtocolError:
                with contextlib.suppress(h11.LocalProtocolError):
                    sock.sendall(
                        h.send(
                            h11.Response(
                                status_code=400,
                                headers=[("content-length", "0"), ("connection", "close")],
                            )
                        )
                        or b""
                    )
                return
            if ev is h11.NEED_DATA:
                data = sock.recv(65536)
                h.receive_data(data)
                continue
            if isinstance(ev, h11.Request):
                req, body = ev, []
                with self._lock:
                    self.requests.append((ev.method.decode("latin-1"), ev.target.decode("latin-1")))
            elif isinstance(ev, h11.Data):
                body.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                assert req is not None
                if self._is_ws(req):
                    self._upgrade(sock, h, req)
                    return
                if not self._respond(sock, h, req, b"".join(body)):
                    return
                if h.our_state is h11.MUST_CLOSE or h.their_state is h11.MUST_CLOSE:
                    return
                try:
                    h.start_next_cycle()
                except h11.LocalProtocolError:
                    return
            elif isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                return

    @staticmethod
    def _header(req: h11.Request, name: bytes) -> str | None:
        for k, v in req.headers:
            if k == name:
                return bytes(v).decode("latin-1")
        return None

    def _is_ws(self, req: h11.Request) -> bool:
        upgrade = (self._header(req, b"upgrade") or "").lower()
        return "websocket" in upgrade and self._header(req, b"sec-websocket-key") is not None

    def _respond(
        self, sock: socket.socket, h: h11.Connection, req: h11.Request, body: bytes
    ) -> bool:
        target = req.target.decode("latin-1")
        path = target.split("?")[0]
        method = req.method.decode("latin-1")
        out: list[bytes] = []

        def send(ev: Any) -> None:
            data = h.send(ev)
            if data:
                out.append(data)

        def simple(status: int, hs: list[tuple[str, str]], content: bytes) -> None:
            bodyless = status in (204, 304) or method == "HEAD"
            if status not in (204, 304):
                hs = [*hs, ("content-length", str(len(content)))]
            send(h11.Response(status_code=status, headers=hs))
            if content and not bodyless:
                send(h11.Data(data=content))
            send(h11.EndOfMessage())

        if path == "/hello" and method in ("GET", "HEAD"):
            simple(200, [("content-type", "text/plain")], b"Hello world!\n")
        elif path.startswith("/status/") and path[8:].isdigit() and 200 <= int(path[8:]) <= 599:
            simple(int(path[8:]), [], b"")
        elif path == "/headers":
            pairs = [
                [bytes(k).decode("latin-1"), bytes(v).decode("latin-1")]
                for k, v in req.headers.raw_items()
            ]
            simple(200, [("content-type", "application/json")], json.dumps(pairs).encode())
        elif path in ("/chunked", "/trailers"):
            hs = [("content-type", "text/plain"), ("transfer-encoding", "chunked")]
            if path == "/trailers":
                hs.append(("trailer", "x-checksum"))
            send(h11.Response(status_code=200, headers=hs))
            if method != "HEAD":
                if path == "/chunked":
                    for n in (1, 2, 3):
                        send(h11.Data(data=b"chunk %d\n" % n))
                    send(h11.EndOfMessage())
                else:
                    send(h11.Data(data=b"Hello world!\n"))
                    send(h11.EndOfMessage(headers=[("x-checksum", "6f2e1d")]))
            else:
                send(h11.EndOfMessage())
        elif path == "/close":
            simple(200, [("content-type", "text/plain"), ("connection", "close")], b"bye\n")
        else:
            ctype = self._header(req, b"content-type") or "application/octet-stream"
            simple(
                200,
                [("content-type", ctype), ("x-echo-method", method), ("x-echo-target", target)],
                body,
            )
        sock.sendall(b"".join(out))
        return True

    def _upgrade(self, sock: socket.socket, h: h11.Connection, req: h11.Request) -> None:
        from wsproto.connection import Connection, ConnectionType
        from wsproto.events import (
            BytesMessage,
            CloseConnection,
            Ping,
            TextMessage,
        )
        from wsproto.extensions import Extension, PerMessageDeflate
        from wsproto.handshake import server_extensions_handshake
        from wsproto.utilities import generate_accept_token

        key = (self._header(req, b"sec-websocket-key") or "").encode("latin-1")
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(key)),
        ]
        extensions: list[Extension] = []
        offers = [
            bytes(v).decode("latin-1") for k, v in req.headers if k == b"sec-websocket-extensions"
        ]
        if self.deflate and offers:
            deflate = PerMessageDeflate()
            accepted = server_extensions_handshake(offers, [deflate])
            if accepted:
                headers.append((b"sec-websocket-extensions", accepted))
                extensions.append(deflate)
        sock.sendall(
            h.send(
                h11.InformationalResponse(
                    status_code=101, headers=headers, reason=b"Switching Protocols"
                )
            )
            or b""
        )
        leftover, closed = h.trailing_data
        ws = Connection(ConnectionType.SERVER, extensions=extensions)
        if leftover:
            ws.receive_data(leftover)
        parts: list[Any] = []
        while True:
            out: list[bytes] = []
            for ev in ws.events():
                if isinstance(ev, (TextMessage, BytesMessage)):
                    parts.append(ev.data)
                    if ev.message_finished:
                        if isinstance(ev, TextMessage):
                            out.append(ws.send(TextMessage(data="".join(parts))))
                        else:
                            out.append(ws.send(BytesMessage(data=b"".join(parts))))
                        parts = []
                elif isinstance(ev, Ping):
                    out.append(ws.send(ev.response()))
                elif isinstance(ev, CloseConnection):
                    out.append(ws.send(ev.response()))
                    sock.sendall(b"".join(out))
                    return
            if out:
                sock.sendall(b"".join(out))
            if closed:
                return
            data = sock.recv(65536)
            if not data:
                return
            ws.receive_data(data)
