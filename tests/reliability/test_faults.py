"""Faults in every connection state, and the exact messages each produces.

Gun's shutdown_SUITE, send_errors_SUITE and gun_SUITE check what happens when things
go wrong in every state of the connection process; these tests do the same for
gunpy (gun-reference sections 2, 4.1-4.3, 4.7, 4.9).

A *scene* puts a connection in one state against a scripted origin
(``gunpy.testing.ScriptedOrigin``); a *fault* then happens; the test collects every message the
connection sends up to its ``DOWN`` and compares them, in order, with the table
below (``EXPECTED``), which docs/guide/failures.md reproduces.  Every connection
has ``retry: 0`` so the connection process ends after the fault and its exit
reason can be checked; a few tests at the end check the retry path.

The autouse ``no_leaks`` fixture (conftest.py) then checks that no connection
thread, pykka actor or file descriptor is left.

States: ``not_connected`` (waiting to retry after refused connects),
``connecting`` (a listener whose accept queue is full), ``tls_handshake`` (an
origin that accepts TCP and never answers the ClientHello), ``idle`` (connected,
no stream), ``mid_body`` (one stream: its request body streaming and its response
body half received), ``pipelined`` (three streams: the first answered, the second
and third waiting), ``ws`` (a Websocket open), ``closing`` (``shutdown`` while a
response is in progress), ``ws_closing`` (``shutdown`` of a Websocket, the
server's close not yet sent).

Faults: ``server_closes`` (FIN), ``server_resets`` (RST), ``server_half_closes``
(``shutdown(SHUT_WR)``: FIN, still reading), ``server_stops_reading`` (the origin
pauses reading, we send 16 MiB with ``send_timeout: 200`` and a 4 KiB ``sndbuf``), ``owner_dies``
(``Exit("boom")``), ``owner_exits`` (normally), ``shutdown``, ``close``.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from wsproto.events import CloseConnection

import gunpy
from gunpy import ANY, TIMEOUT
from gunpy.process import as_pid
from gunpy.testing import OriginConn, OriginFactory, ScriptedOrigin, refused_port
from tests.reliability._support import (
    GUID,
    FullAcceptQueue,
    ServerWs,
    Tracker,
    head_of,
    until_down,
)

# Send-timeout options for the "server stops reading" fault (Gun's send_timeout).
STOP_READING_OPTS = {"tcp_opts": {"send_timeout": 200, "sndbuf": 4096}}
BIG = b"x" * (16 * 1024 * 1024)

EOF_BODY = "The server closed the connection before the end of the response body."
EOF_ERROR = ("error", ("connection_error", "protocol_error", EOF_BODY))
RESET = ("error", "econnreset")
TIMEOUT_ERR = ("error", "timeout")
BOOM = ("shutdown", ("owner_down", "boom"))


# --------------------------------------------------------------------------- scenes


@dataclass
class Scene:
    conn: gunpy.Pid
    mref: gunpy.Ref
    server: OriginConn | None = None
    refs: list[Any] = field(default_factory=list)
    owner: Any = None  # the ForwardingOwner's ActorRef when the test thread is not the owner
    ws: ServerWs | None = None
    # What the server does after a graceful fault (owner death, shutdown) to let
    # the connection finish: complete the response, answer the close...
    finish: Callable[[], None] = lambda: None
    # Checks on what the server saw, after the DOWN.
    after: Callable[[], None] = lambda: None
    keep: list[Any] = field(default_factory=list)  # objects to stop after the test


def _open(track: Tracker, owned: bool, port: int, **opts: Any) -> tuple[gunpy.Pid, Any]:
    if owned:
        conn, owner = track.open_owned(port, **opts)
        return conn, owner
    return track.open(port, **opts), None


def scene_not_connected(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """Refused twice (the immediate first retry), now waiting 60 s for the next attempt;
    one request queued."""
    waiting = threading.Event()
    calls: list[int] = []

    def retry_fun(retries: int, o: dict[str, Any]) -> dict[str, Any]:
        calls.append(retries)
        if len(calls) == 2:
            waiting.set()
        return {"retries": retries - 1, "timeout": 60000}

    conn, owner = _open(track, owned, refused_port(), retry=5, retry_fun=retry_fun, **opts)
    assert waiting.wait(5)
    assert gunpy.info(conn)["state_name"] == "not_connected"
    ref = gunpy.get(conn, "/")
    return Scene(conn, gunpy.monitor(conn), refs=[ref], owner=owner)


def scene_connecting(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """A SYN the full accept queue drops: the connect never completes; one request queued."""
    full = FullAcceptQueue()
    conn, owner = _open(track, owned, full.port, **opts)
    assert gunpy.info(conn)["state_name"] == "connecting"
    ref = gunpy.get(conn, "/")
    s = Scene(conn, gunpy.monitor(conn), refs=[ref], owner=owner, keep=[full])
    return s


def scene_tls_handshake(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """The origin accepts TCP and reads the ClientHello's record header, never answers."""
    conn, owner = _open(track, owned, origin.port, transport="tls", **opts)
    server = origin.accept()
    assert server.recv_exact(5)[:1] == b"\x16"  # a TLS handshake record
    assert gunpy.info(conn)["state_name"] == "initial_tls_handshake"
    ref = gunpy.get(conn, "/")
    return Scene(conn, gunpy.monitor(conn), server, refs=[ref], owner=owner)


