"""Server-sent events through the ``"sse"`` content handler (Gun's ``sse_SUITE``).

Servers: aiohttp (HTTP/1.1) and hypercorn (h2c by prior knowledge, h2 over TLS),
both with ``/sse?n=N`` (N events ``id: i`` / ``data: event i``, 10 ms apart, then
the end), ``/sse/lone_id`` and ``/sse/mime_param`` (``id: hello`` alone; the second
as ``text/event-stream;charset=utf-8``); aiohttp's ``/sse/close`` streams with
``connection: close``.  A scripted origin gives exact bytes for a body ended by the
server's close and for the size limit.  Content handlers are set Gun's way:
``content_handlers: ["sse", "data"]`` in ``http_opts`` / ``http2_opts``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import gunpy
from gunpy import ANY, TIMEOUT
from gunpy.protocols.content import SSE_TOO_LARGE
from gunpy.testing import Close, ExpectRequest, ScriptedOrigin, Send, assert_receive
from tests.peers import Peer, TLSFiles

HANDLERS = {"content_handlers": ["sse", "data"]}

_opened: list[gunpy.Pid] = []


@pytest.fixture(autouse=True)
def _cleanup() -> Iterator[None]:
    _opened.clear()
    yield
    for conn in _opened:
        if conn.is_alive():
            gunpy.close(conn)
    while gunpy.receive(after=0) is not TIMEOUT:
        pass


class Server:
    def __init__(self, port: int, protocol: str, opts: dict[str, Any]) -> None:
        self.port = port
        self.protocol = protocol
        self.opts = opts

    def open(self, proto_opts: dict[str, Any] | None = None) -> gunpy.Pid:
        key = "http_opts" if self.protocol == "http" else "http2_opts"
        opts = {"retry": 0, **self.opts, key: HANDLERS if proto_opts is None else proto_opts}
        ok, conn = gunpy.open("127.0.0.1", self.port, opts)
        assert ok == "ok", conn
        _opened.append(conn)
        assert gunpy.await_up(conn) == ("ok", self.protocol)
        return conn


@pytest.fixture(params=["http", "h2c", "h2"])
def server(request: pytest.FixtureRequest, trustme_ca: TLSFiles) -> Server:
    if request.param == "http":
        peer: Peer = request.getfixturevalue("aiohttp_server")
        return Server(peer.port, "http", {"protocols": ["http"]})
    if request.param == "h2c":
        peer = request.getfixturevalue("hypercorn_server")
        return Server(peer.port, "http2", {"protocols": ["http2"]})
    peer = request.getfixturevalue("hypercorn_tls_server")
    tls = {"transport": "tls", "tls_opts": {"cacertfile": str(trustme_ca.ca_file)}}
    return Server(peer.port, "http2", {**tls, "protocols": ["http2"]})


def event_stream_response(conn: gunpy.Pid, ref: Any, ctype: str = "text/event-stream") -> None:
    msg = gunpy.await_(conn, ref)
    assert msg[:3] == ("response", "nofin", 200), msg
    assert dict(msg[3])["content-type"] == ctype


def test_clock(server: Server) -> None:
    """http_clock / http2_clock: events as ("gun_sse", conn, ref, event), then fin."""
    conn = server.open()
    ref = gunpy.get(conn, "/sse?n=3", [("accept", "text/event-stream")])
    event_stream_response(conn, ref)
    for i in range(3):
        assert gunpy.await_(conn, ref) == (
            "sse",
            {"last_event_id": str(i), "event_type": "message", "data": [f"event {i}"]},
        )
    assert gunpy.await_(conn, ref) == ("sse", "fin")
    # The raw message, as Gun sends it.
    ref = gunpy.get(conn, "/sse?n=1")
    event_stream_response(conn, ref)
    msg = assert_receive(("gun_sse", conn, ref, ANY), after=5000)
    assert "".join(msg[3]["data"]) == "event 0"


@pytest.mark.parametrize(
    ("path", "ctype"),
    [("/sse/lone_id", "text/event-stream"), ("/sse/mime_param", "text/event-stream;charset=utf-8")],
)
def test_lone_id_and_mime_param(server: Server, path: str, ctype: str) -> None:
    """lone_id, with_mime_param: an id without data is delivered on its own; the
    media type's parameters are ignored."""
    conn = server.open()
    ref = gunpy.get(conn, path, [("accept", "text/event-stream")])
    event_stream_response(conn, ref, ctype)
    assert gunpy.await_(conn, ref) == ("sse", {"last_event_id": "hello"})
    assert gunpy.await_(conn, ref) == ("sse", "fin")


