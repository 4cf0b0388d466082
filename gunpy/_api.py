"""The caller's side of module ``gun``: make the stream ref, cast, return.

Every request-like function builds its ``StreamRef`` here, normalises and checks
the headers here (so a bad header raises at the call site, before anything is
sent), casts a tuple to the connection actor and returns the ref at once, as Gun
does.  ``await_``, ``await_body``, ``await_up`` and ``flush`` are selective
receives on the *caller's* mailbox, keyed by ``(conn, ref)`` so they stay O(1)
however many other messages are queued.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _conn, _options
from ._headers import normalize_headers
from ._process import (
    TIMEOUT,
    Pid,
    Ref,
    _backlog,
    _mailbox,
    _ms_to_seconds,
    as_pid,
    demonitor,
    flush_messages,
    make_ref,
    monitor,
)
from ._process import self as _self
from .exceptions import NoProc, OptionsError

#: A stream reference: a ``Ref``, or for a stream inside a CONNECT tunnel the tuple
#: of the tunnel's refs followed by its own (Gun's lists; tuples, to be hashable).
StreamRef = Ref | tuple[Ref, ...]

_REQ_OPTS = ("reply_to", "flow", "tunnel", "invalid_request_headers", "timeout")
_NO_BODY = b""


# ---------------------------------------------------------------------------
# Connection


def open(host: Any, port: int, opts: dict[str, Any] | None = None) -> tuple[str, Any]:  # noqa: A001
    """Start a connection to ``host:port``: ``("ok", conn)`` or ``("error", ("options", ...))``.

    Returns at once; the owner (the caller) gets ``("gun_up", conn, protocol)`` when
    connected.  Gun's ``gun:open/2,3``.
    """
    opts = {} if opts is None else opts
    if isinstance(host, bytes):
        return ("error", ("host", host))  # Gun refuses binaries too
    if not isinstance(host, str):
        host = str(host)  # ipaddress objects
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return ("error", ("port", port))
    bad = _options.check_options(opts)
    if bad is not None:
        return ("error", bad)
    full = _options.with_defaults(opts, port)
    return ("ok", _conn.start(_self(), host, port, full))


def open_unix(socket_path: str, opts: dict[str, Any] | None = None) -> tuple[str, Any]:
    """Like ``open`` over a Unix domain socket; the host header defaults to ``localhost``."""
    opts = {} if opts is None else opts
    bad = _options.check_options(opts)
    if bad is not None:
        return ("error", bad)
    if opts.get("transport") in ("tls", "ssl"):
        return ("error", ("options", ("transport", opts["transport"])))
    full = _options.with_defaults(opts, 0)
    full["transport"] = "tcp"
    return ("ok", _conn.start(_self(), "localhost", 0, full, unix_path=socket_path))


def await_up(
    conn: Pid, timeout: int | str = 5000, mref: Ref | None = None
) -> tuple[str, Any]:
    """Wait for ``gun_up``: ``("ok", protocol)``, ``("error", ("down", reason))`` or
    ``("error", "timeout")``.  Gun's ``gun:await_up/1,2,3``."""
    if isinstance(timeout, Ref) and mref is None:  # gun:await_up/2 with a monitor ref
        timeout, mref = 5000, timeout
    own = mref is None
    if own:
        mref = monitor(conn)
    try:
        msg = _mailbox().receive_keyed(
            (("gun_up", conn), ("DOWN", mref)), _ms_to_seconds(timeout)
        )
    finally:
        if own:
            assert mref is not None
            demonitor(mref, flush=True)
    if msg is TIMEOUT:
        return ("error", "timeout")
    if msg[0] == "gun_up":
        return ("ok", msg[2])
    return ("error", ("down", msg[4]))


