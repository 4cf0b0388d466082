"""Unit tests of the content handlers (``gunpy.protocols.content``) and of the
cookie hooks inside the sans-IO HTTP/1.1 and HTTP/2 handlers.

The event-stream parser is checked on Cowlib's ``cow_sse`` examples and on the
cases of the HTML standard Gun's parser gets wrong; the handlers are fed bytes (an
h2 server state machine for HTTP/2) and their ``gun_sse`` deliveries read, as in
Gun's ``sse_SUITE`` (lone id, media type parameters, limits, flow).
"""

from __future__ import annotations

from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived, StreamReset

import gunpy
from gunpy._commands import Close, Deliver, Send, SetActive
from gunpy.cookies import URI, ListStore, cookie_header_value, query
from gunpy.protocols import content
from gunpy.protocols.base import HandlerContext
from gunpy.protocols.content import (
    SSE_TOO_LARGE,
    DataHandler,
    SseHandler,
    SseParser,
    check_option,
    resolve,
)
from gunpy.protocols.http import HttpHandler
from gunpy.protocols.http2 import Http2Handler

CONN = object()


class Rec:
    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.msgs: list[Any] = []

    def send(self, msg: Any) -> None:
        self.msgs.append(msg)


def data_of(event: dict[str, Any]) -> str:
    return "".join(event["data"])


def parse_all(chunks: list[bytes], fin: bool = True) -> list[dict[str, Any]]:
    p = SseParser()
    out: list[dict[str, Any]] = []
    for i, c in enumerate(chunks):
        out += p.feed(c, fin and i == len(chunks) - 1)
    return out


# --------------------------------------------------------------------------------------
# The parser (cow_sse's examples, the HTML standard's 9.2.6)


def test_example1_multiline_data() -> None:
    (ev,) = parse_all([b"data: YHOO\ndata: +2\ndata: 10\n\n"])
    assert ev == {
        "last_event_id": "",
        "event_type": "message",
        "data": ["YHOO", "\n", "+2", "\n", "10"],
    }
    assert data_of(ev) == "YHOO\n+2\n10"


def test_example2_ids_and_comments() -> None:
    evs = parse_all(
        [
            b": test stream\n\ndata: first event\nid: 1\n\n"
            b"data:second event\nid\n\ndata:  third event\n\n"
        ]
    )
    assert [(e["last_event_id"], data_of(e)) for e in evs] == [
        ("1", "first event"),
        ("", "second event"),
        ("", " third event"),
    ]


def test_example3_empty_data() -> None:
    evs = parse_all([b"data\n\ndata\ndata\n\ndata:"])
    assert [data_of(e) for e in evs] == ["", "\n"]  # the last block never ended


def test_example4_space_after_colon_is_optional() -> None:
    a, b = parse_all([b"data:test\n\ndata: test\n\n"])
    assert a == b


def test_lone_id_is_delivered_alone() -> None:
    evs = parse_all([b"id: 1\n\ndata: data\n\nid: 2\n\n"])
    assert evs == [
        {"last_event_id": "1"},
        {"last_event_id": "1", "event_type": "message", "data": ["data"]},
        {"last_event_id": "2"},
    ]


def test_event_type_without_data_is_dropped() -> None:
    evs = parse_all([b"id: 1\n\nevent: message\n\nid: 1\n\nid: 2\n\n"])
    assert evs == [{"last_event_id": "1"}, {"last_event_id": "1"}, {"last_event_id": "2"}]


def test_event_type_and_unknown_fields() -> None:
    (ev,) = parse_all([b"event: update\nfoo: bar\ndata: x\n\n"])
    assert ev["event_type"] == "update"
    (ev,) = parse_all([b"event: update\n\ndata: x\n\n"])  # the type resets after a block
    assert ev["event_type"] == "message"


def test_split_anywhere() -> None:
    stream = b"data: " + b"A" * 150 + b"==\r\nid: 7\r\n\r\ndata: two\r\rdata: three\n\n"
    whole = parse_all([stream])
    assert [data_of(e) for e in whole] == ["A" * 150 + "==", "two", "three"]
    for cut in range(1, len(stream)):
        assert parse_all([stream[:cut], stream[cut:]]) == whole, cut
    assert parse_all([bytes([b]) for b in stream]) == whole


def test_cr_at_the_end_of_a_piece_waits_for_a_possible_lf() -> None:
    p = SseParser()
    assert p.feed(b"data: x\r") == []
    # The next piece starts with the LF of that CRLF: one line end, not two.
    assert p.feed(b"\ndata: y\r\n\r\n") == [
        {"last_event_id": "", "event_type": "message", "data": ["x", "\n", "y"]}
    ]


