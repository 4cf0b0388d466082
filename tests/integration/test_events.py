"""Event handlers (``event_handler``, Gun 4.14): the exact callback sequence and maps.

Gun's event_SUITE forwards every event to the test process and asserts the order
and the contents of each map; ``gunpy.events.ForwardEventHandler`` does the same
here: ``("gun_event", conn, name, event)`` arrives in the test's mailbox in order
with the connection's messages.  The servers are scripted origins (exact bytes,
exact timing), an in-process HTTP/2 server (h2 in the server role) and hypercorn
for HTTP/2 and Websocket over HTTP/2.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import gunpy
from gunpy import ANY
from gunpy.events import (
    EVENTS,
    EventHandler,
    ForwardEventHandler,
    LoggingEventHandler,
    Timeline,
    TimingEventHandler,
)
from gunpy.testing import (
    GunMailbox,
    OriginFactory,
    ScriptedOrigin,
    TLSPair,
    assert_receive,
    down,
    gun_down,
    http_response,
    refused_port,
    refute_receive,
)
from tests.peers import Peer

Ev = tuple[str, dict[str, Any]]

CONNECTING = ["init", "domain_lookup_start", "domain_lookup_end", "connect_start", "connect_end"]


def forward() -> tuple[ForwardEventHandler, gunpy.Pid]:
    return (ForwardEventHandler(), gunpy.self())


def next_event(conn: gunpy.Pid, after: int = 5000) -> Ev:
    m = assert_receive(("gun_event", conn, ANY, ANY), after=after)
    return m[2], m[3]


def events_until(conn: gunpy.Pid, last: str, count: int = 1, after: int = 5000) -> list[Ev]:
    """Every event up to the ``count``-th ``last`` one, in order."""
    out: list[Ev] = []
    seen = 0
    while True:
        name, ev = next_event(conn, after)
        out.append((name, ev))
        if name == last:
            seen += 1
            if seen == count:
                return out


def names(evs: list[Ev]) -> list[str]:
    return [n for n, _ in evs]


def by_name(evs: list[Ev], name: str) -> dict[str, Any]:
    return next(e for n, e in evs if n == name)


@pytest.fixture(autouse=True)
def _fresh_mailbox(gun_mailbox: GunMailbox) -> Iterator[None]:
    """An empty mailbox for each test; a Gun message (or event) left unread fails it,
    except the terminate event of connections the fixtures close at the end."""
    gun_mailbox.allow(("gun_event", ANY, "terminate", ANY))
    yield


@pytest.fixture
def origin(scripted_origin: OriginFactory) -> ScriptedOrigin:
    return scripted_origin()


def up(origin: ScriptedOrigin, **opts: Any) -> tuple[gunpy.Pid, list[Ev]]:
    conn = origin.open({"event_handler": forward(), **opts})
    assert gunpy.await_up(conn)[0] == "ok"
    return conn, events_until(
        conn, "connect_end" if origin.transport != "tls" else "tls_handshake_end"
    )


# --------------------------------------------------------------------------- connecting


def test_connect_tcp_events(origin: ScriptedOrigin) -> None:
    """event_SUITE init, domain_lookup_*, connect_*: the maps and the order."""
    conn, evs = up(origin)
    assert names(evs) == CONNECTING
    init = evs[0][1]
    assert init["owner"] == gunpy.self()
    assert init["transport"] == "tcp"
    assert init["origin_scheme"] == "http"
    assert (init["origin_host"], init["origin_port"]) == ("127.0.0.1", origin.port)
    assert init["opts"]["retry"] == 0
    start = evs[1][1]
    assert (start["host"], start["port"], start["timeout"]) == (
        "127.0.0.1",
        origin.port,
        "infinity",
    )
    assert "tcp_opts" in start
    info = evs[2][1]["lookup_info"]
    assert info["ip_addresses"] == ["127.0.0.1"] and info["port"] == origin.port
    assert evs[3][1] == {"lookup_info": info, "timeout": "infinity"}
    end = evs[4][1]
    assert end["protocol"] == "http" and end["lookup_info"] == info
    assert end["socket"] is not None and "error" not in end
    origin.accept()


def test_connect_tls_events(scripted_origin: OriginFactory, tls_pair: TLSPair) -> None:
    """Over TLS connect_end has no protocol; tls_handshake_end has the ALPN result."""
    origin = scripted_origin(tls=tls_pair)
    conn, evs = up(origin)
    assert names(evs) == [*CONNECTING, "tls_handshake_start", "tls_handshake_end"]
    assert evs[0][1]["transport"] == "tls" and evs[0][1]["origin_scheme"] == "https"
    assert "protocol" not in evs[4][1]
    start, end = evs[5][1], evs[6][1]
    assert start["timeout"] == "infinity" and "tls_opts" in start
    assert "stream_ref" not in start and "reply_to" not in start
    assert end["protocol"] == "http"
    assert end["socket"] is not start["socket"]  # the TLS socket replaced the TCP one
    origin.accept()


def test_connect_by_name_and_over_a_unix_socket(scripted_origin: OriginFactory) -> None:
    """A host name goes through getaddrinfo (lookup_info lists what it gave); a
    Unix socket's "lookup" is its path (Gun: the address is {local, Path})."""
    origin = scripted_origin()
    conn = gunpy.open("localhost", origin.port, {"retry": 0, "event_handler": forward()})[1]
    try:
        assert gunpy.await_up(conn) == ("ok", "http")
        evs = events_until(conn, "connect_end")
        assert names(evs) == CONNECTING
        assert evs[1][1]["host"] == "localhost"
        info = evs[2][1]["lookup_info"]
        assert "127.0.0.1" in info["ip_addresses"] and info["port"] == origin.port
        assert evs[4][1]["protocol"] == "http"
        origin.accept()
    finally:
        gunpy.close(conn)
    assert next_event(conn)[0] == "terminate"

    unix = scripted_origin(unix=True)
    conn = unix.open({"event_handler": forward()})
    assert gunpy.await_up(conn) == ("ok", "http")
    evs = events_until(conn, "connect_end")
    assert names(evs) == CONNECTING
    assert evs[0][1]["transport"] == "tcp" and evs[1][1]["host"] == unix.path
    assert evs[2][1]["lookup_info"]["ip_addresses"] == [unix.path]
    unix.accept()