def _call(conn: Pid, what: str, *args: Any, timeout: int | str = 5000) -> Any:
    mref = monitor(conn)
    conn.send(("$call", _self(), mref, what, args))
    try:
        msg = _mailbox().receive_keyed((("$reply", mref), ("DOWN", mref)), _ms_to_seconds(timeout))
    finally:
        demonitor(mref, flush=True)
    if msg is TIMEOUT:
        raise TimeoutError(f"{what} on {conn!r} timed out")
    if msg[0] == "DOWN":
        raise NoProc(f"{what}: the connection {conn!r} is not alive ({msg[4]!r})")
    return msg[2]


def info(conn: Pid) -> dict[str, Any]:
    """A snapshot of the connection (Gun's keys).  Raises ``NoProc`` if it is gone."""
    result: dict[str, Any] = _call(conn, "info")
    return result


def close(conn: Pid) -> str:
    """Brutal close: the connection stops now, without gun_down (Gun's ``gun:close/1``).

    Waits (up to 5 s) until the connection process has exited, as
    ``supervisor:terminate_child`` does.
    """
    mref = monitor(conn)
    conn.send(("$close",))
    _mailbox().receive_keyed((("DOWN", mref),), 5.0)
    return "ok"


def shutdown(conn: Pid) -> str:
    """Graceful close, bounded by ``closing_timeout``; no reconnect (``gun:shutdown/1``)."""
    conn.send(("$shutdown",))
    return "ok"


def set_owner(conn: Pid, new_owner: Any) -> str:
    """Make ``new_owner`` the owner (only the current owner may)."""
    conn.send(("$set_owner", _self(), as_pid(new_owner)))
    return "ok"


# ---------------------------------------------------------------------------
# Requests


def _reply_to(req_opts: Mapping[str, Any] | None) -> Pid:
    if req_opts and "reply_to" in req_opts:
        return as_pid(req_opts["reply_to"])
    return _self()


def _check_req_opts(req_opts: Any) -> dict[str, Any]:
    if req_opts is None:
        return {}
    if not isinstance(req_opts, dict):
        raise OptionsError(("options", req_opts), f"request options must be a dict: {req_opts!r}")
    for k, v in req_opts.items():
        if k not in _REQ_OPTS:
            raise OptionsError(("options", (k, v)), f"unknown request option {k!r}")
        if k == "timeout" and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            # gunpy addition (Gun issue #317): see Connection._start_request_timer.
            raise OptionsError(("options", (k, v)), f"timeout must be positive milliseconds, not {v!r}")
        if k == "flow" and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise OptionsError(("options", (k, v)), f"flow must be a positive integer, not {v!r}")
        if k == "tunnel" and _tunnel_ref(v) is None:
            raise OptionsError(
                ("options", (k, v)), f"tunnel must be a stream reference, not {v!r}"
            )
        if k == "invalid_request_headers" and v not in ("raise", "ignore"):
            raise OptionsError(("options", (k, v)), f"invalid_request_headers: {v!r}")
    return req_opts


def _tunnel_ref(v: Any) -> StreamRef | None:
    """A ``tunnel`` option as a stream ref (a Gun-style list becomes a tuple)."""
    if isinstance(v, Ref):
        return v
    if isinstance(v, (tuple, list)) and v and all(isinstance(r, Ref) for r in v):
        return tuple(v)
    return None


def _new_ref(opts: Mapping[str, Any] | None) -> StreamRef:
    """The new stream's ref: inside a tunnel, the tunnel's refs then a new one
    (Gun's ``[TunnelRef, ..., Ref]``)."""
    ref = make_ref()
    tunnel = _tunnel_ref(opts.get("tunnel")) if opts else None
    if tunnel is None:
        return ref
    if isinstance(tunnel, Ref):
        return (tunnel, ref)
    return (*tunnel, ref)


def _body(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, (list, tuple)):  # iodata
        return b"".join(_body(b) for b in body)
    raise TypeError(f"a body must be bytes, str or a list of them, not {type(body).__name__}")


