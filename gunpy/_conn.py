"""The connection actor: Gun's ``gen_statem``, one pykka actor per connection.

Theory of operation
-------------------
The actor owns the socket, the protocol handler, the timers and the queue of
requests made while not connected.  Users never call it directly: ``gunpy``'s API
functions *cast* tuples to its Pid (``("$request", ...)``) and return at once, as
Gun's do; the few synchronous calls (``info``, ``stream_info``) send a ``("$call",
...)`` and wait for the ``("$reply", ...)`` with a monitor, like ``gen_statem:call``.

States (Gun's names): ``not_connected`` (between attempts), ``domain_lookup``,
``connecting``, ``tls_handshake``, ``connected`` (shown by ``info`` as
``connected_ws_only`` / ``connected_data_only`` for Websocket and raw, as Gun does),
and ``closing`` (a graceful close in progress).

**It reads its own socket.**  The actor's inbox (``ConnInbox``) is a ``Mailbox``
whose ``get()`` -- which pykka's loop calls -- returns queued messages first and,
when there are none, waits in ``poll()`` on the socket, a wake-up eventfd (written
by ``put`` only while the actor is blocked) and the earliest timer.  Socket
readiness and timer expiries come back as internal messages.  So there is no
reader thread and no polling loop, and flow control is just "stop polling the
socket for input" (Gun's ``{active, once}`` not re-armed: TCP pushes back).
ARCHITECTURE section 3 has the measurements behind this choice.

**Its code runs where it is cheapest.**  The actor is a process, not a thread: the
inbox's token (``ConnInbox._token``) is held by whoever runs the actor's code, and
the actor's thread gives it up only while it sleeps in ``poll()``.  A cast that
finds the actor asleep with an empty inbox -- Websocket data frames, HTTP/1.1
requests and body data (``inline_ok``) -- takes the token and is carried out on the
caller's thread (``_inline``), as an Erlang process runs on whichever scheduler
thread is free: the bytes are written before ``ws_send`` returns, and the actor's
thread is not woken for it (half the thread hops of a ping-pong).  Order holds,
since only an empty inbox lets a cast skip it, and so does ownership: one token,
one runner.  What a caller's thread must not do -- wait for a full socket, report
an error, run timers, call a ``reply_to`` function -- it hands to the actor's
thread (``$run``, or a wake-up to write the rest).

Handlers return commands (``gunpy._commands``) that ``_run`` carries out in order:
consecutive ``Send``s become one write and consecutive deliveries to one process
one mailbox operation.

Retries follow Gun (gun-reference 4.1): every attempt failure consumes one retry;
the first retry after a start or a loss is immediate, later ones wait
``retry_timeout`` (or what ``retry_fun`` says); when none is left the actor exits
with ``("shutdown", reason)`` (``"normal"`` after a normal close).  Unlike Gun, the
retry budget is restored after a loss only if the connection had made progress
(a response, an upgrade, a data message) or stayed up for ``retry_timeout``:
Gun's reset-on-every-connect lets a server that accepts and closes drive an
endless, unthrottled reconnect storm (gun-reference 7).

Tunnels (gun-reference 4.11, 4.12).  A handler's ``Tunnel`` command (an HTTP/1.1
proxy's 2xx to a CONNECT, a SOCKS proxy's reply) makes the whole connection a
tunnel: the proxy goes into ``intermediaries``, the destination becomes the
origin (``ctx``), the CONNECT's ref becomes ``base_ref`` (the refs of requests
through it must start with it: ``_tunnel_check``), then either a TLS handshake
runs inside the tunnel (state ``tls_handshake``: ``ssl`` wraps the socket when
nothing else encrypts it, else a ``TlsLayer`` on memory BIOs sits above the TLS
below: ``layers``, TLS over TLS) or the protocol inside is installed at once, and
``gun_tunnel_up`` goes to the CONNECT's reply target (the owner for SOCKS).
User operations wait in ``queue`` meanwhile, and while a SOCKS handshake runs
(``no_input``).  HTTP/2 proxies keep their tunnels per stream (the handler's
business, ``protocols/tunnel.py``).  A disconnect forgets every tunnel: the
origin is the first hop again, as in Gun.

Event handlers (gun-reference 4.14, ``gunpy.events``).  With an ``event_handler``
the actor calls the connection-level callbacks itself (``init``, the lookup,
connect and TLS steps, ``origin_changed``, ``protocol_changed``, ``disconnect``,
``terminate``) and carries out the handlers' ``Event`` commands in order with
their deliveries; the handlers build them only when ``ctx.events`` is set.
Without one, ``self.ev`` is None and nothing is built or called.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pykka
from pykka._envelope import Envelope

from . import _options
from ._commands import (
    CancelTimer,
    Close,
    Closing,
    Command,
    Deliver,
    Event,
    Send,
    SetActive,
    StartTimer,
    SwitchProtocol,
    Tunnel,
)
from ._process import FunPid, Mailbox, Pid, _set_self, as_pid, demonitor, monitor
from ._tls import TlsLayer as _TlsLayer
from ._tls import errno_reason as errno_reason
from ._tls import negotiated
from ._tls import tls_read as _tls_read
from ._tls import tls_reason as tls_reason
from .events import _Dispatcher
from .protocols import handler_class
from .protocols.base import BADSTATE_NOT_A_TUNNEL, HandlerContext, stream_op

log = logging.getLogger("gunpy")

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLERR = select.POLLERR | select.POLLHUP | select.POLLNVAL

_RECV_SIZE = 65536  # >= 128 KiB costs a fresh mmap per recv (ARCHITECTURE 8)

# Reused receive buffers, shared by every connection actor.  ``sock.recv(65536)``
# mallocs 64 KiB and shrinks it in place to what arrived: with hundreds of actor
# threads the small survivors (bodies waiting in an owner's mailbox) pin glibc's
# heaps, every new 64 KiB block comes from the top, and the free space between
# them is never given back (the soak's RSS grew ~1.5 MiB/s, all of it free
# malloc memory).  ``recv_into`` a reused buffer and one exact-size copy
# allocate only what arrived.  A buffer is taken for one call (list.pop/append
# are atomic under the GIL), so the pool holds as many buffers as recvs ever ran
# at once (a handful), not one per connection.
_recv_bufs: list[bytearray] = []


def _recv(sock: socket.socket, size: int = _RECV_SIZE) -> bytes:
    """``sock.recv(size)`` without the 64 KiB allocation per call."""
    if size > _RECV_SIZE and type(sock) is not ssl.SSLSocket:
        # (TLS reads return one record, 16 KiB at most, whatever is asked: a
        # 1 MiB allocation per read there only cost time, measured 2x on a
        # 64 MiB download.)
        # The rest of a long body or frame (the handler's recv_size): written by
        # the kernel directly into a block of its own, shrunk to what arrived (a
        # copy out of a reused 1 MiB buffer would cost a memcpy per MiB, and a
        # pool of such buffers would keep them all).  A block this big is
        # normally mmap'd by glibc, so it does not pin the heap either.
        return sock.recv(size)
    try:
        buf = _recv_bufs.pop()
    except IndexError:
        buf = bytearray(_RECV_SIZE)
    try:
        n = sock.recv_into(buf, _RECV_SIZE)
        with memoryview(buf) as view:
            return view[:n].tobytes()
    finally:
        _recv_bufs.append(buf)


# User operations (casts), queued while not connected.
_OPS = frozenset(
    {
        "$request",
        "$data",
        "$ws_send",
        "$update_flow",
        "$cancel",
        "$ws_upgrade",
        "$ping",
        "$connect",
    }
)
# The operations that open a stream (their ref says which tunnel they go through).
_NEW_STREAM_OPS = frozenset({"$request", "$ws_upgrade", "$connect"})

BADSTATE_TUNNEL_REQUIRED = (
    "This connection goes through a CONNECT tunnel: pass the CONNECT's stream "
    "reference in the tunnel option."
)

# Messages whose delivery shows the connection made progress (reconnect-storm guard).
_PROGRESS_TAGS = frozenset({"gun_response", "gun_upgrade", "gun_data", "gun_ws", "gun_inform"})

# One small pool for DNS lookups: getaddrinfo blocks and cannot be cancelled, and
# domain_lookup_timeout must still fire while it runs.
_dns_pool: ThreadPoolExecutor | None = None


def _lookup_pool() -> ThreadPoolExecutor:
    global _dns_pool
    if _dns_pool is None:
        _dns_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gunpy-dns")
    return _dns_pool


# ---------------------------------------------------------------------------
# The inbox that also waits on the socket and the timers


_SOCK = "$sock"
_TIMER = "$timer"


class ConnInbox(Mailbox):
    """A Mailbox whose ``get`` also waits on a socket and named timers (see module doc)."""

    __slots__ = (
        "_blocked",
        "_efd",
        "_flush",
        "_inline",
        "_poll",
        "_ready",
        "_sock_events",
        "_sock_fd",
        "_timers",
        "_token",
        "_wfd",
    )

    def __init__(self) -> None:
        super().__init__()
        self._poll = select.poll()
        if hasattr(os, "eventfd"):
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._wfd = self._efd
        else:  # pragma: no cover - non-Linux
            self._efd, self._wfd = os.pipe()
            os.set_blocking(self._efd, False)
            os.set_blocking(self._wfd, False)
        self._poll.register(self._efd, _POLLIN)
        self._blocked = False
        self._sock_fd = -1
        self._sock_events = 0
        self._ready = False  # data known to be readable without polling (TLS pending)
        self._timers: dict[str, float] = {}
        # The actor's corked output: written once no message is left to handle.
        self._flush: Callable[[], bool] | None = None
        # Held by the actor's thread except while it sleeps in poll(): whoever holds
        # it may run the actor's code (see Connection._inline).
        self._token = threading.Lock()
        self._inline: Callable[[tuple[Any, ...]], bool] | None = None

    def _wake(self) -> None:
        # Called with the lock held (Mailbox.put): the fd cannot be closed meanwhile.
        if self._blocked:
            self._blocked = False
            try:
                os.write(self._wfd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass

    # -- actor side ----------------------------------------------------------
    def watch(self, fd: int, events: int) -> None:
        """Poll ``fd`` for ``events`` (0: not at all).  Only one socket at a time."""
        if fd != self._sock_fd:
            if self._sock_fd >= 0:
                try:
                    self._poll.unregister(self._sock_fd)
                except (KeyError, ValueError, OSError):
                    pass
            self._sock_fd = fd
            self._sock_events = 0
            if fd >= 0:
                self._poll.register(fd, events)
                self._sock_events = events
            return
        if fd >= 0 and events != self._sock_events:
            self._poll.modify(fd, events)
            self._sock_events = events

    def unwatch(self) -> None:
        self.watch(-1, 0)
        self._ready = False

    def set_ready(self) -> None:
        self._ready = True

    def start_timer(self, name: str, ms: float) -> None:
        self._timers[name] = time.monotonic() + ms / 1000.0

    def cancel_timer(self, name: str) -> None:
        self._timers.pop(name, None)

    def has_timer(self, name: str) -> bool:
        return name in self._timers

    def take_all(self) -> list[Any]:
        """Remove and return every queued message (Envelopes unwrapped)."""
        with self._cond:
            msgs = [m.message if type(m) is Envelope else m for m in self._msgs.values()]
            self._msgs.clear()
            self._index.clear()
            return msgs

    def block_unless_queued(self, msg: Any) -> bool:
        """True if ``msg`` is queued; else mark the actor blocked (``put`` then writes
        the eventfd) until ``unblock``.  For waits outside ``get`` (a blocked send)."""
        with self._cond:
            for m in self._msgs.values():
                if (m.message if type(m) is Envelope else m) == msg:
                    return True
            self._blocked = True
            return False

    def unblock(self) -> None:
        with self._cond:
            self._blocked = False

    def close_fds(self) -> None:
        with self._cond:
            self._blocked = False
            for fd in {self._efd, self._wfd}:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._efd = self._wfd = -1

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        # pykka calls get() outside its try block: it must never raise.
        try:
            return self._get()
        except BaseException as e:  # pragma: no cover - defensive
            return Envelope(("$inbox_error", e))

    def _get(self) -> Any:
        cond = self._cond
        while True:
            with cond:
                if self._msgs:
                    msg = self._take(next(iter(self._msgs)))
                    return msg if type(msg) is Envelope else Envelope(msg)
            flush = self._flush
            if flush is not None and flush():
                # Writing failed and ended the connection: let pykka's loop look.
                return Envelope(("$noop",))
            with cond:
                if self._msgs:
                    continue
                if self._ready and self._sock_events & _POLLIN:
                    self._ready = False
                    return Envelope((_SOCK, _POLLIN))
                wait_ms = -1
                if self._timers:
                    name = min(self._timers, key=self._timers.__getitem__)
                    left = self._timers[name] - time.monotonic()
                    if left <= 0:
                        del self._timers[name]
                        return Envelope((_TIMER, name))
                    wait_ms = max(1, int(left * 1000 + 0.999))
                self._blocked = True
            token = self._token
            token.release()
            try:
                events = self._poll.poll(wait_ms)
            finally:
                self._blocked = False
                token.acquire()
            sock_ev = 0
            for fd, ev in events:
                if fd == self._efd:
                    try:
                        os.read(self._efd, 8)
                    except OSError:
                        pass
                elif fd == self._sock_fd:
                    sock_ev = ev
            if sock_ev:
                with cond:
                    if not self._msgs:
                        return Envelope((_SOCK, sock_ev))
                    # Messages first (ARCHITECTURE 3); poll is level-triggered, so
                    # the socket's readiness is seen again on the next get().


# ---------------------------------------------------------------------------
# The actor


class Connection(pykka.ThreadingActor):
    """One Gun connection.  Created by ``gunpy.open``/``open_unix``; see the module doc."""

    # Slots: the actor reads its attributes on every message, and CPython 3.11
    # reads from an instance __dict__ of 30 or more keys slower (see
    # tests/unit/test_handler_slots.py).  pykka's own attributes stay in __dict__.
    __slots__ = (
        "_inbox",
        "addrs",
        "attempt",
        "base_ref",
        "closing_reason",
        "ctx",
        "ev",
        "exit_reason",
        "first_retry",
        "handler",
        "host",
        "intermediaries",
        "last_reason",
        "layers",
        "lookup_info",
        "no_input",
        "opts",
        "out",
        "out_len",
        "owner",
        "owner_mref",
        "pid",
        "port",
        "progressed",
        "protocol",
        "queue",
        "retries",
        "reupgrade_op",
        "reupgrade_pending",
        "rt_by_name",
        "rt_by_ref",
        "rt_count",
        "send_timeout",
        "shutdown_reason",
        "sock",
        "state",
        "term_state",
        "transport",
        "tunnel",
        "tunnel_layer",
        "tunnel_refs",
        "unix_path",
        "up_at",
    )

    def __init__(
        self,
        pid: Pid,
        inbox: ConnInbox,
        owner: Pid,
        host: str,
        port: int,
        opts: dict[str, Any],
        unix_path: str | None = None,
    ) -> None:
        self._inbox = inbox
        super().__init__()
        self.pid = pid
        self.owner = owner
        self.host = host
        self.port = port
        self.unix_path = unix_path
        self.opts = opts
        self.transport = "unix" if unix_path is not None else opts["transport"]
        self.state = "not_connected"
        self.sock: socket.socket | None = None
        self.out: list[bytes | bytearray] = []  # corked output, see _run
        # Request option timeout (gunpy addition, Gun #317): timer name <-> ref.
        self.rt_by_ref: dict[Any, str] = {}
        self.rt_by_name: dict[str, tuple[Any, Any]] = {}
        self.rt_count = 0
        self.out_len = 0
        self.handler: Any = None
        self.protocol: str | None = None
        self.no_input = False  # the handler takes no user operation yet (SOCKS)
        # Tunnels (Gun 4.11, 4.12): the proxies passed, in order, as info() lists
        # them; per intermediary the CONNECT's (ref, reply_to), None for SOCKS; the
        # last HTTP/1.1 CONNECT's ref (tunnelled refs start with it); the TLS
        # sessions inside tunnels, innermost last (TLS over TLS: _TlsLayer); the
        # tunnel waiting for its TLS handshake, and that handshake's layer.
        self.intermediaries: list[dict[str, Any]] = []
        self.tunnel_refs: list[tuple[Any, Any] | None] = []
        self.base_ref: Any = None
        self.layers: list[_TlsLayer] = []
        self.tunnel: Tunnel | None = None
        self.tunnel_layer: _TlsLayer | None = None
        self.queue: list[tuple[Any, ...]] = []
        self.retries = opts["retry"]
        self.first_retry = True
        self.attempt = 0
        self.addrs: list[tuple[Any, ...]] = []
        self.last_reason: Any = None
        self.shutdown_reason: Any = None  # set once the connection must not come back
        self.closing_reason: str | None = None  # why we close: "shutdown" / "owner_down"
        self.exit_reason: Any = "normal"
        self.term_state: str | None = None
        self.up_at = 0.0
        self.progressed = False
        self.owner_mref: Any = None
        # ws_opts "reupgrade" (gunpy addition): upgrades sent with it, by ref, and
        # the one that became this connection's Websocket.
        self.reupgrade_pending: dict[Any, tuple[Any, ...]] = {}
        self.reupgrade_op: tuple[Any, ...] | None = None
        self.send_timeout: float | None = _options_seconds(opts["tcp_opts"]["send_timeout"])
        self.ctx = HandlerContext(
            conn=pid,
            owner=owner,
            origin_scheme="https" if self.transport == "tls" else "http",
            origin_host="localhost" if unix_path is not None else host,
            origin_port=port,
            transport=self.transport,
            opts=opts,
        )
        # event_handler (Gun 4.14, gunpy.events): None costs nothing anywhere.
        eh = opts.get("event_handler")
        self.ev: _Dispatcher | None = _Dispatcher(eh[0], eh[1]) if eh is not None else None
        self.ctx.events = self.ev is not None
        self.lookup_info: dict[str, Any] | None = None

    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        return self._inbox

    # -- pykka hooks --------------------------------------------------------
    def _actor_loop(self) -> None:
        _set_self(self.pid)
        self._inbox._token.acquire()  # kept when the loop ends: no inline after
        try:
            super()._actor_loop()
        finally:
            if self.owner_mref is not None:
                # Erlang drops the monitors a process holds when it dies; without
                # this a long-lived owner keeps every connection it ever opened.
                demonitor(self.owner_mref)
                self.owner_mref = None
            self._close_socket()
            self._inbox.close_fds()
            self.pid._exit(self.exit_reason)

    def _handle_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # A bug in gunpy: never silent.  The owner learns through its monitor.
        self.exit_reason = ("exception", exception_value)
        super()._handle_failure(exception_type, exception_value, traceback)

    def on_start(self) -> None:
        self._inbox._flush = self._flush_hook
        self._inbox._inline = self._inline
        self.owner_mref = monitor(self.owner)
        if self.ev is not None:
            ctx = self.ctx
            self.ev.emit(
                "init",
                {
                    "owner": self.owner,
                    "transport": "tcp" if ctx.transport == "unix" else ctx.transport,
                    "origin_scheme": ctx.origin_scheme,
                    "origin_host": ctx.origin_host,
                    "origin_port": ctx.origin_port,
                    "opts": self.opts,
                },
            )
        self._attempt()

    def on_receive(self, message: Any) -> Any:
        tag = message[0]
        if tag == _SOCK:
            self._on_socket(message[1])
        elif tag in _OPS:
            if tag == "$request" and message[7].get("timeout"):
                self._start_request_timer(message[1], message[2], message[7]["timeout"])
            self._op(message)
        elif tag == _TIMER:
            self._on_timer(message[1])
        elif tag == "$lookup":
            self._on_lookup(message[1], message[2])
        elif tag == "DOWN":
            self._on_down(message)
        elif tag == "$call":
            self._on_call(message)
        elif tag == "$shutdown":
            self._shutdown("shutdown")
        elif tag == "$close":
            self._exit("shutdown")
        elif tag == "$set_owner":
            self._set_owner(message[1], message[2])
        elif tag == "$run":
            self._run(message[1])  # an inlined operation's commands (_inline)
        elif tag == "$inline_crash":
            raise message[1]  # an inlined operation raised: fail as if we had
        elif tag == "$inbox_error":  # pragma: no cover - defensive
            log.error("gunpy connection inbox failed: %r", message[1])
            self._exit(("error", ("inbox", repr(message[1]))))
        return None

    # -- connecting ----------------------------------------------------------
    def _attempt(self) -> None:
        """Start one connection attempt: lookup, connect, TLS, then up."""
        self.attempt += 1
        self.state = "domain_lookup"
        if self.ev is not None:
            self.ev.emit("domain_lookup_start", self._lookup_event())
        if self.unix_path is not None:
            self.addrs = [(socket.AF_UNIX, self.unix_path)]
            self._lookup_done()
            self._connect_start()
            return
        try:
            ip = ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            ip = None
        if ip is not None:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            self.addrs = [(family, (str(ip), self.port))]
            self._lookup_done()
            self._connect_start()
            return
        timeout = self.opts["domain_lookup_timeout"]
        if timeout != "infinity":
            self._inbox.start_timer("lookup", timeout)
        attempt = self.attempt
        family = socket.AF_INET6 if self.opts["tcp_opts"].get("inet6") else socket.AF_INET
        fut = _lookup_pool().submit(
            socket.getaddrinfo, self.host, self.port, family, socket.SOCK_STREAM
        )
        pid = self.pid
        fut.add_done_callback(lambda f: pid.send(("$lookup", attempt, f)))

    def _on_lookup(self, attempt: int, fut: Future[Any]) -> None:
        if attempt != self.attempt or self.state != "domain_lookup":
            return  # a lookup that timed out earlier
        self._inbox.cancel_timer("lookup")
        try:
            infos = fut.result()
        except socket.gaierror as e:
            reason = "nxdomain" if e.errno in (socket.EAI_NONAME, socket.EAI_NODATA) else (
                "gaierror",
                str(e),
            )
            self._attempt_failed(reason)
            return
        except Exception as e:  # pragma: no cover - defensive
            self._attempt_failed(errno_reason(e))
            return
        self.addrs = [(fam, sa[:2]) for fam, _, _, _, sa in infos]
        if not self.addrs:
            self._attempt_failed("nxdomain")
            return
        self._lookup_done()
        self._connect_start()

    # Events (Gun 4.14): the maps of gun_event's domain_lookup/connect/tls types.
    def _lookup_event(self) -> dict[str, Any]:
        timeout = self.opts["domain_lookup_timeout"]
        return {
            "host": self.unix_path if self.unix_path is not None else self.host,
            "port": self.port,
            "tcp_opts": self.opts["tcp_opts"],
            "timeout": timeout,
        }

    def _lookup_done(self) -> None:
        if self.ev is None:
            return
        self.lookup_info = {
            "ip_addresses": [a[1] if a[0] == socket.AF_UNIX else a[1][0] for a in self.addrs],
            "port": self.port,
            "tcp_opts": self.opts["tcp_opts"],
        }
        ev = self._lookup_event()
        ev["lookup_info"] = self.lookup_info
        self.ev.emit("domain_lookup_end", ev)

    def _connect_event(self) -> dict[str, Any]:
        return {"lookup_info": self.lookup_info, "timeout": self.opts["connect_timeout"]}

    def _tls_event(self) -> dict[str, Any]:
        return {
            "socket": self.sock,
            "tls_opts": self.opts["tls_opts"],
            "timeout": self.opts["tls_handshake_timeout"],
        }

    def _attempt_failed_event(self, reason: Any) -> None:
        """The ``*_end`` event of the step that failed, with its ``error``."""
        assert self.ev is not None
        state = self.state
        if state == "domain_lookup":
            ev = self._lookup_event()
            name = "domain_lookup_end"
        elif state == "connecting":
            ev = self._connect_event()
            name = "connect_end"
        elif state == "tls_handshake":
            ev = self._tls_event()
            name = "tls_handshake_end"
        else:
            return
        ev["error"] = reason
        self.ev.emit(name, ev)

    def _connect_start(self) -> None:
        self.state = "connecting"
        if self.ev is not None:
            self.ev.emit("connect_start", self._connect_event())
        timeout = self.opts["connect_timeout"]
        if timeout != "infinity":
            # One deadline for every address in turn, as Gun's connect_timeout.
            self._inbox.start_timer("connect", timeout)
        self._connect_next(None)

    def _connect_next(self, last_error: Any) -> None:
        while self.addrs:
            family, addr = self.addrs.pop(0)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                err = sock.connect_ex(addr)
            except OSError as e:
                sock.close()
                last_error = errno_reason(e)
                continue
            if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
                sock.close()
                last_error = errno.errorcode.get(err, str(err)).lower()
                continue
            self.sock = sock
            self._inbox.watch(sock.fileno(), _POLLOUT)
            return
        self._attempt_failed(last_error or "econnrefused")

    def _on_connected_tcp(self) -> None:
        sock = self.sock
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._close_socket()
            self._connect_next(errno.errorcode.get(err, str(err)).lower())
            return
        self._inbox.cancel_timer("connect")
        tcp = self.opts["tcp_opts"]
        if sock.family != socket.AF_UNIX and tcp.get("nodelay", True):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if "sndbuf" in tcp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, tcp["sndbuf"])
        if "recbuf" in tcp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, tcp["recbuf"])
        if self.ev is not None:
            ev = self._connect_event()
            ev["socket"] = sock
            if self.transport != "tls":
                # Gun: the protocol is known here only without TLS (no ALPN).
                ev["protocol"] = _options.protocol_names(self.opts)[0]
            self.ev.emit("connect_end", ev)
        if self.transport == "tls":
            self._tls_start()
        else:
            self._up(None)

    def _tls_start(self) -> None:
        from ._tls import client_context, server_hostname

        self.state = "tls_handshake"
        if self.ev is not None:
            self.ev.emit("tls_handshake_start", self._tls_event())
        try:
            ctx = client_context(self.opts["tls_opts"], _options.protocol_names(self.opts))
        except (ssl.SSLError, OSError, ValueError) as e:
            self._attempt_failed(("tls_opts", str(e)))
            return
        assert self.sock is not None
        try:
            self.sock = ctx.wrap_socket(
                self.sock,
                server_hostname=server_hostname(self.host, self.opts["tls_opts"]),
                do_handshake_on_connect=False,
            )
        except (ssl.SSLError, OSError, ValueError) as e:
            self._attempt_failed(tls_reason(e))
            return
        timeout = self.opts["tls_handshake_timeout"]
        if timeout != "infinity":
            self._inbox.start_timer("tls", timeout)
        self._tls_step()

    def _tls_step(self) -> None:
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._inbox.watch(sock.fileno(), _POLLIN)
            return
        except ssl.SSLWantWriteError:
            self._inbox.watch(sock.fileno(), _POLLOUT)
            return
        except ssl.SSLCertVerificationError as e:
            if self.tunnel is not None:
                self._tunnel_failed(tls_reason(e))
                return
            # A bad certificate will not fix itself in retry_timeout: retrying
            # would only hammer the server (Gun issue #192).  Stop now.
            self.retries = 0
            self._attempt_failed(tls_reason(e))
            return
        except (ssl.SSLError, OSError) as e:
            if self.tunnel is not None:
                self._tunnel_failed(tls_reason(e))
                return
            self._attempt_failed(tls_reason(e))
            return
        self._inbox.cancel_timer("tls")
        alpn = sock.selected_alpn_protocol()
        if self.tunnel is not None:
            proto = _negotiated(alpn, self.tunnel.destination)
            if self.ev is not None:
                self._tunnel_tls_end({"protocol": proto})
            self._tunnel_up(proto, b"")
            return
        if self.ev is not None:
            ev = self._tls_event()
            ev["protocol"] = self._up_protocol(alpn)
            self.ev.emit("tls_handshake_end", ev)
        self._up(alpn)

    def _up_protocol(self, alpn: str | None) -> str:
        names = _options.protocol_names(self.opts)
        if self.transport == "tls" and ("http" in names or "http2" in names):
            # Gun 3.1: over TLS, ALPN decides; no (or another) answer means HTTP/1.1.
            return "http2" if alpn == "h2" and "http2" in names else "http"
        # Over TCP there is no negotiation: exactly one protocol (prior knowledge).
        return names[0]

    def _up(self, alpn: str | None) -> None:
        proto = self._up_protocol(alpn)
        cls = handler_class(proto)
        self.handler = cls(self.ctx, _options.protocol_opts(self.opts, proto))
        self.protocol = proto
        self.no_input = cls.no_input
        self.state = "connected"
        self.up_at = time.monotonic()
        self.progressed = False
        assert self.sock is not None
        self._inbox.watch(self.sock.fileno(), _POLLIN)
        self.owner.send(("gun_up", self.pid, proto))
        self._run(self.handler.init())
        self._arm_keepalive()
        self._sync_active()
        # Requests made while not connected are sent now, in order (Gun postpones them).
        queued, self.queue = self.queue, []
        for op in queued:
            if self.state == "not_connected" or self.state == "domain_lookup":
                self.queue.append(op)
            else:
                self._op(op)

    def _attempt_failed(self, reason: Any) -> None:
        if self.ev is not None:
            self._attempt_failed_event(reason)
        self._inbox.cancel_timer("connect")
        self._inbox.cancel_timer("lookup")
        self._inbox.cancel_timer("tls")
        self._close_socket()
        self.state = "not_connected"
        self.last_reason = reason
        self._retry(reason)

    def _retry(self, reason: Any) -> None:
        if self.shutdown_reason is not None:
            self._exit(self.shutdown_reason)
            return
        if self.retries <= 0:
            self._exit("normal" if reason == "normal" else ("shutdown", reason))
            return
        retry_fun: Callable[[int, dict[str, Any]], dict[str, Any]] | None = self.opts.get("retry_fun")
        if retry_fun is not None:
            try:
                r = retry_fun(self.retries, self.opts)
                left = int(r["retries"])
                timeout = int(r["timeout"])
            except Exception as e:
                log.exception("retry_fun failed")
                self._exit(("shutdown", ("retry_fun", repr(e))))
                return
        else:
            left = self.retries - 1
            timeout = self.opts["retry_timeout"]
        self.retries = left
        if self.first_retry:
            # Gun: the first retry after a start or a loss is immediate (Gun #70).
            self.first_retry = False
            timeout = 0
        self._inbox.start_timer("retry", timeout)

    # -- connected -----------------------------------------------------------
    def _on_socket(self, events: int) -> None:
        state = self.state
        if state == "connecting":
            if events & (_POLLOUT | _POLLERR):
                self._on_connected_tcp()
            return
        if state == "tls_handshake":
            if self.tunnel_layer is not None:
                self._tunnel_layer_read()
            else:
                self._tls_step()
            return
        if self.handler is None or self.sock is None:
            return
        sock = self.sock
        try:
            data = _recv(sock, self.handler.recv_size())
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except ssl.SSLWantWriteError:  # pragma: no cover - renegotiation
            return
        except ssl.SSLError as e:
            self._disconnect(tls_reason(e))
            return
        except OSError as e:
            self._disconnect(("error", errno_reason(e)))
            return
        if data and self.layers:
            # TLS inside a tunnel: what the innermost session decrypted.
            try:
                plain = self._unwrap(data, len(self.layers))
            except ssl.SSLError as e:
                self._disconnect(("error", tls_reason(e)))
                return
            if plain is None:
                data = b""  # the TLS peer inside the tunnel closed (close_notify)
            elif not plain:
                if type(sock) is ssl.SSLSocket and self.sock is sock and sock.pending():
                    self._inbox.set_ready()
                return
            else:
                data = plain
        if data:
            self._run(self.handler.handle(data))
            if type(sock) is ssl.SSLSocket and self.sock is sock and sock.pending():
                self._inbox.set_ready()
        else:
            if self.handler is not None:
                self._run(self.handler.handle_eof())
            if self.handler is not None and self.sock is sock:
                # A handler that did not end the connection on EOF: Gun's reason.
                self._disconnect("closed")

    def _op(self, op: tuple[Any, ...]) -> None:
        """A user operation (cast).  Queued while not connected, as Gun postpones it."""
        state = self.state
        if state == "connected" and not self.no_input:
            self._dispatch(op)
            return
        tag = op[0]
        if state == "closing":
            if tag in _NEW_STREAM_OPS:
                if self.opts["retry"] == 0 or self.shutdown_reason is not None:
                    # Gun: "closing" when the connection will not come back.
                    op[2].send(("gun_error", self.pid, op[1], "closing"))
                    return
                self.queue.append(op)
                return
            self._dispatch(op)
            return
        if tag == "$cancel":
            for i, q in enumerate(self.queue):
                if q[0] in _NEW_STREAM_OPS and q[1] is op[1]:
                    del self.queue[i]  # never sent: nothing to cancel on the wire
                    return
        # Gun postpones every cast while not connected; they run in order once up
        # (an update_flow for a queued request must not be lost).
        self.queue.append(op)

    def _inline(self, op: tuple[Any, ...]) -> bool:
        """Carry out user operation ``op`` now, on the caller's thread, if the actor
        is asleep in ``poll()`` with nothing else to do; False: cast it as usual.

        Why: a cast wakes the actor's thread (eventfd, then a context switch and the
        GIL) only for it to encode a frame or a request and write it: half of a
        ping-pong round trip's thread hops.  The actor is a process, not a thread,
        as an Erlang process runs on whichever scheduler thread is free: holding
        the inbox's token (``ConnInbox._token``; the actor's thread holds it except
        while it sleeps in ``poll()``) makes the caller the actor for the length of
        the operation, so no two threads ever run its code or touch its socket at
        once, and order is kept: only an empty inbox lets an operation skip it.

        Only operations whose handler says so (``inline_ok``: plain Websocket data
        frames, HTTP/1.1 requests and body data) on a connected socket with nothing
        corked, no TLS layer of ours, no event handler and no request timer.  The
        caller runs the handler and writes what it returns with one non-blocking
        ``send``; what the socket does not take, an error, and any command but
        ``Send``/``Deliver`` go to the actor's thread (it is woken or sent the
        commands), which carries them out as if it had done the rest itself.
        """
        inbox = self._inbox
        token = inbox._token
        if not token.acquire(False):
            return False
        try:
            h = self.handler
            if (
                inbox._msgs
                or self.state != "connected"
                or self.sock is None
                or self.no_input
                or self.out
                or self.layers
                or self.ev is not None
                or self.rt_by_ref
                or (op[0] == "$request" and op[7].get("timeout"))
                or h is None
                or not h.inline_ok(op)
            ):
                return False
            try:
                cmds = self._op_cmds(op)
            except Exception as e:
                # The actor fails as if its own thread had raised (_handle_failure).
                inbox.put(("$inline_crash", e))
                return True
            if not cmds:
                return True
            data: bytes | bytearray | None = None
            for i, c in enumerate(cmds):
                if isinstance(c, Send):
                    data = c.data if data is None else data + c.data
                elif isinstance(c, Deliver) and type(c.to) is not FunPid:
                    c.to.send(c.msg)
                    if not self.progressed and c.msg[0] in _PROGRESS_TAGS:
                        self.progressed = True
                else:
                    # Not for a caller's thread (a reply_to function runs in the
                    # connection's, as in Gun): the actor runs them, next and in order.
                    if data is not None:
                        self.out.append(data)
                        self.out_len += len(data)
                    inbox.put(("$run", cmds[i:]))
                    return True
            if data is not None:
                try:
                    n = self.sock.send(data)
                except (OSError, ValueError):
                    n = 0  # EAGAIN, or an error the actor's own write will see and report
                if n < len(data):
                    # Rare (a full socket buffer): the actor writes the rest, with
                    # send_timeout, when its get() runs before it sleeps again.
                    self.out.append(data[n:] if n else data)
                    self.out_len += len(data) - n
                    with inbox._cond:
                        inbox._wake()
            return True
        finally:
            token.release()

    def _dispatch(self, op: tuple[Any, ...]) -> None:
        cmds = self._op_cmds(op)
        if cmds is not None:
            self._run(cmds)

    def _op_cmds(self, op: tuple[Any, ...]) -> list[Command] | None:
        """The handler's commands for user operation ``op`` (None: answered already)."""
        h = self.handler
        tag = op[0]
        if tag in _NEW_STREAM_OPS and not self._tunnel_check(op[1], op[2]):
            return None
        cmds = stream_op(h, op)
        if cmds is not None:
            return cmds
        if tag == "$ping":
            tunnel = op[3] if len(op) > 3 else None
            if tunnel is None or _ref_chain(tunnel) == _ref_chain(self.base_ref):
                cmds = h.ping(op[1], op[2])  # the server at the end of this connection
            elif not self._tunnel_check((*_ref_chain(tunnel), op[1]), op[2], op[1]):
                return None
            else:
                cmds = h.ping_tunnel(tunnel, op[1], op[2])  # through a stream's tunnel
        elif tag == "$ws_upgrade":
            _, ref, reply_to, path, headers, ws_opts = op
            if ws_opts is None:
                ws_opts = self.opts.get("ws_opts") or {}
            if ws_opts.get("reupgrade"):
                self.reupgrade_pending[ref] = op
            cmds = h.ws_upgrade(ref, reply_to, path, headers, ws_opts)
        else:  # pragma: no cover
            return None
        return cmds  # type: ignore[no-any-return]

    def _run(self, cmds: list[Command]) -> None:
        """Carry out a handler's commands, in order (see the module doc).

        Bytes to send are *corked*: appended to ``self.out`` and written in one
        ``send`` when no message is left in the inbox (``ConnInbox`` calls
        ``_flush_hook`` before it blocks), before any control command, or once
        64 KiB are pending.  A burst of ``ws_send``/``data`` casts thus costs one
        system call, not one each, and a lone message is written as soon as the
        actor has nothing else to do: no added latency.
        """
        out = self.out
        batch: list[Any] = []
        batch_to: Any = None
        for c in cmds:
            t = type(c)
            if t is Deliver:
                assert isinstance(c, Deliver)
                if c.to is not batch_to:
                    if batch:
                        batch_to.send_many(batch) if len(batch) > 1 else batch_to.send(batch[0])
                    batch = []
                    batch_to = c.to
                batch.append(c.msg)
                if not self.progressed and c.msg[0] in _PROGRESS_TAGS:
                    self.progressed = True
                if self.rt_by_ref:
                    self._request_timer_done(c.msg)
            elif t is Send:
                assert isinstance(c, Send)
                out.append(c.data)
                self.out_len += len(c.data)
            else:
                if batch:
                    batch_to.send_many(batch) if len(batch) > 1 else batch_to.send(batch[0])
                    batch = []
                    batch_to = None
                if t is Event:
                    # In order with the deliveries (a ForwardEventHandler's messages
                    # and the stream's share a mailbox); the output stays corked.
                    if self.ev is not None:
                        assert isinstance(c, Event)
                        self.ev.emit(c.name, c.event)
                    continue
                if out and not self._flush_out():
                    return
                if not self._control(c):
                    return
        if batch:
            batch_to.send_many(batch) if len(batch) > 1 else batch_to.send(batch[0])
        if self.out_len >= 65536:
            self._flush_out()

    def _flush_out(self) -> bool:
        """Write the corked output now; False (after disconnecting) on failure."""
        out = self.out
        if not out:
            return True
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.out_len = 0
        return self._send(data)

    def _flush_hook(self) -> bool:
        """Called by the inbox before it blocks: True if writing ended the actor."""
        if not self.out:
            return False
        self._flush_out()
        return self.actor_stopped.is_set()

    def _control(self, c: Command) -> bool:
        """A non-Send, non-Deliver command; False when the rest must be dropped."""
        t = type(c)
        if t is SetActive:
            assert isinstance(c, SetActive)
            self._set_active(c.active)
        elif t is Close:
            assert isinstance(c, Close)
            self._disconnect(c.reason)
            return False
        elif t is Closing:
            assert isinstance(c, Closing)
            self.state = "closing"
            if c.timeout != "infinity":
                assert isinstance(c.timeout, int)
                self._inbox.start_timer("closing", c.timeout)
        elif t is SwitchProtocol:
            assert isinstance(c, SwitchProtocol)
            self._switch(c)
        elif t is Tunnel:
            assert isinstance(c, Tunnel)
            self._tunnel(c)
            return self.state in ("connected", "tls_handshake")
        elif t is StartTimer:
            assert isinstance(c, StartTimer)
            self._inbox.start_timer("h:" + c.name, c.ms)
        elif t is CancelTimer:
            assert isinstance(c, CancelTimer)
            self._inbox.cancel_timer("h:" + c.name)
        return True

    def _switch(self, c: SwitchProtocol) -> None:
        cls = handler_class(c.protocol)
        args = dict(c.args)
        opts = args.pop("opts", None)
        if opts is None:
            opts = _options.protocol_opts(self.opts, c.protocol)
        self.handler = cls(self.ctx, opts, **args)
        self.protocol = c.protocol
        self.no_input = cls.no_input
        if c.protocol == "ws":
            self.reupgrade_op = self.reupgrade_pending.pop(args.get("ref"), None)
        if self.ev is not None:
            self.ev.emit(
                "protocol_changed", {"stream_ref": args.get("ref"), "protocol": c.protocol}
            )
        self.progressed = True
        self._arm_keepalive()
        self._run(self.handler.init())
        if c.buffer and self.handler is not None:
            self._run(self.handler.handle(c.buffer))
        self._sync_active()

    def _set_active(self, active: bool) -> None:
        if self.sock is not None and self.state in ("connected", "closing"):
            self._inbox.watch(self.sock.fileno(), _POLLIN if active else 0)

    def _sync_active(self) -> None:
        if self.handler is not None:
            self._set_active(bool(self.handler.active()))

    def _arm_keepalive(self) -> None:
        self._inbox.cancel_timer("keepalive")
        if self.handler is not None:
            ms = self.handler.keepalive_interval()
            if ms is not None and ms != "infinity":
                self._inbox.start_timer("keepalive", ms)

    def _send(self, data: bytes | bytearray, through: int | None = None) -> bool:
        """Write all of ``data``; False (after disconnecting) on error or send_timeout.

        Inside TLS tunnels ``data`` is encrypted by every TLS layer first (innermost
        first), or by the ``through`` outermost ones only (a layer's own records).
        """
        sock = self.sock
        if sock is None:
            return False
        n = len(self.layers) if through is None else through
        if n:
            try:
                data = self._wrap(data, n)
            except ssl.SSLError as e:
                self._disconnect(("error", tls_reason(e)))
                return False
        try:
            n = sock.send(data)
            if n == len(data):
                return True
            view = memoryview(data)[n:]
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            view = memoryview(data)
        except (ssl.SSLError, OSError) as e:
            self._disconnect(("error", errno_reason(e)))
            return False
        # Slow path: the kernel buffer is full.  Block this actor up to send_timeout,
        # as gen_tcp's send does (Gun's default 15 s, send_timeout_close true).
        # gun:close/1 kills Gun's process even while it is blocked in a send; here a
        # $close queued meanwhile wakes the wait (the inbox's eventfd) and ends it.
        deadline = None if self.send_timeout is None else time.monotonic() + self.send_timeout
        inbox = self._inbox
        p = select.poll()
        p.register(sock.fileno(), _POLLOUT)
        p.register(inbox._efd, _POLLIN)
        while view:
            try:
                n = sock.send(view)
                view = view[n:]
                continue
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
            except (ssl.SSLError, OSError) as e:
                self._disconnect(("error", errno_reason(e)))
                return False
            if inbox.block_unless_queued(("$close",)):
                self._exit("shutdown")
                return False
            try:
                if deadline is None:
                    events = p.poll()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._disconnect(("error", "timeout"))
                        return False
                    events = p.poll(max(1, int(left * 1000)))
            finally:
                inbox.unblock()
            if any(fd == inbox._efd for fd, _ in events):
                try:
                    os.read(inbox._efd, 8)
                except OSError:
                    pass
        return True

    # -- timers ------------------------------------------------------------------
    def _start_request_timer(self, ref: Any, reply_to: Any, ms: int) -> None:
        """Request option ``timeout``: no complete response in ``ms`` -> the stream
        is cancelled and gets ``("gun_error", conn, ref, "timeout")`` (gunpy
        addition; Gun issue #317 asks for it, its maintainer prefers a per-request
        option).  The clock starts when the connection receives the request."""
        self.rt_count += 1
        name = f"rt:{self.rt_count}"
        self.rt_by_ref[ref] = name
        self.rt_by_name[name] = (ref, reply_to)
        self._inbox.start_timer(name, ms)

    def _request_timer_done(self, msg: Any) -> None:
        """A delivered message that ends a stream stops its timer."""
        tag = msg[0]
        if (
            ((tag == "gun_response" or tag == "gun_data") and msg[3] == "fin")
            or tag == "gun_trailers"
            or (tag == "gun_error" and len(msg) == 4)
            or tag == "gun_upgrade"
        ):
            name = self.rt_by_ref.pop(msg[2], None)
            if name is not None:
                self.rt_by_name.pop(name, None)
                self._inbox.cancel_timer(name)

    def _request_timeout(self, name: str) -> None:
        entry = self.rt_by_name.pop(name, None)
        if entry is None:
            return
        ref, reply_to = entry
        self.rt_by_ref.pop(ref, None)
        for i, q in enumerate(self.queue):
            if q[0] == "$request" and q[1] is ref:  # never sent
                del self.queue[i]
                reply_to.send(("gun_error", self.pid, ref, "timeout"))
                return
        if self.handler is not None:
            self._run(self.handler.timeout_stream(ref, reply_to))

    def _on_timer(self, name: str) -> None:
        if name == "retry":
            if self.state == "not_connected":
                self._attempt()
        elif name == "connect":
            if self.state == "connecting":
                self.addrs = []
                self._attempt_failed("timeout")
        elif name == "lookup":
            if self.state == "domain_lookup":
                self._attempt_failed("timeout")
        elif name == "tls":
            if self.state == "tls_handshake":
                if self.tunnel is not None:
                    self._tunnel_failed("timeout")
                else:
                    self._attempt_failed("timeout")
        elif name == "keepalive":
            if self.handler is not None:
                self._run(self.handler.keepalive())
                self._arm_keepalive()
        elif name == "closing":
            if self.state == "closing":
                # Gun's closing state_timeout: the reason says why we were closing.
                self._disconnect(self.closing_reason or "normal")
        elif name.startswith("rt:"):
            self._request_timeout(name)
        elif name.startswith("h:") and self.handler is not None:
            self._run(self.handler.timeout(name[2:]))

    # -- losing the connection ---------------------------------------------------------
    def _close_socket(self) -> None:
        sock = self.sock
        self.sock = None
        self.out.clear()
        self.out_len = 0
        self.layers = []
        self.tunnel_layer = None
        self._inbox.unwatch()
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass

    def _disconnect(self, reason: Any) -> None:
        """Gun's ``disconnect/2``: error the streams, ``gun_down``, then retry or exit."""
        h = self.handler
        if h is None:
            return
        # terminate's state when this disconnect ends the process (Gun's state name).
        self.term_state = self._state_name()
        self.handler = None
        self._close_socket()
        for t in ("closing", "keepalive"):
            self._inbox.cancel_timer(t)
        for name in [n for n in self._inbox._timers if n.startswith("h:")]:
            self._inbox.cancel_timer(name)
        try:
            cmds = h.close(reason)
            killed = h.down()
        except Exception:  # pragma: no cover - a handler bug must not hide the loss
            log.exception("protocol close failed")
            cmds, killed = [], []
        self._run_deliveries(cmds)
        if self.ev is not None:
            self.ev.emit("disconnect", {"reason": reason})
        protocol = h.name
        self.reupgrade_pending.clear()
        reupgrade, self.reupgrade_op = self.reupgrade_op, None
        if (
            reupgrade is not None
            and not getattr(h, "user_closed", False)
            and self.opts["retry"] > 0
        ):
            # Sent again first thing after the next gun_up, under the same ref, so
            # its reply_to gets a new gun_upgrade (Gun issues #42, #231).
            self.queue.insert(0, reupgrade)
        self.state = "not_connected"
        self.protocol = None
        self.no_input = False
        self._reset_tunnels()
        if self.shutdown_reason is not None:
            # shutdown / owner down: no gun_down, the process just exits (Gun 4.2).
            self._exit(self.shutdown_reason)
            return
        self.term_state = None
        self.owner.send(("gun_down", self.pid, protocol, reason, killed))
        if self.progressed or time.monotonic() - self.up_at >= self.opts["retry_timeout"] / 1000:
            self.retries = self.opts["retry"]
            self.first_retry = True
        self.last_reason = reason
        self._retry(reason)

    def _run_deliveries(self, cmds: list[Command]) -> None:
        for c in cmds:
            t = type(c)
            if t is Deliver:
                assert isinstance(c, Deliver)
                c.to.send(c.msg)
            elif t is Event and self.ev is not None:
                assert isinstance(c, Event)
                self.ev.emit(c.name, c.event)

    # -- graceful close, owner, exit ----------------------------------------------------
    def _shutdown(self, reason: Any, why: str = "shutdown") -> None:
        """Gun's graceful close (``shutdown`` and owner death), bounded by closing_timeout."""
        if self.shutdown_reason is not None and self.state == "closing":
            return
        self.shutdown_reason = reason
        if self.handler is None or self.state not in ("connected", "closing"):
            self._exit(reason)
            return
        self.closing_reason = why
        self._run(self.handler.closing(why))
        if self.handler is not None and self.state == "connected":
            # The handler had nothing to finish but did not close: close now.
            self._disconnect("normal")

    def _on_down(self, msg: tuple[Any, ...]) -> None:
        _, mref, _, _, reason = msg
        if mref is not self.owner_mref:
            return
        # Gun 4.3: exit normal if the owner exited normal, pass shutdown through,
        # else {shutdown, {owner_down, Reason}}.
        if reason == "normal":
            exit_reason: Any = "normal"
        elif reason == "shutdown" or (isinstance(reason, tuple) and reason[:1] == ("shutdown",)):
            exit_reason = reason
        else:
            exit_reason = ("shutdown", ("owner_down", reason))
        self._shutdown(exit_reason, "owner_down")

    def _set_owner(self, caller: Pid, new_owner: Pid) -> None:
        if caller is not self.owner or self.shutdown_reason is not None:
            caller.send(
                (
                    "gun_error",
                    self.pid,
                    ("badstate", "Only the current owner can set a new owner."),
                )
            )
            return
        if self.owner_mref is not None:
            demonitor(self.owner_mref)
        self.owner = new_owner
        self.ctx.owner = new_owner
        self.owner_mref = monitor(new_owner)

    def _exit(self, reason: Any) -> None:
        """End the process with ``reason`` (monitors see it in DOWN)."""
        # Better than Gun (gun-reference 7): requests still queued get an error
        # instead of silence.
        queued, self.queue = self.queue, []
        # So do the requests still in the mailbox: pykka drops what is left there
        # when the actor stops.
        queued += [m for m in self._inbox.take_all() if type(m) is tuple]
        for op in queued:
            if op[0] in _NEW_STREAM_OPS:
                op[2].send(("gun_error", self.pid, op[1], ("closed", reason)))
        if self.handler is not None:
            h = self.handler
            self.handler = None
            try:
                self._run_deliveries(h.close(reason))
            except Exception:  # pragma: no cover
                log.exception("protocol close failed")
        self._close_socket()
        self.exit_reason = reason
        if self.ev is not None:
            state = self._state_name() if self.term_state is None else self.term_state
            self.ev.emit("terminate", {"state": state, "reason": reason})
        self.state = "closed"
        self._stop()

    # -- tunnels (Gun 4.11, 4.12) --------------------------------------------------
    def _tunnel_check(self, ref: Any, reply_to: Any, err_ref: Any = None) -> bool:
        """Does the new stream ``ref`` go through this connection's tunnel?

        Tunnelled refs are the CONNECT's ref followed by their own (Gun's lists,
        tuples here), and the request must name the tunnel the connection is:
        Gun's ``dereference_stream_ref``.  A mismatch gets a ``badstate`` stream
        error (Gun crashes or answers "The stream is not a tunnel.").
        """
        base = self.base_ref
        # Deeper refs are for tunnels on streams (HTTP/2 CONNECT): the handler's.
        deeper = getattr(self.handler, "tunnels", False)
        if base is None:
            if type(ref) is not tuple or deeper:
                return True
            text = BADSTATE_NOT_A_TUNNEL
        else:
            prefix = _ref_chain(base)
            if type(ref) is tuple and ref[: len(prefix)] == prefix and len(ref) > len(prefix):
                if len(ref) == len(prefix) + 1 or deeper:
                    return True
                text = BADSTATE_NOT_A_TUNNEL
            else:
                text = BADSTATE_TUNNEL_REQUIRED
        reply_to.send(
            ("gun_error", self.pid, ref if err_ref is None else err_ref, ("badstate", text))
        )
        return False

    def _tunnel(self, c: Tunnel) -> None:
        """A handler's ``Tunnel``: Gun's ``origin`` command, then TLS or the next protocol."""
        ctx = self.ctx
        self.intermediaries.append(
            {
                "type": c.kind,
                "host": ctx.origin_host,
                "port": ctx.origin_port,
                "transport": "tcp" if ctx.transport == "unix" else ctx.transport,
                "protocol": self.protocol,
            }
        )
        self.tunnel_refs.append((c.ref, c.reply_to) if c.kind == "connect" else None)
        dest = c.destination
        transport = "tls" if dest.get("transport") in ("tls", "ssl") else "tcp"
        ctx.origin_host = str(dest["host"])
        ctx.origin_port = dest["port"]
        ctx.origin_scheme = "https" if transport == "tls" else "http"
        ctx.transport = transport
        if c.kind == "connect":
            self.base_ref = ctx.base_ref = c.ref
        if self.ev is not None:
            self.ev.emit(
                "origin_changed",
                {
                    "type": c.kind,
                    "origin_scheme": ctx.origin_scheme,
                    "origin_host": ctx.origin_host,
                    "origin_port": ctx.origin_port,
                },
            )
        # The proxy protocol's timers mean nothing to the next protocol.
        self._inbox.cancel_timer("keepalive")
        for name in [n for n in self._inbox._timers if n.startswith("h:")]:
            self._inbox.cancel_timer(name)
        self.tunnel = c
        self.no_input = True
        if transport == "tls":
            self._tunnel_tls_start(c)
        else:
            self._tunnel_up(_options.protocol_names(dest)[0], c.buffer)

    def _tunnel_tls_start(self, c: Tunnel) -> None:
        """TLS inside the tunnel: over the socket itself when nothing else encrypts
        it (ssl wraps the socket), else a ``_TlsLayer`` over the TLS below."""
        from ._tls import client_context, server_hostname

        dest = c.destination
        tls_opts = dest.get("tls_opts") or {}
        try:
            sslctx = client_context(tls_opts, _options.protocol_names(dest))
            hostname = server_hostname(str(dest["host"]), tls_opts)
        except (ssl.SSLError, OSError, ValueError) as e:
            self._tunnel_failed(("tls_opts", str(e)))
            return
        self.state = "tls_handshake"
        timeout = dest.get("tls_handshake_timeout", "infinity")
        if self.ev is not None:
            self.ev.emit("tls_handshake_start", self._tunnel_tls_event())
        if timeout != "infinity":
            self._inbox.start_timer("tls", timeout)
        sock = self.sock
        assert sock is not None
        if not self.layers and type(sock) is socket.socket and not c.buffer:
            try:
                self.sock = sslctx.wrap_socket(
                    sock, server_hostname=hostname, do_handshake_on_connect=False
                )
            except (ssl.SSLError, OSError, ValueError) as e:
                self._tunnel_failed(tls_reason(e))
                return
            self._tls_step()
            return
        try:
            self.tunnel_layer = _TlsLayer(sslctx, hostname)
        except (ssl.SSLError, ValueError) as e:
            self._tunnel_failed(tls_reason(e))
            return
        self._inbox.watch(sock.fileno(), _POLLIN)
        self._tunnel_layer_step(c.buffer)

    def _tunnel_layer_read(self) -> None:
        """Socket input during a TLS-over-TLS handshake."""
        sock = self.sock
        if sock is None:
            return
        try:
            data = _recv(sock)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except ssl.SSLError as e:
            self._tunnel_failed(tls_reason(e))
            return
        except OSError as e:
            self._tunnel_failed(errno_reason(e))
            return
        plain: bytes | None = data
        if data and self.layers:
            try:
                plain = self._unwrap(data, len(self.layers))
            except ssl.SSLError as e:
                self._tunnel_failed(tls_reason(e))
                return
        if not data or plain is None:
            self._tunnel_failed("closed")
            return
        if type(sock) is ssl.SSLSocket and sock.pending():
            self._inbox.set_ready()
        self._tunnel_layer_step(plain)

    def _tunnel_layer_step(self, data: bytes) -> None:
        layer = self.tunnel_layer
        assert layer is not None
        if data:
            layer.incoming.write(data)
        try:
            layer.obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except (ssl.SSLError, OSError) as e:
            self._tunnel_failed(tls_reason(e))
            return
        out = layer.outgoing.read()
        if out and not self._send(out):  # through the layers below only
            return
        if not done:
            return
        self.tunnel_layer = None
        self.layers.append(layer)
        self._inbox.cancel_timer("tls")
        try:
            buffer = _tls_read(layer)
        except ssl.SSLError as e:
            self._tunnel_failed(tls_reason(e))
            return
        assert self.tunnel is not None
        proto = _negotiated(layer.obj.selected_alpn_protocol(), self.tunnel.destination)
        if self.ev is not None:
            self._tunnel_tls_end({"protocol": proto})
        self._tunnel_up(proto, buffer or b"")

    def _tunnel_tls_event(self) -> dict[str, Any]:
        c = self.tunnel
        assert c is not None
        # Gun: the request's stream_ref/reply_to (SOCKS: its reply_to, the owner,
        # and a stream_ref only when the SOCKS layer runs on a stream).
        ev: dict[str, Any] = {}
        if c.ref is not None:
            ev["stream_ref"] = c.ref
        ev["reply_to"] = c.reply_to
        ev["socket"] = self.sock
        ev["tls_opts"] = c.destination.get("tls_opts") or {}
        ev["timeout"] = c.destination.get("tls_handshake_timeout", "infinity")
        return ev

    def _tunnel_tls_end(self, extra: dict[str, Any]) -> None:
        assert self.ev is not None
        ev = self._tunnel_tls_event()
        ev.update(extra)
        self.ev.emit("tls_handshake_end", ev)

    def _tunnel_failed(self, reason: Any) -> None:
        """The tunnel's TLS handshake failed: the connection goes down (Gun's
        ``{error, Reason}`` command), with the proxy's protocol in ``gun_down``."""
        if self.ev is not None and self.tunnel is not None and self.state == "tls_handshake":
            self._tunnel_tls_end({"error": reason})
        self._inbox.cancel_timer("tls")
        self.tunnel = None
        self._disconnect(("error", reason))

    def _tunnel_up(self, proto: str, buffer: bytes) -> None:
        """The tunnel is through: ``gun_tunnel_up``, then the protocol inside it."""
        c = self.tunnel
        assert c is not None and self.sock is not None
        self.tunnel = None
        protocols = c.destination.get("protocols") or []
        opts = dict(self.opts.get(proto + "_opts") or {})
        for p in protocols:
            if isinstance(p, tuple) and p[0] == proto:
                opts.update(p[1])
        if proto == "socks" and ("host" not in opts or "port" not in opts):
            self._disconnect(("error", ("socks5", ("options", "host and port are required"))))
            return
        cls = handler_class(proto)
        args: dict[str, Any] = {}
        if proto in ("raw", "socks"):
            # Their messages carry the tunnel's ref and go to its reply_to (Gun).
            args = {"ref": c.ref, "reply_to": c.reply_to}
        self.handler = cls(self.ctx, opts, **args)
        self.protocol = proto
        self.no_input = cls.no_input
        self.state = "connected"
        self.progressed = True
        if self.ev is not None:
            ev: dict[str, Any] = {"protocol": proto}
            if c.kind == "connect":
                ev = {"stream_ref": c.ref, "protocol": proto}
            self.ev.emit("protocol_changed", ev)
        c.reply_to.send(("gun_tunnel_up", self.pid, c.ref, proto))
        self._inbox.watch(self.sock.fileno(), _POLLIN)
        self._arm_keepalive()
        self._run(self.handler.init())
        if buffer and self.handler is not None:
            self._run(self.handler.handle(buffer))
        self._sync_active()
        if self.state == "connected" and not self.no_input:
            queued, self.queue = self.queue, []
            for op in queued:
                self._op(op)

    def _reset_tunnels(self) -> None:
        """Gun forgets tunnels on disconnect: the origin is the first hop again."""
        if not self.intermediaries and self.tunnel is None:
            return
        first = self.intermediaries[0] if self.intermediaries else None
        ctx = self.ctx
        if first is not None:
            ctx.origin_host = first["host"]
            ctx.origin_port = first["port"]
        ctx.transport = self.transport
        ctx.origin_scheme = "https" if self.transport == "tls" else "http"
        ctx.base_ref = self.base_ref = None
        self.intermediaries = []
        self.tunnel_refs = []
        self.tunnel = None

    def _wrap(self, data: bytes | bytearray, n: int) -> bytes | bytearray:
        """Encrypt ``data`` through the ``n`` outermost TLS layers, innermost first."""
        for layer in reversed(self.layers[:n]):
            obj = layer.obj
            view = memoryview(data)
            while view:
                w = obj.write(view)
                view = view[w:]
            data = layer.outgoing.read()
        return data

    def _unwrap(self, data: bytes, n: int) -> bytes | None:
        """Decrypt ``data`` read from the socket through the ``n`` outermost TLS
        layers; None when a TLS peer inside the tunnel closed (close_notify)."""
        for i, layer in enumerate(self.layers[:n]):
            layer.incoming.write(data)
            plain = _tls_read(layer)
            out = layer.outgoing.read()
            if out:
                # The layer answers on its own (a TLS 1.3 key update).
                self._send(out, i)
            if plain is None:
                return None
            data = plain
            if not data:
                return b""
        return data

    def _stream_info(self, ref: Any) -> tuple[str, Any]:
        """Gun's stream_info/2: a CONNECT ref that is a tunnel now describes it."""
        for i, t in enumerate(self.tunnel_refs):
            if t is not None and t[0] == ref:
                if i + 1 < len(self.intermediaries):
                    nxt = self.intermediaries[i + 1]
                    tunnel: dict[str, Any] = {
                        "transport": nxt["transport"],
                        "protocol": nxt["protocol"],
                        "origin_scheme": "https" if nxt["transport"] == "tls" else "http",
                        "origin_host": nxt["host"],
                        "origin_port": nxt["port"],
                    }
                else:
                    ctx = self.ctx
                    tunnel = {
                        "transport": "tcp" if ctx.transport == "unix" else ctx.transport,
                        "protocol": self.protocol,
                        "origin_scheme": None if self.protocol == "raw" else ctx.origin_scheme,
                        "origin_host": ctx.origin_host,
                        "origin_port": ctx.origin_port,
                    }
                return (
                    "ok",
                    {
                        "ref": ref,
                        "reply_to": t[1],
                        "state": "running",
                        "intermediaries": [dict(x) for x in self.intermediaries[:i]],
                        "tunnel": tunnel,
                    },
                )
        if self.handler is None:
            return ("error", "not_connected")
        info = self.handler.stream_info(ref)
        if info is not None and self.intermediaries:
            info = {
                **info,
                "intermediaries": [dict(x) for x in self.intermediaries]
                + list(info.get("intermediaries") or []),
            }
        return ("ok", info)

    # -- synchronous calls ------------------------------------------------------
    def _on_call(self, msg: tuple[Any, ...]) -> None:
        _, caller, tag, what, args = msg
        try:
            if what == "info":
                value: Any = self._info()
            elif what == "stream_info":
                value = self._stream_info(args[0])
            else:  # pragma: no cover
                value = ("error", ("unknown_call", what))
        except Exception as e:  # pragma: no cover - defensive
            value = ("error", ("exception", repr(e)))
        caller.send(("$reply", tag, value))

    def _state_name(self) -> str:
        """Gun's state name (``info``'s ``state_name``, ``terminate``'s ``state``)."""
        state = self.state
        if state == "connected" and self.protocol == "ws":
            state = "connected_ws_only"
        elif state == "connected" and self.protocol == "raw":
            state = "connected_data_only"
        elif state == "connected" and self.no_input:
            state = "connected_no_input"
        elif state == "tls_handshake" and self.tunnel is None:
            state = "initial_tls_handshake"
        return state

    def _info(self) -> dict[str, Any]:
        state = self._state_name()
        info: dict[str, Any] = {
            "owner": self.owner,
            "socket": self.sock,
            "transport": "tcp" if self.ctx.transport == "unix" else self.ctx.transport,
            "state_name": state,
            # Gun: no scheme while SOCKS is the protocol.
            "origin_scheme": None if self.protocol == "socks" else self.ctx.origin_scheme,
            "origin_host": self.ctx.origin_host,
            "origin_port": self.ctx.origin_port,
            "intermediaries": [dict(i) for i in self.intermediaries],
            "cookie_store": self.opts.get("cookie_store"),
            "event_handler": None if self.ev is None else self.ev.handler,
            "event_handler_state": None if self.ev is None else self.ev.state,
        }
        if self.sock is not None and self.protocol is not None:
            info["protocol"] = self.protocol
            try:
                name = self.sock.getsockname()
                if isinstance(name, tuple):
                    info["sock_ip"], info["sock_port"] = name[0], name[1]
                else:
                    info["sock_ip"], info["sock_port"] = name, 0
            except OSError:
                pass
        return info


def _ref_chain(ref: Any) -> tuple[Any, ...]:
    """A stream ref as the tuple of refs it is made of (a plain ref: one)."""
    return ref if type(ref) is tuple else (ref,)


def _negotiated(alpn: str | None, destination: dict[str, Any]) -> str:
    """Gun's gun_protocols:negotiated/2 for a tunnel's TLS handshake."""
    return negotiated(alpn, _options.protocol_names(destination))


def _options_seconds(v: Any) -> float | None:
    return None if v == "infinity" else v / 1000.0


def start(
    owner: Any, host: str, port: int, opts: dict[str, Any], unix_path: str | None = None
) -> Pid:
    """Start a connection actor; returns its Pid (what users call ``conn``)."""
    inbox = ConnInbox()
    pid = Pid(inbox, name=f"gun {unix_path or f'{host}:{port}'}")
    Connection.start(pid, inbox, as_pid(owner), host, port, opts, unix_path)
    return pid