def test_connect_refused_then_retries_exhausted(origin: ScriptedOrigin) -> None:
    """Retry (event_SUITE connect_end_error, gun_SUITE retry_1): each attempt is
    domain_lookup + connect with an error; terminate says why the process ended."""
    port = refused_port()
    _, conn = gunpy.open(
        "127.0.0.1", port, {"retry": 1, "retry_timeout": 10, "event_handler": forward()}
    )
    mref = gunpy.monitor(conn)
    evs = events_until(conn, "terminate")
    attempt = ["domain_lookup_start", "domain_lookup_end", "connect_start", "connect_end"]
    assert names(evs) == ["init", *attempt, *attempt, "terminate"]
    errors = [e["error"] for n, e in evs if n == "connect_end"]
    assert errors == ["econnrefused", "econnrefused"]
    assert evs[-1][1] == {"state": "not_connected", "reason": ("shutdown", "econnrefused")}
    assert_receive(down(mref, ("shutdown", "econnrefused")), after=5000)


def test_disconnect_then_reconnect(origin: ScriptedOrigin) -> None:
    """A lost connection: disconnect(closed), gun_down, then a new attempt."""
    conn, _ = up(origin, retry=1, retry_timeout=10)
    oc = origin.accept()
    oc.close()
    evs = events_until(conn, "connect_end")
    assert names(evs) == ["disconnect", *CONNECTING[1:]]
    assert evs[0][1] == {"reason": "closed"}
    assert_receive(gun_down(conn, "http", "closed", []), after=5000)
    assert gunpy.await_up(conn) == ("ok", "http")
    origin.accept()


def test_terminate_on_shutdown_when_idle(origin: ScriptedOrigin) -> None:
    """gun:shutdown on an idle HTTP/1.1 connection: disconnect(normal), then
    terminate(connected, shutdown); no gun_down."""
    conn, _ = up(origin)
    origin.accept()
    mref = gunpy.monitor(conn)
    gunpy.shutdown(conn)
    evs = events_until(conn, "terminate")
    assert evs == [
        ("disconnect", {"reason": "normal"}),
        ("terminate", {"state": "connected", "reason": "shutdown"}),
    ]
    assert_receive(down(mref, "shutdown"), after=5000)
    refute_receive(("gun_down", conn, ANY, ANY, ANY), after=0)


def test_close_gives_terminate_only(origin: ScriptedOrigin) -> None:
    """gunpy.close: terminate with reason shutdown and no disconnect (Gun calls
    terminate only when its handler traps exits; gunpy always does)."""
    conn, _ = up(origin)
    origin.accept()
    gunpy.close(conn)
    assert next_event(conn) == ("terminate", {"state": "connected", "reason": "shutdown"})


# --------------------------------------------------------------------------- HTTP/1.1