def _path(path: Any) -> str:
    if isinstance(path, bytes):
        return path.decode("latin-1")
    if not isinstance(path, str):
        raise TypeError(f"path must be str, not {type(path).__name__}")
    if any(c in path for c in "\r\n "):
        raise ValueError(f"path {path!r} contains whitespace or CR/LF")
    return path


def _cast(conn: Pid, op: tuple[Any, ...]) -> None:
    """Cast ``op`` to the connection, or carry it out at once on this thread when
    the connection's actor is idle (``Connection._inline``: one thread hop fewer).

    Not while messages wait in the caller's mailbox: a caller working through a
    backlog (a stream: an echo read, one more message sent) makes more casts soon,
    and the actor writes a burst of them with one ``send``; one write per cast
    cost the 64 B stream 15 % of its rate.  A caller about to wait for an answer
    (a ping-pong, a request) has nothing waiting, and that is where the hop shows.
    """
    box = conn._box
    inline = box._inline if box is not None else None
    if inline is None or not conn._alive or _backlog() or not inline(op):
        conn.send(op)


def request(
    conn: Pid,
    method: str,
    path: str,
    headers: Any = None,
    body: Any = _NO_BODY,
    req_opts: dict[str, Any] | None = None,
) -> StreamRef:
    """Send a request with a full body; returns its stream ref (``gun:request/5,6``)."""
    opts = _check_req_opts(req_opts)
    hs = normalize_headers(headers, opts.get("invalid_request_headers", "raise") == "raise")
    method = method.decode("latin-1") if isinstance(method, bytes) else method
    ref = _new_ref(opts)
    _cast(conn, ("$request", ref, _reply_to(opts), method, _path(path), hs, _body(body), opts))
    return ref


def headers(
    conn: Pid, method: str, path: str, headers: Any = None, req_opts: dict[str, Any] | None = None
) -> StreamRef:
    """Send the request headers only; the body follows with ``data`` (``gun:headers/4,5``)."""
    opts = _check_req_opts(req_opts)
    hs = normalize_headers(headers, opts.get("invalid_request_headers", "raise") == "raise")
    method = method.decode("latin-1") if isinstance(method, bytes) else method
    ref = _new_ref(opts)
    _cast(conn, ("$request", ref, _reply_to(opts), method, _path(path), hs, None, opts))
    return ref


def get(conn: Pid, path: str, headers: Any = None, req_opts: dict[str, Any] | None = None) -> StreamRef:
    """GET (sent with ``content-length: 0``, as Gun does)."""
    return request(conn, "GET", path, headers, _NO_BODY, req_opts)


def head(conn: Pid, path: str, headers: Any = None, req_opts: dict[str, Any] | None = None) -> StreamRef:
    return request(conn, "HEAD", path, headers, _NO_BODY, req_opts)


def options(
    conn: Pid, path: str, headers: Any = None, req_opts: dict[str, Any] | None = None
) -> StreamRef:
    return request(conn, "OPTIONS", path, headers, _NO_BODY, req_opts)


def delete(
    conn: Pid, path: str, headers: Any = None, req_opts: dict[str, Any] | None = None
) -> StreamRef:
    return request(conn, "DELETE", path, headers, _NO_BODY, req_opts)


def _with_body(
    method: str, conn: Pid, path: str, hs: Any, body: Any, req_opts: dict[str, Any] | None
) -> StreamRef:
    # Gun: post/3 and post/4 with a map as 4th argument send the headers only;
    # post/4 with iodata and post/5 send the whole request.
    if isinstance(body, dict) and req_opts is None:
        req_opts, body = body, None
    if body is None:
        return headers(conn, method, path, hs, req_opts)
    return request(conn, method, path, hs, body, req_opts)


def post(
    conn: Pid, path: str, headers: Any = None, body: Any = None, req_opts: dict[str, Any] | None = None
) -> StreamRef:
    """POST with ``body``, or headers only (body to follow with ``data``) when None."""
    return _with_body("POST", conn, path, headers, body, req_opts)