def test_other_responses_get_gun_data(server: Server) -> None:
    """Not an event stream: the data handler takes it, as without content handlers."""
    conn = server.open()
    ref = gunpy.get(conn, "/cookie-echo")
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref)[:2] == ("ok", b"UNDEF")


def test_without_sse_handler_events_are_data(server: Server) -> None:
    conn = server.open({})
    ref = gunpy.get(conn, "/sse/lone_id")
    event_stream_response(conn, ref)
    assert gunpy.await_body(conn, ref)[:2] == ("ok", b"id: hello\n\n")


def test_flow_counts_events(aiohttp_server: Peer) -> None:
    """flow_SUITE sse: the budget counts gun_sse messages (HTTP/1.1: the socket is
    not read while it is spent; HTTP/2 flow only holds back the window)."""
    conn = Server(aiohttp_server.port, "http", {"protocols": ["http"]}).open(
        {**HANDLERS, "flow": 1}
    )
    ref = gunpy.get(conn, "/sse?n=3&ms=50")
    event_stream_response(conn, ref)
    assert gunpy.await_(conn, ref)[1]["last_event_id"] == "0"
    assert gunpy.receive(("gun_sse", conn, ref, ANY), after=300) is TIMEOUT
    gunpy.update_flow(conn, ref, 1)
    assert gunpy.await_(conn, ref)[1]["last_event_id"] == "1"
    gunpy.update_flow(conn, ref, 2)
    assert gunpy.await_(conn, ref)[1]["last_event_id"] == "2"
    assert gunpy.await_(conn, ref) == ("sse", "fin")


def test_connection_close(aiohttp_server: Peer) -> None:
    """http_clock_close: a response with ``connection: close``; Gun closes after it."""
    ok, conn = gunpy.open(
        "127.0.0.1",
        aiohttp_server.port,
        {"retry": 0, "http_opts": {**HANDLERS, "closing_timeout": 1000}},
    )
    assert ok == "ok"
    _opened.append(conn)
    ref = gunpy.get(conn, "/sse/close", [("accept", "text/event-stream")])
    event_stream_response(conn, ref)
    for i in range(3):
        assert gunpy.await_(conn, ref)[1]["data"] == [f"event {i}"]
    assert gunpy.await_(conn, ref) == ("sse", "fin")
    assert_receive(("gun_down", conn, "http", "normal", []), after=5000)


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"


def test_body_ended_by_the_close() -> None:
    """A close-delimited event stream: the server's close is the fin."""
    script = [
        ExpectRequest("GET", "/"),
        Send(SSE_HEAD + b"data: a\n\nretry: 5\ndata: b\n\n"),
        Close(),
    ]
    with ScriptedOrigin(script) as origin:
        conn = origin.open({"http_opts": HANDLERS})
        ref = gunpy.get(conn, "/")
        event_stream_response(conn, ref)
        assert gunpy.await_(conn, ref)[1]["data"] == ["a"]
        assert gunpy.await_(conn, ref)[1] == {
            "last_event_id": "",
            "event_type": "message",
            "data": ["b"],
            "retry": 5,
        }
        assert gunpy.await_(conn, ref) == ("sse", "fin")
        origin.wait()


def test_event_too_large_http() -> None:
    """max_event_size_http: an unfinished event over the limit is a connection error."""
    script = [ExpectRequest("GET", "/"), Send(SSE_HEAD + b"data: " + b"x" * 100)]
    with ScriptedOrigin(script) as origin:
        conn = origin.open({"http_opts": {"content_handlers": [("sse", {"max_event_size": 32})]}})
        ref = gunpy.get(conn, "/", [("accept", "text/event-stream")])
        event_stream_response(conn, ref)
        reason = ("connection_error", "limit_reached", SSE_TOO_LARGE)
        assert gunpy.await_(conn, ref) == ("error", ("connection_error", reason))
        assert_receive(("gun_down", conn, "http", ("error", reason), ANY), after=5000)