def test_http_get_events(origin: ScriptedOrigin) -> None:
    """event_SUITE request_start .. response_end for a GET (HTTP/1.1)."""
    conn, _ = up(origin)
    oc = origin.accept()
    me = gunpy.self()
    ref = gunpy.get(conn, "/path", [("accept", "text/plain")])
    evs = events_until(conn, "request_end")
    assert names(evs) == ["request_start", "request_headers", "request_end"]
    start = evs[0][1]
    assert start == {
        "stream_ref": ref,
        "reply_to": me,
        "function": "request",
        "method": "GET",
        "authority": f"127.0.0.1:{origin.port}",
        "path": "/path",
        "headers": [
            ("content-length", "0"),
            ("host", f"127.0.0.1:{origin.port}"),
            ("accept", "text/plain"),
        ],
    }
    assert evs[1][1] == start
    assert evs[2][1] == {"stream_ref": ref, "reply_to": me}
    oc.recv_http_request()
    oc.send(http_response(200, [("content-type", "text/plain")], b"hello"))
    evs = events_until(conn, "response_end")
    assert evs == [
        ("response_start", {"stream_ref": ref, "reply_to": me}),
        (
            "response_headers",
            {
                "stream_ref": ref,
                "reply_to": me,
                "status": 200,
                "headers": [("content-type", "text/plain"), ("content-length", "5")],
            },
        ),
        ("response_end", {"stream_ref": ref, "reply_to": me}),
    ]
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"hello")


def test_http_events_in_order_with_messages(origin: ScriptedOrigin) -> None:
    """Events and Gun messages share the mailbox in the order they happen:
    response_headers follows gun_response, response_end the last gun_data."""
    conn, _ = up(origin)
    oc = origin.accept()
    ref = gunpy.get(conn, "/")
    events_until(conn, "request_end")
    oc.recv_http_request()
    oc.send(http_response(200, [], b"abc"))
    seen = []
    for _ in range(5):
        m = assert_receive(ANY, after=5000)
        seen.append(m[2] if m[0] == "gun_event" else m[0])
    assert seen == [
        "response_start",
        "gun_response",
        "response_headers",
        "gun_data",
        "response_end",
    ]
    assert ref is not None


def test_http_headers_then_data_events(origin: ScriptedOrigin) -> None:
    """gun:headers + data: request_end comes with the fin, not before."""
    conn, _ = up(origin)
    oc = origin.accept()
    ref = gunpy.headers(conn, "POST", "/up", [("content-type", "text/plain")])
    evs = events_until(conn, "request_headers")
    assert names(evs) == ["request_start", "request_headers"]
    assert evs[0][1]["function"] == "headers"
    assert evs[0][1]["headers"][0] == ("transfer-encoding", "chunked")
    gunpy.data(conn, ref, "nofin", b"one")
    refute_receive(("gun_event", conn, ANY, ANY), after=50)
    gunpy.data(conn, ref, "fin", b"two")
    assert next_event(conn) == ("request_end", {"stream_ref": ref, "reply_to": gunpy.self()})
    oc.recv_http_request()
    oc.send(http_response(204, []))
    assert names(events_until(conn, "response_end")) == [
        "response_start",
        "response_headers",
        "response_end",
    ]
    assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 204)


def test_http_inform_and_trailers_events(origin: ScriptedOrigin) -> None:
    """event_SUITE response_inform / response_trailers: one response_start per head."""
    conn, _ = up(origin)
    oc = origin.accept()
    ref = gunpy.get(conn, "/", [("te", "trailers")])
    events_until(conn, "request_end")
    oc.recv_http_request()
    oc.send(
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </b.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n"
        b"3\r\nabc\r\n0\r\nx-t: done\r\n\r\n"
    )
    evs = events_until(conn, "response_end")
    assert names(evs) == [
        "response_start",
        "response_inform",
        "response_start",
        "response_inform",
        "response_start",
        "response_headers",
        "response_trailers",
        "response_end",
    ]
    assert by_name(evs, "response_inform")["status"] == 103
    assert by_name(evs, "response_inform")["headers"] == [("link", "</a.css>")]
    assert by_name(evs, "response_trailers")["headers"] == [("x-t", "done")]
    for _ in range(2):
        assert gunpy.await_(conn, ref)[0] == "inform"
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"abc", [("x-t", "done")])