def put(
    conn: Pid, path: str, headers: Any = None, body: Any = None, req_opts: dict[str, Any] | None = None
) -> StreamRef:
    return _with_body("PUT", conn, path, headers, body, req_opts)


def patch(
    conn: Pid, path: str, headers: Any = None, body: Any = None, req_opts: dict[str, Any] | None = None
) -> StreamRef:
    return _with_body("PATCH", conn, path, headers, body, req_opts)


def data(conn: Pid, ref: StreamRef, fin: str, data: Any) -> str:
    """Send a request body chunk; ``fin`` is ``"fin"`` or ``"nofin"`` (``gun:data/4``)."""
    if fin not in ("fin", "nofin"):
        raise ValueError(f"fin must be 'fin' or 'nofin', not {fin!r}")
    _cast(conn, ("$data", ref, _self(), fin, _body(data)))
    return "ok"


def ping(conn: Pid, req_opts: dict[str, Any] | None = None) -> Ref:
    """Send an HTTP/2 PING; the ack arrives as ``("gun_notify", conn, "ping_ack", ref)``.

    On HTTP/1.1 this is a connection error, as in Gun (``gun:ping/1,2``): the
    connection goes down with ``("error", ("ping_unsupported_by_protocol", ref))``.
    """
    opts = _check_req_opts(req_opts)
    ref = make_ref()
    tunnel = _tunnel_ref(opts.get("tunnel"))
    conn.send(("$ping", ref, _reply_to(opts), tunnel))
    return ref


def cancel(conn: Pid, ref: StreamRef) -> str:
    """Cancel a stream: no more messages for it (``gun:cancel/2``)."""
    conn.send(("$cancel", ref, _self()))
    return "ok"


def update_flow(conn: Pid, ref: StreamRef, inc: int) -> str:
    """Add ``inc`` to a stream's flow budget (``gun:update_flow/3``)."""
    if isinstance(inc, bool) or not isinstance(inc, int) or inc <= 0:
        raise ValueError(f"update_flow increment must be a positive integer, not {inc!r}")
    conn.send(("$update_flow", ref, inc))
    return "ok"


def stream_info(conn: Pid, ref: StreamRef) -> tuple[str, Any]:
    """``("ok", info | None)`` or ``("error", "not_connected")`` (``gun:stream_info/2``)."""
    result: tuple[str, Any] = _call(conn, "stream_info", ref)
    return result


# ---------------------------------------------------------------------------
# Websocket


def ws_upgrade(
    conn: Pid, path: str, headers: Any = None, ws_opts: dict[str, Any] | None = None
) -> StreamRef:
    """Ask for a Websocket upgrade; returns the stream ref (``gun:ws_upgrade/2,3,4``).

    Without ``ws_opts`` the connection's ``ws_opts`` apply; with them (Gun's /4),
    they replace the connection's, and may also carry ``reply_to``.
    """
    reply_to = _self()
    check = True
    if ws_opts is not None:
        if not isinstance(ws_opts, dict):
            raise OptionsError(("options", ("ws", ws_opts)), f"ws_opts must be a dict: {ws_opts!r}")
        bad = _options.check_protocol_opts("ws", ws_opts)
        if bad is not None:
            raise OptionsError(("options", ("ws", bad)), f"invalid ws option {bad[0]!r}: {bad[1]!r}")
        if "reply_to" in ws_opts:
            reply_to = as_pid(ws_opts["reply_to"])
        check = ws_opts.get("invalid_request_headers", "raise") == "raise"
    hs = normalize_headers(headers, check)
    ref = _new_ref(ws_opts)
    conn.send(("$ws_upgrade", ref, reply_to, _path(path), hs, ws_opts))
    return ref


