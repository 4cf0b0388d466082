"""Event commands from the sans-IO handlers (gunpy.events, Gun 4.14).

Handlers build ``Event`` commands only when ``ctx.events`` is set: without an
``event_handler`` nothing is built on the hot path.  With it, the events come out
in Gun's order, between the ``Send``/``Deliver`` commands they follow.
"""

from __future__ import annotations

from typing import Any

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, TextMessage

from gunpy._commands import Deliver, Event, Send
from gunpy.protocols.base import HandlerContext
from gunpy.protocols.http import HttpHandler
from gunpy.protocols.ws import WsHandler

CONN = object()


class Rec:
    def __init__(self) -> None:
        self.msgs: list[Any] = []

    def send(self, msg: Any) -> None:
        self.msgs.append(msg)


def ctx(events: bool) -> HandlerContext:
    return HandlerContext(
        conn=CONN, owner=Rec(), origin_host="example.org", origin_port=80, events=events
    )


def kinds(cmds: list[Any]) -> list[str]:
    """Each command as a word: the event's name, "send" or the delivered tag."""
    out = []
    for c in cmds:
        if isinstance(c, Event):
            out.append(c.name)
        elif isinstance(c, Send):
            out.append("send")
        elif isinstance(c, Deliver):
            out.append(c.msg[0])
    return out