def test_http_cancel_events(origin: ScriptedOrigin) -> None:
    """event_SUITE cancel (HTTP/1.1): cancel(local, cancel); the drained response
    still has response_start and response_end, without response_headers."""
    conn, _ = up(origin)
    oc = origin.accept()
    ref = gunpy.get(conn, "/")
    events_until(conn, "request_end")
    oc.recv_http_request()
    gunpy.cancel(conn, ref)
    assert next_event(conn) == (
        "cancel",
        {"stream_ref": ref, "reply_to": gunpy.self(), "endpoint": "local", "reason": "cancel"},
    )
    oc.send(http_response(200, [], b"late"))
    assert names(events_until(conn, "response_end")) == ["response_start", "response_end"]
    refute_receive(("gun_response", conn, ref, ANY, ANY, ANY), after=0)


# --------------------------------------------------------------------------- Websocket


def test_ws_upgrade_and_frame_events(origin: ScriptedOrigin) -> None:
    """event_SUITE ws_upgrade_all_events and the ws_*_frame_* events."""
    conn, _ = up(origin)
    oc = origin.accept()
    me = gunpy.self()
    ref = gunpy.ws_upgrade(conn, "/ws")
    evs = events_until(conn, "request_end")
    assert names(evs) == ["ws_upgrade", "request_start", "request_headers", "request_end"]
    assert evs[0][1] == {"stream_ref": ref, "reply_to": me, "opts": {}}
    start = evs[1][1]
    assert (start["function"], start["method"], start["path"]) == ("ws_upgrade", "GET", "/ws")
    assert ("upgrade", "websocket") in start["headers"]
    oc.accept_ws()
    evs = events_until(conn, "protocol_changed")
    assert names(evs) == ["response_start", "response_inform", "protocol_changed"]
    assert evs[1][1]["status"] == 101
    assert evs[2][1] == {"stream_ref": ref, "protocol": "ws"}
    assert gunpy.await_(conn, ref)[0] == "upgrade"

    gunpy.ws_send(conn, ref, ("text", "Hello!"))
    frame = {"stream_ref": ref, "reply_to": me, "extensions": {}, "frame": ("text", "Hello!")}
    assert next_event(conn) == ("ws_send_frame_start", frame)
    assert next_event(conn) == ("ws_send_frame_end", frame)
    assert oc.ws_recv() == ("text", "Hello!")

    oc.ws_send(("text", "Hello!"))
    base = {"stream_ref": ref, "reply_to": me, "extensions": {}}
    assert events_until(conn, "ws_recv_frame_end") == [
        ("ws_recv_frame_start", {**base, "frag_state": None}),
        (
            "ws_recv_frame_header",
            {
                **base,
                "frag_state": None,
                "type": "text",
                "rsv": (0, 0, 0),
                "len": 6,
                "mask_key": None,
            },
        ),
        ("ws_recv_frame_end", {**base, "close_code": None, "payload": b"Hello!"}),
    ]
    assert gunpy.await_(conn, ref) == ("ws", ("text", "Hello!"))

    # A ping from the server: its frame events, then the automatic pong's.
    oc.ws_send(("ping", b"p"))
    evs = events_until(conn, "ws_send_frame_end")
    assert names(evs) == [
        "ws_recv_frame_start",
        "ws_recv_frame_header",
        "ws_recv_frame_end",
        "ws_send_frame_start",
        "ws_send_frame_end",
    ]
    assert evs[1][1]["type"] == "ping" and evs[2][1]["payload"] == b"p"
    assert evs[3][1]["frame"] == ("pong", b"p")
    assert oc.ws_recv() == ("pong", b"p")

    # The server closes: its close frame, our 1000 reply, the disconnect.
    oc.ws_send(("close", 1001, "bye"))
    evs = events_until(conn, "disconnect")
    assert names(evs) == [
        "ws_recv_frame_start",
        "ws_recv_frame_header",
        "ws_recv_frame_end",
        "ws_send_frame_start",
        "ws_send_frame_end",
        "disconnect",
    ]
    assert evs[1][1]["type"] == "close"
    assert evs[2][1]["close_code"] == 1001 and evs[2][1]["payload"] == b"bye"
    assert evs[3][1]["frame"] == ("close", 1000, "")
    assert evs[5][1] == {"reason": "normal"}
    assert gunpy.await_(conn, ref) == ("ws", ("close", 1001, "bye"))
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)