def ws_send(conn: Pid, ref: StreamRef, frames: Any) -> str:
    """Send one Websocket frame or a list of frames (``gun:ws_send/3``)."""
    frames = list(frames) if isinstance(frames, list) else [frames]
    _cast(conn, ("$ws_send", ref, _self(), frames))
    return "ok"


# ---------------------------------------------------------------------------
# Proxies and tunnels


def connect(
    conn: Pid,
    destination: dict[str, Any],
    headers: Any = None,
    req_opts: dict[str, Any] | None = None,
) -> StreamRef:
    """Ask the proxy for a tunnel to ``destination`` (``gun:connect/2,3,4``).

    ``destination`` holds ``host`` and ``port`` and optionally ``username`` and
    ``password`` (Basic ``proxy-authorization``), ``protocols`` (inside the
    tunnel), ``transport`` (``"tls"``: a TLS handshake inside the tunnel),
    ``tls_opts`` and ``tls_handshake_timeout``.  Returns the CONNECT's stream ref
    at once.  A 2xx answer gives ``("gun_response", conn, ref, "fin", status,
    headers)`` then ``("gun_tunnel_up", conn, ref, protocol)``; requests through the
    tunnel then take ``{"tunnel": ref}``.  Any other answer is an ordinary
    response.  An HTTP/1.1 proxy takes a CONNECT only while no other stream is
    active.  With ``{"tunnel": ref}`` the CONNECT itself goes through an open
    tunnel (proxy chains).
    """
    opts = _check_req_opts(req_opts)
    dest = _options.connect_destination(destination)
    hs = normalize_headers(headers, opts.get("invalid_request_headers", "raise") == "raise")
    ref = _new_ref(opts)
    conn.send(("$connect", ref, _reply_to(opts), dest, hs, opts))
    return ref


# ---------------------------------------------------------------------------
# Receiving


def _await_msg(conn: Pid, ref: Any, timeout: int | str, mref: Ref | None) -> Any:
    own = mref is None
    if own:
        mref = monitor(conn)
    try:
        # As Gun's await: the stream's messages, connection-wide errors, any
        # gun_notify of the connection (ping acks...), and the monitor's DOWN.
        return _mailbox().receive_keyed(
            ((conn, ref), ("gun_error", conn), ("gun_notify", conn), ("DOWN", mref)),
            _ms_to_seconds(timeout),
        )
    finally:
        if own:
            assert mref is not None
            demonitor(mref, flush=True)


def _to_await(msg: Any) -> tuple[Any, ...]:
    if msg is TIMEOUT:
        return ("error", "timeout")
    tag = msg[0]
    if tag == "gun_response":
        return ("response", msg[3], msg[4], msg[5])
    if tag == "gun_data":
        return ("data", msg[3], msg[4])
    if tag == "gun_inform":
        return ("inform", msg[3], msg[4])
    if tag == "gun_trailers":
        return ("trailers", msg[3])
    if tag == "gun_ws":
        return ("ws", msg[3])
    if tag == "gun_upgrade":
        return ("upgrade", msg[3], msg[4])
    if tag == "gun_push":
        return ("push", msg[3], msg[4], msg[5], msg[6])
    if tag == "gun_sse":
        return ("sse", msg[3])
    if tag == "gun_tunnel_up":
        return ("up", msg[3])
    if tag == "gun_notify":
        return ("notify", msg[2], msg[3])
    if tag == "gun_error":
        if len(msg) == 4:
            return ("error", ("stream_error", msg[3]))
        return ("error", ("connection_error", msg[2]))
    if tag == "DOWN":
        return ("error", ("down", msg[4]))
    return ("error", ("unexpected", msg))  # pragma: no cover