def test_bom_is_skipped_once() -> None:
    (ev,) = parse_all([b"\xef\xbb", b"\xbfdata: x\n\n"])
    assert data_of(ev) == "x"
    (ev,) = parse_all([b"\xef\xbb\xbfdata: \xef\xbb\xbfx\n\n"])
    assert data_of(ev) == "\ufeffx"  # only the first one is a BOM


def test_utf8_fields_and_bad_bytes() -> None:
    (ev,) = parse_all(["id: é\nevent: ü\ndata: 春节\n\n".encode(), b"data: \xff\n\n"][:1])
    assert ev == {"last_event_id": "é", "event_type": "ü", "data": ["春节"]}
    (ev,) = parse_all([b"data: \xff\n\n"])
    assert data_of(ev) == "\ufffd"


def test_id_with_nul_is_ignored() -> None:
    (ev,) = parse_all([b"id: a\x00b\ndata: x\n\n"])
    assert ev["last_event_id"] == ""


def test_retry() -> None:
    evs = parse_all([b"retry: 3000\n\nretry: x\ndata: a\n\nretry: 10\ndata: b\n\n"])
    assert evs == [
        {"last_event_id": "", "retry": 3000},
        {"last_event_id": "", "event_type": "message", "data": ["a"]},
        {"last_event_id": "", "event_type": "message", "data": ["b"], "retry": 10},
    ]


def test_unfinished_event_at_fin_is_dropped() -> None:
    assert parse_all([b"data: x\n"], fin=True) == []
    assert parse_all([b"data: x"], fin=True) == []
    (ev,) = parse_all([b"data: x\n\r"], fin=True)  # a CR ends the last line at fin
    assert data_of(ev) == "x"


# --------------------------------------------------------------------------------------
# The handlers and the chain (gun_content_handler, gun_data_h, gun_sse_h)

SSE_HS = [("content-type", "text/event-stream")]


def sse(opts: dict[str, Any] | None = None, headers: Any = SSE_HS) -> SseHandler:
    h = SseHandler.init(CONN, None, "ref", 200, headers, opts or {})
    assert h is not None
    return h


@pytest.mark.parametrize(
    ("ctype", "enabled"),
    [
        ("text/event-stream", True),
        ("text/event-stream; charset=utf-8", True),
        ("Text/Event-Stream ;x=y", True),
        ("text", False),
        ("text/plain", False),
        ("", False),
    ],
)
def test_sse_takes_only_event_streams(ctype: str, enabled: bool) -> None:
    h = SseHandler.init(CONN, None, "ref", 200, [("content-type", ctype)], {})
    assert (h is not None) is enabled
    assert SseHandler.init(CONN, None, "ref", 200, [], {}) is None


def test_max_event_size_complete() -> None:
    h = sse({"max_event_size": 1})
    out: list[Any] = []
    assert h.handle("nofin", b"data: hi\n\n", out) == ("done", 1)
    assert out == [
        ("gun_sse", CONN, "ref", {"last_event_id": "", "event_type": "message", "data": ["hi"]})
    ]
    assert h.handle("nofin", b"data: hi\n", []) == ("error", ("limit_reached", SSE_TOO_LARGE))


def test_events_before_the_limit_are_delivered() -> None:
    out: list[Any] = []
    r = sse({"max_event_size": 8}).handle("nofin", b"data: a\n\ndata: " + b"x" * 20, out)
    assert r == ("error", ("limit_reached", SSE_TOO_LARGE))
    assert [m[3]["data"] for m in out] == [["a"]]


def test_max_event_size_default() -> None:
    assert sse().handle("nofin", b"a" * 10240, []) == ("done", 0)
    assert sse().handle("nofin", b"a" * 10241, [])[0] == "error"
    assert sse({"max_event_size": "infinity"}).handle("nofin", b"a" * 100000, []) == ("done", 0)


def test_fin_counts_one_message() -> None:
    out: list[Any] = []
    assert sse().handle("fin", b"data: x\n\n", out) == ("done", 2)
    assert out[-1] == ("gun_sse", CONN, "ref", "fin")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (["data"], True),
        (["gun_sse_h", "gun_data_h"], True),
        (["sse", ("data", {})], True),
        ([("sse", {"max_event_size": 32})], True),
        ([("sse", {"max_event_size": "infinity"})], True),
        ([("sse", {"max_event_size": 0})], False),
        ([("sse", {"max_event_size": False})], False),
        ([], False),
        (["nope"], False),
        ("data", False),
        ([("sse", [])], False),
        ([DataHandler], True),
    ],
)
def test_check_option(value: Any, ok: bool) -> None:
    assert check_option(value) is ok