def _up(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> tuple[gunpy.Pid, Any, OriginConn]:
    conn, owner = _open(track, owned, origin.port, **opts)
    assert gunpy.await_up(conn) == ("ok", "http")
    return conn, owner, origin.accept()


def scene_idle(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    conn, owner, server = _up(track, origin, owned, **opts)
    s = Scene(conn, gunpy.monitor(conn), server, owner=owner)
    s.after = lambda: _assert_closed_by_client(server)
    return s


def scene_mid_body(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """A POST whose chunked request body is streaming, and whose response (content-length
    100) has delivered 10 bytes."""
    conn, owner, server = _up(track, origin, owned, **opts)
    ref = gunpy.headers(conn, "POST", "/upload", [("content-type", "application/octet-stream")])
    gunpy.data(conn, ref, "nofin", b"first")
    server.recv_request()
    assert server.recv_until(b"5\r\nfirst\r\n") == b"5\r\nfirst\r\n"
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"0123456789")
    assert gunpy.receive(("gun_response", conn, ref, "nofin", 200, ANY), after=3000) is not TIMEOUT
    assert gunpy.receive(("gun_data", conn, ref, "nofin", b"0123456789"), after=3000) is not TIMEOUT
    s = Scene(conn, gunpy.monitor(conn), server, refs=[ref], owner=owner)
    s.finish = lambda: server.send(b"a" * 90)
    return s


def scene_pipelined(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """Three GETs written at once; the first answered, the second and third waiting."""
    conn, owner, server = _up(track, origin, owned, **opts)
    r1, r2, r3 = (gunpy.get(conn, f"/{i}") for i in (1, 2, 3))
    for _ in range(3):
        server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert gunpy.receive(("gun_response", conn, r1, "nofin", 200, ANY), after=3000) is not TIMEOUT
    assert gunpy.receive(("gun_data", conn, r1, "fin", b"ok"), after=3000) is not TIMEOUT
    s = Scene(conn, gunpy.monitor(conn), server, refs=[r2, r3], owner=owner)
    s.finish = lambda: server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nr2")
    return s


def scene_ws(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    conn, owner, server = _up(track, origin, owned, **opts)
    ref = gunpy.ws_upgrade(conn, "/ws")
    ws = ServerWs.accept(server)
    assert gunpy.receive(("gun_upgrade", conn, ref, ["websocket"], ANY), after=3000) is not TIMEOUT
    gunpy.ws_send(conn, ref, ("text", "hello"))
    assert [e.data for e in ws.events(1)] == ["hello"]
    s = Scene(conn, gunpy.monitor(conn), server, refs=[ref], owner=owner, ws=ws)

    def finish() -> None:
        # The client sent close 1001 (going away): answer it.
        events = ws.events(1)
        assert [(type(e), getattr(e, "code", None)) for e in events] == [(CloseConnection, 1001)]
        ws.send(events[0].response())

    s.finish = finish
    return s


def scene_closing(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """``shutdown`` while a response (content-length 100) has delivered 10 bytes."""
    http_opts = opts.pop("http_opts", {})
    conn, owner, server = _up(track, origin, owned, http_opts=http_opts, **opts)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
    assert gunpy.receive(("gun_data", conn, ref, "nofin", ANY), after=3000) is not TIMEOUT
    gunpy.shutdown(conn)
    assert gunpy.info(conn)["state_name"] == "closing"
    gunpy.flush(ref)  # the gun_response
    s = Scene(conn, gunpy.monitor(conn), server, refs=[ref], owner=owner)
    s.finish = lambda: server.send(b"a" * 90)
    return s


def scene_ws_closing(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """``shutdown`` of a Websocket: close 1001 sent, the server's close not yet."""
    s = scene_ws(track, origin, owned, **opts)
    gunpy.shutdown(s.conn)
    assert s.ws is not None
    events = s.ws.events(1)
    assert [(type(e), getattr(e, "code", None)) for e in events] == [(CloseConnection, 1001)]
    assert gunpy.info(s.conn)["state_name"] in ("connected_ws_only", "closing")
    ws = s.ws
    s.finish = lambda: ws.send(events[0].response())
    return s


# -- HTTP/2 (h2c prior knowledge) and CONNECT tunnel scenes (issue 6) -------------------


def _h2_up(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> tuple[gunpy.Pid, Any, Any]:
    from tests.integration.test_http2 import H2Server

    conn, owner = _open(track, owned, origin.port, protocols=["http2"], **opts)
    assert gunpy.await_up(conn) == ("ok", "http2")
    srv = H2Server(origin.accept())
    srv.start()
    return conn, owner, srv


def scene_h2_idle(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """HTTP/2 (prior knowledge), handshake done, no stream."""
    conn, owner, srv = _h2_up(track, origin, owned, **opts)
    s = Scene(conn, gunpy.monitor(conn), srv.oc, owner=owner)
    s.after = lambda: _assert_closed_by_client(srv.oc)
    return s


def scene_h2_mid_body(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """HTTP/2: one POST whose request body is streaming, and whose response
    (content-length 100) has delivered 10 bytes."""
    from h2.events import DataReceived

    conn, owner, srv = _h2_up(track, origin, owned, **opts)
    ref = gunpy.headers(conn, "POST", "/upload", [("content-type", "application/octet-stream")])
    gunpy.data(conn, ref, "nofin", b"first")
    sid = srv.request().stream_id
    assert srv.expect(DataReceived).data == b"first"
    srv.respond(sid, 200, [(b"content-length", b"100")], b"0123456789", end=False)
    assert gunpy.receive(("gun_response", conn, ref, "nofin", 200, ANY), after=3000) is not TIMEOUT
    assert gunpy.receive(("gun_data", conn, ref, "nofin", b"0123456789"), after=3000) is not TIMEOUT
    s = Scene(conn, gunpy.monitor(conn), srv.oc, refs=[ref], owner=owner)

    def finish() -> None:
        # The stream is done when both sides have ended it: end the request body too.
        srv.h2.send_data(sid, b"a" * 90, end_stream=True)
        srv.flush()
        gunpy.data(conn, ref, "fin", b"")

    s.finish = finish
    return s


def scene_h2_streams(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """HTTP/2: three GETs at once; the first answered, the second and third open."""
    conn, owner, srv = _h2_up(track, origin, owned, **opts)
    r1, r2, r3 = (gunpy.get(conn, f"/{i}") for i in (1, 2, 3))
    sids = [srv.request().stream_id for _ in range(3)]
    srv.respond(sids[0], 200, [(b"content-length", b"2")], b"ok")
    assert gunpy.receive(("gun_response", conn, r1, "nofin", 200, ANY), after=3000) is not TIMEOUT
    assert gunpy.receive(("gun_data", conn, r1, "fin", b"ok"), after=3000) is not TIMEOUT
    s = Scene(conn, gunpy.monitor(conn), srv.oc, refs=[r2, r3], owner=owner)

    def finish() -> None:
        srv.respond(sids[1], 200, [(b"content-length", b"2")], b"r2")
        srv.respond(sids[2], 200, [(b"content-length", b"2")], b"r3")

    s.finish = finish
    return s


def scene_tunnel(track: Tracker, origin: ScriptedOrigin, owned: bool, **opts: Any) -> Scene:
    """An HTTP/1.1 proxy (the scripted origin) answers CONNECT with 200 and then
    plays the origin: a GET through the tunnel has had its response (content-length
    100) deliver 10 bytes.  R = [the CONNECT's ref, the tunnelled request's ref]."""
    conn, owner, server = _up(track, origin, owned, **opts)
    cref = gunpy.connect(conn, {"host": "origin.example", "port": 80})
    assert server.recv_request().startswith(b"CONNECT origin.example:80 ")
    server.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert gunpy.receive(("gun_response", conn, cref, "fin", 200, ANY), after=3000) is not TIMEOUT
    assert gunpy.receive(("gun_tunnel_up", conn, cref, "http"), after=3000) is not TIMEOUT
    ref = gunpy.get(conn, "/in", None, {"tunnel": cref})
    assert server.recv_request().startswith(b"GET /in ")
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
    assert gunpy.receive(("gun_response", conn, ref, "nofin", 200, ANY), after=3000) is not TIMEOUT
    assert gunpy.receive(("gun_data", conn, ref, "nofin", b"0123456789"), after=3000) is not TIMEOUT
    s = Scene(conn, gunpy.monitor(conn), server, refs=[cref, ref], owner=owner)
    s.finish = lambda: server.send(b"a" * 90)
    return s


SCENES: dict[str, Callable[..., Scene]] = {
    "not_connected": scene_not_connected,
    "connecting": scene_connecting,
    "tls_handshake": scene_tls_handshake,
    "idle": scene_idle,
    "mid_body": scene_mid_body,
    "pipelined": scene_pipelined,
    "ws": scene_ws,
    "closing": scene_closing,
    "ws_closing": scene_ws_closing,
    "h2_idle": scene_h2_idle,
    "h2_mid_body": scene_h2_mid_body,
    "h2_streams": scene_h2_streams,
    "tunnel": scene_tunnel,
}


def _assert_closed_by_client(server: OriginConn) -> None:
    try:
        server.wait_closed(5000)
    except OSError:
        pass


# --------------------------------------------------------------------------- faults


def server_closes(s: Scene) -> None:
    if s.server is not None:
        s.server.close()
    else:  # connecting: the listener goes away; the next SYN retransmission gets a RST
        s.keep[0].close()


def server_resets(s: Scene) -> None:
    assert s.server is not None
    s.server.reset()


def server_half_closes(s: Scene) -> None:
    assert s.server is not None
    s.server.half_close()


def server_stops_reading(s: Scene) -> None:
    # The origin stops reading: our send fills the 4 KiB sndbuf and its rcvbuf, then blocks.
    assert s.server is not None
    s.server.pause_reading()
    if s.ws is not None:
        gunpy.ws_send(s.conn, s.refs[0], ("binary", BIG))
    else:
        gunpy.data(s.conn, s.refs[0], "nofin", BIG)


def _owner_ends(s: Scene, how: str) -> None:
    # Wait for the owner's own DOWN: the connection's monitor fires first (it was
    # made first), so the connection has the owner's death queued before the
    # server's next bytes can arrive (and its inbox puts messages before the socket).
    owner = as_pid(s.owner)
    mref = gunpy.monitor(owner)
    s.owner.tell(how)
    assert gunpy.receive(("DOWN", mref, ANY, ANY, ANY), after=5000) is not TIMEOUT
    s.finish()


def owner_dies(s: Scene) -> None:
    _owner_ends(s, "$die")


def owner_exits(s: Scene) -> None:
    _owner_ends(s, "$exit")


def shutdown(s: Scene) -> None:
    gunpy.shutdown(s.conn)
    s.finish()


def close(s: Scene) -> None:
    assert gunpy.close(s.conn) == "ok"
    assert not s.conn.is_alive()  # close is synchronous


FAULTS: dict[str, Callable[[Scene], None]] = {
    "server_closes": server_closes,
    "server_resets": server_resets,
    "server_half_closes": server_half_closes,
    "server_stops_reading": server_stops_reading,
    "owner_dies": owner_dies,
    "owner_exits": owner_exits,
    "shutdown": shutdown,
    "close": close,
}


# --------------------------------------------------------------------------- the table

# (state, fault) -> lambda scene: (messages up to the DOWN, in order; exit reason).
# C is the connection, R the scene's stream refs.  Messages to the owner
# (gun_down) are included: the test thread is the owner except for owner faults.
Expect = Callable[[Any, list[Any]], tuple[list[Any], Any]]


def queued(reason: Any) -> Expect:
    """A request queued while not connected gets ("closed", exit reason)."""
    return lambda c, r: ([("gun_error", c, r[0], ("closed", reason))], reason)


TLS_EOF = ("shutdown", "closed")

EXPECTED: dict[tuple[str, str], Expect] = {
    # -- not connected (retry wait) -------------------------------------------------
    ("not_connected", "owner_dies"): queued(BOOM),
    ("not_connected", "owner_exits"): queued("normal"),
    ("not_connected", "shutdown"): queued("shutdown"),
    ("not_connected", "close"): queued("shutdown"),
    # -- connecting ------------------------------------------------------------------
    ("connecting", "server_closes"): queued(("shutdown", "econnrefused")),
    ("connecting", "owner_dies"): queued(BOOM),
    ("connecting", "owner_exits"): queued("normal"),
    ("connecting", "shutdown"): queued("shutdown"),
    ("connecting", "close"): queued("shutdown"),
    # -- TLS handshake: never up, so no gun_down; the queued request is told ----------
    ("tls_handshake", "server_closes"): queued(TLS_EOF),
    ("tls_handshake", "server_resets"): queued(("shutdown", "econnreset")),
    ("tls_handshake", "server_half_closes"): queued(TLS_EOF),
    ("tls_handshake", "owner_dies"): queued(BOOM),
    ("tls_handshake", "owner_exits"): queued("normal"),
    ("tls_handshake", "shutdown"): queued("shutdown"),
    ("tls_handshake", "close"): queued("shutdown"),
    # -- connected, no stream --------------------------------------------------------
    ("idle", "server_closes"): lambda c, r: (
        [("gun_down", c, "http", "closed", [])],
        ("shutdown", "closed"),
    ),
    ("idle", "server_resets"): lambda c, r: (
        [("gun_down", c, "http", RESET, [])],
        ("shutdown", RESET),
    ),
    ("idle", "server_half_closes"): lambda c, r: (
        [("gun_down", c, "http", "closed", [])],
        ("shutdown", "closed"),
    ),
    ("idle", "owner_dies"): lambda c, r: ([], BOOM),
    ("idle", "owner_exits"): lambda c, r: ([], "normal"),
    ("idle", "shutdown"): lambda c, r: ([], "shutdown"),
    ("idle", "close"): lambda c, r: ([], "shutdown"),
    # -- one stream mid-body ---------------------------------------------------------
    ("mid_body", "server_closes"): lambda c, r: (
        [
            ("gun_error", c, EOF_ERROR[1]),
            ("gun_error", c, r[0], ("closed", EOF_ERROR)),
            ("gun_down", c, "http", EOF_ERROR, [r[0]]),
        ],
        ("shutdown", EOF_ERROR),
    ),
    ("mid_body", "server_resets"): lambda c, r: (
        [
            ("gun_error", c, r[0], ("closed", RESET)),
            ("gun_down", c, "http", RESET, [r[0]]),
        ],
        ("shutdown", RESET),
    ),
    ("mid_body", "server_half_closes"): lambda c, r: (
        [
            ("gun_error", c, EOF_ERROR[1]),
            ("gun_error", c, r[0], ("closed", EOF_ERROR)),
            ("gun_down", c, "http", EOF_ERROR, [r[0]]),
        ],
        ("shutdown", EOF_ERROR),
    ),
    ("mid_body", "server_stops_reading"): lambda c, r: (
        [
            ("gun_error", c, r[0], ("closed", TIMEOUT_ERR)),
            ("gun_down", c, "http", TIMEOUT_ERR, [r[0]]),
        ],
        ("shutdown", TIMEOUT_ERR),
    ),
    # Graceful: the response in progress is finished (Gun 4.3), then the process exits.
    ("mid_body", "owner_dies"): lambda c, r: ([("gun_data", c, r[0], "fin", b"a" * 90)], BOOM),
    ("mid_body", "owner_exits"): lambda c, r: (
        [("gun_data", c, r[0], "fin", b"a" * 90)],
        "normal",
    ),
    ("mid_body", "shutdown"): lambda c, r: (
        [("gun_data", c, r[0], "fin", b"a" * 90)],
        "shutdown",
    ),
    ("mid_body", "close"): lambda c, r: (
        [("gun_error", c, r[0], ("closed", "shutdown"))],
        "shutdown",
    ),
    # -- pipelined streams (r = [second, third]) ---------------------------------------
    ("pipelined", "server_closes"): lambda c, r: (
        [
            ("gun_error", c, r[0], "closed"),
            ("gun_error", c, r[1], "closed"),
            ("gun_down", c, "http", "closed", r),
        ],
        ("shutdown", "closed"),
    ),
    ("pipelined", "server_resets"): lambda c, r: (
        [
            ("gun_error", c, r[0], ("closed", RESET)),
            ("gun_error", c, r[1], ("closed", RESET)),
            ("gun_down", c, "http", RESET, r),
        ],
        ("shutdown", RESET),
    ),
    ("pipelined", "server_half_closes"): lambda c, r: (
        [
            ("gun_error", c, r[0], "closed"),
            ("gun_error", c, r[1], "closed"),
            ("gun_down", c, "http", "closed", r),
        ],
        ("shutdown", "closed"),
    ),
    # Graceful: the current response is finished, the pipelined one is dropped (Gun 4.9).
    ("pipelined", "owner_dies"): lambda c, r: (
        [
            ("gun_error", c, r[1], ("closing", "owner_down")),
            ("gun_response", c, r[0], "nofin", 200, [("content-length", "2")]),
            ("gun_data", c, r[0], "fin", b"r2"),
        ],
        BOOM,
    ),
    ("pipelined", "owner_exits"): lambda c, r: (
        [
            ("gun_error", c, r[1], ("closing", "owner_down")),
            ("gun_response", c, r[0], "nofin", 200, [("content-length", "2")]),
            ("gun_data", c, r[0], "fin", b"r2"),
        ],
        "normal",
    ),
    ("pipelined", "shutdown"): lambda c, r: (
        [
            ("gun_error", c, r[1], ("closing", "shutdown")),
            ("gun_response", c, r[0], "nofin", 200, [("content-length", "2")]),
            ("gun_data", c, r[0], "fin", b"r2"),
        ],
        "shutdown",
    ),
    ("pipelined", "close"): lambda c, r: (
        [
            ("gun_error", c, r[0], ("closed", "shutdown")),
            ("gun_error", c, r[1], ("closed", "shutdown")),
        ],
        "shutdown",
    ),
    # -- Websocket open: gun_down lists the Websocket's ref; no gun_error (Gun 4.2) ------
    ("ws", "server_closes"): lambda c, r: ([("gun_down", c, "ws", "closed", r)], ("shutdown", "closed")),
    ("ws", "server_resets"): lambda c, r: ([("gun_down", c, "ws", RESET, r)], ("shutdown", RESET)),
    ("ws", "server_half_closes"): lambda c, r: (
        [("gun_down", c, "ws", "closed", r)],
        ("shutdown", "closed"),
    ),
    ("ws", "server_stops_reading"): lambda c, r: (
        [("gun_down", c, "ws", TIMEOUT_ERR, r)],
        ("shutdown", TIMEOUT_ERR),
    ),
    # Graceful: close 1001 sent at once, the server's close reply delivered, then exit.
    ("ws", "owner_dies"): lambda c, r: ([("gun_ws", c, r[0], ("close", 1001, ""))], BOOM),
    ("ws", "owner_exits"): lambda c, r: ([("gun_ws", c, r[0], ("close", 1001, ""))], "normal"),
    ("ws", "shutdown"): lambda c, r: ([("gun_ws", c, r[0], ("close", 1001, ""))], "shutdown"),
    ("ws", "close"): lambda c, r: ([], "shutdown"),
    # -- closing (after shutdown, a response in progress): never a gun_down -------------
    ("closing", "server_closes"): lambda c, r: (
        [("gun_error", c, EOF_ERROR[1]), ("gun_error", c, r[0], ("closed", EOF_ERROR))],
        "shutdown",
    ),
    ("closing", "server_resets"): lambda c, r: (
        [("gun_error", c, r[0], ("closed", RESET))],
        "shutdown",
    ),
    ("closing", "server_half_closes"): lambda c, r: (
        [("gun_error", c, EOF_ERROR[1]), ("gun_error", c, r[0], ("closed", EOF_ERROR))],
        "shutdown",
    ),
    # The first reason to close stands: a later owner death does not change it.
    ("closing", "owner_dies"): lambda c, r: ([("gun_data", c, r[0], "fin", b"a" * 90)], "shutdown"),
    ("closing", "shutdown"): lambda c, r: ([("gun_data", c, r[0], "fin", b"a" * 90)], "shutdown"),
    ("closing", "close"): lambda c, r: ([("gun_error", c, r[0], ("closed", "shutdown"))], "shutdown"),
    # -- Websocket closing ----------------------------------------------------------------
    ("ws_closing", "server_closes"): lambda c, r: ([], "shutdown"),
    ("ws_closing", "server_resets"): lambda c, r: ([], "shutdown"),
    ("ws_closing", "shutdown"): lambda c, r: ([("gun_ws", c, r[0], ("close", 1001, ""))], "shutdown"),
    ("ws_closing", "close"): lambda c, r: ([], "shutdown"),
    # -- HTTP/2 (h2c prior knowledge): killed streams = every open stream (Gun 4.2) -------
    ("h2_idle", "server_closes"): lambda c, r: (
        [("gun_down", c, "http2", "closed", [])],
        ("shutdown", "closed"),
    ),
    ("h2_idle", "server_resets"): lambda c, r: (
        [("gun_down", c, "http2", RESET, [])],
        ("shutdown", RESET),
    ),
    ("h2_idle", "owner_dies"): lambda c, r: ([], BOOM),
    ("h2_idle", "shutdown"): lambda c, r: ([], "shutdown"),
    ("h2_idle", "close"): lambda c, r: ([], "shutdown"),
    ("h2_mid_body", "server_closes"): lambda c, r: (
        [("gun_error", c, r[0], "closed"), ("gun_down", c, "http2", "closed", r)],
        ("shutdown", "closed"),
    ),
    ("h2_mid_body", "server_resets"): lambda c, r: (
        [("gun_error", c, r[0], ("closed", RESET)), ("gun_down", c, "http2", RESET, r)],
        ("shutdown", RESET),
    ),
    # Graceful (GOAWAY): the stream is finished (both sides), then the process exits.
    ("h2_mid_body", "owner_dies"): lambda c, r: ([("gun_data", c, r[0], "fin", b"a" * 90)], BOOM),
    ("h2_mid_body", "shutdown"): lambda c, r: ([("gun_data", c, r[0], "fin", b"a" * 90)], "shutdown"),
    ("h2_mid_body", "close"): lambda c, r: ([("gun_error", c, r[0], ("closed", "shutdown"))], "shutdown"),
    ("h2_streams", "server_closes"): lambda c, r: (
        [
            ("gun_error", c, r[0], "closed"),
            ("gun_error", c, r[1], "closed"),
            ("gun_down", c, "http2", "closed", r),
        ],
        ("shutdown", "closed"),
    ),
    ("h2_streams", "server_resets"): lambda c, r: (
        [
            ("gun_error", c, r[0], ("closed", RESET)),
            ("gun_error", c, r[1], ("closed", RESET)),
            ("gun_down", c, "http2", RESET, r),
        ],
        ("shutdown", RESET),
    ),
    # Graceful: unlike HTTP/1.1 pipelining, every open HTTP/2 stream is finished.
    ("h2_streams", "owner_dies"): lambda c, r: (_h2_both_answered(c, r), BOOM),
    ("h2_streams", "shutdown"): lambda c, r: (_h2_both_answered(c, r), "shutdown"),
    ("h2_streams", "close"): lambda c, r: (
        [
            ("gun_error", c, r[0], ("closed", "shutdown")),
            ("gun_error", c, r[1], ("closed", "shutdown")),
        ],
        "shutdown",
    ),
    # -- CONNECT tunnel over an HTTP/1.1 proxy, a request in flight ------------------------
    # r = [CONNECT ref, tunnelled request ref]; once the tunnel is up the connection
    # speaks the origin's protocol, so only the tunnelled request is killed.
    ("tunnel", "server_closes"): lambda c, r: (
        [
            ("gun_error", c, EOF_ERROR[1]),
            ("gun_error", c, r[1], ("closed", EOF_ERROR)),
            ("gun_down", c, "http", EOF_ERROR, [r[1]]),
        ],
        ("shutdown", EOF_ERROR),
    ),
    ("tunnel", "server_resets"): lambda c, r: (
        [
            ("gun_error", c, r[1], ("closed", RESET)),
            ("gun_down", c, "http", RESET, [r[1]]),
        ],
        ("shutdown", RESET),
    ),
    ("tunnel", "owner_dies"): lambda c, r: ([("gun_data", c, r[1], "fin", b"a" * 90)], BOOM),
    ("tunnel", "shutdown"): lambda c, r: ([("gun_data", c, r[1], "fin", b"a" * 90)], "shutdown"),
    ("tunnel", "close"): lambda c, r: ([("gun_error", c, r[1], ("closed", "shutdown"))], "shutdown"),
}


def _h2_both_answered(c: Any, r: list[Any]) -> list[Any]:
    out: list[Any] = []
    for ref, body in zip(r, (b"r2", b"r3"), strict=True):
        out += [("gun_response", c, ref, "nofin", 200, [("content-length", "2")]), ("gun_data", c, ref, "fin", body)]
    return out

# Known bugs: (state, fault) -> reason for a strict xfail (none open today).
BUGS: dict[tuple[str, str], str] = {}

OWNER_FAULTS = ("owner_dies", "owner_exits")


def _cases() -> list[Any]:
    out = []
    for (state, fault), _ in EXPECTED.items():
        marks = []
        if (state, fault) in BUGS:
            marks.append(pytest.mark.xfail(strict=True, reason=BUGS[(state, fault)]))
        out.append(pytest.param(state, fault, id=f"{state}-{fault}", marks=marks))
    return out


@pytest.mark.parametrize(("state", "fault"), _cases())
def test_fault(state: str, fault: str, track: Tracker, origin: ScriptedOrigin) -> None:
    opts: dict[str, Any] = {}
    if fault == "server_stops_reading":
        opts.update(STOP_READING_OPTS)
    scene = SCENES[state](track, origin, fault in OWNER_FAULTS, **opts)
    try:
        FAULTS[fault](scene)
        msgs, reason = until_down(scene.conn, scene.mref)
        expected_msgs, expected_reason = EXPECTED[(state, fault)](scene.conn, scene.refs)
        assert (msgs, reason) == (expected_msgs, expected_reason)
        scene.after()
    finally:
        for k in scene.keep:
            k.close()


def test_every_combination_is_decided() -> None:
    """Every (state, fault) pair is in the table, or listed here as meaningless."""
    meaningless = {
        # No socket to the server yet (retry wait / SYN not answered).
        *[("not_connected", f) for f in ("server_closes", "server_resets", "server_half_closes", "server_stops_reading")],
        *[("connecting", f) for f in ("server_resets", "server_half_closes", "server_stops_reading")],
        # Nothing is sent during the handshake but the handshake itself.
        ("tls_handshake", "server_stops_reading"),
        # Nothing to send with no stream / behind a response (mid_body covers sending).
        ("idle", "server_stops_reading"),
        ("pipelined", "server_stops_reading"),
        ("closing", "server_stops_reading"),
        ("closing", "owner_exits"),  # same as owner_dies: the first reason stands
        ("ws_closing", "server_half_closes"),  # same as server_closes
        ("ws_closing", "server_stops_reading"),  # no frame may follow our close
        ("ws_closing", "owner_dies"),
        ("ws_closing", "owner_exits"),
        # HTTP/2 and tunnels (issue 6): the faults already covered for HTTP/1.1 where
        # the new protocol adds nothing (half-close = close, owner_exits = owner_dies,
        # send timeouts are the transport's).
        *[
            (st_, f)
            for st_ in ("h2_idle", "h2_mid_body", "h2_streams", "tunnel")
            for f in ("server_half_closes", "server_stops_reading", "owner_exits")
        ],
    }
    for state in SCENES:
        for fault in FAULTS:
            assert ((state, fault) in EXPECTED) != ((state, fault) in meaningless), (state, fault)


# --------------------------------------------------------------------------- timeouts


def test_connect_timeout_while_connecting(track: Tracker) -> None:
    """connect_timeout ends the connecting state: ("shutdown", "timeout"); the queued
    request is told."""
    with FullAcceptQueue() as full:
        conn = track.open(full.port, connect_timeout=200)
        ref = gunpy.get(conn, "/")
        mref = gunpy.monitor(conn)
        msgs, reason = until_down(conn, mref)
        assert (msgs, reason) == (
            [("gun_error", conn, ref, ("closed", ("shutdown", "timeout")))],
            ("shutdown", "timeout"),
        )


def test_tls_handshake_timeout(track: Tracker, origin: ScriptedOrigin) -> None:
    conn = track.open(origin.port, transport="tls", tls_handshake_timeout=200)
    mref = gunpy.monitor(conn)
    origin.accept()
    msgs, reason = until_down(conn, mref)
    assert (msgs, reason) == ([], ("shutdown", "timeout"))


def test_closing_timeout_ends_a_response_that_never_finishes(track: Tracker, origin: ScriptedOrigin) -> None:
    """shutdown while a response is in progress; the server never finishes it:
    closing_timeout (http_opts) ends the connection, the stream is told."""
    scene = scene_closing(track, origin, False, http_opts={"closing_timeout": 200})
    msgs, reason = until_down(scene.conn, scene.mref)
    assert (msgs, reason) == ([("gun_error", scene.conn, scene.refs[0], ("closed", "shutdown"))], "shutdown")


def test_ws_closing_timeout(track: Tracker, origin: ScriptedOrigin) -> None:
    """shutdown of a Websocket whose server never answers the close: closing_timeout."""
    scene = scene_ws(track, origin, False, ws_opts={"closing_timeout": 200})
    gunpy.shutdown(scene.conn)
    msgs, reason = until_down(scene.conn, scene.mref)
    assert (msgs, reason) == ([], "shutdown")


def test_close_during_a_blocked_send_is_prompt(track: Tracker, origin: ScriptedOrigin) -> None:
    """``close`` is brutal (Gun: the supervisor kills the process even while it is
    blocked in a send).  A connection blocked sending to a server that stopped
    reading must still stop at once when closed, not when send_timeout expires."""
    conn, _, server = _up(track, origin, False, tcp_opts={"send_timeout": 3000, "sndbuf": 4096})
    ref = gunpy.headers(conn, "POST", "/upload", [])
    server.recv_request()  # the head went out
    server.pause_reading()  # the server stops reading: the body fills the buffers and blocks
    gunpy.data(conn, ref, "nofin", BIG)
    t0 = time.monotonic()
    assert gunpy.close(conn) == "ok"
    elapsed = time.monotonic() - t0
    assert not conn.is_alive()
    assert elapsed < 1.5, f"close took {elapsed:.1f} s: it waited for send_timeout"


@pytest.mark.parametrize(
    "kind",
    [
        "websocket",
        "raw",
    ],
)
def test_shutdown_while_an_upgrade_is_in_flight(kind: str, track: Tracker, origin: ScriptedOrigin) -> None:
    """shutdown after an upgrade request was written: the 101 cannot be taken any more
    (the connection is closing), so the connection ends and the upgrade's stream is
    told ("closed", "normal"), Websocket or generic Upgrade alike.  Nothing lost."""
    conn, _, server = _up(track, origin, False)
    if kind == "websocket":
        ref = gunpy.ws_upgrade(conn, "/ws")
        key = head_of(server.recv_request())["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        reply = (
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
            b"sec-websocket-accept: " + accept + b"\r\n\r\n"
        )
    else:
        ref = gunpy.get(conn, "/", [("connection", "upgrade"), ("upgrade", "foo")])
        server.recv_request()
        reply = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: foo\r\n\r\n"
    mref = gunpy.monitor(conn)
    gunpy.shutdown(conn)
    assert gunpy.info(conn)["state_name"] == "closing"
    server.send(reply)
    msgs, reason = until_down(conn, mref)
    assert (msgs, reason) == ([("gun_error", conn, ref, ("closed", "normal"))], "shutdown")


def test_a_request_still_in_the_mailbox_at_exit_is_told(track: Tracker) -> None:
    """A request that reached the live connection process gets an answer, even if
    the process exits before handling it (gun-reference 7: queued requests are told).
    Deterministic: the process is held inside retry_fun while the request arrives,
    then retry_fun fails and the process exits."""
    inside = threading.Event()
    go = threading.Event()

    def retry_fun(retries: int, opts: dict[str, Any]) -> dict[str, Any]:
        inside.set()
        go.wait(5)
        raise RuntimeError("give up")

    conn = track.open(refused_port(), retry=1, retry_fun=retry_fun)
    assert inside.wait(5)  # the process is busy in retry_fun, after its failed connect
    ref = gunpy.get(conn, "/")
    assert conn.is_alive()  # so the request is in its mailbox, unhandled
    go.set()
    msg = gunpy.receive(("gun_error", conn, ref, ANY), after=3000)
    assert msg == ("gun_error", conn, ref, ("closed", ("shutdown", ("retry_fun", "RuntimeError('give up')"))))


# --------------------------------------------------------------------------- after the fault: retry


def test_idle_loss_with_retry_reconnects(track: Tracker, origin: ScriptedOrigin) -> None:
    """retry 1: gun_down, then a new connection and gun_up (Gun 4.1)."""
    conn, _, server = _up(track, origin, False, retry=1)
    server.close()
    assert gunpy.receive(("gun_down", conn, ANY, ANY, ANY), after=3000) == (
        "gun_down", conn, "http", "closed", [],
    )
    assert gunpy.await_up(conn) == ("ok", "http")
    origin.accept()
    gunpy.close(conn)


def test_ws_loss_with_retry_reconnects_as_http(track: Tracker, origin: ScriptedOrigin) -> None:
    """A lost Websocket reconnects as plain HTTP (Gun 4.1); ws_send then gets the
    connection-wide badstate error."""
    scene = scene_ws(track, origin, False, retry=1)
    assert scene.server is not None
    scene.server.reset()
    assert gunpy.receive(("gun_down", scene.conn, ANY, ANY, ANY), after=3000) == (
        "gun_down", scene.conn, "ws", RESET, scene.refs,
    )
    assert gunpy.await_up(scene.conn) == ("ok", "http")
    origin.accept()
    gunpy.ws_send(scene.conn, scene.refs[0], ("text", "lost?"))
    msg = gunpy.receive(("gun_error", scene.conn, ANY), after=3000)
    assert msg[2][0] == "badstate"
    gunpy.close(scene.conn)


def test_requests_during_reconnect_are_queued_and_sent(track: Tracker, origin: ScriptedOrigin) -> None:
    """A request made right after a loss is sent once the connection is back."""
    conn, _, server = _up(track, origin, False, retry=1)
    ref0 = gunpy.get(conn, "/0")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")  # progress
    assert gunpy.receive(("gun_response", conn, ref0, "fin", 200, ANY), after=3000) is not TIMEOUT
    server.reset()
    assert gunpy.receive(("gun_down", conn, ANY, ANY, ANY), after=3000)[3] == RESET
    ref = gunpy.get(conn, "/again")
    server2 = origin.accept()
    assert server2.recv_request().startswith(b"GET /again ")
    server2.send(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert gunpy.receive(("gun_response", conn, ref, "fin", 204, ANY), after=3000) is not TIMEOUT
    gunpy.close(conn)


def test_fault_on_one_connection_leaves_others_alone(track: Tracker, origin: ScriptedOrigin) -> None:
    """A reset on one connection: another connection to the same origin carries on."""
    c1, _, s1 = _up(track, origin, False)
    c2, _, s2 = _up(track, origin, False)
    s1.reset()
    assert gunpy.receive(("gun_down", c1, ANY, ANY, ANY), after=3000)[3] == RESET
    ref = gunpy.get(c2, "/still")
    assert s2.recv_request().startswith(b"GET /still ")
    s2.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert gunpy.await_(c2, ref) == ("response", "nofin", 200, [("content-length", "2")])
    assert gunpy.await_body(c2, ref) == ("ok", b"ok")
    gunpy.close(c2)


def test_tls_loss_after_up(track: Tracker, trustme_ca: Any, scripted_origin: OriginFactory) -> None:
    """A TLS connection reset after gun_up: gun_down "closed".  Python's ssl module
    reports a TCP reset under TLS as an unexpected EOF (the errno is lost), so it
    reads as the server closing, which is also what Gun reports (``ssl_closed``)."""
    origin = scripted_origin(tls=trustme_ca.server_context())
    conn = track.open(origin.port, transport="tls", tls_opts={"cacertfile": str(trustme_ca.ca_file)})
    assert gunpy.await_up(conn) == ("ok", "http")
    server = origin.accept()
    server.reset()
    mref = gunpy.monitor(conn)
    msgs, reason = until_down(conn, mref)
    assert msgs == [("gun_down", conn, "http", "closed", [])]
    assert reason == ("shutdown", "closed")


def test_ws_stops_reading_sends_nothing_more(track: Tracker, origin: ScriptedOrigin) -> None:
    """After the server stopped reading and the send timed out, the server sees the
    connection closed (no half-written frame followed by more data)."""
    scene = scene_ws(track, origin, False, **STOP_READING_OPTS)
    assert scene.server is not None
    scene.server.pause_reading()
    before = len(scene.server.received)
    gunpy.ws_send(scene.conn, scene.refs[0], ("binary", BIG))
    msgs, reason = until_down(scene.conn, scene.mref)
    assert reason == ("shutdown", TIMEOUT_ERR)
    # Read what is left until the client's close (or reset); ``received`` has it all.
    scene.server.resume_reading()
    scene.server.wait_closed(5000)
    total = len(scene.server.received) - before
    assert total < len(BIG)



# --------------------------------------------------------------------------- the docs' table

DOC = Path(__file__).resolve().parents[2] / "docs" / "guide" / "failures.md"
BEGIN = "<!-- BEGIN faults table: python -m tests.reliability.test_faults -->"
END = "<!-- END faults table -->"


class _Name:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# Long reasons, abbreviated in the table (its legend says what they stand for).
ABBREVIATIONS = [
    (repr(EOF_ERROR[1]), "EOF_BODY"),
    (repr(BOOM), "OWNER_BOOM"),
]


def render_table() -> str:
    """The (state, fault) table of docs/guide/failures.md, from ``EXPECTED``."""
    out = ["```text"]
    state = None
    for (st_, fault), expect in EXPECTED.items():
        if st_ != state:
            if state is not None:
                out.append("")
            out.append(f"== {st_}")
            state = st_
        refs = {
            "pipelined": [_Name("R2"), _Name("R3")],
            "h2_streams": [_Name("R2"), _Name("R3")],
            "tunnel": [_Name("T"), _Name("(T, R)")],
        }.get(st_, [_Name("R")])
        msgs, reason = expect(_Name("C"), refs)
        bug = "   [known bug; shown as it should be: see below]" if (st_, fault) in BUGS else ""
        out.append(f"{fault}{bug}")
        for m in msgs:
            args = " ".join(repr(x) for x in m[2:])
            out.append(f"    {m[0]} {args}")
        out.append(f"    DOWN {reason!r}")
    out.append("```")
    text = "\n".join(out)
    for long, short in ABBREVIATIONS:
        text = text.replace(long, short)
    return text


def test_the_docs_table_is_this_table() -> None:
    """docs/guide/failures.md shows EXPECTED (regenerate: python -m tests.reliability.test_faults)."""
    doc = DOC.read_text()
    assert BEGIN in doc and END in doc
    shown = doc.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == render_table()


if __name__ == "__main__":
    print(render_table())
