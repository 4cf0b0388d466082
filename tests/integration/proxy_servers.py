"""Small proxies and origins for the proxy and tunnel tests, on 127.0.0.1 port 0.

Each server runs an asyncio loop in its own thread (asyncio's TLS is memory-BIO
based, so one connection is read and written from one thread only) and relays
bytes between the client and the target until either side closes.  They stand in
for what tinyproxy and dante cannot do: a CONNECT proxy over TLS (HTTPS proxy),
SOCKS5 over TLS, SOCKS5 username/password without system users, and an HTTP/2
CONNECT proxy (RFC 9113 8.5, one tunnel per stream).  They record what they were
asked (``requests``) so the tests can check the bytes gunpy sent.

``stop()`` (or leaving the ``with`` block) closes the listener and every
connection and joins the thread; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import ipaddress
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import Any

HOST = "127.0.0.1"

_current_server: contextvars.ContextVar[_Server] = contextvars.ContextVar("server")


class _Server:
    """An asyncio server in a thread; subclasses implement ``handle``."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.requests: list[Any] = []
        self.connections = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._transports: set[asyncio.BaseTransport] = set()  # every one, aborted by stop()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        if self._error is not None:
            raise self._error

    _error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, HOST, 0, ssl=self.tls)
            )
            self.port: int = self._server.sockets[0].getsockname()[1]
        except BaseException as e:  # pragma: no cover - reported by __init__
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        _current_server.set(self)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._transports.add(writer.transport)
        try:
            await self.handle(reader, writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): asyncio would log a cancelled connection task
        finally:
            self._tasks.discard(task)
            _close(writer)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            self._server.close()
            # Every task: the connections, and those still in their TLS handshake
            # (asyncio's own accept tasks close their transport when cancelled).
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A closing TLS transport waits for the peer's close_notify: abort,
            # and abort the raw transports too (those of TLS handshakes cut short
            # included): the selector loop keeps them by fd.
            raw = list(getattr(self._loop, "_transports", {}).values())
            for tr in [*self._transports, *raw]:
                tr.abort()
            await self._server.wait_closed()
            await asyncio.sleep(0)  # let the transports' close callbacks run
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(10)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, ssl.SSLError):
        pass
    finally:
        # TLS transports cannot half-close: close the other side entirely.
        if writer.can_write_eof():
            with contextlib.suppress(Exception):
                writer.write_eof()
        else:
            _close(writer)