def await_(
    conn: Pid, ref: Any, timeout: int | str = 5000, mref: Ref | None = None
) -> tuple[Any, ...]:
    """The next message of one stream, in Gun's ``gun:await/2,3,4`` shapes.

    ``("response", fin, status, headers)``, ``("data", fin, data)``,
    ``("inform", status, headers)``, ``("trailers", headers)``, ``("ws", frame)``,
    ``("upgrade", protocols, headers)``, ``("error", ("stream_error", r))``,
    ``("error", ("connection_error", r))``, ``("error", ("down", r))`` or
    ``("error", "timeout")``.  (``await`` is a Python keyword, hence the ``_``.)
    """
    if isinstance(timeout, Ref) and mref is None:  # gun:await/3 with a monitor ref
        timeout, mref = 5000, timeout
    return _to_await(_await_msg(conn, ref, timeout, mref))


def await_body(
    conn: Pid, ref: Any, timeout: int | str = 5000, mref: Ref | None = None
) -> tuple[Any, ...]:
    """Collect the body: ``("ok", body)``, ``("ok", body, trailers)`` or an error.

    As in Gun, call it after ``await_`` returned the response; the timeout applies
    to each message.
    """
    if isinstance(timeout, Ref) and mref is None:
        timeout, mref = 5000, timeout
    own = mref is None
    if own:
        mref = monitor(conn)
    box = _mailbox()
    secs = _ms_to_seconds(timeout)
    # Only these messages end or extend the body (Gun's await_body); anything else
    # for the stream (a gun_response not awaited yet) stays queued.  Keyed: O(1)
    # per chunk however much else is queued.
    keys = ((conn, ref), ("gun_error", conn), ("DOWN", mref))
    chunks: list[bytes] = []
    try:
        while True:
            msg = box.receive_keyed(keys, secs, _BODY_TAGS)
            if msg is TIMEOUT:
                return ("error", "timeout")
            tag = msg[0]
            if tag == "gun_data":
                chunks.append(msg[4])
                if msg[3] == "fin":
                    return ("ok", b"".join(chunks))
            elif tag == "gun_trailers":
                return ("ok", b"".join(chunks), msg[3])
            else:
                return _to_await(msg)
    finally:
        if own:
            assert mref is not None
            demonitor(mref, flush=True)


_BODY_TAGS = frozenset({"gun_data", "gun_trailers", "gun_error", "DOWN"})

_CONN_FLUSH_TAGS = frozenset(
    {
        "gun_up",
        "gun_down",
        "gun_inform",
        "gun_response",
        "gun_data",
        "gun_trailers",
        "gun_push",
        "gun_error",
        "gun_upgrade",
        "gun_ws",
        "gun_tunnel_up",
    }
)


def flush(what: Any, *more: Any) -> str:
    """Drop already-received messages, without waiting (``gun:flush/1``).

    ``flush(conn)``: every Gun message from that connection and the ``DOWN`` of any
    monitor on it; ``flush(ref)``: the messages of that stream.  As in Gun,
    ``gun_notify`` and ``gun_sse`` are not dropped.  Any other argument is a
    pattern (as for ``receive``): ``flush(("tick", ANY))`` drops matching messages.
    """
    box = _mailbox()
    if isinstance(what, Pid) and not more:

        def by_conn(m: Any) -> bool:
            if type(m) is not tuple or len(m) < 2:
                return False
            if m[0] in _CONN_FLUSH_TAGS:
                return m[1] is what
            return m[0] == "DOWN" and len(m) == 5 and m[3] is what

        box.flush((by_conn,))
        return "ok"
    if (isinstance(what, Ref) or _is_tunnel_ref(what)) and not more:
        keys = tuple(k for k in list(box._index) if type(k) is tuple and len(k) == 2 and k[1] == what)
        box.flush_keys(
            keys, lambda m: m[0] in _CONN_FLUSH_TAGS and m[0] not in ("gun_up", "gun_down")
        )
        return "ok"
    flush_messages(what, *more)
    return "ok"


def _is_tunnel_ref(x: Any) -> bool:
    return type(x) is tuple and len(x) > 0 and all(isinstance(r, Ref) for r in x)