def test_bad_content_handlers_are_refused_by_open() -> None:
    assert gunpy.open(
        "localhost", 1, {"http_opts": {"content_handlers": [("sse", {"max_event_size": 0})]}}
    ) == (
        "error",
        ("options", ("http", ("content_handlers", [("sse", {"max_event_size": 0})]))),
    )
    bad = [("gun_sse_h", {"max_event_size": False})]
    assert gunpy.open("localhost", 1, {"http2_opts": {"content_handlers": bad}}) == (
        "error",
        ("options", ("http2", ("content_handlers", bad))),
    )


def test_resolve_gives_none_for_the_data_handler_alone() -> None:
    assert resolve(["data"]) is None
    assert resolve(["gun_data_h", "sse"]) is None  # data takes everything first
    chain = resolve(["sse", "data"])
    assert chain is not None and [h for h, _ in chain] == [SseHandler, DataHandler]
    # Not an event stream: the chain is the data handler alone, the fast path.
    assert chain is not None
    assert content.init(chain, CONN, None, "r", 200, [("content-type", "text/plain")]) is None


class Upper:
    """A custom handler that transforms the data and passes it on."""

    @classmethod
    def init(cls, conn: Any, reply_to: Any, ref: Any, status: int, headers: Any, opts: Any) -> Any:
        return cls()

    def handle(self, is_fin: str, data: bytes, out: list[Any]) -> tuple[Any, ...]:
        return ("ok", data.upper(), 0)


class Broken:
    @classmethod
    def init(cls, *args: Any) -> Any:
        return cls()

    def handle(self, is_fin: str, data: bytes, out: list[Any]) -> tuple[Any, ...]:
        raise RuntimeError("bug")


# --------------------------------------------------------------------------------------
# HTTP/1.1 handler


def mk1(opts: dict[str, Any] | None = None, **ctx_opts: Any) -> HttpHandler:
    ctx = HandlerContext(
        conn=CONN, owner=Rec("owner"), origin_host="example.org", origin_port=80, opts=ctx_opts
    )
    return HttpHandler(ctx, opts or {})


def delivered(cmds: list[Any]) -> list[Any]:
    return [c.msg for c in cmds if isinstance(c, Deliver)]


def sent(cmds: list[Any]) -> bytes:
    return b"".join(c.data for c in cmds if isinstance(c, Send))


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(b: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(b), b)


def test_http_sse_events_then_fin() -> None:
    h = mk1({"content_handlers": ["sse", "data"]})
    rt = Rec()
    h.request("r", rt, "GET", "/", [], b"", {})
    msgs = delivered(h.handle(SSE_HEAD + chunk(b"data: one\n\nid: 5\n\n") + chunk(b"data: tw")))
    assert msgs[0][0] == "gun_response" and msgs[0][3] == "nofin"
    assert msgs[1:] == [
        ("gun_sse", CONN, "r", {"last_event_id": "", "event_type": "message", "data": ["one"]}),
        ("gun_sse", CONN, "r", {"last_event_id": "5"}),
    ]
    msgs = delivered(h.handle(chunk(b"o\n\n") + b"0\r\n\r\n"))
    assert msgs == [
        ("gun_sse", CONN, "r", {"last_event_id": "5", "event_type": "message", "data": ["two"]}),
        ("gun_sse", CONN, "r", "fin"),
    ]