async def relay(
    r1: asyncio.StreamReader,
    w1: asyncio.StreamWriter,
    r2: asyncio.StreamReader,
    w2: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both directions are done."""
    _current_server.get()._transports.add(w2.transport)
    try:
        await asyncio.gather(_pipe(r1, w2), _pipe(r2, w1))
    finally:
        _close(w1)
        _close(w2)


def _split_authority(authority: str) -> tuple[str, int]:
    host, _, port = authority.rpartition(":")
    return host.strip("[]"), int(port)


class ConnectProxy(_Server):
    """An HTTP/1.1 CONNECT proxy (over TLS when ``tls`` is given: an HTTPS proxy).

    ``users`` (``{name: password}``) requires Basic ``proxy-authorization`` (407
    otherwise); ``version`` is the HTTP version of its answers.  ``requests``
    records each request head as bytes.
    """

    def __init__(
        self,
        tls: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
        version: str = "HTTP/1.1",
    ) -> None:
        self.users = users
        self.version = version
        super().__init__(tls)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Refusals keep the connection open (a client may try again), a tunnel ends it.
        while await self._one(reader, writer):
            pass

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                n, _, v = line.partition(":")
                fields[n.strip().lower()] = v.strip()
        v = self.version
        if method != "CONNECT":
            writer.write(f"{v} 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n".encode())
            return True
        if self.users is not None:
            auth = fields.get("proxy-authorization", "")
            ok = False
            if auth.startswith("Basic "):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                ok = self.users.get(user) == password
            if not ok:
                writer.write(
                    f"{v} 407 Proxy Authentication Required\r\n"
                    'proxy-authenticate: Basic realm="gunpy"\r\ncontent-length: 6\r\n\r\ndenied'.encode()
                )
                await writer.drain()
                return True
        host, port = _split_authority(target)
        try:
            tr, tw = await asyncio.open_connection(host, port)
        except OSError:
            writer.write(f"{v} 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n".encode())
            return True
        writer.write(f"{v} 200 Connection established\r\n\r\n".encode())
        await writer.drain()
        await relay(reader, writer, tr, tw)
        return False


class Socks5Proxy(_Server):
    """A SOCKS5 proxy (RFC 1928; over TLS when ``tls`` is given).

    With ``users`` it offers username/password (RFC 1929) only; without, no
    authentication only.  ``requests`` records ``(host, port)`` of each CONNECT.
    """

    def __init__(
        self, tls: ssl.SSLContext | None = None, users: dict[str, str] | None = None
    ) -> None:
        self.users = users
        super().__init__(tls)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ver, n = await reader.readexactly(2)
        methods = await reader.readexactly(n)
        want = 2 if self.users is not None else 0
        if ver != 5 or want not in methods:
            writer.write(b"\x05\xff")
            await writer.drain()
            return
        writer.write(bytes((5, want)))
        if want == 2:
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            assert self.users is not None
            if self.users.get(user) != password:
                writer.write(b"\x01\x01")
                await writer.drain()
                return
            writer.write(b"\x01\x00")
        ver, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif atyp == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        else:
            (hlen,) = await reader.readexactly(1)
            host = (await reader.readexactly(hlen)).decode()
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        self.requests.append((host, port))
        if cmd != 1:
            writer.write(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        try:
            tr, tw = await asyncio.open_connection(host, port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", port))
        await writer.drain()
        await relay(reader, writer, tr, tw)


class EchoOrigin(_Server):
    """A raw origin (TCP or TLS): echoes every byte back."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            self.requests.append(data)
            writer.write(data)
            await writer.drain()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class H2ConnectProxy(_Server):
    """An HTTP/2 CONNECT proxy (RFC 9113 8.5): each CONNECT stream is a tunnel.

    h2c by prior knowledge, or h2 over TLS (ALPN ``h2``) when ``tls`` is given.
    ``requests`` records ``(authority, headers)`` of each CONNECT.  Data to the
    client respects HTTP/2 flow control; a target's close ends the stream
    (END_STREAM), the client's END_STREAM half-closes the target.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        super().__init__(tls)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import h2.config
        import h2.connection
        import h2.events

        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        pending: dict[int, bytearray] = {}
        ended: set[int] = set()
        targets: dict[int, asyncio.StreamWriter] = {}

        def flush(sid: int) -> None:
            buf = pending.get(sid)
            if buf is None:
                return
            while buf:
                try:
                    n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(buf))
                except Exception:
                    pending.pop(sid, None)
                    return
                if n <= 0:
                    break
                conn.send_data(sid, bytes(buf[:n]))
                del buf[:n]
            if not buf and sid in ended:
                with contextlib.suppress(Exception):
                    conn.end_stream(sid)
                pending.pop(sid, None)
            writer.write(conn.data_to_send())

        async def from_target(sid: int, tr: asyncio.StreamReader) -> None:
            try:
                while data := await tr.read(65536):
                    pending[sid] += data
                    flush(sid)
            except (ConnectionError, OSError):
                pass
            ended.add(sid)
            flush(sid)

        tasks = []
        try:
            while data := await reader.read(65536):
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        fields = dict(ev.headers)
                        sid = ev.stream_id
                        authority = fields.get(b":authority", b"").decode()
                        self.requests.append((authority, ev.headers))
                        if fields.get(b":method") != b"CONNECT":
                            conn.send_headers(sid, [(b":status", b"405")], end_stream=True)
                            continue
                        try:
                            tr, tw = await asyncio.open_connection(*_split_authority(authority))
                        except OSError:
                            conn.send_headers(sid, [(b":status", b"502")], end_stream=True)
                            continue
                        self._transports.add(tw.transport)
                        targets[sid] = tw
                        pending[sid] = bytearray()
                        conn.send_headers(sid, [(b":status", b"200")])
                        tasks.append(asyncio.ensure_future(from_target(sid, tr)))
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        tw = targets.get(ev.stream_id)
                        if tw is not None and ev.data:
                            tw.write(ev.data)
                    elif isinstance(ev, h2.events.StreamEnded):
                        tw = targets.get(ev.stream_id)
                        if tw is not None and tw.can_write_eof():
                            with contextlib.suppress(Exception):
                                tw.write_eof()
                    elif isinstance(ev, h2.events.StreamReset):
                        tw = targets.pop(ev.stream_id, None)
                        if tw is not None:
                            _close(tw)
                        pending.pop(ev.stream_id, None)
                    elif isinstance(ev, h2.events.WindowUpdated):
                        for sid in [ev.stream_id] if ev.stream_id else list(pending):
                            flush(sid)
                writer.write(conn.data_to_send())
        finally:
            for t in tasks:
                t.cancel()
            for tw in targets.values():
                _close(tw)
