"""A scripted origin: the Python counterpart of Gun's ``gun_test:init_origin``.

Theory of operation
-------------------
``ScriptedOrigin`` listens on loopback (TCP or TLS on 127.0.0.1 port 0, or a Unix
socket in a fresh temporary directory).  A thread accepts connections; each
accepted connection is an ``OriginConn`` with one *I/O thread* that alone touches
the socket (TLS objects must not be read and written from two threads at once):

* it reads whatever the client sends as soon as it arrives and appends it to the
  connection's record (``received``: every byte, in order) unless reading is
  paused (``pause_reading``, ``ScriptedOrigin(reading=False)``: a server that stops
  reading, for send-timeout and back-pressure tests);
* it performs, in order, the operations other threads queue: send bytes, close,
  reset (RST), half-close, pause/resume reading.

Everything else reads the record through a cursor (``recv_exact``, ``recv_until``,
``recv_http_request``, ``wait_closed``...), waiting on a condition variable with a
timeout: nothing polls and nothing sleeps the test's thread.

A *script* is a list of ``Step`` objects (``ExpectRequest``, ``Respond``,
``Delay``, ``Close``...) that a connection plays in its own script thread, so the
test thread is free to ``receive`` the messages gunpy sends meanwhile.  A step
that fails is recorded as a ``ScriptError``; ``check()``, ``wait()`` and
``stop()`` raise it, so a script is an assertion about what the client sent.
Without a script the test drives the connection step by step (``accept()``, then
the same methods the steps use).

Timeouts are milliseconds and are multiplied by the timeout factor
(``GUNPY_TIMEOUT_FACTOR``); ``Delay`` is behaviour, not a bound, and is not.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import http
import os
import queue
import select
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._process import Pid
from .._process import self as _self
from ._assertions import _show, scaled

__all__ = [
    "AcceptWs",
    "Call",
    "Close",
    "Delay",
    "Expect",
    "ExpectClosed",
    "ExpectRequest",
    "ExpectUntil",
    "ExpectWs",
    "HalfClose",
    "OriginConn",
    "OriginFactory",
    "PauseReading",
    "Request",
    "Reset",
    "Respond",
    "ResumeReading",
    "ScriptError",
    "ScriptedOrigin",
    "Send",
    "SendWs",
    "Step",
    "http_response",
    "refused_port",
]

DEFAULT_TIMEOUT = 5000  # ms, before the timeout factor
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_READ_SIZE = 65536


class _TLSLike(Protocol):
    """What ``tls=`` accepts besides an ``ssl.SSLContext``: a ``TLSPair``."""

    def server_context(self) -> ssl.SSLContext: ...

    @property
    def tls_opts(self) -> dict[str, Any]: ...


class ScriptError(AssertionError):
    """A script step failed, or a script did not finish before the origin stopped."""


# ---------------------------------------------------------------------------
# HTTP helpers


@dataclass(frozen=True)
class Request:
    """An HTTP/1.1 request as the origin received it.

    ``headers`` and ``trailers`` are ``(name, value)`` pairs with lower-case names
    (``str``, latin-1), in the order sent; ``body`` is decoded from chunked
    transfer-encoding when it was chunked; ``raw`` is every byte of the request,
    exactly as sent.
    """

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of the first header called ``name`` (any case), else ``default``."""
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_values(self, name: str) -> list[str]:
        """Every value of the headers called ``name`` (any case), in order."""
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def is_ws_upgrade(self) -> bool:
        """Whether this is a Websocket upgrade request (RFC 6455 section 4.1)."""
        upgrade = ",".join(self.header_values("upgrade")).lower()
        return "websocket" in upgrade and self.header("sec-websocket-key") is not None


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError(f"not an HTTP request line: {lines[0]!r}")
    method, target, version = parts
    return method, target, version, _parse_fields(lines[1:])


def _parse_fields(lines: Iterable[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"not a header line: {line!r}")
        out.append((name.strip().lower(), value.strip(" \t")))
    return out


def _header_pairs(headers: Mapping[str, Any] | Iterable[tuple[Any, Any]]) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, str]] = []
    for k, v in items:
        name = k.decode("latin-1") if isinstance(k, bytes) else str(k)
        value = v.decode("latin-1") if isinstance(v, bytes) else str(v)
        out.append((name, value))
    return out


def http_response(
    status: int = 200,
    headers: Mapping[str, Any] | Iterable[tuple[Any, Any]] = (),
    body: bytes = b"",
    *,
    reason: str | None = None,
    version: str = "HTTP/1.1",
    content_length: bool = True,
) -> bytes:
    """The bytes of an HTTP response: status line, ``headers`` in order, then ``body``.

    A ``content-length`` is added unless ``headers`` has one, or a
    ``transfer-encoding``, or ``content_length`` is False (or the status has no
    body: 1xx, 204, 304).  ``reason`` defaults to the standard phrase.
    """
    if reason is None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
    pairs = _header_pairs(headers)
    names = {k.lower() for k, _ in pairs}
    bodyless = 100 <= status < 200 or status in (204, 304)
    if (
        content_length
        and not bodyless
        and "content-length" not in names
        and "transfer-encoding" not in names
    ):
        pairs.append(("content-length", str(len(body))))
    head = f"{version} {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs)
    return head.encode("latin-1") + b"\r\n" + body