def test_http_other_responses_still_get_gun_data() -> None:
    h = mk1({"content_handlers": ["sse", "data"]})
    rt = Rec()
    h.request("r", rt, "GET", "/", [], b"", {})
    msgs = delivered(
        h.handle(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\nhello")
    )
    assert msgs[1] == ("gun_data", CONN, "r", "fin", b"hello")


def test_http_sse_without_data_handler_and_close_delimited_body() -> None:
    h = mk1({"content_handlers": ["sse"]})
    h.request("r", Rec(), "GET", "/", [], b"", {})
    msgs = delivered(
        h.handle(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream;charset=utf-8\r\n\r\ndata: x\n\n"
        )
    )
    assert msgs[1][3] == {"last_event_id": "", "event_type": "message", "data": ["x"]}
    cmds = h.handle_eof()
    assert delivered(cmds) == [("gun_sse", CONN, "r", "fin")]
    # A text/plain body with no handler to take it: nothing is delivered but the head.
    h = mk1({"content_handlers": ["sse"]})
    h.request("r", Rec(), "GET", "/", [], b"", {})
    assert [
        m[0] for m in delivered(h.handle(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"))
    ] == ["gun_response"]


def test_http_sse_limit_is_a_connection_error() -> None:
    h = mk1({"content_handlers": [("gun_sse_h", {"max_event_size": 32})]})
    h.request("r", Rec(), "GET", "/", [], b"", {})
    cmds = h.handle(SSE_HEAD + chunk(b"data: " + b"x" * 100))
    reason = ("connection_error", "limit_reached", SSE_TOO_LARGE)
    assert delivered(cmds)[-1] == ("gun_error", CONN, reason)
    assert cmds[-1] == Close(("error", reason))


def test_http_sse_flow_counts_events() -> None:
    h = mk1({"content_handlers": ["sse", "data"], "flow": 2})
    h.request("r", Rec(), "GET", "/", [], b"", {})
    cmds = h.handle(SSE_HEAD + chunk(b": comment only\n"))
    assert SetActive(False) not in cmds  # no event delivered: the budget is intact
    cmds = h.handle(chunk(b"data: 1\n\ndata: 2\n\n"))
    assert len([m for m in delivered(cmds) if m[0] == "gun_sse"]) == 2
    assert SetActive(False) in cmds  # two events spent the budget of 2
    cmds = h.handle(chunk(b"data: 3\n\n"))
    assert delivered(cmds) == []  # parked until update_flow
    cmds = h.update_flow("r", 1)
    assert [m[3]["data"] for m in delivered(cmds)] == [["3"]]


def test_http_custom_handler_chain_and_failures() -> None:
    h = mk1({"content_handlers": [Upper, "data"]})
    h.request("r", Rec(), "GET", "/", [], b"", {})
    msgs = delivered(h.handle(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"))
    assert msgs[1] == ("gun_data", CONN, "r", "fin", b"HELLO")
    h = mk1({"content_handlers": [Broken]})
    h.request("r", Rec(), "GET", "/", [], b"", {})
    cmds = h.handle(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
    assert isinstance(cmds[-1], Close)
    assert cmds[-1].reason[1][:2] == ("connection_error", "internal_error")


def test_http_cookie_header_is_last_and_set_cookie_is_stored() -> None:
    store = ListStore()
    h = mk1(cookie_store=store)
    h.request("r1", Rec(), "GET", "/a/b", [("accept", "*/*")], b"", {})
    cmds = h.handle(
        b"HTTP/1.1 103 Early Hints\r\nset-cookie: early=1; Path=/\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2; Path=/\r\ncontent-length: 0\r\n\r\n"
    )
    assert [m[0] for m in delivered(cmds)] == ["gun_inform", "gun_response"]
    assert (
        cookie_header_value(query(store, URI("http", "example.org", "/a/x"))) == "a=1; early=1; b=2"
    )
    cmds = h.request("r2", Rec(), "POST", "/a/c", [("host", "EXAMPLE.org:80")], b"x", {})
    req = sent(cmds)
    assert req.endswith(b"host: EXAMPLE.org:80\r\ncookie: a=1; early=1; b=2\r\n\r\nx")
    # Another host (its own host header): none of them.
    cmds = h.request("r3", Rec(), "GET", "/a/c", [("host", "other.org")], b"", {})
    assert b"cookie" not in sent(cmds)


def test_http_ignore_informational_and_ws_upgrade_cookies() -> None:
    store = ListStore()
    h = mk1({"cookie_ignore_informational": True}, cookie_store=store)
    h.request("r1", Rec(), "GET", "/", [], b"", {})
    h.handle(
        b"HTTP/1.1 103 Early Hints\r\nset-cookie: early=1\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\nset-cookie: final=1\r\n\r\n"
    )
    assert [c.name for c in store.cookies] == ["final"]
    cmds = h.ws_upgrade("w", Rec(), "/ws", [("x-a", "1")], {})
    head = sent(cmds).split(b"\r\n")
    assert head[-3:] == [b"cookie: final=1", b"", b""]


# --------------------------------------------------------------------------------------
# HTTP/2 handler


class H2Pair:
    def __init__(self, opts: dict[str, Any] | None = None, **ctx_opts: Any) -> None:
        ctx = HandlerContext(
            conn=CONN,
            owner=Rec("owner"),
            origin_host="example.org",
            origin_port=443,
            transport="tls",
            origin_scheme="https",
            opts=ctx_opts,
        )
        self.h = Http2Handler(ctx, opts or {})
        self.srv = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.srv.initiate_connection()
        self.events: list[Any] = []
        self.pump(self.h.init())
        self.pump(self.h.handle(self.srv.data_to_send()))
        self.pump(self.h.handle(self.srv.data_to_send()))

    def pump(self, cmds: list[Any]) -> list[Any]:
        data = sent(cmds)
        if data:
            self.events += self.srv.receive_data(data)
        return cmds

    def request(self, ref: str, path: str = "/", headers: Any = ()) -> tuple[int, Rec]:
        rt = Rec()
        self.pump(self.h.request(ref, rt, "GET", path, list(headers), b"", {}))
        req = [e for e in self.events if isinstance(e, RequestReceived)][-1]
        return req.stream_id, rt

    def feed(self) -> list[Any]:
        return self.pump(self.h.handle(self.srv.data_to_send()))


def test_http2_sse_events_then_fin() -> None:
    p = H2Pair({"content_handlers": ["sse", "data"]})
    sid, rt = p.request("r")
    p.srv.send_headers(
        sid, [(b":status", b"200"), (b"content-type", b"text/event-stream; charset=utf-8")]
    )
    p.srv.send_data(sid, b"id: hello\n\n")
    p.srv.send_data(sid, b"data: x\n\n", end_stream=True)
    msgs = delivered(p.feed())
    assert msgs[1:] == [
        ("gun_sse", CONN, "r", {"last_event_id": "hello"}),
        ("gun_sse", CONN, "r", {"last_event_id": "hello", "event_type": "message", "data": ["x"]}),
        ("gun_sse", CONN, "r", "fin"),
    ]


def test_http2_sse_limit_resets_the_stream_only() -> None:
    p = H2Pair({"content_handlers": [("sse", {"max_event_size": 32})]})
    sid, rt = p.request("r")
    p.srv.send_headers(sid, [(b":status", b"200"), (b"content-type", b"text/event-stream")])
    p.srv.send_data(sid, b"data: " + b"x" * 100)
    cmds = p.feed()
    assert delivered(cmds)[-1] == (
        "gun_error",
        CONN,
        "r",
        ("stream_error", "internal_error", SSE_TOO_LARGE),
    )
    assert not any(isinstance(c, Close) for c in cmds)
    assert any(isinstance(e, StreamReset) and e.stream_id == sid for e in p.events)
    # The connection goes on.
    sid2, _ = p.request("r2")
    p.srv.send_headers(sid2, [(b":status", b"204")], end_stream=True)
    assert delivered(p.feed())[0][:4] == ("gun_response", CONN, "r2", "fin")


def test_http2_sse_limit_on_the_last_frame() -> None:
    p = H2Pair({"content_handlers": [("sse", {"max_event_size": 32})]})
    sid, _ = p.request("r")
    p.srv.send_headers(sid, [(b":status", b"200"), (b"content-type", b"text/event-stream")])
    p.srv.send_data(sid, b"data: " + b"x" * 100, end_stream=True)
    cmds = p.feed()
    assert delivered(cmds)[-1][3] == ("stream_error", "internal_error", SSE_TOO_LARGE)
    assert not any(isinstance(e, StreamReset) for e in p.events)  # already closed


def test_http2_cookies() -> None:
    store = ListStore()
    p = H2Pair(cookie_store=store)
    sid, _ = p.request("r", "/x")
    p.srv.send_headers(
        sid,
        [
            (b":status", b"200"),
            (b"set-cookie", b"s=1; Secure; Path=/"),
            (b"set-cookie", b"t=2; Path=/"),
        ],
        end_stream=True,
    )
    p.feed()
    assert [c.name for c in store.cookies] == ["s", "t"]
    p.request("r2", "/y", [("accept", "*/*")])
    req = [e for e in p.events if isinstance(e, RequestReceived)][-1]
    assert req.headers[-1] == (b"cookie", b"s=1; t=2")  # last, after content-length
    assert (b"accept", b"*/*") in req.headers


@pytest.mark.parametrize(("ignore", "names"), [(False, ["early", "final"]), (True, ["final"])])
def test_http2_informational_cookies(ignore: bool, names: list[str]) -> None:
    store = ListStore()
    p = H2Pair({"cookie_ignore_informational": ignore}, cookie_store=store)
    sid, _ = p.request("r", "/")
    p.srv.send_headers(sid, [(b":status", b"103"), (b"set-cookie", b"early=1")])
    p.srv.send_headers(sid, [(b":status", b"204"), (b"set-cookie", b"final=1")], end_stream=True)
    msgs = delivered(p.feed())
    assert [m[0] for m in msgs] == ["gun_inform", "gun_response"]
    assert [c.name for c in store.cookies] == names