def test_ws_fragmented_frame_events(origin: ScriptedOrigin) -> None:
    """cow_ws frag_state: every frame of a fragmented message is a "fragment"."""
    conn, _ = up(origin)
    oc = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws")
    oc.accept_ws()
    events_until(conn, "protocol_changed")
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    # Unmasked server frames: text "He" (fin 0), continuation "llo" (fin 1).
    oc.send(b"\x01\x02He" + b"\x80\x03llo")
    evs = events_until(conn, "ws_recv_frame_end", count=2)
    headers = [e for n, e in evs if n == "ws_recv_frame_header"]
    starts = [e for n, e in evs if n == "ws_recv_frame_start"]
    ends = [e for n, e in evs if n == "ws_recv_frame_end"]
    assert [h["type"] for h in headers] == ["fragment", "fragment"]
    assert [h["frag_state"] for h in headers] == [
        ("nofin", "text", (0, 0, 0)),
        ("fin", "text", (0, 0, 0)),
    ]
    assert [s["frag_state"] for s in starts] == [None, ("nofin", "text", (0, 0, 0))]
    assert [e["payload"] for e in ends] == [b"He", b"llo"]
    assert [h["len"] for h in headers] == [2, 3]
    assert gunpy.await_(conn, ref) == ("ws", ("text", "Hello"))


# --------------------------------------------------------------------------- HTTP/2


@pytest.mark.parametrize("path", ["/", "/echo"])
def test_http2_request_events(hypercorn_server: Peer, path: str) -> None:
    """The same request/response events over HTTP/2 (hypercorn, prior knowledge):
    headers without pseudo-headers or host; request_end once END_STREAM is out."""
    _, conn = gunpy.open(
        "127.0.0.1",
        hypercorn_server.port,
        {"protocols": ["http2"], "retry": 0, "event_handler": forward()},
    )
    try:
        assert gunpy.await_up(conn) == ("ok", "http2")
        evs = events_until(conn, "connect_end")
        assert evs[-1][1]["protocol"] == "http2"
        me = gunpy.self()
        if path == "/":
            ref = gunpy.get(conn, "/")
            function = "request"
        else:
            ref = gunpy.headers(conn, "POST", "/echo", [("content-type", "text/plain")])
            function = "headers"
        evs = events_until(conn, "request_headers")
        assert names(evs) == ["request_start", "request_headers"]
        start = evs[0][1]
        assert start["function"] == function and start["stream_ref"] == ref
        assert start["authority"] == f"127.0.0.1:{hypercorn_server.port}"
        assert "scheme" not in start
        assert all(not n.startswith(":") and n != "host" for n, _ in start["headers"])
        if path == "/echo":
            refute_receive(("gun_event", conn, "request_end", ANY), after=50)
            gunpy.data(conn, ref, "fin", b"body")
        assert next_event(conn) == ("request_end", {"stream_ref": ref, "reply_to": me})
        evs = events_until(conn, "response_end")
        assert names(evs)[:2] == ["response_start", "response_headers"]
        assert names(evs)[-1] == "response_end"
        assert by_name(evs, "response_headers")["status"] == 200
        assert gunpy.await_(conn, ref)[0] == "response"
        assert gunpy.await_body(conn, ref)[0] == "ok"
    finally:
        gunpy.close(conn)


def test_http2_ws_upgrade_events(hypercorn_server: Peer) -> None:
    """RFC 8441 over HTTP/2: CONNECT request events, a 200 response, protocol_changed."""
    _, conn = gunpy.open(
        "127.0.0.1",
        hypercorn_server.port,
        {"protocols": ["http2"], "retry": 0, "event_handler": forward()},
    )
    try:
        assert gunpy.await_up(conn) == ("ok", "http2")
        events_until(conn, "connect_end")
        ref = gunpy.ws_upgrade(conn, "/ws")
        evs = events_until(conn, "protocol_changed")
        assert names(evs) == [
            "ws_upgrade",
            "request_start",
            "request_headers",
            "request_end",
            "response_start",
            "response_headers",
            "response_end",
            "protocol_changed",
        ]
        assert by_name(evs, "request_start")["method"] == "CONNECT"
        assert by_name(evs, "request_start")["function"] == "ws_upgrade"
        assert by_name(evs, "response_headers")["status"] == 200
        assert evs[-1][1] == {"stream_ref": ref, "protocol": "ws"}
        assert gunpy.await_(conn, ref)[0] == "upgrade"
        gunpy.ws_send(conn, ref, ("text", "hi"))
        evs = events_until(conn, "ws_recv_frame_end")
        assert names(evs) == [
            "ws_send_frame_start",
            "ws_send_frame_end",
            "ws_recv_frame_start",
            "ws_recv_frame_header",
            "ws_recv_frame_end",
        ]
        assert evs[-1][1]["payload"] == b"hi"
        assert gunpy.await_(conn, ref) == ("ws", ("text", "hi"))
        gunpy.close(conn)
        assert_receive(("gun_error", conn, ref, ("closed", "shutdown")), after=5000)
    finally:
        gunpy.close(conn)