def _close_opened(opened: list[tuple[Pid, Pid]]) -> None:
    """Close the gunpy connections a test helper opened, as cleanup.

    gunpy tells the owner about requests still in flight when a connection is
    closed (``gun_error``); those messages are the cleanup's, not the test's, so
    they are removed when the owner is the calling thread.  Messages that were
    already queued stay for ``gun_mailbox`` to judge.
    """
    from .. import _api
    from .._process import flush_messages
    from .._process import self as _self

    me = _self()
    for conn, owner in opened:
        if not conn.is_alive():
            continue
        box = me.mailbox
        before = box.messages() if owner is me and box is not None else None
        _api.close(conn)
        if before is not None:
            flush_messages(_made_by(conn, {id(m) for m in before}))
        del before  # kept alive until now so that the ids in ``seen`` stay unique


def _made_by(conn: Pid, seen: set[int]) -> Callable[[Any], bool]:
    def new_from_conn(m: Any) -> bool:
        return type(m) is tuple and len(m) > 1 and m[1] is conn and id(m) not in seen

    return new_from_conn


def refused_port() -> int:
    """A loopback TCP port nothing listens on (bound, then closed: a tiny race window)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------------------
# Websocket helpers (server side: frames unmasked; wsproto builds and parses them)


def _ws_event(frame: Any) -> Any:
    from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
    from wsproto.frame_protocol import CloseReason

    if frame == "close":
        return CloseConnection(code=CloseReason.NO_STATUS_RCVD)
    if frame == "ping":
        return Ping(b"")
    if frame == "pong":
        return Pong(b"")
    if isinstance(frame, str):
        return TextMessage(data=frame)
    if isinstance(frame, (bytes, bytearray)):
        return BytesMessage(data=bytes(frame))
    if type(frame) is tuple and len(frame) == 2:
        kind, data = frame
        if kind == "text":
            return TextMessage(data=data if isinstance(data, str) else bytes(data).decode())
        if kind == "binary":
            return BytesMessage(data=bytes(data.encode() if isinstance(data, str) else data))
        if kind == "ping":
            return Ping(bytes(data))
        if kind == "pong":
            return Pong(bytes(data))
        if kind == "close":
            return CloseConnection(code=1000, reason=str(data))
    if type(frame) is tuple and len(frame) == 3 and frame[0] == "close":
        return CloseConnection(code=int(frame[1]), reason=str(frame[2]))
    raise ValueError(f"not a Websocket frame: {frame!r}")


def _ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + _WS_GUID).digest()).decode()


# ---------------------------------------------------------------------------
# One connection


class _Op:
    __slots__ = ("data", "future", "kind", "sent")

    def __init__(self, kind: str, data: bytes = b"") -> None:
        self.kind = kind
        self.data = data
        self.sent = 0
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()


class OriginConn:
    """One accepted connection, seen from the server side.

    ``received`` holds every byte the client sent (recorded by the connection's I/O
    thread as it arrives).  The ``recv_*`` methods and ``wait_closed`` consume that
    record through a cursor and wait (with a timeout, in ms) for what they need;
    ``send``, ``close``, ``reset``, ``half_close`` queue operations that the I/O
    thread performs in order.  Every method may be called from any thread, but
    only one thread should consume (the script's, or the test's).
    """

    def __init__(self, origin: ScriptedOrigin, sock: socket.socket, index: int) -> None:
        self.origin = origin
        #: 1 for the first connection accepted, 2 for the next...
        self.index = index
        #: The server's socket (for socket options only: never read or write it).
        self.sock: socket.socket = sock
        #: Requests parsed by ``recv_http_request`` / ``ExpectRequest``, in order.
        self.requests: list[Request] = []
        #: The script this connection plays (None: driven by the test).
        self.script: list[Step] | None = None
        #: The step that failed (a ``ScriptError``), if any.
        self.script_error: ScriptError | None = None
        self.step = 0  #: the number of the step being played (1-based; 0: none yet)
        self.interrupted = False  #: stop() cut the script short
        self._cond = threading.Condition(threading.Lock())
        self._data = bytearray()
        self._pos = 0
        self._eof: str | None = None
        self._closed: str | None = None
        self._reading = origin.reading
        self._ops: deque[_Op] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._script_done = threading.Event()
        self._ws: Any = None  # wsproto Connection once upgraded
        self._ws_frames: deque[Any] = deque()
        self._ws_partial: list[Any] = []
        self._thread = threading.Thread(
            target=self._run, name=f"{origin.name}-conn{index}", daemon=True
        )

    def __repr__(self) -> str:
        state = self._closed or (f"client {self._eof}" if self._eof else "open")
        return (
            f"<OriginConn #{self.index} of {self.origin.name} {state}, {len(self._data)} bytes in>"
        )

    # -- state -----------------------------------------------------------------------

    @property
    def received(self) -> bytes:
        """Every byte the client sent so far, in order."""
        with self._cond:
            return bytes(self._data)

    @property
    def unread(self) -> bytes:
        """The received bytes no ``recv_*`` call has consumed yet."""
        with self._cond:
            return bytes(self._data[self._pos :])

    @property
    def eof(self) -> str | None:
        """How the client ended its side: ``"closed"``, ``"reset"``, ``"error: ..."``; None while open."""
        return self._eof

    @property
    def closed(self) -> str | None:
        """How the origin ended the connection (``"closed"``, ``"reset"``, ``"stopped"``), or None."""
        return self._closed

    @property
    def script_done(self) -> bool:
        """Whether this connection's script has run to its end or failed."""
        return self._script_done.is_set() and not self.interrupted

    # -- reading (consumes the record) --------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        ms = self.origin.step_timeout if timeout is None else timeout
        value = scaled(ms)
        assert isinstance(value, (int, float))
        return value / 1000.0

    def _wait_for(self, ready: Callable[[], int | None], timeout: float | None, what: str) -> int:
        """Wait until ``ready()`` (called with the lock held) returns an end offset."""
        secs = self._timeout(timeout)
        deadline = time.monotonic() + secs
        with self._cond:
            while True:
                end = ready()
                if end is not None:
                    return end
                if self._eof is not None or self._closed is not None:
                    raise EOFError(
                        f"{what}: the connection ended ({self._closed or 'client ' + (self._eof or '')}) "
                        f"with {_show(bytes(self._data[self._pos :]))} unread"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{what}: nothing after {secs * 1000:.0f} ms; "
                        f"unread: {_show(bytes(self._data[self._pos :]))}"
                    )
                self._cond.wait(left)

    def _consume(self, end: int) -> bytes:
        with self._cond:
            out = bytes(self._data[self._pos : end])
            self._pos = end
            return out

    def recv(self, timeout: float | None = None) -> bytes:
        """The unread bytes, waiting for at least one; ``b""`` once the client closed."""
        try:
            end = self._wait_for(
                lambda: len(self._data) if len(self._data) > self._pos else None,
                timeout,
                "recv",
            )
        except EOFError:
            return b""
        return self._consume(end)

    def recv_exact(self, n: int, timeout: float | None = None) -> bytes:
        """Exactly the next ``n`` bytes."""
        end = self._wait_for(
            lambda: self._pos + n if len(self._data) - self._pos >= n else None,
            timeout,
            f"recv_exact({n})",
        )
        return self._consume(end)

    def recv_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        """The bytes up to and including the next ``marker``."""

        def ready() -> int | None:
            i = self._data.find(marker, self._pos)
            return None if i < 0 else i + len(marker)

        return self._consume(self._wait_for(ready, timeout, f"recv_until({marker!r})"))

    def recv_request(self, timeout: float | None = None) -> bytes:
        """The next HTTP request head, up to and including the blank line (bytes)."""
        return self.recv_until(b"\r\n\r\n", timeout)

    def recv_http_request(self, timeout: float | None = None) -> Request:
        """The next HTTP/1.1 request, head and body (content-length or chunked), parsed.

        Also appended to ``requests``.
        """
        head = self.recv_request(timeout)
        method, target, version, headers = _parse_head(head[:-4])
        raw = [head]
        body = b""
        trailers: list[tuple[str, str]] = []
        te = ",".join(v for k, v in headers if k == "transfer-encoding").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.recv_until(b"\r\n", timeout)
                raw.append(line)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    tail = self.recv_until(b"\r\n", timeout)
                    raw.append(tail)
                    while tail != b"\r\n":
                        trailers += _parse_fields([tail[:-2].decode("latin-1")])
                        tail = self.recv_until(b"\r\n", timeout)
                        raw.append(tail)
                    break
                chunk = self.recv_exact(size + 2, timeout)
                raw.append(chunk)
                chunks.append(chunk[:-2])
            body = b"".join(chunks)
        else:
            length = next((v for k, v in headers if k == "content-length"), None)
            if length is not None and int(length) > 0:
                body = self.recv_exact(int(length), timeout)
                raw.append(body)
        req = Request(method, target, version, headers, body, trailers, b"".join(raw))
        self.requests.append(req)
        return req

    def wait_received(self, marker: bytes, timeout: float | None = None) -> None:
        """Wait until ``received`` contains ``marker`` (consumes nothing)."""
        self._wait_for(
            lambda: 0 if marker in self._data else None, timeout, f"wait_received({marker!r})"
        )

    def wait_closed(self, timeout: float | None = None) -> bytes:
        """Wait until the client closes (or resets) its side; the unread bytes."""
        secs = self._timeout(timeout)
        deadline = time.monotonic() + secs
        with self._cond:
            while self._eof is None and self._closed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"wait_closed: the client did not close within {secs * 1000:.0f} ms; "
                        f"unread: {_show(bytes(self._data[self._pos :]))}"
                    )
                self._cond.wait(left)
            end = len(self._data)
        return self._consume(end)

    # -- writing (queued; performed in order by the I/O thread) --------------------------

    def _queue(self, op: _Op, wait: bool, timeout: float | None) -> None:
        with self._cond:
            if self._closed is not None:
                if op.kind in ("close", "reset", "stop"):
                    return
                raise ConnectionError(
                    f"{op.kind}: the origin already ended the connection ({self._closed})"
                )
            self._ops.append(op)
        self._wake()
        if wait:
            try:
                op.future.result(self._timeout(timeout))
            except concurrent.futures.TimeoutError:
                raise TimeoutError(
                    f"{op.kind}: not done after {self._timeout(timeout) * 1000:.0f} ms "
                    "(is the client reading?)"
                ) from None

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full (a wake-up is pending anyway) or closed (thread gone)

    def send(self, data: bytes, *, wait: bool = True, timeout: float | None = None) -> None:
        """Send ``data``; with ``wait`` (the default) return once it is all written."""
        self._queue(_Op("send", bytes(data)), wait, timeout)

    def close(self) -> None:
        """Close the connection (after what was queued before), a FIN."""
        self._queue(_Op("close"), True, None)

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0); on a Unix socket, a plain close."""
        self._queue(_Op("reset"), True, None)

    def half_close(self) -> None:
        """Shut down the sending side (FIN) and keep reading.  TCP and Unix only."""
        if isinstance(self.sock, ssl.SSLSocket):
            raise NotImplementedError("half-close is not supported over TLS")
        self._queue(_Op("half_close"), True, None)

    def pause_reading(self) -> None:
        """Stop reading from the socket: what the client sends piles up in the kernel."""
        self._queue(_Op("pause"), True, None)

    def resume_reading(self) -> None:
        """Read (and record) again."""
        self._queue(_Op("resume"), True, None)

    # -- Websocket (after accept_ws) -------------------------------------------------------

    def accept_ws(
        self,
        request: Request | None = None,
        protocol: str | None = None,
        headers: Mapping[str, Any] | Iterable[tuple[Any, Any]] = (),
        timeout: float | None = None,
    ) -> Request:
        """Answer a Websocket upgrade with 101 and speak Websocket from then on.

        Reads the upgrade request unless given; ``protocol`` is sent as
        ``sec-websocket-protocol``.  No extension is accepted (frames stay
        uncompressed).  Returns the upgrade request.
        """
        from wsproto.connection import Connection, ConnectionType

        req = self.recv_http_request(timeout) if request is None else request
        if not req.is_ws_upgrade:
            raise AssertionError(f"not a Websocket upgrade request: {_show(req.raw)}")
        key = req.header("sec-websocket-key") or ""
        pairs = [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", _ws_accept(key)),
        ]
        if protocol is not None:
            pairs.append(("sec-websocket-protocol", protocol))
        pairs += _header_pairs(headers)
        self._ws = Connection(ConnectionType.SERVER)
        self.send(http_response(101, pairs, content_length=False), timeout=timeout)
        return req

    def ws_send(self, frame: Any, timeout: float | None = None) -> None:
        """Send a Websocket frame, in gunpy's frame shapes: ``("text", str)``,
        ``("binary", bytes)``, ``"close"``, ``("close", code, reason)``, ``"ping"``,
        ``("ping", bytes)``, ``"pong"``, ``("pong", bytes)``; a bare ``str`` is a text
        frame, bare ``bytes`` a binary one."""
        if self._ws is None:
            raise AssertionError("ws_send before accept_ws")
        self.send(self._ws.send(_ws_event(frame)), timeout=timeout)

    def ws_recv(self, timeout: float | None = None) -> Any:
        """The next frame from the client, in gunpy's frame shapes (messages reassembled)."""
        from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

        if self._ws is None:
            raise AssertionError("ws_recv before accept_ws")
        while not self._ws_frames:
            data = self.recv(timeout)
            if not data:
                raise EOFError("ws_recv: the client closed the connection")
            self._ws.receive_data(data)
            for ev in self._ws.events():
                if isinstance(ev, (TextMessage, BytesMessage)):
                    self._ws_partial.append(ev.data)
                    if ev.message_finished:
                        if isinstance(ev, TextMessage):
                            self._ws_frames.append(("text", "".join(self._ws_partial)))
                        else:
                            self._ws_frames.append(("binary", b"".join(self._ws_partial)))
                        self._ws_partial = []
                elif isinstance(ev, CloseConnection):
                    code = int(ev.code)
                    self._ws_frames.append(
                        "close" if code == 1005 else ("close", code, ev.reason or "")
                    )
                elif isinstance(ev, Ping):
                    self._ws_frames.append(("ping", bytes(ev.payload)))
                elif isinstance(ev, Pong):
                    self._ws_frames.append(("pong", bytes(ev.payload)))
        return self._ws_frames.popleft()

    # -- script ----------------------------------------------------------------------------

    def wait_script(self, timeout: float | None = None) -> None:
        """Wait until this connection's script has finished; raise its ``ScriptError``."""
        if self.script is not None and not self._script_done.wait(self._timeout(timeout)):
            raise ScriptError(
                f"{self.origin.name} connection #{self.index}: script still at step "
                f"{self.step} {self._step_repr()} after {self._timeout(timeout) * 1000:.0f} ms"
            )
        if self.script_error is not None:
            raise self.script_error

    def _step_repr(self) -> str:
        if self.script is None or not 0 < self.step <= len(self.script):
            return ""
        return repr(self.script[self.step - 1])

    def _play(self) -> None:
        assert self.script is not None
        try:
            for i, step in enumerate(self.script, 1):
                self.step = i
                if self.origin.stopping:
                    return
                try:
                    step.run(self, self.origin.step_timeout)
                except BaseException as exc:
                    if self.origin.closing and isinstance(exc, (EOFError, OSError)):
                        # The test ended (stop() closed the client) before the client did
                        # what this step waits for: unfinished, not failed.
                        self.interrupted = True
                        return
                    err = ScriptError(
                        f"{self.origin.name} connection #{self.index}, step {i} {step!r}: "
                        f"{type(exc).__name__}: {exc}\n"
                        f"  received so far: {_show(self.received)}"
                    )
                    err.__cause__ = exc
                    self.script_error = err
                    self.origin._script_failed(err)
                    return
            self.step = len(self.script) + 1
        finally:
            self._script_done.set()
            self.origin._script_ended()

    # -- the I/O thread ------------------------------------------------------------------

    def _start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        origin = self.origin
        sock = self.sock
        try:
            if origin.tls is not None:
                sock.settimeout(self._timeout(None))
                try:
                    tsock = origin.tls.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except OSError as exc:
                    sock.close()
                    origin._accepted.put(exc)
                    self._end("error")
                    return
                try:
                    tsock.do_handshake()
                except (OSError, ValueError) as exc:
                    tsock.close()
                    origin._accepted.put(exc)
                    self._end("error")
                    return
                self.sock = sock = tsock
            sock.setblocking(False)
            origin._announce(self)
            self._loop(sock)
        except BaseException as exc:  # pragma: no cover - a bug here must not hang tests
            self._end(f"error: {exc!r}")
            raise
        finally:
            for s in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    s.close()

    def _end(self, how: str) -> None:
        with self._cond:
            if self._closed is None:
                self._closed = how
            ops, self._ops = list(self._ops), deque()
            self._cond.notify_all()
        for op in ops:
            if op.kind in ("close", "reset", "stop"):
                op.future.set_result(None)
            else:
                op.future.set_exception(ConnectionError(f"{op.kind}: the connection ended ({how})"))

    def _loop(self, sock: socket.socket) -> None:
        tls = sock if isinstance(sock, ssl.SSLSocket) else None
        poller = select.poll()
        wake_fd = self._wake_r.fileno()
        sock_fd = sock.fileno()
        poller.register(wake_fd, select.POLLIN)
        registered = False
        while True:
            want_write = False
            # 1. Perform queued operations in order, as far as they go without blocking.
            while True:
                with self._cond:
                    op = self._ops[0] if self._ops else None
                if op is None:
                    break
                kind = op.kind
                if kind == "send":
                    try:
                        n = sock.send(op.data[op.sent : op.sent + _READ_SIZE])
                    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                        want_write = True
                        break
                    except OSError as exc:
                        self._pop(op, exc)
                        continue
                    op.sent += n
                    if op.sent >= len(op.data):
                        self._pop(op)
                    continue
                if kind in ("close", "reset", "stop"):
                    if kind == "reset":
                        with contextlib.suppress(OSError):
                            sock.setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                            )
                    with contextlib.suppress(OSError):
                        sock.close()
                    self._end({"close": "closed", "reset": "reset", "stop": "stopped"}[kind])
                    return
                if kind == "half_close":
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError as exc:
                        self._pop(op, exc)
                        continue
                elif kind == "pause":
                    self._reading = False
                elif kind == "resume":
                    self._reading = True
                self._pop(op)
            # 2. Wait for the socket or for a new operation.  poll, not select:
            # a big test suite has file descriptors above select's FD_SETSIZE.
            reading = self._reading and self._eof is None
            if reading and tls is not None and tls.pending():
                readable = True
            else:
                mask = (select.POLLIN if reading else 0) | (select.POLLOUT if want_write else 0)
                if mask:
                    poller.register(sock_fd, mask)  # registers again = modifies
                    registered = True
                elif registered:
                    poller.unregister(sock_fd)  # a closed peer would report POLLHUP forever
                    registered = False
                try:
                    events = poller.poll()
                except (OSError, ValueError):  # pragma: no cover - the socket was closed under us
                    self._end("stopped")
                    return
                readable = False
                for fd, ev in events:
                    if fd == wake_fd:
                        with contextlib.suppress(OSError):
                            while self._wake_r.recv(4096):
                                pass
                    elif ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        readable = reading
            if readable:
                self._read(sock, tls)

    def _pop(self, op: _Op, exc: BaseException | None = None) -> None:
        with self._cond:
            if self._ops and self._ops[0] is op:
                self._ops.popleft()
        if exc is None:
            op.future.set_result(None)
        else:
            op.future.set_exception(exc)

    def _read(self, sock: socket.socket, tls: ssl.SSLSocket | None) -> None:
        for _ in range(16):  # at most 1 MiB per turn, then look at the queue again
            try:
                data = sock.recv(_READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except ConnectionResetError:
                self._set_eof("reset")
                return
            except OSError as exc:
                self._set_eof(f"error: {exc}")
                return
            if not data:
                self._set_eof("closed")
                return
            with self._cond:
                self._data += data
                self._cond.notify_all()
            if tls is not None and not tls.pending():
                return

    def _set_eof(self, how: str) -> None:
        with self._cond:
            self._eof = how
            self._cond.notify_all()

    def _stop(self, timeout: float) -> None:
        """Close now (dropping what is queued) and let the thread end."""
        with self._cond:
            if self._closed is None:
                self._ops.appendleft(_Op("stop"))
        self._wake()
        self._thread.join(timeout)
        if self._thread.is_alive():  # pragma: no cover - stuck in a blocking TLS write
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self._thread.join(timeout)
        with self._cond:  # wake a script waiting on this connection
            self._cond.notify_all()


# ---------------------------------------------------------------------------
# The origin


class ScriptedOrigin:
    """A loopback origin that records every byte it receives and plays scripts.

    ``script``: steps every accepted connection plays; ``scripts``: one list of
    steps per connection, in accept order (later connections are not scripted).
    ``tls``: an ``ssl.SSLContext`` or a ``TLSPair`` (TLS on TCP); ``unix``: listen
    on a Unix socket (``path``) instead of TCP.  ``reading``: whether connections
    start reading (False: a server that does not read until ``resume_reading``).
    ``step_timeout``: how long (ms, times the timeout factor) a step or a
    ``recv_*`` waits by default.  ``host`` and ``port``: the TCP address to listen
    on (default 127.0.0.1, a port the system picks); an IPv6 address such as
    ``"::1"`` listens on IPv6.  Binding errors (``OSError``) are raised as they are.

    Starts listening at once; ``stop()`` (or leaving a ``with`` block) closes
    everything, closes the gunpy connections opened with ``open()``, and raises the
    first ``ScriptError``.
    """

    def __init__(
        self,
        script: Sequence[Step] | None = None,
        *,
        scripts: Sequence[Sequence[Step]] | None = None,
        tls: ssl.SSLContext | _TLSLike | None = None,
        unix: bool = False,
        reading: bool = True,
        step_timeout: float = DEFAULT_TIMEOUT,
        backlog: int = 16,
        name: str = "origin",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if script is not None and scripts is not None:
            raise TypeError(
                "give script (every connection) or scripts (one per connection), not both"
            )
        if unix and tls is not None:
            raise TypeError("a Unix socket origin cannot use TLS (gunpy.open_unix has no TLS)")
        if unix and (host != "127.0.0.1" or port != 0):
            raise TypeError("a Unix socket origin has no host or port")
        all_steps: list[Any] = list(script or ())
        for steps in scripts or ():
            all_steps += steps
        for step in all_steps:
            if not isinstance(step, Step):
                raise TypeError(f"a script step must be a Step, not {step!r}")
        self.name = name
        self.script = None if script is None else list(script)
        self.scripts = None if scripts is None else [list(s) for s in scripts]
        self.reading = reading
        self.step_timeout = step_timeout
        self.tls: ssl.SSLContext | None
        self.client_tls_opts: dict[str, Any] | None = None
        if tls is None or isinstance(tls, ssl.SSLContext):
            self.tls = tls
        else:
            self.tls = tls.server_context()
            self.client_tls_opts = tls.tls_opts
        self.transport = "unix" if unix else ("tls" if tls is not None else "tcp")
        self.conns: list[OriginConn] = []  #: accepted connections (handshake done), in order
        self.count = 0  #: connections accepted at the TCP level (failed TLS handshakes too)
        self.errors: list[ScriptError] = []  #: failed steps, in the order they failed
        self.stopping = False
        self._stopped = threading.Event()  # set by stop(): interrupts Delay steps
        self._opened: list[tuple[Pid, Pid]] = []  # (conn, owner) made by open()
        self.closing = False  # stop() has begun: client EOFs are the test ending
        self._accepted: queue.Queue[OriginConn | BaseException] = queue.Queue()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a connection came or a script ended
        self._script_threads: list[threading.Thread] = []
        self.path: str | None = None
        self._dir: str | None = None
        if unix:
            self._dir = tempfile.mkdtemp(prefix="gunpy-origin-")
            self.path = os.path.join(self._dir, "origin.sock")
            self._lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._lsock.bind(self.path)
            self.host = "localhost"
            self.port = 0
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._lsock = socket.socket(family, socket.SOCK_STREAM)
            try:
                self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._lsock.bind((host, port))
            except BaseException:
                self._lsock.close()  # e.g. a port below 1024 without the privilege
                raise
            self.host = host
            self.port = self._lsock.getsockname()[1]
        self._lsock.listen(backlog)
        self._thread = threading.Thread(target=self._accept_loop, name=name, daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        where = self.path if self.path else f"{host}:{self.port}"
        return f"<ScriptedOrigin {self.name} {self.transport} {where}, {len(self.conns)} conns>"

    def __enter__(self) -> ScriptedOrigin:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(check=exc_type is None)

    # -- accepting -------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._lsock.accept()
            except OSError:
                return
            if self.stopping:
                sock.close()
                return
            with self._lock:
                self.count += 1
                conn = OriginConn(self, sock, self.count)
                if self.scripts is not None:
                    if self.count <= len(self.scripts):
                        conn.script = self.scripts[self.count - 1]
                elif self.script is not None:
                    conn.script = self.script
            conn._start()

    def _announce(self, conn: OriginConn) -> None:
        """Called by a connection's thread once its TLS handshake (if any) is done."""
        with self._lock:
            self.conns.append(conn)
            if conn.script is not None:
                t = threading.Thread(
                    target=conn._play, name=f"{self.name}-script{conn.index}", daemon=True
                )
                self._script_threads.append(t)
                t.start()
            self._changed.notify_all()
        self._accepted.put(conn)

    def _script_failed(self, err: ScriptError) -> None:
        with self._lock:
            self.errors.append(err)

    def _script_ended(self) -> None:
        with self._lock:
            self._changed.notify_all()

    def accept(self, timeout: float | None = None) -> OriginConn:
        """The next accepted connection (in accept order), waiting up to ``timeout`` ms.

        Raises ``TimeoutError`` when none comes, or the error of a connection whose
        TLS handshake failed.  A scripted connection is returned too, for inspection:
        leave its reading to the script.
        """
        ms = self.step_timeout if timeout is None else timeout
        secs = scaled(ms)
        assert isinstance(secs, (int, float))
        try:
            c = self._accepted.get(timeout=secs / 1000.0)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no connection within {secs:.0f} ms") from None
        if isinstance(c, BaseException):
            raise c
        return c

    def accept_error(self, timeout: float | None = None) -> BaseException:
        """The error of the next connection, which must have failed its TLS handshake."""
        try:
            c = self.accept(timeout)
        except TimeoutError:
            raise
        except BaseException as exc:
            return exc
        raise AssertionError(f"expected a failed TLS handshake, got a connection: {c!r}")

    # -- gunpy ---------------------------------------------------------------------------

    def open(self, opts: dict[str, Any] | None = None) -> Pid:
        """``gunpy.open`` (or ``open_unix``) to this origin; the connection's Pid.

        Over TLS with a ``TLSPair``, ``transport`` and ``tls_opts`` are filled in.
        ``retry`` defaults to 0.  The connection is closed by ``stop()`` if alive.
        """
        from .. import _api

        o: dict[str, Any] = {"retry": 0}
        if self.transport == "tls":
            o["transport"] = "tls"
            if self.client_tls_opts is not None:
                o["tls_opts"] = self.client_tls_opts
        o.update(opts or {})
        if self.path is not None:
            res = _api.open_unix(self.path, o)
        else:
            res = _api.open(self.host, self.port, o)
        if res[0] != "ok":
            raise AssertionError(f"gunpy.open refused the options: {res!r}")
        conn: Pid = res[1]
        self._opened.append((conn, _self()))
        return conn

    # -- checking and stopping ---------------------------------------------------------

    def check(self) -> None:
        """Raise the first ``ScriptError`` so far (a failed step), if any."""
        with self._lock:
            errors = list(self.errors)
        if errors:
            raise errors[0]

    def unfinished(self) -> list[OriginConn]:
        """The scripted connections whose script has not reached its end (nor failed)."""
        with self._lock:
            conns = list(self.conns)
        return [c for c in conns if c.script is not None and not c.script_done]

    def wait(self, timeout: float | None = None, conns: int | None = None) -> None:
        """Wait until ``conns`` connections were accepted (default: one per script in
        ``scripts``, or 1 with ``script``) and every scripted connection finished its
        script; raise the first ``ScriptError``.  ``timeout`` in ms (the whole wait)."""
        if conns is None:
            conns = len(self.scripts) if self.scripts is not None else int(self.script is not None)
        ms = self.step_timeout if timeout is None else timeout
        secs = scaled(ms)
        assert isinstance(secs, (int, float))
        deadline = time.monotonic() + secs / 1000.0
        with self._changed:
            while True:
                if self.errors:
                    raise self.errors[0]
                late = [c for c in self.conns if c.script is not None and not c.script_done]
                if len(self.conns) >= conns and not late:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    if late:
                        c = late[0]
                        raise ScriptError(
                            f"{self.name}: scripts not finished after {secs:.0f} ms "
                            f"(connection #{c.index} at step {c.step} {c._step_repr()})"
                        )
                    raise ScriptError(
                        f"{self.name}: {len(self.conns)} of {conns} expected connections "
                        f"after {secs:.0f} ms"
                    )
                self._changed.wait(left)

    def stop(self, check: bool = True, grace: float = 1000) -> None:
        """Stop: close the gunpy connections opened with ``open()``, let scripts end
        (up to ``grace`` ms, times the factor), close every connection and the
        listening socket.  With ``check``, raise the first ``ScriptError`` or report
        a script that did not finish.  Idempotent."""
        if self.stopping:
            if check:
                self.check()
            return
        self.closing = True
        _close_opened(self._opened)
        if check:  # let scripts that are about to end (a last Close, say) get there
            g = scaled(grace)
            assert isinstance(g, (int, float))
            deadline = time.monotonic() + g / 1000.0
            for c in self.unfinished():
                c._script_done.wait(max(0.0, deadline - time.monotonic()))
        self.stopping = True
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._lsock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        with contextlib.suppress(OSError):
            self._lsock.close()
        self._thread.join(2.0)
        with self._lock:
            conns = list(self.conns)
        for c in conns:
            c._stop(2.0)
        with self._lock:
            threads = list(self._script_threads)
        for t in threads:
            t.join(2.0)
        # Connections whose TLS handshake was still running: their threads end on their own.
        late = self.unfinished()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        if check:
            self.check()
            if late:
                c = late[0]
                raise ScriptError(
                    f"{self.name} connection #{c.index}: the script did not finish; stopped "
                    f"at step {c.step} {c._step_repr()}\n  received: {_show(c.received)}"
                )
            missing = self._missing_conns()
            if missing:
                raise ScriptError(missing)

    def _missing_conns(self) -> str | None:
        """Scripts no connection came to play: one per ``scripts`` entry, one for ``script``."""
        want = len(self.scripts) if self.scripts is not None else int(self.script is not None)
        if len(self.conns) >= want:
            return None
        return (
            f"{self.name}: {len(self.conns)} connection{'s' if len(self.conns) != 1 else ''} "
            f"came, the script{'s' if want != 1 else ''} expected {want}"
        )


class OriginFactory:
    """Makes ``ScriptedOrigin``s and stops them all at the end: the ``scripted_origin``
    fixture's value.  Calling it takes ``ScriptedOrigin``'s arguments.

    Outside pytest: ``with OriginFactory() as scripted_origin: ...``.
    """

    def __init__(self) -> None:
        self.origins: list[ScriptedOrigin] = []

    def __call__(
        self,
        script: Sequence[Step] | None = None,
        *,
        scripts: Sequence[Sequence[Step]] | None = None,
        tls: ssl.SSLContext | _TLSLike | None = None,
        unix: bool = False,
        reading: bool = True,
        step_timeout: float = DEFAULT_TIMEOUT,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> ScriptedOrigin:
        origin = ScriptedOrigin(
            script,
            scripts=scripts,
            tls=tls,
            unix=unix,
            reading=reading,
            step_timeout=step_timeout,
            name=name or f"origin{len(self.origins) + 1}",
            host=host,
            port=port,
        )
        self.origins.append(origin)
        return origin

    def errors(self) -> list[ScriptError]:
        """Every failed step of every origin so far."""
        return [e for o in self.origins for e in o.errors]

    def stop_all(self, check: bool = True) -> None:
        """Stop every origin; with ``check``, then raise the first problem found."""
        first: BaseException | None = None
        for origin in self.origins:
            try:
                origin.stop(check=check)
            except ScriptError as exc:
                if first is None:
                    first = exc
        if first is not None:
            raise first

    def __enter__(self) -> OriginFactory:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop_all(check=exc_type is None)


# ---------------------------------------------------------------------------
# Script steps


class Step:
    """One step of a script.  Subclass it and implement ``run``."""

    def run(self, conn: OriginConn, timeout: float) -> None:
        """Play the step on ``conn``; ``timeout`` (ms, before the factor) bounds waits.

        Raise (anything) to fail the script.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class Expect(Step):
    """Receive exactly ``data`` next."""

    data: bytes

    def run(self, conn: OriginConn, timeout: float) -> None:
        got = conn.recv_exact(len(self.data), timeout)
        if got != self.data:
            raise AssertionError(f"expected {_show(self.data)}, got {_show(got)}")


@dataclass(frozen=True)
class ExpectUntil(Step):
    """Receive up to and including ``marker`` (whatever comes before it)."""

    marker: bytes

    def run(self, conn: OriginConn, timeout: float) -> None:
        conn.recv_until(self.marker, timeout)


@dataclass(frozen=True)
class ExpectRequest(Step):
    """Receive one HTTP request (head and body) and check what is given.

    ``method`` and ``target`` compare exactly; ``headers`` (a mapping or pairs) must
    all be present (names in any case, values exactly); ``body`` compares exactly.
    """

    method: str | None = None
    target: str | None = None
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
    body: bytes | None = None

    def run(self, conn: OriginConn, timeout: float) -> None:
        req = conn.recv_http_request(timeout)
        problems = []
        if self.method is not None and req.method != self.method:
            problems.append(f"method {req.method!r}, expected {self.method!r}")
        if self.target is not None and req.target != self.target:
            problems.append(f"target {req.target!r}, expected {self.target!r}")
        if self.headers is not None:
            for k, v in _header_pairs(self.headers):
                values = req.header_values(k)
                if v not in values:
                    problems.append(f"header {k}: {values or 'absent'}, expected {v!r}")
        if self.body is not None and req.body != self.body:
            problems.append(f"body {_show(req.body)}, expected {_show(self.body)}")
        if problems:
            raise AssertionError("; ".join(problems) + f"\n  request: {_show(req.raw)}")


@dataclass(frozen=True)
class ExpectClosed(Step):
    """Wait for the client to close its side; with ``data``, what it sent meanwhile."""

    data: bytes | None = None

    def run(self, conn: OriginConn, timeout: float) -> None:
        got = conn.wait_closed(timeout)
        if self.data is not None and got != self.data:
            raise AssertionError(f"expected {_show(self.data)} before the close, got {_show(got)}")


@dataclass(frozen=True)
class Send(Step):
    """Send ``data`` as is."""

    data: bytes

    def run(self, conn: OriginConn, timeout: float) -> None:
        conn.send(self.data, timeout=timeout)


@dataclass(frozen=True)
class Respond(Step):
    """Send an HTTP response (see ``http_response``: content-length added)."""

    status: int = 200
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = ()
    body: bytes = b""
    reason: str | None = None

    def run(self, conn: OriginConn, timeout: float) -> None:
        conn.send(
            http_response(self.status, self.headers, self.body, reason=self.reason), timeout=timeout
        )


@dataclass(frozen=True)
class Delay(Step):
    """Wait ``ms`` milliseconds in the script's thread (not scaled by the factor)."""

    ms: float

    def run(self, conn: OriginConn, timeout: float) -> None:
        conn.origin._stopped.wait(self.ms / 1000.0)  # stop() cuts it short


@dataclass(frozen=True)
class Close(Step):
    """Close the connection (FIN), after everything sent before."""

    def run(self, conn: OriginConn, timeout: float) -> None:
        conn.close()


@dataclass(frozen=True)
class Reset(Step):
    """Close with a TCP RST."""

    def run(self, conn: OriginConn, timeout: float) -> None:
        conn.reset()


@dataclass(frozen=True)
class HalfClose(Step):
    """Shut down the origin's sending side (FIN) and keep reading (TCP, Unix)."""

    def run(self, conn: OriginConn, timeout: float) -> None:
        conn.half_close()


@dataclass(frozen=True)
class PauseReading(Step):
    """Stop reading from the socket."""

    def run(self, conn: OriginConn, timeout: float) -> None:
        conn.pause_reading()


@dataclass(frozen=True)
class ResumeReading(Step):
    """Read again."""

    def run(self, conn: OriginConn, timeout: float) -> None:
        conn.resume_reading()


@dataclass(frozen=True)
class AcceptWs(Step):
    """Receive a Websocket upgrade request and answer 101 (no extension)."""

    protocol: str | None = None
    target: str | None = None

    def run(self, conn: OriginConn, timeout: float) -> None:
        req = conn.accept_ws(protocol=self.protocol, timeout=timeout)
        if self.target is not None and req.target != self.target:
            raise AssertionError(f"upgrade target {req.target!r}, expected {self.target!r}")


@dataclass(frozen=True)
class SendWs(Step):
    """Send a Websocket frame (gunpy's shapes, see ``OriginConn.ws_send``)."""

    frame: Any

    def run(self, conn: OriginConn, timeout: float) -> None:
        conn.ws_send(self.frame, timeout)


@dataclass(frozen=True)
class ExpectWs(Step):
    """Receive a Websocket frame equal to ``frame`` (gunpy's shapes; str/bytes
    stand for text/binary)."""

    frame: Any

    def run(self, conn: OriginConn, timeout: float) -> None:
        want = self.frame
        if isinstance(want, str) and want not in ("close", "ping", "pong"):
            want = ("text", want)
        elif isinstance(want, (bytes, bytearray)):
            want = ("binary", bytes(want))
        got = conn.ws_recv(timeout)
        if got != want:
            raise AssertionError(f"expected frame {_show(want)}, got {_show(got)}")


@dataclass(frozen=True)
class Call(Step):
    """Call ``fun(conn)``: anything the other steps cannot say."""

    fun: Callable[[OriginConn], Any]

    def run(self, conn: OriginConn, timeout: float) -> None:
        self.fun(conn)