@pytest.mark.parametrize("events", [False, True])
def test_http_request_and_response(events: bool) -> None:
    h = HttpHandler(ctx(events), {})
    rt = Rec()
    cmds = h.request("r1", rt, "GET", "/", [], b"", {})
    cmds += h.handle(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    if not events:
        assert not any(isinstance(c, Event) for c in cmds)
        assert kinds(cmds) == ["send", "gun_response", "gun_data"]
        return
    assert kinds(cmds) == [
        "request_start",
        "send",
        "request_headers",
        "request_end",
        "response_start",
        "gun_response",
        "response_headers",
        "gun_data",
        "response_end",
    ]
    start = cmds[0].event
    assert start["authority"] == "example.org" and start["headers"][-1] == ("host", "example.org")


def test_http_held_request_events_come_with_its_write() -> None:
    """A request held behind a body still being streamed (a pipelining barrier):
    request_start when it is made, request_headers/request_end when it is
    written, after the first request's request_end."""
    h = HttpHandler(ctx(True), {})
    rt = Rec()
    first = h.request("r1", rt, "POST", "/up", [], None, {})
    assert kinds(first) == ["request_start", "send", "request_headers"]
    held = h.request("r2", rt, "GET", "/", [], b"", {})
    assert kinds(held) == ["request_start"]
    more = h.data("r1", rt, "fin", b"x")
    assert kinds(more) == ["send", "request_end", "send", "request_headers", "request_end"]
    assert [c.event["stream_ref"] for c in more if isinstance(c, Event)] == ["r1", "r2", "r2"]


def test_http_chunked_response_end_follows_the_last_data() -> None:
    """Gun emits response_end before the last gun_data of a chunked body (its
    @todo); gunpy after it, where it belongs."""
    h = HttpHandler(ctx(True), {})
    h.request("r1", Rec(), "GET", "/", [], b"", {})
    cmds = h.handle(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    assert kinds(cmds)[-2:] == ["gun_data", "response_end"]


def test_http_response_split_over_reads_has_one_response_start() -> None:
    h = HttpHandler(ctx(True), {})
    h.request("r1", Rec(), "GET", "/", [], b"", {})
    cmds = h.handle(b"HTTP/1.1 200")
    cmds += h.handle(b" OK\r\ncontent-length: 0\r\n\r\n")
    assert kinds(cmds).count("response_start") == 1


def test_http_close_delimited_body_ends_at_eof() -> None:
    h = HttpHandler(ctx(True), {})
    h.request("r1", Rec(), "GET", "/", [], b"", {})
    h.handle(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert kinds(h.handle_eof())[:2] == ["gun_data", "response_end"]


def ws_pair(events: bool) -> tuple[WsHandler, Connection, Rec]:
    rt = Rec()
    h = WsHandler(ctx(events), {}, "ws1", rt, [])
    server = Connection(ConnectionType.SERVER)
    return h, server, rt


@pytest.mark.parametrize("events", [False, True])
def test_ws_frames(events: bool) -> None:
    h, server, rt = ws_pair(events)
    cmds = h.ws_send("ws1", rt, [("text", "a"), ("text", "b")])
    cmds += h.handle(server.send(TextMessage("hi")) + server.send(Ping(b"x")))
    if not events:
        assert kinds(cmds) == ["send", "gun_ws", "send"]
        return
    assert kinds(cmds) == [
        "ws_send_frame_start",
        "send",
        "ws_send_frame_end",
        "ws_send_frame_start",
        "send",
        "ws_send_frame_end",
        "ws_recv_frame_start",
        "ws_recv_frame_header",
        "ws_recv_frame_end",
        "gun_ws",
        "ws_recv_frame_start",
        "ws_recv_frame_header",
        "ws_recv_frame_end",
        "ws_send_frame_start",
        "send",
        "ws_send_frame_end",
    ]
    header = cmds[7].event
    assert (header["type"], header["len"], header["rsv"], header["mask_key"]) == (
        "text",
        2,
        (0, 0, 0),
        None,
    )
    assert cmds[13].event["frame"] == ("pong", b"x")


def test_ws_big_frame_in_pieces_has_one_header_event() -> None:
    """A frame that arrives over several reads: one start/header, one end."""
    h, server, _ = ws_pair(True)
    data = server.send(TextMessage("x" * 10000))
    cmds = h.handle(data[:100]) + h.handle(data[100:5000]) + h.handle(data[5000:])
    names = kinds(cmds)
    assert names.count("ws_recv_frame_header") == 1 and names.count("ws_recv_frame_end") == 1
    end = next(c.event for c in cmds if isinstance(c, Event) and c.name == "ws_recv_frame_end")
    assert end["payload"] == b"x" * 10000


# --------------------------------------------------------------------------- HTTP/2


def h2_link(events: bool) -> Any:
    from tests.unit.test_http2_handler import Link

    return Link(events=events)


@pytest.mark.parametrize("events", [False, True])
def test_http2_request_inform_trailers(events: bool) -> None:
    link = h2_link(events)
    rt = Rec()
    cmds = link.h.request("r1", rt, "GET", "/", [("te", "trailers")], None, {})
    link.c2s(cmds)
    more = link.h.data("r1", rt, "fin", b"")
    link.c2s(more)
    cmds += more
    srv = link.srv
    srv.send_headers(1, [(b":status", b"103"), (b"link", b"</a>")])
    srv.send_headers(1, [(b":status", b"200")])
    srv.send_data(1, b"ok")
    srv.send_headers(1, [(b"x-t", b"1")], end_stream=True)
    cmds += link.s2c()
    names = [k for k in kinds(cmds) if k != "send"]
    if not events:
        assert names == ["gun_inform", "gun_response", "gun_data", "gun_trailers"]
        return
    assert names == [
        "request_start",
        "request_headers",
        "request_end",
        "response_start",
        "gun_inform",
        "response_inform",
        "response_start",
        "gun_response",
        "response_headers",
        "gun_data",
        "gun_trailers",
        "response_trailers",
        "response_end",
    ]
    start = next(c.event for c in cmds if isinstance(c, Event) and c.name == "request_start")
    assert start["function"] == "headers" and start["headers"] == [("te", "trailers")]
    assert start["authority"] == "example.com:8080" and start["path"] == "/"


def test_http2_request_end_waits_for_the_window() -> None:
    """Gun: request_end when the END_STREAM DATA frame is actually written; with
    the stream window closed, that is after the server's WINDOW_UPDATE."""
    from h2.settings import SettingCodes

    from tests.unit.test_http2_handler import Link

    link = Link(events=True, server_settings={SettingCodes.INITIAL_WINDOW_SIZE: 10})
    rt = Rec()
    cmds = link.h.request("r1", rt, "POST", "/", [], b"x" * 30, {})
    link.c2s(cmds)
    assert "request_end" not in kinds(cmds)
    link.srv.increment_flow_control_window(100, stream_id=1)
    cmds = link.s2c()
    assert kinds(cmds)[-1] == "request_end"
    assert cmds[-1].event == {"stream_ref": "r1", "reply_to": rt}