def test_http2_push_and_remote_cancel_events(origin: ScriptedOrigin) -> None:
    """push_promise_start/end (promised_stream_ref), the pushed stream's own
    response events, and cancel(remote) for the server's RST_STREAM."""
    from h2.errors import ErrorCodes

    from tests.integration.test_http2 import connect

    conn, srv = connect(origin, event_handler=forward())
    events_until(conn, "connect_end")
    ref = gunpy.get(conn, "/")
    events_until(conn, "request_end")
    sid = srv.request().stream_id
    authority = b"127.0.0.1:%d" % origin.port
    srv.h2.push_stream(
        sid, 2, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority),
                 (b":path", b"/a.js")]
    )  # fmt: skip
    srv.flush()
    evs = events_until(conn, "push_promise_end")
    assert names(evs) == ["push_promise_start", "push_promise_end"]
    end = evs[1][1]
    push = assert_receive(("gun_push", conn, ref, ANY, ANY, ANY, ANY), after=5000)
    assert end == {
        "stream_ref": ref,
        "reply_to": gunpy.self(),
        "method": "GET",
        "uri": f"http://127.0.0.1:{origin.port}/a.js",
        "headers": [],
        "promised_stream_ref": push[3],
    }
    srv.respond(2, body=b"js")
    evs = events_until(conn, "response_end")
    assert names(evs) == ["response_start", "response_headers", "response_end"]
    assert all(e["stream_ref"] == push[3] for _, e in evs)
    assert gunpy.await_(conn, push[3])[0] == "response"
    assert gunpy.await_body(conn, push[3]) == ("ok", b"js")
    srv.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
    srv.flush()
    assert next_event(conn) == (
        "cancel",
        {
            "stream_ref": ref,
            "reply_to": gunpy.self(),
            "endpoint": "remote",
            "reason": "refused_stream",
        },
    )
    assert gunpy.await_(conn, ref)[0] == "error"


def test_http2_local_cancel_event(origin: ScriptedOrigin) -> None:
    from tests.integration.test_http2 import connect

    conn, srv = connect(origin, event_handler=forward())
    events_until(conn, "connect_end")
    ref = gunpy.get(conn, "/")
    events_until(conn, "request_end")
    srv.request()
    gunpy.cancel(conn, ref)
    assert next_event(conn) == (
        "cancel",
        {"stream_ref": ref, "reply_to": gunpy.self(), "endpoint": "local", "reason": "cancel"},
    )


# --------------------------------------------------------------------------- CONNECT


def test_connect_through_http_proxy_events(
    origin: ScriptedOrigin, scripted_origin: OriginFactory
) -> None:
    """CONNECT through an HTTP/1.1 proxy: the CONNECT's request and response events,
    origin_changed (no stream_ref), protocol_changed (the CONNECT's stream_ref)."""
    conn, _ = up(origin)
    proxy = origin.accept()
    ref = gunpy.connect(conn, {"host": "example.org", "port": 80})
    evs = events_until(conn, "request_end")
    assert names(evs) == ["request_start", "request_headers", "request_end"]
    start = evs[0][1]
    assert (start["function"], start["method"], start["authority"]) == (
        "connect",
        "CONNECT",
        "example.org:80",
    )
    assert "path" not in start
    proxy.recv_http_request()
    proxy.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
    evs = events_until(conn, "protocol_changed")
    assert names(evs) == [
        "response_start",
        "response_headers",
        "response_end",
        "origin_changed",
        "protocol_changed",
    ]
    assert evs[3][1] == {
        "type": "connect",
        "origin_scheme": "http",
        "origin_host": "example.org",
        "origin_port": 80,
    }
    assert evs[4][1] == {"stream_ref": ref, "protocol": "http"}
    assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 200)
    assert_receive(("gun_tunnel_up", conn, ref, "http"), after=5000)


# --------------------------------------------------------------------------- the handlers


def test_events_cover_every_callback() -> None:
    assert len(EVENTS) == 28 and len(set(EVENTS)) == 28
    h = EventHandler()
    for name in EVENTS:
        assert getattr(h, name)({}, "state") == "state"


def test_state_threads_through_and_info_shows_it(origin: ScriptedOrigin) -> None:
    """Each callback gets the state the previous one returned (Gun's contract);
    ``info`` reports the handler and its current state."""

    class Counter(EventHandler):
        def init(self, event: dict[str, Any], state: int) -> int:
            return state + 1

        def connect_end(self, event: dict[str, Any], state: int) -> int:
            return state * 10

    h = Counter()
    conn = origin.open({"event_handler": (h, 1)})
    assert gunpy.await_up(conn) == ("ok", "http")
    origin.accept()
    info = gunpy.info(conn)
    assert info["event_handler"] is h
    assert info["event_handler_state"] == 20


