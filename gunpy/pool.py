"""Connection pools: Gun's experimental ``gun_pool``, on gunpy's processes.

Theory of operation
-------------------
``start_pool(host, port, opts)`` starts a *manager*, a ``gunpy.OwnerActor``, and
registers it under ``(scope, authority)``.  The manager opens ``size`` connections
and owns them: it gets their ``gun_up``, ``gun_down`` and ``gun_notify`` messages and
monitors them.  Connections reconnect by themselves (their ``retry`` options); a
connection *process* that ends is replaced by a new one (at once if it had been
up, after ``retry_timeout`` if it never came up, never if it ended on a
configuration error).

Request functions look the pool up by the request's ``host`` header (or the
``authority`` option), ask the manager for a connection with room for one more
stream (*checkout*, a call to the manager), then call ``gunpy.request`` on it and
return ``("async", (conn, ref))``.  The stream's messages go straight from the
connection to the caller, as with ``gunpy``: the manager is not in the data path.

Counting streams without an event handler
    Gun counts streams with an event handler installed in every pooled connection.
    gunpy does it with a *tracker*: the ``reply_to`` of a pooled request is a Pid
    (one per connection and reply target) whose ``send`` runs in the connection's
    thread, forwards every message to the real target, and, on the message that
    ends the stream (``fin`` response or data, trailers, a stream ``gun_error``, a
    close frame on an HTTP/2 Websocket stream), first tells the manager, then
    forwards it.  So by the time the caller sees the end of a stream, the manager
    has already counted the slot free: a request made right after ``await_body``
    finds it.  A slot is reserved at checkout (a *token*), released by the tracker,
    by ``cancel``, or when the connection goes down.

Capacity
    HTTP/1.1: one stream per connection (no pipelining, as Gun).  HTTP/2: the
    server's ``SETTINGS_MAX_CONCURRENT_STREAMS``, learnt from the ``gun_notify``
    ``settings_changed`` messages the pool turns on (``notify_settings_changed``);
    an HTTP/2 connection is not handed out before the server's SETTINGS arrived.
    Websocket: connections the ``setup_fun`` upgraded serve ``ws_send``; a
    connection a caller upgraded with ``ws_upgrade`` is that caller's until it
    goes down (HTTP/1.1), or holds one stream slot until closed (HTTP/2).

``checkout_retry``
    Gun sleeps and asks again after each wait of the list.  gunpy's manager keeps
    the checkout waiting for up to the sum of the list and answers as soon as a
    connection has room, first come first served: no polling, no sleeping.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any, Final

from . import await_ as _gun_await
from . import await_body as _gun_await_body
from . import cancel as _gun_cancel
from . import data as _gun_data
from . import flush as _gun_flush
from . import headers as _gun_headers
from . import open as _gun_open
from . import request as _gun_request
from . import shutdown as _gun_shutdown
from . import stream_info as _gun_stream_info
from . import update_flow as _gun_update_flow
from . import ws_send as _gun_ws_send
from . import ws_upgrade as _gun_ws_upgrade
from .exceptions import NoProc
from .process import (
    ANY,
    TIMEOUT,
    OwnerActor,
    Pid,
    Ref,
    as_pid,
    cancel_timer,
    demonitor,
    monitor,
    receive,
    send_after,
)
from .process import self as _self

__all__ = [
    "DEFAULT_SIZE",
    "authority",
    "await_",
    "await_body",
    "await_up",
    "cancel",
    "checkout",
    "data",
    "delete",
    "flush",
    "get",
    "head",
    "headers",
    "info",
    "options",
    "patch",
    "post",
    "put",
    "request",
    "start_pool",
    "stop_pool",
    "stream_info",
    "update_flow",
    "ws_send",
    "ws_upgrade",
]

log = logging.getLogger("gunpy.pool")

#: Gun's default pool size.
DEFAULT_SIZE: Final = 8
_DEFAULT_CALL_TIMEOUT = 5000
_FLOW_OPEN = 1 << 62  # update_flow increment that lifts a cancelled stream's budget

_POOL_OPTS = ("conn_opts", "scope", "setup_fun", "size")
_POOL_REQ_OPTS = (
    "authority",
    "checkout_call_timeout",
    "checkout_retry",
    "scope",
    "start_pool_if_missing",
)

POOL_NOT_FOUND: Final = (
    "error",
    "pool_not_found",
    "No pool was found for the given scope and authority.",
)
NO_CONNECTION: Final = (
    "error",
    "no_connection_available",
    "No connection in the pool with enough capacity available to open a new stream.",
)
NO_WS_CONNECTION: Final = (
    "error",
    "no_connection_available",
    "No connection in the pool with enough capacity available to send Websocket frames.",
)

# Exit reasons of a connection that another process would only repeat: the pool
# does not replace the connection (Gun: badarg), it stays degraded.
_CONFIG_ERRNOS = frozenset({"einval", "eafnosupport", "eaddrnotavail", "eacces"})
_CONFIG_TLS_ALERTS = frozenset({"unknown_ca", "certificate_expired", "bad_certificate"})


# ---------------------------------------------------------------------------
# Authorities and the registry


def authority(host: Any, port: int, transport: str | None = None) -> str:
    """The pool key's authority for ``host:port``: Gun's ``host`` header value.

    The port is left out when it is the transport's default (80 for ``"tcp"``, 443
    for ``"tls"``); the transport defaults to ``"tls"`` for port 443, else ``"tcp"``;
    an IPv6 address is bracketed.
    """
    if transport is None:
        transport = "tls" if port == 443 else "tcp"
    if transport == "ssl":
        transport = "tls"
    h = host.decode("latin-1") if isinstance(host, bytes) else str(host)
    try:
        if ipaddress.ip_address(h).version == 6:
            h = f"[{h}]"
    except ValueError:
        pass
    if (transport == "tcp" and port == 80) or (transport == "tls" and port == 443):
        return h
    return f"{h}:{port}"


def _split_authority(auth: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``, or ``"host"``: port 80) to ``(host, port)``."""
    if auth.startswith("["):
        host, _, rest = auth[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 80
    host, sep, port = auth.rpartition(":")
    if not sep:
        return auth, 80
    return host, int(port)


class _Entry:
    __slots__ = ("pid", "ref")

    def __init__(self, pid: Pid, ref: Any) -> None:
        self.pid = pid
        self.ref = ref


_registry: dict[tuple[Any, str], _Entry] = {}
_registry_lock = threading.Lock()


def _lookup(auth: str, scope: Any) -> _Entry | None:
    with _registry_lock:
        e = _registry.get((scope, auth))
        if e is not None and not e.pid.is_alive():
            del _registry[(scope, auth)]
            return None
        return e


def _unregister(key: tuple[Any, str], pid: Pid) -> None:
    with _registry_lock:
        e = _registry.get(key)
        if e is not None and e.pid is pid:
            del _registry[key]


# ---------------------------------------------------------------------------
# Calls to the manager


class _Cancelled:
    __slots__ = ()

    def __repr__(self) -> str:
        return "CANCELLED"


_CANCELLED: Final = _Cancelled()




def _call(manager: Pid, what: str, *args: Any, timeout: Any = _DEFAULT_CALL_TIMEOUT) -> Any:
    """A synchronous call to ``manager``; raises ``NoProc`` if it is gone, and
    returns ``TIMEOUT`` after ``timeout`` ms.

    Every call gets exactly one ``("$reply", mref, value)``: on a timeout the caller
    asks the manager to drop the call; the manager answers that with ``CANCELLED``
    if the call was still waiting, and otherwise its reply is already on its way.
    """
    me = _self()
    mref = monitor(manager)
    manager.send(("$pool_call", me, mref, what, args))
    reply_pat = ("$reply", mref, ANY)
    down_pat = ("DOWN", mref, ANY, ANY, ANY)
    try:
        msg = receive(reply_pat, down_pat, after=timeout)
        if msg is TIMEOUT:
            manager.send(("$pool_cancel", mref))
            msg = receive(reply_pat, down_pat, after=_DEFAULT_CALL_TIMEOUT)
            if msg is TIMEOUT or msg[2] is _CANCELLED:
                return TIMEOUT
    finally:
        demonitor(mref, flush=True)
    if msg[0] == "DOWN":
        raise NoProc(f"pool {what}: the pool manager {manager!r} is not alive ({msg[4]!r})")
    return msg[2]


# ---------------------------------------------------------------------------
# The tracker: a reply_to that counts streams


class _Stream:
    __slots__ = ("cancelled", "req_fin", "resp_fin", "token", "ws")

    def __init__(self, token: int, req_fin: bool) -> None:
        self.token = token
        self.req_fin = req_fin
        self.resp_fin = False
        self.ws = False  # an HTTP/2 Websocket stream: ends with a close frame
        self.cancelled = False  # HTTP/1.1 cancel: read to the end, delivered to nobody


# Every pooled stream still counted, by stream ref: for data(fin) and cancel.
_by_ref: dict[Ref, _Tracker] = {}


def _is_close_frame(frame: Any) -> bool:
    return frame == "close" or (type(frame) is tuple and len(frame) > 0 and frame[0] == "close")


class _Tracker(Pid):
    """The ``reply_to`` of pooled streams for one connection and one reply target.

    ``send`` runs in the connection's thread.  One tracker per (connection, target)
    so that a connection-wide ``gun_error``, sent once per reply target, still
    reaches the target once.
    """

    __slots__ = ("active", "conn", "lock", "manager", "protocol", "target")

    def __init__(self, manager: Pid, conn: Pid, target: Pid) -> None:
        super().__init__(None, name=f"pool reply_to {target!r}")
        self.manager = manager
        self.conn = conn
        self.target = target
        self.protocol: str | None = None
        self.lock = threading.Lock()
        self.active: dict[Ref, _Stream] = {}

    # -- the connection's thread ----------------------------------------------------
    def send(self, msg: Any) -> None:
        if type(msg) is tuple and len(msg) >= 4 and type(msg[2]) is Ref:
            with self.lock:
                st = self.active.get(msg[2])
                if st is not None and self._account(msg, st):
                    return
        self.target.send(msg)

    def send_many(self, msgs: list[Any]) -> None:
        with self.lock:
            if self.active:
                keep = []
                for msg in msgs:
                    if type(msg) is tuple and len(msg) >= 4 and type(msg[2]) is Ref:
                        st = self.active.get(msg[2])
                        if st is not None and self._account(msg, st):
                            continue
                    keep.append(msg)
                msgs = keep
        if msgs:
            self.target.send_many(msgs)

    def _account(self, msg: tuple[Any, ...], st: _Stream) -> bool:
        """Update the stream's state from one of its messages (lock held); True to
        drop the message (a cancelled stream's)."""
        tag = msg[0]
        if tag == "gun_data" or tag == "gun_response":
            if msg[3] == "fin":
                st.resp_fin = True
        elif tag == "gun_trailers":
            st.resp_fin = True
        elif tag == "gun_error":
            st.req_fin = st.resp_fin = True
        elif tag == "gun_upgrade" and not st.cancelled:
            if self.protocol == "http2":
                st.ws = True  # the stream lives on as a Websocket
                return False
            # HTTP/1.1: the whole connection switched protocols; it is the caller's.
            self._forget(msg[2])
            self.manager.send(("$upgraded", self.conn, st.token, msg[2], self.target))
            return False
        elif tag == "gun_ws" and st.ws and _is_close_frame(msg[3]):
            st.req_fin = st.resp_fin = True
        if st.req_fin and st.resp_fin:
            self._end(msg[2], st)
        return st.cancelled

    def _forget(self, ref: Ref) -> None:
        del self.active[ref]
        _by_ref.pop(ref, None)

    def _end(self, ref: Ref, st: _Stream) -> None:
        self._forget(ref)
        self.manager.send(("$done", self.conn, st.token))

    # -- the caller's thread -----------------------------------------------------
    def add(self, ref: Ref, token: int, req_fin: bool) -> None:
        """Count ``ref`` (lock held by the caller since before the request was sent)."""
        self.active[ref] = _Stream(token, req_fin)
        _by_ref[ref] = self

    def request_done(self, ref: Ref) -> None:
        """The caller sent the last of the request body."""
        with self.lock:
            st = self.active.get(ref)
            if st is not None:
                st.req_fin = True
                if st.resp_fin:
                    self._end(ref, st)

    def cancel(self, ref: Ref) -> bool:
        """``cancel`` on a counted stream; True when done here (HTTP/1.1: the stream's
        messages are dropped from now on and its slot is given back once the response
        has been read, as the connection cannot take another request before), False
        when ``gunpy.cancel`` must do it (the slot is given back now)."""
        with self.lock:
            st = self.active.get(ref)
            if st is None:
                return False
            if self.protocol == "http" and not st.ws:
                st.cancelled = True
                return True
            self._end(ref, st)
            return False

    # -- the manager's thread ------------------------------------------------------
    def reset(self) -> None:
        """The connection went down: its streams are no longer counted."""
        with self.lock:
            for ref in self.active:
                _by_ref.pop(ref, None)
            self.active.clear()


# ---------------------------------------------------------------------------
# The manager


class _Conn:
    """The manager's record of one connection process."""

    __slots__ = (
        "inflight",
        "meta",
        "mref",
        "pid",
        "protocol",
        "settings",
        "setup_state",
        "status",
        "trackers",
        "was_up",
    )

    def __init__(self, pid: Pid, mref: Ref) -> None:
        self.pid = pid
        self.mref = mref
        self.status = "down"  # "down" | "setup" | "up"
        self.protocol: str | None = None
        self.setup_state: Any = None
        self.settings: dict[str, Any] | None = None  # HTTP/2: the server's SETTINGS
        self.meta: dict[str, Any] = {}
        self.inflight: set[int] = set()
        self.trackers: dict[Pid, _Tracker] = {}
        self.was_up = False

    def is_up(self) -> bool:
        if self.status != "up":
            return False
        if self.protocol == "http2":
            return self.settings is not None
        return True

    def max_streams(self) -> float:
        if self.protocol == "http":
            return 1
        if self.protocol == "http2":
            assert self.settings is not None
            m = self.settings.get("max_concurrent_streams", "infinity")
            return float("inf") if m == "infinity" else float(m)
        return float("inf")

    def serves(self, kind: str) -> bool:
        """Whether this connection can take one more stream of ``kind`` now."""
        if not self.is_up() or "dedicated" in self.meta:
            return False
        if kind == "ws":
            return self.protocol == "ws" and "ws" in self.meta
        if self.protocol not in ("http", "http2"):
            return kind == "any"
        return len(self.inflight) < self.max_streams()

    def public_state(self) -> Any:
        if self.status == "down":
            return "down"
        if self.status == "setup":
            return ("setup", self.setup_state)
        return ("up", self.protocol, dict(self.settings or {}))

    def reset(self) -> None:
        self.inflight.clear()
        for t in self.trackers.values():
            t.reset()


def _default_setup(conn: Pid, msg: Any, state: Any) -> Any:
    if msg[0] == "gun_up":
        return ("up", msg[2], {})
    return ("setup", state)


def _conn_opts(opts: dict[str, Any]) -> dict[str, Any]:
    """The pool's connection options: the user's, with HTTP/2 SETTINGS notifications on."""
    co = dict(opts.get("conn_opts") or {})
    h2 = dict(co.get("http2_opts") or {})
    h2["notify_settings_changed"] = True
    co["http2_opts"] = h2
    protos = co.get("protocols")
    if isinstance(protos, list):
        co["protocols"] = [
            (p[0], {**p[1], "notify_settings_changed": True})
            if isinstance(p, tuple) and len(p) == 2 and p[0] == "http2" and isinstance(p[1], dict)
            else p
            for p in protos
        ]
    return co


def _config_error(reason: Any) -> bool:
    """Whether a connection's exit reason is one a new connection would repeat."""
    if isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown":
        r = reason[1]
        if r in _CONFIG_ERRNOS:
            return True
        if isinstance(r, tuple) and len(r) == 2:
            if r[0] == "tls_opts":
                return True
            if r[0] == "tls_alert" and isinstance(r[1], tuple) and r[1][0] in _CONFIG_TLS_ALERTS:
                return True
    return False


class _MainThread(Pid):
    """Stands for the program's main thread: "dies" when it ends (the process layer's
    watchdog polls ``_poll_dead`` while someone monitors it)."""

    __slots__ = ()

    def _poll_dead(self) -> Any:
        return None if threading.main_thread().is_alive() else "normal"


# One for every pool: the watchdog keeps polling a Pid it was given until it dies.
_MAIN_THREAD: Final = _MainThread(None, name="main thread")


class _Manager(OwnerActor):
    """One pool: owns ``size`` connections and hands out their capacity."""

    def __init__(self, host: Any, port: int, opts: dict[str, Any], key: tuple[Any, str]) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self.opts = opts
        self.key = key
        self.size: int = opts.get("size", DEFAULT_SIZE)
        self.conn_opts = _conn_opts(opts)
        setup = opts.get("setup_fun")
        if setup is None:
            self.setup_fun: Callable[[Pid, Any, Any], Any] = _default_setup
            self.setup_state0: Any = None
        elif callable(setup):
            self.setup_fun, self.setup_state0 = setup, None
        else:
            self.setup_fun, self.setup_state0 = setup
        self.conns: dict[Pid, _Conn] = {}
        self.by_mref: dict[Ref, _Conn] = {}
        self.init_error: Any = None
        self.tokens = itertools.count(1)
        self.rr = 0  # round-robin offset among equally loaded connections
        # Calls waiting for an answer, in arrival order: mref -> (caller, what, args, tref)
        self.pending: dict[Ref, tuple[Pid, str, tuple[Any, ...], Ref | None]] = {}
        self.restart_delay = int(self.conn_opts.get("retry_timeout", 5000))
        self.main_mref: Ref | None = None

    # -- lifecycle ----------------------------------------------------------------
    def on_start(self) -> None:
        # pykka threads are not daemons: a pool nobody stopped would keep a script
        # from exiting.  It stops when the main thread ends.
        self.main_mref = monitor(_MAIN_THREAD)
        for _ in range(self.size):
            if not self._open():
                break

    def _open(self) -> bool:
        result = _gun_open(self.host, self.port, self.conn_opts)
        if result[0] != "ok":
            self.init_error = result[1]
            return False
        pid = result[1]
        c = _Conn(pid, monitor(pid))
        self.conns[pid] = c
        self.by_mref[c.mref] = c
        return True

    def on_stop(self) -> None:
        self._terminate("normal")

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._terminate(("exception", exception_value))

    def _terminate(self, reason: Any) -> None:
        _unregister(self.key, self.pid)
        if self.main_mref is not None:
            demonitor(self.main_mref)
        state = self._state_name()
        for mref, (caller, what, _, tref) in self.pending.items():
            if tref is not None:
                cancel_timer(tref)
            value = ("error", ("terminate", state, reason)) if what == "await_up" else None
            caller.send(("$reply", mref, value))
        self.pending.clear()
        for c in list(self.conns.values()):
            demonitor(c.mref, flush=True)
            c.reset()
            _gun_shutdown(c.pid)
        self.conns.clear()
        self.by_mref.clear()

    # -- messages -----------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if type(message) is not tuple or not message:
            log.debug("pool %r: unexpected message %r", self.key, message)
            return None
        tag = message[0]
        if tag == "$done" or tag == "$release":
            c = self.conns.get(message[1])
            if c is not None and message[2] in c.inflight:
                c.inflight.discard(message[2])
                self._serve()
        elif tag == "$pool_call":
            self._on_call(message[1], message[2], message[3], message[4])
        elif tag == "$pool_cancel":
            p = self.pending.pop(message[1], None)
            if p is not None:
                if p[3] is not None:
                    cancel_timer(p[3])
                p[0].send(("$reply", message[1], _CANCELLED))
        elif tag == "$pool_timeout":
            p = self.pending.pop(message[1], None)
            if p is not None:
                p[0].send(("$reply", message[1], None))
        elif tag == "gun_up":
            self._on_up(message)
        elif tag == "gun_down":
            self._on_down(message[1])
        elif tag == "gun_notify" and len(message) == 4 and message[2] == "settings_changed":
            c = self.conns.get(message[1])
            if c is not None:
                c.settings = dict(message[3])
                self._changed()
        elif tag == "DOWN":
            if message[1] is self.main_mref:
                self.actor_ref.stop(block=False)
            else:
                self._on_exit(message[1], message[4])
        elif tag == "$upgraded":
            self._on_upgraded(message[1], message[2], message[3], message[4])
        elif tag == "$restart":
            self._open()
        elif tag == "gun_upgrade" or (
            len(message) >= 3 and isinstance(message[1], Pid) and self._in_setup(message[1])
        ):
            self._on_setup_message(message)
        else:
            log.debug("pool %r: unexpected message %r", self.key, message)
        return None

    def _in_setup(self, conn: Pid) -> bool:
        c = self.conns.get(conn)
        return c is not None and c.status == "setup"

    def _on_up(self, msg: tuple[Any, ...]) -> None:
        c = self.conns.get(msg[1])
        if c is None:
            return
        c.status = "setup"
        c.protocol = msg[2]
        c.settings = None
        c.meta = {}
        c.setup_state = self.setup_state0
        self._run_setup(c, msg)

    def _on_setup_message(self, msg: tuple[Any, ...]) -> None:
        c = self.conns.get(msg[1])
        if c is None or c.status != "setup":
            log.debug("pool %r: unexpected message %r", self.key, msg)
            return
        self._run_setup(c, msg)

    def _run_setup(self, c: _Conn, msg: tuple[Any, ...]) -> None:
        try:
            result = self.setup_fun(c.pid, msg, c.setup_state)
        except Exception:
            log.exception("pool %r: setup_fun failed on %r; closing %r", self.key, msg, c.pid)
            _gun_shutdown(c.pid)
            return
        if isinstance(result, tuple) and len(result) == 2 and result[0] == "setup":
            c.setup_state = result[1]
            return
        if isinstance(result, tuple) and len(result) == 3 and result[0] == "up":
            c.status = "up"
            c.protocol = result[1]
            c.meta = dict(result[2] or {})
            c.was_up = True
            self._changed()
            return
        log.error("pool %r: setup_fun returned %r; closing %r", self.key, result, c.pid)
        _gun_shutdown(c.pid)

    def _on_down(self, conn: Pid) -> None:
        c = self.conns.get(conn)
        if c is None:
            return
        c.status = "down"
        c.protocol = None
        c.settings = None
        c.meta = {}
        c.reset()

    def _on_exit(self, mref: Ref, reason: Any) -> None:
        c = self.by_mref.pop(mref, None)
        if c is None:
            return
        del self.conns[c.pid]
        c.reset()
        if _config_error(reason):
            log.warning("pool %r: connection ended with %r; not restarted", self.key, reason)
        elif c.was_up:
            self._open()
        else:
            send_after(self.restart_delay, self.pid, ("$restart",))

    def _on_upgraded(self, conn: Pid, token: int, ref: Ref, target: Pid) -> None:
        c = self.conns.get(conn)
        if c is None:
            return
        c.inflight.discard(token)
        if c.status == "up":
            c.protocol = "ws"
            c.meta = {"ws": ref, "dedicated": target}

    # -- calls --------------------------------------------------------------------
    def _on_call(self, caller: Pid, mref: Ref, what: str, args: tuple[Any, ...]) -> None:
        if what == "checkout":
            kind, target, wait_ms = args
            value = self._checkout(kind, target)
            if value is None and wait_ms:
                tref = send_after(wait_ms, self.pid, ("$pool_timeout", mref))
                self.pending[mref] = (caller, what, args, tref)
                return
        elif what == "await_up":
            if self._state_name() != "operational":
                self.pending[mref] = (caller, what, args, None)
                return
            value = "ok"
        elif what == "info":
            value = self._info()
        elif what == "init":
            value = self.init_error
        else:  # pragma: no cover - a caller of this module's own making
            value = ("error", ("unknown_call", what))
        caller.send(("$reply", mref, value))

    def _checkout(self, kind: str, target: Pid | None) -> Any:
        """A connection with room for ``kind``, least loaded first; None if none."""
        best: _Conn | None = None
        conns = list(self.conns.values())
        n = len(conns)
        if n == 0:
            return None
        self.rr = (self.rr + 1) % n
        for i in range(n):
            c = conns[(self.rr + i) % n]
            if c.serves(kind) and (best is None or len(c.inflight) < len(best.inflight)):
                best = c
        if best is None:
            return None
        if kind in ("http", "upgrade") and target is not None:
            token = next(self.tokens)
            best.inflight.add(token)
            tracker = best.trackers.get(target)
            if tracker is None:
                if len(best.trackers) >= 64:
                    for t, tr in list(best.trackers.items()):
                        if not tr.active and not t.is_alive():
                            del best.trackers[t]
                tracker = best.trackers[target] = _Tracker(self.pid, best.pid, target)
            tracker.protocol = best.protocol
            ws_opts = self.conn_opts.get("ws_opts") or {}
            return (best.pid, dict(best.meta), token, tracker, ws_opts)
        return (best.pid, dict(best.meta))

    def _serve(self) -> None:
        """Answer the checkouts waiting for room, oldest first."""
        if not self.pending:
            return
        for mref, (caller, what, args, tref) in list(self.pending.items()):
            if what != "checkout":
                continue
            value = self._checkout(args[0], args[1])
            if value is not None:
                del self.pending[mref]
                if tref is not None:
                    cancel_timer(tref)
                caller.send(("$reply", mref, value))

    def _changed(self) -> None:
        if self._state_name() == "operational":
            for mref, (caller, what, _, _) in list(self.pending.items()):
                if what == "await_up":
                    del self.pending[mref]
                    caller.send(("$reply", mref, "ok"))
        self._serve()

    def _state_name(self) -> str:
        if self.size > 0 and len(self.conns) == self.size and all(
            c.is_up() for c in self.conns.values()
        ):
            return "operational"
        return "degraded"

    def _info(self) -> tuple[str, dict[str, Any]]:
        return (
            self._state_name(),
            {
                "scope": self.key[0],
                "authority": self.key[1],
                "host": self.host,
                "port": self.port,
                "opts": self.opts,
                "conns": {p: c.public_state() for p, c in self.conns.items()},
                "conns_meta": {p: dict(c.meta) for p, c in self.conns.items() if c.meta},
                "streams": {p: len(c.inflight) for p, c in self.conns.items()},
                "waiters": len(self.pending),
            },
        )


# ---------------------------------------------------------------------------
# Pool management


def _check_opts(opts: Any) -> Any:
    if not isinstance(opts, dict):
        return ("options", opts)
    for k, v in opts.items():
        if k not in _POOL_OPTS:
            return ("options", (k, v))
        if k == "size" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            return ("options", (k, v))
        if k == "conn_opts" and not isinstance(v, dict):
            return ("options", (k, v))
        if k == "setup_fun" and not (
            callable(v) or (isinstance(v, tuple) and len(v) == 2 and callable(v[0]))
        ):
            return ("options", (k, v))
    return None


def start_pool(host: Any, port: int, opts: dict[str, Any] | None = None) -> tuple[str, Any]:
    """Start a pool of connections to ``host:port``: ``("ok", manager)`` or ``("error", reason)``.

    ``opts``: ``size`` (connections, default 8), ``conn_opts`` (``gunpy.open``'s
    options), ``scope`` (default ``"default"``), ``setup_fun`` (``(fun, state0)``
    or ``fun``).  Returns once the connections are started, not up: see
    ``await_up``.  Gun's ``gun_pool:start_pool/3``.
    """
    opts = {} if opts is None else opts
    bad = _check_opts(opts)
    if bad is not None:
        return ("error", bad)
    conn_opts = opts.get("conn_opts") or {}
    key = (opts.get("scope", "default"), authority(host, port, conn_opts.get("transport")))
    with _registry_lock:
        e = _registry.get(key)
        if e is not None and e.pid.is_alive():
            return ("error", ("already_started", e.pid))
        ref = _Manager.start(host, port, opts, key)
        pid = as_pid(ref)
        _registry[key] = _Entry(pid, ref)
    err = _call(pid, "init")
    if err is not None:
        ref.stop()
        _unregister(key, pid)
        return ("error", err)
    return ("ok", pid)


def stop_pool(host: Any, port: int | None = None, stop_opts: dict[str, Any] | None = None) -> Any:
    """Stop a pool: ``"ok"`` or ``("error", "pool_not_found", msg)`` (``gun_pool:stop_pool/2,3``).

    ``stop_opts``: ``scope`` and ``transport``, to find the pool.  ``host`` may also
    be the manager's Pid.  The manager ends at once; its connections close
    gracefully (``gunpy.shutdown``): streams in flight may still complete.
    """
    if isinstance(host, Pid):
        with _registry_lock:
            e = next((x for x in _registry.values() if x.pid is host), None)
    else:
        if port is None:
            raise TypeError("stop_pool(host, port[, stop_opts]) or stop_pool(manager)")
        so = stop_opts or {}
        e = _lookup(authority(host, port, so.get("transport")), so.get("scope", "default"))
    if e is None:
        return POOL_NOT_FOUND
    e.ref.stop()
    return "ok"


def _manager(pool: Any, scope: Any) -> Pid | None:
    if isinstance(pool, Pid):
        return pool
    e = _lookup(_auth_str(pool), scope)
    return None if e is None else e.pid


def info(pool: Any = None, scope: Any = "default") -> Any:
    """Pool information (``gun_pool:info/0,1,2``).

    ``info()``: a list of dicts, one per pool, with ``scope`` and ``state`` added.
    ``info(manager)`` or ``info(authority, scope)``: ``(state, dict)`` where state is
    ``"operational"`` (every connection up) or ``"degraded"``; None when no pool
    has that authority and scope.  The dict has ``host``, ``port``, ``opts``,
    ``scope``, ``authority``, ``conns`` (``{conn: "down" | ("setup", state) |
    ("up", protocol, settings)}``), ``conns_meta``, ``streams`` (``{conn: n}``, the
    streams counted on each) and ``waiters`` (calls waiting: checkouts waiting for
    room, ``await_up`` calls).
    """
    if pool is None:
        with _registry_lock:
            pids = [e.pid for e in _registry.values()]
        out = []
        for pid in pids:
            try:
                state, d = _call(pid, "info")
            except NoProc:
                continue
            out.append({**d, "state": state})
        return out
    manager = _manager(pool, scope)
    if manager is None:
        return None
    return _call(manager, "info")


def await_up(pool: Any, scope: Any = "default", timeout: Any = 5000) -> Any:
    """Wait until every connection of the pool is up: ``"ok"``,
    ``("error", "pool_not_found", msg)``, ``("error", "timeout")`` or
    ``("error", ("terminate", state, reason))`` if the pool stops meanwhile
    (``gun_pool:await_up/1,2``).  ``pool`` is the manager or an authority."""
    pid = _manager(pool, scope)
    if pid is None:
        return POOL_NOT_FOUND
    try:
        value = _call(pid, "await_up", timeout=timeout)
    except NoProc as e:
        return ("error", ("terminate", "degraded", str(e)))
    return ("error", "timeout") if value is TIMEOUT else value


def _wait_ms(req_opts: dict[str, Any]) -> int:
    retry = req_opts.get("checkout_retry")
    if not retry:
        return 0
    if not isinstance(retry, (list, tuple)) or not all(
        isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in retry
    ):
        raise ValueError(f"checkout_retry must be a list of positive integers, not {retry!r}")
    return int(sum(retry))


def _checkout_call(manager: Pid, kind: str, target: Pid | None, req_opts: dict[str, Any]) -> Any:
    wait = _wait_ms(req_opts)
    call_timeout = req_opts.get("checkout_call_timeout", _DEFAULT_CALL_TIMEOUT)
    timeout: Any = "infinity" if call_timeout == "infinity" else call_timeout + wait
    try:
        value = _call(manager, "checkout", kind, target, wait, timeout=timeout)
    except NoProc:
        return None
    return None if value is TIMEOUT else value


def checkout(manager: Pid, req_opts: dict[str, Any] | None = None) -> tuple[Pid, dict[str, Any]] | None:
    """A connection of the pool that can take one more stream: ``(conn, meta)``, or None.

    Reserves nothing ("use responsibly", says Gun).  ``req_opts`` may carry
    ``checkout_retry`` and ``checkout_call_timeout``.  Gun's ``gun_pool:checkout/2``.
    """
    value = _checkout_call(manager, "any", None, req_opts or {})
    if value is None:
        return None
    return (value[0], value[1])


# ---------------------------------------------------------------------------
# Requests


def _auth_str(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, (list, tuple)):
        return "".join(_auth_str(x) for x in v)
    return str(v)


def _host_header(hs: Any) -> Any:
    if hs is None:
        return None
    items = hs.items() if isinstance(hs, dict) else hs
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        n = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        if n.lower() == "host":
            return value
    return None


def _split(req_opts: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pool options, the request options gunpy.request accepts)."""
    if req_opts is None:
        return {}, {}
    if not isinstance(req_opts, dict):
        raise TypeError(f"request options must be a dict, not {type(req_opts).__name__}")
    pool_opts = {k: v for k, v in req_opts.items() if k in _POOL_REQ_OPTS}
    rest = {k: v for k, v in req_opts.items() if k not in _POOL_REQ_OPTS}
    _wait_ms(pool_opts)  # a bad checkout_retry raises here, before anything happens
    return pool_opts, rest


def _find_pool(auth: Any, pool_opts: dict[str, Any]) -> Pid | None:
    if auth is None:
        raise ValueError(
            "a pooled request needs a host header or the authority option to find its pool"
        )
    auth_s = _auth_str(auth)
    scope = pool_opts.get("scope", "default")
    e = _lookup(auth_s, scope)
    if e is not None:
        return e.pid
    if not pool_opts.get("start_pool_if_missing"):
        return None
    host, port = _split_authority(auth_s)
    result = start_pool(host, port, {"scope": scope})
    if result[0] == "ok":
        pid: Pid = result[1]
        return pid
    if isinstance(result[1], tuple) and result[1][0] == "already_started":
        started: Pid = result[1][1]
        return started
    return None


def _stream(
    method: str, path: Any, hs: Any, body: Any, req_opts: dict[str, Any] | None
) -> tuple[Any, ...]:
    pool_opts, opts = _split(req_opts)
    manager = _find_pool(pool_opts.get("authority", _host_header(hs)), pool_opts)
    if manager is None:
        return POOL_NOT_FOUND
    target = as_pid(opts["reply_to"]) if "reply_to" in opts else _self()
    value = _checkout_call(manager, "http", target, pool_opts)
    if value is None:
        return NO_CONNECTION
    conn, _meta, token, tracker, _ = value
    opts["reply_to"] = tracker
    try:
        with tracker.lock:
            # Counted before the connection can answer: its thread waits for the lock.
            if body is None:
                ref = _gun_headers(conn, method, path, hs, opts)
            else:
                ref = _gun_request(conn, method, path, hs, body, opts)
            tracker.add(ref, token, body is not None)
    except BaseException:
        manager.send(("$release", conn, token))
        raise
    return ("async", (conn, ref))


def request(
    method: str, path: Any, headers: Any, body: Any = b"", req_opts: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """A request with a full body over the pool: ``("async", (conn, ref))``,
    ``POOL_NOT_FOUND`` or ``NO_CONNECTION`` (``gun_pool:request/4,5``).

    The pool is the one of the ``host`` header (or the ``authority`` option) and the
    ``scope`` option.  ``req_opts``: gunpy's (``reply_to``, ``flow``...) plus
    ``scope``, ``authority``, ``checkout_retry``, ``checkout_call_timeout``,
    ``start_pool_if_missing``.
    """
    return _stream(method, path, headers, body, req_opts)


def headers(
    method: str, path: Any, headers: Any, req_opts: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """The request headers only; the body follows with ``data`` (``gun_pool:headers/3,4``)."""
    return _stream(method, path, headers, None, req_opts)


def get(path: Any, headers: Any = None, req_opts: dict[str, Any] | None = None) -> tuple[Any, ...]:
    return _stream("GET", path, headers, b"", req_opts)


def head(path: Any, headers: Any = None, req_opts: dict[str, Any] | None = None) -> tuple[Any, ...]:
    return _stream("HEAD", path, headers, b"", req_opts)


def options(
    path: Any, headers: Any = None, req_opts: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    return _stream("OPTIONS", path, headers, b"", req_opts)


def delete(
    path: Any, headers: Any = None, req_opts: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    return _stream("DELETE", path, headers, b"", req_opts)


def _with_body(
    method: str, path: Any, hs: Any, body: Any, req_opts: dict[str, Any] | None
) -> tuple[Any, ...]:
    # As gun_pool: post/2 and post/3 with a map send the headers only.
    if isinstance(body, dict) and req_opts is None:
        req_opts, body = body, None
    return _stream(method, path, hs, body, req_opts)


def post(
    path: Any, headers: Any = None, body: Any = None, req_opts: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """POST with ``body``, or the headers only (body to follow with ``data``) when None."""
    return _with_body("POST", path, headers, body, req_opts)


def put(
    path: Any, headers: Any = None, body: Any = None, req_opts: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    return _with_body("PUT", path, headers, body, req_opts)


def patch(
    path: Any, headers: Any = None, body: Any = None, req_opts: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    return _with_body("PATCH", path, headers, body, req_opts)


def ws_upgrade(
    path: Any, headers: Any = None, ws_opts: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """Upgrade a pooled connection to Websocket: ``("async", (conn, ref))`` or an error.

    A gunpy addition (Gun's is a "todo").  On HTTP/1.1 the connection becomes the
    caller's until it goes down; on HTTP/2 (RFC 8441) the Websocket takes one
    stream slot until it is closed.  ``ws_opts``: gunpy's ``ws_upgrade`` options
    (merged over the pool's ``conn_opts["ws_opts"]``) plus the pool's request
    options (``scope``, ``authority``, ``checkout_retry``...).
    """
    pool_opts, opts = _split(ws_opts)
    manager = _find_pool(pool_opts.get("authority", _host_header(headers)), pool_opts)
    if manager is None:
        return POOL_NOT_FOUND
    target = as_pid(opts["reply_to"]) if "reply_to" in opts else _self()
    value = _checkout_call(manager, "upgrade", target, pool_opts)
    if value is None:
        return NO_CONNECTION
    conn, _meta, token, tracker, conn_ws_opts = value
    full = {**conn_ws_opts, **opts, "reply_to": tracker}
    try:
        with tracker.lock:
            ref = _gun_ws_upgrade(conn, path, headers, full)
            tracker.add(ref, token, True)
    except BaseException:
        manager.send(("$release", conn, token))
        raise
    return ("async", (conn, ref))


# ---------------------------------------------------------------------------
# Streams: (conn, ref)


def data(pool_ref: tuple[Pid, Ref], fin: str, data: Any) -> str:
    """Send a request body chunk (``gun_pool:data/3``)."""
    conn, ref = pool_ref
    result = _gun_data(conn, ref, fin, data)
    if fin == "fin":
        t = _by_ref.get(ref)
        if t is not None:
            t.request_done(ref)
    return result


def await_(pool_ref: tuple[Pid, Ref], timeout: Any = 5000, mref: Ref | None = None) -> tuple[Any, ...]:
    """``gunpy.await_(conn, ref, timeout, mref)`` (``gun_pool:await/1,2,3``)."""
    conn, ref = pool_ref
    return _gun_await(conn, ref, timeout, mref)


def await_body(
    pool_ref: tuple[Pid, Ref], timeout: Any = 5000, mref: Ref | None = None
) -> tuple[Any, ...]:
    """``gunpy.await_body(conn, ref, timeout, mref)`` (``gun_pool:await_body/1,2,3``)."""
    conn, ref = pool_ref
    return _gun_await_body(conn, ref, timeout, mref)


def flush(pool_ref: tuple[Pid, Ref]) -> str:
    """Drop the stream's messages already received.  Gun's ``gun_pool:flush/1`` flushes
    the whole connection (other pooled streams included); gunpy flushes the stream."""
    return _gun_flush(pool_ref[1])


def update_flow(pool_ref: tuple[Pid, Ref], inc: int) -> str:
    """``gunpy.update_flow`` (``gun_pool:update_flow/2``)."""
    conn, ref = pool_ref
    return _gun_update_flow(conn, ref, inc)


def cancel(pool_ref: tuple[Pid, Ref]) -> str:
    """Cancel a pooled stream: no more messages for it (``gun_pool:cancel/1``).

    HTTP/2: ``gunpy.cancel`` (RST_STREAM); the slot is free at once.  HTTP/1.1
    cannot cancel (Gun reads the response to its end, unseen): the pool drops the
    stream's messages itself and frees the slot once the response has been read;
    a flow-controlled stream gets its flow opened so that it can be.
    """
    conn, ref = pool_ref
    t = _by_ref.get(ref)
    if t is not None and t.cancel(ref):
        return _gun_update_flow(conn, ref, _FLOW_OPEN)
    return _gun_cancel(conn, ref)


def stream_info(pool_ref: tuple[Pid, Ref]) -> tuple[str, Any]:
    """``gunpy.stream_info`` (``gun_pool:stream_info/1``)."""
    conn, ref = pool_ref
    return _gun_stream_info(conn, ref)


def ws_send(first: Any, second: Any) -> Any:
    """Send Websocket frames.

    ``ws_send((conn, ref), frames)``: on a Websocket stream from ``ws_upgrade``.
    ``ws_send(frames, opts)`` (Gun's ``gun_pool:ws_send/2``): on one of the pool's
    Websocket connections (those its ``setup_fun`` upgraded, with ``{"ws": ref}``
    in their meta), found by ``opts["authority"]`` and ``opts["scope"]``; returns
    ``"ok"``, ``POOL_NOT_FOUND`` or ``NO_WS_CONNECTION``.
    """
    if (
        isinstance(first, tuple)
        and len(first) == 2
        and isinstance(first[0], Pid)
        and isinstance(first[1], Ref)
    ):
        return _gun_ws_send(first[0], first[1], second)
    frames, opts = first, second
    if not isinstance(opts, dict) or "authority" not in opts:
        raise ValueError("ws_send(frames, opts) needs opts['authority']")
    pool_opts, _ = _split(opts)
    manager = _find_pool(opts["authority"], pool_opts)
    if manager is None:
        return POOL_NOT_FOUND
    value = _checkout_call(manager, "ws", None, pool_opts)
    if value is None:
        return NO_WS_CONNECTION
    conn, meta = value
    return _gun_ws_send(conn, meta["ws"], frames)
