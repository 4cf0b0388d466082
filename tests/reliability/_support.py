"""Shared helpers of the reliability tests: resource accounting, owners, origins.

* ``Resources``: a snapshot of what a test could leak (connection threads,
  non-daemon threads, pykka actors, open file descriptors), and ``settle`` /
  ``leaks`` to compare after the connections' ``DOWN`` have been received.
* ``Tracker``: opens connections and monitors them, so teardown can wait for each
  connection process's ``DOWN`` (never a sleep) before counting.
* ``ForwardingOwner``: an ``OwnerActor`` that owns a connection, forwards every
  message it gets to the test thread, and dies on demand (the "owner dies" fault).
* ``ServerWs``: the server side of a Websocket on a ``gunpy.testing.OriginConn``
  (wsproto; the origin itself is ``gunpy.testing``'s ``ScriptedOrigin``).
* ``TlsAttempts``: a TLS listener that counts handshake attempts (Gun issue #192).
* ``FullAcceptQueue``: a listener whose accept queue is full (connect hangs).
* ``rss()``: the resident set size of this process, in bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Event

import gunpy
from gunpy import ANY, TIMEOUT
from gunpy.testing import OriginConn

HERE = Path(__file__).resolve().parent
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------- resources


def _fds() -> dict[int, str]:
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the directory's own fd, already closed
            continue
    return out


def _watched_threads() -> dict[int, threading.Thread]:
    """Connection actor threads and every non-daemon thread (daemon helper threads
    of the test servers are not gunpy's)."""
    return {
        t.ident or 0: t
        for t in threading.enumerate()
        if t.name.startswith("Connection-") or (not t.daemon and t is not threading.main_thread())
    }


@dataclass
class Resources:
    threads: dict[int, threading.Thread]
    actors: int
    fds: dict[int, str]

    @classmethod
    def snapshot(cls) -> Resources:
        return cls(_watched_threads(), len(pykka.ActorRegistry.get_all()), _fds())

    @property
    def conn_threads(self) -> int:
        return sum(1 for t in self.threads.values() if t.name.startswith("Connection-"))

    def describe(self) -> str:
        return f"{self.conn_threads} connection threads, {len(self.threads)} watched threads, {self.actors} actors, {len(self.fds)} fds"


def settle(before: Resources, timeout: float = 10.0) -> Resources:
    """Join the watched threads started since ``before`` (they must end on their own:
    the connections' DOWN has been received), then snapshot again."""
    deadline = time.monotonic() + timeout
    for ident, t in _watched_threads().items():
        if ident not in before.threads:
            t.join(max(0.0, deadline - time.monotonic()))
    return Resources.snapshot()


def leaks(before: Resources, after: Resources) -> list[str]:
    """What ``after`` holds that ``before`` did not (empty: nothing leaked)."""
    problems: list[str] = []
    new_threads = [t.name for i, t in after.threads.items() if i not in before.threads]
    if new_threads:
        problems.append(f"threads left running: {new_threads}")
    if after.actors > before.actors:
        names = [str(r) for r in pykka.ActorRegistry.get_all()]
        problems.append(f"pykka actors: {before.actors} -> {after.actors}: {names}")
    if len(after.fds) > len(before.fds):
        new = {fd: p for fd, p in after.fds.items() if before.fds.get(fd) != p}
        problems.append(f"open fds: {len(before.fds)} -> {len(after.fds)}; new: {new}")
    return problems


def rss() -> int:
    """This process's resident set size in bytes (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- connections


class Tracker:
    """Opens connections for a test and monitors each, for the leak check."""

    def __init__(self) -> None:
        self.conns: list[tuple[gunpy.Pid, gunpy.Ref]] = []
        self.owners: list[pykka.ActorRef[Any]] = []

    def track(self, conn: gunpy.Pid) -> gunpy.Pid:
        self.conns.append((conn, gunpy.monitor(conn)))
        return conn

    def open(self, port: int, host: str = "127.0.0.1", **opts: Any) -> gunpy.Pid:
        """``gunpy.open`` with ``retry: 0`` unless given, owned by the test thread."""
        ok, conn = gunpy.open(host, port, {"retry": 0, **opts})
        assert ok == "ok", conn
        return self.track(conn)

    def open_owned(self, port: int, host: str = "127.0.0.1", **opts: Any) -> tuple[gunpy.Pid, pykka.ActorRef[Any]]:
        """Open with a ``ForwardingOwner`` as owner (messages forwarded to the caller)."""
        ref = ForwardingOwner.start(gunpy.self())
        self.owners.append(ref)
        ok, conn = ref.ask(("$open", host, port, {"retry": 0, **opts}))
        assert ok == "ok", conn
        return self.track(conn), ref

    def finish(self, timeout: float = 10.0) -> list[str]:
        """Close what the test left open, wait for every DOWN; the problems found."""
        problems = []
        deadline = time.monotonic() + timeout
        for conn, mref in self.conns:
            if conn.is_alive():
                # Left running by the test: not a leak in itself, but it must go.
                gunpy.close(conn)
            left = max(0, int((deadline - time.monotonic()) * 1000))
            msg = gunpy.receive(("DOWN", mref, "process", conn, ANY), after=left)
            if msg is TIMEOUT:
                problems.append(f"{conn!r} did not exit")
        for ref in self.owners:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.stop(timeout=5)
        self.conns.clear()
        self.owners.clear()
        return problems


class ForwardingOwner(gunpy.OwnerActor):
    """Owns connections; forwards every message to ``to``; dies when told.

    ``ask(("$open", host, port, opts))`` opens a connection owned by this actor;
    ``tell("$die")`` makes it exit ``"boom"`` (``Exit``), ``tell("$exit")`` exit
    ``"normal"``.
    """

    def __init__(self, to: gunpy.Pid) -> None:
        super().__init__()
        self.to = to

    def on_receive(self, message: Any) -> Any:
        if type(message) is tuple and message and message[0] == "$open":
            _, host, port, opts = message
            return gunpy.open(host, port, opts)
        if message == "$die":
            raise gunpy.Exit("boom")
        if message == "$exit":
            raise gunpy.Exit("normal")
        self.to.send(message)
        return None


def of(conn: gunpy.Pid) -> Callable[[Any], bool]:
    """A receive pattern: any Gun message from ``conn``."""
    return lambda m: type(m) is tuple and len(m) > 1 and m[0] != "DOWN" and m[1] is conn


def drain(conn: gunpy.Pid) -> list[Any]:
    """Every Gun message from ``conn`` already in the mailbox, in order."""
    out = []
    while (m := gunpy.receive(of(conn), after=0)) is not TIMEOUT:
        out.append(m)
    return out


def until_down(conn: gunpy.Pid, mref: gunpy.Ref, after: int = 10000) -> tuple[list[Any], Any]:
    """Every message from ``conn`` up to its DOWN; returns (messages, exit reason)."""
    msgs: list[Any] = []
    deadline = time.monotonic() + after / 1000
    while True:
        left = max(0, int((deadline - time.monotonic()) * 1000))
        m = gunpy.receive(of(conn), ("DOWN", mref, "process", conn, ANY), after=left)
        assert m is not TIMEOUT, f"no DOWN from {conn!r} within {after} ms; got {msgs!r}"
        if m[0] == "DOWN":
            return msgs, m[4]
        msgs.append(m)


# --------------------------------------------------------------------------- origins


def head_of(req: bytes) -> dict[str, str]:
    lines = req.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}


class ServerWs:
    """The server side of a Websocket on a scripted origin connection (wsproto)."""

    def __init__(self, server: OriginConn, *, extensions: list[Any] | None = None) -> None:
        self.server = server
        self.ws = Connection(ConnectionType.SERVER, extensions=extensions or [])

    @classmethod
    def accept(
        cls, server: OriginConn, extra: bytes = b"", trailing: bytes = b"", **kw: Any
    ) -> ServerWs:
        """Read the upgrade request, answer 101 (+ ``extra`` header lines), then
        ``trailing`` bytes in the same write."""
        req = server.recv_request()
        key = head_of(req)["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        server.send(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
            b"sec-websocket-accept: " + accept + b"\r\n" + extra + b"\r\n" + trailing
        )
        return cls(server, **kw)

    def send(self, *events: Event) -> None:
        self.server.send(b"".join(self.ws.send(e) for e in events))

    def events(self, n: int = 1, timeout: float = 5000) -> list[Event]:
        """At least ``n`` events from the client (or EOF, or nothing for ``timeout`` ms)."""
        out: list[Event] = []
        while len(out) < n:
            out.extend(self.ws.events())
            if len(out) >= n:
                break
            try:
                data = self.server.recv(timeout)  # b"" once the client closed or reset
            except TimeoutError:
                data = b""
            if not data:
                break
            self.ws.receive_data(data)
        out.extend(self.ws.events())
        return out


def ws_frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    """An unmasked server frame, built by hand (for frames wsproto will not build)."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, n])
    elif n < 65536:
        head = bytes([b0, 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, 127]) + struct.pack("!Q", n)
    return head + payload


class FullAcceptQueue:
    """A listener whose accept queue is full: a new connect's SYN is dropped, so the
    client stays in ``connecting``.  ``close()`` closes the listener (later SYN
    retransmissions are answered with RST)."""

    def __init__(self) -> None:
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.fillers = []
        for _ in range(4):  # the queue holds backlog + 1
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(f)

    def close(self) -> None:
        for f in self.fillers:
            f.close()
        self.fillers = []
        self.lsock.close()

    def __enter__(self) -> FullAcceptQueue:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TlsAttempts:
    """A TLS listener that records every connection attempt and its handshake result.

    ``attempts`` holds ``(peer port, "ok" | error text)`` in arrival order; the
    server side of each handshake waits for ``gate`` (set unless cleared).  A
    *sentinel* (``sentinel()``: a plain TCP connect that is closed at once) proves
    every earlier attempt has been recorded: the accept loop is sequential.
    """

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        # Handshakes wait for this (set at once unless a test clears it first).
        self.gate = threading.Event()
        self.gate.set()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.attempts: list[tuple[int, str]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="tls-attempts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                sock, peer = self.lsock.accept()
            except OSError:
                return
            sock.settimeout(5)
            # Hold the handshake until the ClientHello is here *and* the gate is
            # open: the client's first handshake step has then surely returned.
            select.select([sock], [], [], 5)
            self.gate.wait(10)
            try:
                tls = self.ctx.wrap_socket(sock, server_side=True)
                result = "ok"
                tls.close()
            except (ssl.SSLError, OSError) as e:
                result = f"{type(e).__name__}: {e}"
                sock.close()
            with self._cond:
                self.attempts.append((peer[1], result))
                self._cond.notify_all()

    def sentinel(self, timeout: float = 5.0) -> list[tuple[int, str]]:
        """Every attempt recorded before a sentinel connect (which is excluded)."""
        s = socket.create_connection(("127.0.0.1", self.port))
        mine = s.getsockname()[1]
        s.close()
        with self._cond:
            ok = self._cond.wait_for(lambda: any(p == mine for p, _ in self.attempts), timeout)
            assert ok, "the sentinel connection was never accepted"
            i = next(i for i, (p, _) in enumerate(self.attempts) if p == mine)
            return self.attempts[:i]

    def stop(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.lsock.shutdown(socket.SHUT_RDWR)
        self.lsock.close()
        self._thread.join(10)

    def __enter__(self) -> TlsAttempts:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------- the fault server


def fault_server_argv(*args: str) -> list[str]:
    """argv of ``tests/reliability/fault_server.py`` (prints ``LISTENING <port>``)."""
    return [sys.executable, str(HERE / "fault_server.py"), *args]


class Ledger:
    """Every request's final answer, for the soak (exactly one per request).

    A request's *final answer* is the message that ends it: a ``gun_response`` with
    ``fin``, a ``gun_data`` with ``fin``, ``gun_trailers``, or a 4-tuple ``gun_error``.
    A request listed in a ``gun_down`` (or still open at its connection's ``DOWN``)
    with no final answer is *ended by the down*.  Ended requests are remembered for
    two ``rotate()`` periods (the soak rotates every 30 s), long enough to catch a
    second answer or a late message; memory stays bounded over a long run.
    """

    def __init__(self) -> None:
        self.open: dict[Any, Any] = {}  # ref -> conn
        self._done: dict[Any, str] = {}  # ref -> tag of its final answer
        self._old: dict[Any, str] = {}
        self.twice: list[Any] = []  # (ref, first, second)
        self.late: list[Any] = []  # messages for an already ended ref (first 100)
        self.late_count = 0
        self.killed_completed: list[Any] = []  # gun_down lists a completed ref
        self.ended_by_down = 0

    def rotate(self) -> None:
        self._old = self._done
        self._done = {}

    def _ended(self, ref: Any) -> str | None:
        return self._done.get(ref) or self._old.get(ref)

    def start(self, conn: Any, ref: Any) -> None:
        self.open[ref] = conn

    def _end(self, ref: Any, tag: str) -> None:
        del self.open[ref]
        self._done[ref] = tag

    def _late(self, msg: Any) -> None:
        self.late_count += 1
        if len(self.late) < 100:
            self.late.append(msg[:4])

    def on_message(self, msg: Any) -> Any:
        """Account ``msg``: the ref it ended, a list of refs (gun_down), or None."""
        tag = msg[0]
        if tag == "gun_down":
            ended = []
            for ref in msg[4]:
                prev = self._ended(ref)
                if prev is not None and prev != "gun_error":
                    self.killed_completed.append((ref, prev, msg[3]))
                if ref in self.open:
                    self._end(ref, "gun_down")
                    self.ended_by_down += 1
                    ended.append(ref)
            return ended
        if len(msg) < 4:
            return None
        ref = msg[2]
        final = (
            (tag == "gun_response" and msg[3] == "fin")
            or (tag == "gun_data" and msg[3] == "fin")
            or tag == "gun_trailers"
            or (tag == "gun_error" and len(msg) == 4)
        )
        if ref not in self.open:
            prev = self._ended(ref)
            if prev is not None:
                self._late(msg)
                if final:
                    self.twice.append((ref, prev, tag))
            return None
        if final:
            self._end(ref, tag)
            return ref
        return None

    def on_exit(self, conn: Any, reason: Any) -> list[Any]:
        """The connection process ended: its requests still open end with the DOWN."""
        ended = [r for r, c in self.open.items() if c is conn]
        for r in ended:
            self._end(r, "DOWN")
            self.ended_by_down += 1
        return ended