def test_a_failing_callback_is_logged_and_the_connection_goes_on(
    origin: ScriptedOrigin, caplog: pytest.LogCaptureFixture
) -> None:
    """Better than Gun (whose process would crash): the exception is logged and
    the state stays what it was."""

    class Broken:
        def request_start(self, event: dict[str, Any], state: Any) -> Any:
            raise RuntimeError("boom")

        def request_end(self, event: dict[str, Any], state: Any) -> Any:
            return [*state, "request_end"]

    conn = origin.open({"event_handler": (Broken(), [])})
    assert gunpy.await_up(conn) == ("ok", "http")
    oc = origin.accept()
    with caplog.at_level(logging.ERROR, logger="gunpy.events"):
        ref = gunpy.get(conn, "/")
        oc.recv_http_request()
        oc.send(http_response(200, [], b"ok"))
        assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
        assert gunpy.await_body(conn, ref) == ("ok", b"ok")
    assert "request_start" in caplog.text and "boom" in caplog.text
    assert gunpy.info(conn)["event_handler_state"] == ["request_end"]


def test_a_module_is_a_handler(origin: ScriptedOrigin) -> None:
    """Gun's handler is a module: any object with the callbacks will do."""
    import types

    mod = types.ModuleType("my_events")
    mod.init = lambda event, state: [*state, "init"]  # type: ignore[attr-defined]
    conn = origin.open({"event_handler": (mod, [])})
    assert gunpy.await_up(conn) == ("ok", "http")
    origin.accept()
    assert gunpy.info(conn)["event_handler_state"] == ["init"]


@pytest.mark.parametrize("bad", [object(), (object(), None), ("x",), (EventHandler(),)])
def test_bad_event_handler_option(bad: Any) -> None:
    assert gunpy.open("127.0.0.1", 1, {"event_handler": bad}) == (
        "error",
        ("options", ("event_handler", bad)),
    )


def test_timing_handler_records_a_timeline(origin: ScriptedOrigin) -> None:
    lines: list[str] = []
    tl = Timeline(on_event=lines.append)
    conn = origin.open({"event_handler": (TimingEventHandler(), tl)})
    assert gunpy.await_up(conn) == ("ok", "http")
    oc = origin.accept()
    ref = gunpy.get(conn, "/")
    oc.recv_http_request()
    oc.send(http_response(204, []))
    assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 204)
    gunpy.close(conn)
    assert_receive(down(gunpy.monitor(conn), ANY), after=5000)
    assert tl.names()[:5] == CONNECTING
    assert "response_end" in tl.names() and tl.names()[-1] == "terminate"
    ms = [e[0] for e in tl.entries]
    assert ms == sorted(ms) and ms[0] == 0.0
    assert lines == tl.lines()
    headers = next(x for x in lines if "response_headers" in x)
    assert "status=204" in headers and f"stream_ref={ref!r}" in headers


def test_logging_handler(origin: ScriptedOrigin, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="gunpy.events"):
        conn = origin.open({"event_handler": (LoggingEventHandler(), None)})
        assert gunpy.await_up(conn) == ("ok", "http")
        origin.accept()
    logged = [r.getMessage() for r in caplog.records if r.name == "gunpy.events"]
    assert logged[0].startswith("gun event init ")
    assert any(m.startswith("gun event connect_end ") and "protocol='http'" in m for m in logged)


# --------------------------------------------------------------------------- tunnels (peers)


def tunnel_events(conn: gunpy.Pid, ref: Any) -> list[Ev]:
    """The events from the CONNECT's response_start to its protocol_changed."""
    evs = events_until(conn, "protocol_changed")
    return [e for e in evs if e[0] not in ("request_start", "request_headers", "request_end")]


@pytest.mark.peers
def test_tls_inside_a_connect_tunnel_events(
    tinyproxy_server: Peer, hypercorn_tls_server: Peer, trustme_ca: Any
) -> None:
    """event_SUITE tls_handshake_start/end_connect: the handshake inside the tunnel
    carries the CONNECT's stream_ref and reply_to; then protocol_changed."""
    _, conn = gunpy.open(
        "127.0.0.1", tinyproxy_server.port, {"retry": 0, "event_handler": forward()}
    )
    try:
        assert gunpy.await_up(conn) == ("ok", "http")
        events_until(conn, "connect_end")
        tls = {"cacertfile": str(trustme_ca.ca_file)}
        dest = {"host": "localhost", "port": hypercorn_tls_server.port, "transport": "tls",
                "tls_opts": tls}  # fmt: skip
        ref = gunpy.connect(conn, dest)
        evs = tunnel_events(conn, ref)
        assert names(evs) == [
            "response_start",
            "response_headers",
            "response_end",
            "origin_changed",
            "tls_handshake_start",
            "tls_handshake_end",
            "protocol_changed",
        ]
        assert evs[3][1] == {
            "type": "connect",
            "origin_scheme": "https",
            "origin_host": "localhost",
            "origin_port": hypercorn_tls_server.port,
        }
        start, end = evs[4][1], evs[5][1]
        assert (start["stream_ref"], start["reply_to"]) == (ref, gunpy.self())
        assert start["tls_opts"] == tls and "protocol" not in start
        assert end["protocol"] == "http2" and end["stream_ref"] == ref
        assert evs[6][1] == {"stream_ref": ref, "protocol": "http2"}
        assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 200)
        assert_receive(("gun_tunnel_up", conn, ref, "http2"), after=5000)
        # A request inside the tunnel: its events carry the tunnel's stream ref.
        r = gunpy.get(conn, "/x", None, {"tunnel": ref})
        evs = events_until(conn, "response_end")
        assert all(e["stream_ref"] == r for _, e in evs)
        assert isinstance(r, tuple) and r[0] == ref
        assert gunpy.await_(conn, r)[0] == "response"
        assert gunpy.await_body(conn, r) == ("ok", b"HTTP/2 /x\n")
    finally:
        gunpy.close(conn)


@pytest.mark.peers
def test_socks_events(dante_server: Peer, nginx_server: Any) -> None:
    """event_SUITE for SOCKS: connect_end says socks; origin_changed (socks5)
    and protocol_changed have no stream_ref."""
    socks = {"host": "127.0.0.1", "port": nginx_server.port}
    _, conn = gunpy.open(
        "127.0.0.1",
        dante_server.port,
        {"retry": 0, "protocols": [("socks", socks)], "event_handler": forward()},
    )
    try:
        assert gunpy.await_up(conn) == ("ok", "socks")
        evs = events_until(conn, "protocol_changed")
        assert names(evs) == [*CONNECTING, "origin_changed", "protocol_changed"]
        assert evs[4][1]["protocol"] == "socks"
        assert evs[5][1] == {
            "type": "socks5",
            "origin_scheme": "http",
            "origin_host": "127.0.0.1",
            "origin_port": nginx_server.port,
        }
        assert evs[6][1] == {"protocol": "http"}
        assert_receive(("gun_tunnel_up", conn, None, "http"), after=5000)
    finally:
        gunpy.close(conn)


def test_connect_through_an_http2_proxy_events() -> None:
    """Over an HTTP/2 proxy the tunnel is a stream: origin_changed and
    protocol_changed carry the CONNECT's stream_ref (gun_http2 / gun_tunnel)."""
    from tests.integration.proxy_servers import EchoOrigin, H2ConnectProxy

    with H2ConnectProxy() as proxy, EchoOrigin() as echo:
        _, conn = gunpy.open(
            "127.0.0.1",
            proxy.port,
            {"retry": 0, "protocols": ["http2"], "event_handler": forward()},
        )
        try:
            assert gunpy.await_up(conn) == ("ok", "http2")
            events_until(conn, "connect_end")
            dest = {"host": "127.0.0.1", "port": echo.port, "protocols": ["raw"]}
            ref = gunpy.connect(conn, dest)
            evs = events_until(conn, "protocol_changed")
            assert names(evs) == [
                "request_start",
                "request_headers",
                "request_end",
                "response_start",
                "response_headers",
                "response_end",
                "origin_changed",
                "protocol_changed",
            ]
            assert evs[0][1]["function"] == "connect" and "path" not in evs[0][1]
            assert evs[6][1] == {
                "stream_ref": ref,
                "type": "connect",
                "origin_scheme": "http",
                "origin_host": "127.0.0.1",
                "origin_port": echo.port,
            }
            assert evs[7][1] == {"stream_ref": ref, "protocol": "raw"}
            assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 200)
            assert_receive(("gun_tunnel_up", conn, ref, "raw"), after=5000)
            gunpy.close(conn)
            assert_receive(("gun_error", conn, ref, ("closed", "shutdown")), after=5000)
        finally:
            gunpy.close(conn)
