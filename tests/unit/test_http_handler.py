"""Unit tests of the sans-IO HTTP/1.1 handler (``gunpy.protocols.http``).

No sockets, threads or clocks: bytes go in through ``handle``/``handle_eof``, calls
through the handler's methods, and every test asserts on the exact commands that
come out.  What the handler writes is cross-checked by h11 in the SERVER role (an
independent HTTP/1.1 state machine), and many responses are produced by h11's
server too.  Section numbers are RFC 9112's unless said otherwise; "Gun x.y" is a
section of /work/shared/design/gun-reference.md.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import sys
import types
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gunpy.protocols
from gunpy._commands import (
    Close,
    Closing,
    Deliver,
    Send,
    SetActive,
    SwitchProtocol,
)
from gunpy.protocols.base import HandlerContext
from gunpy.protocols.http import HttpHandler, check_options

CONN = object()  # the connection's Pid as users see it: any sentinel will do


class Rec:
    """A recording reply_to: ``send`` appends to ``msgs``."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.msgs: list[Any] = []

    def send(self, msg: Any) -> None:
        self.msgs.append(msg)

    def __repr__(self) -> str:
        return f"Rec({self.name})"


OWNER = Rec("owner")


def mk(opts: dict[str, Any] | None = None, **ctx: Any) -> HttpHandler:
    kw: dict[str, Any] = {"origin_host": "127.0.0.1", "origin_port": 8080}
    kw.update(ctx)
    return HttpHandler(HandlerContext(conn=CONN, owner=OWNER, **kw), opts or {})


def wire(cmds: list[Any]) -> bytes:
    """Everything the commands write, in order."""
    return b"".join(c.data for c in cmds if isinstance(c, Send))


def delivered(cmds: list[Any]) -> list[Any]:
    return [c.msg for c in cmds if isinstance(c, Deliver)]


def server_requests(data: bytes) -> list[list[Any]]:
    """Parse client bytes with h11's server; one list of events per request.

    h11 cannot read a pipelined request before answering the previous one, so each
    request is answered with an empty 200 before the next is parsed.
    """
    srv = h11.Connection(h11.SERVER)
    srv.receive_data(data)
    reqs: list[list[Any]] = []
    cur: list[Any] = []
    while True:
        ev = srv.next_event()
        if ev is h11.NEED_DATA or ev is h11.PAUSED:
            break
        cur.append(ev)
        if isinstance(ev, h11.EndOfMessage):
            reqs.append(cur)
            cur = []
            srv.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
            srv.send(h11.EndOfMessage())
            if srv.our_state is h11.MUST_CLOSE:
                break
            srv.start_next_cycle()
    if cur:
        reqs.append(cur)
    return reqs


def body_of(events: list[Any]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, h11.Data))


def h11_response(
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
    body: list[bytes] | None = None,
    trailers: list[tuple[str, str]] | None = None,
    method: str = "GET",
) -> bytes:
    """Response bytes as h11's server writes them for a ``method`` request."""
    srv = h11.Connection(h11.SERVER)
    srv.receive_data(f"{method} / HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    assert isinstance(srv.next_event(), h11.Request)
    assert isinstance(srv.next_event(), h11.EndOfMessage)
    enc = lambda hs: [(n.encode("latin-1"), v.encode("latin-1")) for n, v in hs or []]  # noqa: E731
    out = srv.send(h11.Response(status_code=status, headers=enc(headers)))
    for part in body or []:
        out += srv.send(h11.Data(data=part))
    out += srv.send(h11.EndOfMessage(headers=enc(trailers)))
    return out


def get(h: HttpHandler, ref: Any = "r1", rt: Rec | None = None, **kw: Any) -> Rec:
    rt = rt or Rec(str(ref))
    h.request(ref, rt, "GET", "/", kw.get("headers", []), b"", kw.get("req_opts", {}))
    return rt


HELLO = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
HELLO_HS = [("content-length", "5")]


def proto_error(cmds: list[Any]) -> tuple[str, str, str]:
    """Assert the protocol-error ending (behaviour 6) and return the reason."""
    assert isinstance(cmds[-1], Close)
    reason = cmds[-1].reason
    assert reason[0] == "error" and reason[1][:2] == ("connection_error", "protocol_error")
    assert cmds[-2].msg == ("gun_error", CONN, reason[1])
    return reason[1]  # type: ignore[no-any-return]


# ======================================================================================
# 1. request(): serialization, host header, framing, pipelining


def test_get_is_written_like_gun() -> None:
    """Gun's wire format (peers/README): content-length: 0 first, then host, then the
    user's headers, lower-case names, no user-agent; RFC 9112 3 request line."""
    h = mk()
    cmds = h.request("r1", Rec(), "GET", "/index.html", [("accept", "*/*")], b"", {})
    assert cmds == [
        Send(
            b"GET /index.html HTTP/1.1\r\ncontent-length: 0\r\nhost: 127.0.0.1:8080\r\n"
            b"accept: */*\r\n\r\n"
        )
    ]
    [req] = server_requests(wire(cmds))
    assert req[0].method == b"GET" and req[0].target == b"/index.html"
    assert (b"host", b"127.0.0.1:8080") in req[0].headers
    assert isinstance(req[1], h11.EndOfMessage)


@pytest.mark.parametrize(
    ("host", "port", "transport", "expected"),
    [
        ("127.0.0.1", 80, "tcp", "127.0.0.1"),
        ("example.org", 443, "tls", "example.org"),
        ("example.org", 80, "tls", "example.org:80"),
        ("example.org", 443, "tcp", "example.org:443"),
        ("::1", 8080, "tcp", "[::1]:8080"),
        ("::1", 80, "tcp", "[::1]"),
        ("/tmp/sock", 0, "unix", "localhost"),
    ],
)
def test_host_header(host: str, port: int, transport: str, expected: str) -> None:
    """Gun 4.9 / rfc7230_SUITE: default ports omitted, IPv6 bracketed (RFC 9110 7.2),
    localhost for Unix sockets."""
    h = mk(origin_host=host, origin_port=port, transport=transport)
    data = wire(h.request("r1", Rec(), "GET", "/", [], b"", {}))
    assert f"\r\nhost: {expected}\r\n".encode() in data
    [req] = server_requests(data)
    assert dict(req[0].headers)[b"host"] == expected.encode()


def test_user_host_header_is_kept() -> None:
    """Gun 4.9: the host header is added only if absent."""
    h = mk()
    data = wire(h.request("r1", Rec(), "GET", "/", [("host", "other:1")], b"", {}))
    assert data == b"GET / HTTP/1.1\r\ncontent-length: 0\r\nhost: other:1\r\n\r\n"


def test_full_body_sets_content_length_and_strips_transfer_encoding() -> None:
    """Gun 4.9: with a full body content-length is replaced by the real length and any
    user transfer-encoding is stripped (RFC 9112 6.2)."""
    h = mk()
    hs = [("content-length", "999"), ("transfer-encoding", "chunked"), ("x-a", "1")]
    data = wire(h.request("r1", Rec(), "POST", "/p", hs, b"abc", {}))
    assert data == (
        b"POST /p HTTP/1.1\r\ncontent-length: 3\r\nhost: 127.0.0.1:8080\r\nx-a: 1\r\n\r\nabc"
    )
    [req] = server_requests(data)
    assert body_of(req) == b"abc"


def test_streamed_body_is_chunked_on_http11() -> None:
    """Gun 4.9: body None and no content-length => transfer-encoding: chunked (7.1)."""
    h = mk()
    rt = Rec()
    head = h.request("r1", rt, "POST", "/p", [("transfer-encoding", "gzip")], None, {})
    assert wire(head) == (
        b"POST /p HTTP/1.1\r\ntransfer-encoding: chunked\r\nhost: 127.0.0.1:8080\r\n\r\n"
    )
    c1 = h.data("r1", rt, "nofin", b"hello ")
    c2 = h.data("r1", rt, "fin", b"world")
    assert wire(c1) == b"6\r\nhello \r\n"
    assert wire(c2) == b"5\r\nworld\r\n0\r\n\r\n"
    [req] = server_requests(wire(head + c1 + c2))
    assert body_of(req) == b"hello world"
    assert isinstance(req[-1], h11.EndOfMessage)


def test_streamed_body_with_user_content_length_is_raw() -> None:
    """Gun 4.9: a user content-length with body None frames the body (6.2): raw bytes."""
    h = mk()
    rt = Rec()
    head = h.request("r1", rt, "PUT", "/p", [("content-length", "4")], None, {})
    assert b"transfer-encoding" not in wire(head)
    c = h.data("r1", rt, "nofin", b"ab") + h.data("r1", rt, "fin", b"cd")
    assert wire(c) == b"abcd"
    [req] = server_requests(wire(head + c))
    assert body_of(req) == b"abcd"


def test_transform_header_name_applies_to_outgoing_names_only() -> None:
    """Gun 4.9 / gun_SUITE transform_header_name: re-case host and user names on the
    wire; the framing header gunpy adds stays as Gun's code writes it (added after
    the transform); response names stay lower-case."""
    h = mk({"transform_header_name": lambda n: n.upper() if n == "host" else n.title()})
    rt = Rec()
    data = wire(h.request("r1", rt, "GET", "/", [("x-custom", "v")], b"", {}))
    assert (
        data
        == b"GET / HTTP/1.1\r\ncontent-length: 0\r\nHOST: 127.0.0.1:8080\r\nX-Custom: v\r\n\r\n"
    )
    cmds = h.handle(b"HTTP/1.1 200 OK\r\nX-Reply: 1\r\nContent-Length: 0\r\n\r\n")
    assert delivered(cmds) == [
        ("gun_response", CONN, "r1", "fin", 200, [("x-reply", "1"), ("content-length", "0")])
    ]


def test_pipelined_requests_are_written_at_once_and_matched_in_order() -> None:
    """Gun 4.9 pipelining: each request is written immediately; responses are matched
    FIFO (9.3.2), even when they all arrive in one read."""
    h = mk()
    r1, r2, r3 = Rec("1"), Rec("2"), Rec("3")
    c1 = h.request("a", r1, "GET", "/a", [], b"", {})
    c2 = h.request("b", r2, "GET", "/b", [], b"", {})
    c3 = h.request("c", r3, "HEAD", "/c", [], b"", {})
    assert all(len(c) == 1 and isinstance(c[0], Send) for c in (c1, c2, c3))
    reqs = server_requests(wire(c1 + c2 + c3))
    assert [r[0].target for r in reqs] == [b"/a", b"/b", b"/c"]
    resp = (
        h11_response(200, [("content-length", "1")], [b"A"])
        + h11_response(200, [], [b"B1", b"B2"])
        + h11_response(200, [("content-length", "7")], method="HEAD")
    )
    cmds = h.handle(resp)
    assert cmds == [
        Deliver(r1, ("gun_response", CONN, "a", "nofin", 200, [("content-length", "1")])),
        Deliver(r1, ("gun_data", CONN, "a", "fin", b"A")),
        Deliver(r2, ("gun_response", CONN, "b", "nofin", 200, [("transfer-encoding", "chunked")])),
        Deliver(r2, ("gun_data", CONN, "b", "fin", b"B1B2")),
        Deliver(r3, ("gun_response", CONN, "c", "fin", 200, [("content-length", "7")])),
    ]
    assert h.down() == []


def test_request_behind_unfinished_streamed_body_is_queued() -> None:
    """Gun has no code path for a request while a streamed body is unfinished (4.9);
    gunpy holds it and writes it right after the body's last chunk."""
    h = mk()
    rt = Rec()
    h.request("up", rt, "POST", "/up", [], None, {})
    assert h.request("g", rt, "GET", "/g", [], b"", {}) == []
    assert h.keepalive() == []  # never inside a request body (Gun 4.6)
    cmds = h.data("up", rt, "fin", b"xyz")
    assert wire(cmds) == (
        b"3\r\nxyz\r\n0\r\n\r\nGET /g HTTP/1.1\r\ncontent-length: 0\r\nhost: 127.0.0.1:8080\r\n\r\n"
    )
    assert h.down() == ["up", "g"]


def test_held_streamed_request_body_is_written_with_its_head() -> None:
    """A held request may get its body early: it is written with its head, in order."""
    h = mk()
    rt = Rec()
    p1 = h.request("a", rt, "POST", "/a", [], None, {})
    assert h.request("b", rt, "POST", "/b", [], None, {}) == []
    assert h.data("b", rt, "nofin", b"bb") == []
    assert h.data("b", rt, "fin", b"") == []
    cmds = p1 + h.data("a", rt, "fin", b"aa")
    reqs = server_requests(wire(cmds))
    assert [(r[0].target, body_of(r)) for r in reqs] == [(b"/a", b"aa"), (b"/b", b"bb")]


def test_bad_request_target_is_refused() -> None:
    """Request smuggling guard: a CR/LF/SP in the path would split the request line (3)."""
    h = mk()
    rt = Rec()
    cmds = h.request("r1", rt, "GET", "/a HTTP/1.1\r\nx: y", [], b"", {})
    assert not wire(cmds)
    assert delivered(cmds)[0][:3] == ("gun_error", CONN, "r1")
    assert h.down() == []


def test_non_latin1_header_value_is_sent_as_utf8() -> None:
    """Header values are latin-1 str (ARCHITECTURE 1); a value that cannot be latin-1
    is written as UTF-8 on its own line, the other lines stay latin-1."""
    h = mk()
    data = wire(h.request("r1", Rec(), "GET", "/", [("a", "é"), ("b", "€")], b"", {}))
    assert b"\r\na: \xe9\r\n" in data
    assert b"\r\nb: \xe2\x82\xac\r\n" in data


# ======================================================================================
# 2. data(): request body framing


def test_data_chunk_framing() -> None:
    """7.1 chunked coding: empty nofin is dropped (an empty chunk would end the body,
    Gun 1 data/4); empty fin is the last-chunk ``0\\r\\n\\r\\n``."""
    h = mk()
    rt = Rec()
    h.request("r1", rt, "POST", "/", [], None, {})
    assert h.data("r1", rt, "nofin", b"") == []
    assert h.data("r1", rt, "nofin", b"a" * 26) == [Send(b"1a\r\n" + b"a" * 26 + b"\r\n")]
    assert h.data("r1", rt, "fin", b"") == [Send(b"0\r\n\r\n")]
    # The body is over: more data is refused like Gun's.
    assert h.data("r1", rt, "fin", b"x") == [
        Deliver(rt, ("gun_error", CONN, "r1", ("badstate", "The stream has already been closed.")))
    ]


def test_data_unknown_ref() -> None:
    """Gun 7: data on an unknown ref says "The stream has already been closed."."""
    h = mk()
    rt = Rec()
    assert h.data("nope", rt, "fin", b"x") == [
        Deliver(
            rt, ("gun_error", CONN, "nope", ("badstate", "The stream has already been closed."))
        )
    ]


def test_data_over_content_length_is_refused() -> None:
    """6.2: a body cannot exceed its content-length; Gun crashes, gunpy refuses the
    chunk and keeps the connection usable."""
    h = mk()
    rt = Rec()
    h.request("r1", rt, "PUT", "/", [("content-length", "2")], None, {})
    cmds = h.data("r1", rt, "nofin", b"abc")
    assert not wire(cmds)
    assert delivered(cmds)[0][3][0] == "badstate"
    assert h.data("r1", rt, "fin", b"ab") == [Send(b"ab")]


def test_data_fin_short_of_content_length_closes() -> None:
    """6.2/8: a body shorter than its content-length leaves the server waiting and would
    make the next request part of this body: the connection cannot be reused."""
    h = mk()
    rt = Rec()
    h.request("r1", rt, "PUT", "/", [("content-length", "5")], None, {})
    cmds = h.data("r1", rt, "fin", b"ab")
    assert cmds[0] == Send(b"ab")
    assert delivered(cmds)[0][3][0] == "badstate"
    assert isinstance(cmds[-1], Close) and cmds[-1].reason[0] == "error"


# ======================================================================================
# 3. handle(): responses


def test_content_length_response_in_one_read() -> None:
    """6.3 item 6: content-length delimits the body; one read = one gun_data (Gun 7)."""
    h = mk()
    rt = get(h)
    assert h.handle(HELLO) == [
        Deliver(rt, ("gun_response", CONN, "r1", "nofin", 200, HELLO_HS)),
        Deliver(rt, ("gun_data", CONN, "r1", "fin", b"hello")),
    ]
    assert h.down() == []


def test_response_byte_by_byte() -> None:
    """Any split of the bytes gives the same response: one gun_data per read (Gun 7)."""
    h = mk()
    rt = get(h)
    out: list[Any] = []
    for i in range(len(HELLO)):
        out += h.handle(HELLO[i : i + 1])
    assert {c.to for c in out} == {rt}
    msgs = delivered(out)
    assert msgs[0] == ("gun_response", CONN, "r1", "nofin", 200, HELLO_HS)
    assert [m[3] for m in msgs[1:]] == ["nofin"] * 4 + ["fin"]
    assert b"".join(m[4] for m in msgs[1:]) == b"hello"
    assert all(isinstance(c, Deliver) for c in out)


def test_chunks_in_one_read_are_merged() -> None:
    """Gun 7: chunks that arrive in one read are merged into one gun_data (7.1)."""
    h = mk()
    rt = get(h)
    resp = h11_response(200, [("x", "y")], [b"ab", b"cd", b"ef"])
    assert h.handle(resp) == [
        Deliver(
            rt,
            (
                "gun_response",
                CONN,
                "r1",
                "nofin",
                200,
                [("x", "y"), ("transfer-encoding", "chunked")],
            ),
        ),
        Deliver(rt, ("gun_data", CONN, "r1", "fin", b"abcdef")),
    ]


def test_chunked_split_everywhere() -> None:
    """7.1: a chunked body split at every byte still decodes exactly."""
    h = mk()
    get(h)
    resp = h11_response(200, [], [b"0123456789abcdef" * 3, b"x"])
    out: list[Any] = []
    for i in range(len(resp)):
        out += h.handle(resp[i : i + 1])
    msgs = delivered(out)
    assert b"".join(m[4] for m in msgs[1:]) == b"0123456789abcdef" * 3 + b"x"
    assert msgs[-1][3] == "fin" and all(m[3] == "nofin" for m in msgs[1:-1])


def test_transfer_encoding_wins_over_content_length() -> None:
    """6.3 item 3 / rfc7230_SUITE: transfer-encoding overrides content-length."""
    h = mk()
    rt = get(h)
    resp = (
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    msgs = delivered(h.handle(resp))
    assert msgs[1] == ("gun_data", CONN, "r1", "fin", b"abc")
    assert rt is not None and h.down() == []


def test_non_chunked_transfer_encoding_reads_until_close() -> None:
    """6.3 item 4: a final transfer coding other than chunked => read until close."""
    h = mk()
    rt = get(h)
    cmds = h.handle(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nraw")
    assert delivered(cmds)[1] == ("gun_data", CONN, "r1", "nofin", b"raw")
    assert h.handle_eof() == [Deliver(rt, ("gun_data", CONN, "r1", "fin", b"")), Close("closed")]


def test_read_until_close_ends_on_eof_and_is_not_killed() -> None:
    """6.3 item 8 + gun-reference 7: a close-delimited body ends with an empty gun_data
    fin on EOF, and that completed stream is not listed as killed."""
    h = mk()
    rt = get(h, "a")
    r2 = get(h, "b")
    cmds = h.handle(b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert delivered(cmds) == [
        ("gun_response", CONN, "a", "nofin", 200, []),
        ("gun_data", CONN, "a", "nofin", b"some"),
    ]
    cmds = h.handle(b" more")
    assert delivered(cmds) == [("gun_data", CONN, "a", "nofin", b" more")]
    assert h.handle_eof() == [Deliver(rt, ("gun_data", CONN, "a", "fin", b"")), Close("closed")]
    assert h.close("closed") == [Deliver(r2, ("gun_error", CONN, "b", "closed"))]
    assert h.down() == ["b"]


def test_trailers() -> None:
    """7.1.2 + Gun 2: trailers end the response; the data before them is nofin; they
    are delivered even though the request had no ``te: trailers``."""
    h = mk()
    rt = get(h)
    resp = h11_response(200, [("trailer", "x-checksum")], [b"data"], [("X-Checksum", "abc")])
    assert h.handle(resp)[1:] == [
        Deliver(rt, ("gun_data", CONN, "r1", "nofin", b"data")),
        Deliver(rt, ("gun_trailers", CONN, "r1", [("x-checksum", "abc")])),
    ]
    # Trailers with no data before them in that read: no empty gun_data.
    rt2 = get(h, "r2")
    resp = h11_response(200, [], [b"d"], [("a", "1"), ("b", "2")])
    split = resp.index(b"0\r\n")
    assert delivered(h.handle(resp[:split]))[1] == ("gun_data", CONN, "r2", "nofin", b"d")
    assert h.handle(resp[split:]) == [
        Deliver(rt2, ("gun_trailers", CONN, "r2", [("a", "1"), ("b", "2")]))
    ]
    assert h.down() == []


def test_informational_responses() -> None:
    """RFC 9110 15.2: any number of 1xx before the final response => gun_inform (Gun 2)."""
    h = mk()
    rt = get(h)
    resp = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n" + HELLO
    )
    assert h.handle(resp) == [
        Deliver(rt, ("gun_inform", CONN, "r1", 100, [])),
        Deliver(rt, ("gun_inform", CONN, "r1", 103, [("link", "</s.css>")])),
        Deliver(rt, ("gun_response", CONN, "r1", "nofin", 200, HELLO_HS)),
        Deliver(rt, ("gun_data", CONN, "r1", "fin", b"hello")),
    ]


@pytest.mark.parametrize(
    ("method", "status", "headers"),
    [
        ("HEAD", 200, [("content-length", "42")]),
        ("GET", 204, []),
        ("GET", 304, [("content-length", "42")]),
        ("GET", 200, [("content-length", "0")]),
    ],
)
def test_bodyless_responses_are_fin(
    method: str, status: int, headers: list[tuple[str, str]]
) -> None:
    """6.3 items 1 and 6 (Gun 2): HEAD, 204, 304 and content-length 0 have no body, so
    gun_response is fin and the next response is parsed right after."""
    h = mk()
    rt = Rec()
    h.request("r1", rt, method, "/", [], b"", {})
    r2 = get(h, "r2")
    resp = (
        f"HTTP/1.1 {status} X\r\n".encode()
        + b"".join(f"{n}: {v}\r\n".encode() for n, v in headers)
        + b"\r\n"
        + HELLO
    )
    assert h.handle(resp) == [
        Deliver(rt, ("gun_response", CONN, "r1", "fin", status, headers)),
        Deliver(r2, ("gun_response", CONN, "r2", "nofin", 200, HELLO_HS)),
        Deliver(r2, ("gun_data", CONN, "r2", "fin", b"hello")),
    ]


def test_tolerant_parsing() -> None:
    """2.2: blank lines before a status line are ignored and a bare LF may end lines;
    5.2: obs-fold is replaced by SP; the reason phrase may be empty (4)."""
    h = mk()
    rt = get(h)
    resp = b"\r\n\r\nHTTP/1.1 200\nx-a:  1 \nx-b: first\n  second\ncontent-length: 2\n\nok"
    assert h.handle(resp) == [
        Deliver(
            rt,
            (
                "gun_response",
                CONN,
                "r1",
                "nofin",
                200,
                [("x-a", "1"), ("x-b", "first second"), ("content-length", "2")],
            ),
        ),
        Deliver(rt, ("gun_data", CONN, "r1", "fin", b"ok")),
    ]


def test_header_values_are_latin1_and_order_is_kept() -> None:
    """ARCHITECTURE 1: values decoded latin-1 (nothing lost), names lower-case, order and
    duplicates as received."""
    h = mk()
    rt = get(h)
    cmds = h.handle(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Bin: \xe9\xff\r\nset-cookie: b=2\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert cmds == [
        Deliver(
            rt,
            (
                "gun_response",
                CONN,
                "r1",
                "fin",
                200,
                [
                    ("set-cookie", "a=1"),
                    ("x-bin", "\xe9\xff"),
                    ("set-cookie", "b=2"),
                    ("content-length", "0"),
                ],
            ),
        )
    ]


def _stream_messages(resp: bytes, cuts: list[int]) -> list[Any]:
    h = mk()
    get(h, "a")
    get(h, "b", rt=Rec("b"))
    h.request("c", Rec("c"), "HEAD", "/", [], b"", {})
    get(h, "d")
    out: list[Any] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(resp)]:
        out += h.handle(resp[last:cut])
        last = cut
    out += h.handle_eof()
    return out


_PIPELINE = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    + h11_response(200, [("content-length", "11")], [b"hello world"])
    + h11_response(201, [("x", "1")], [b"chunk one", b"chunk two"], [("t", "v")])
    + h11_response(200, [("content-length", "9")], method="HEAD")
    + b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(_PIPELINE)), max_size=12))
def test_any_split_of_a_pipeline_gives_the_same_messages(cuts: list[int]) -> None:
    """However the bytes are cut into reads, the same heads, the same body bytes and the
    same fin/trailers come out per stream (6, 7.1)."""
    out = _stream_messages(_PIPELINE, cuts)
    summary: dict[Any, list[Any]] = {}
    for m in delivered(out):
        key = m[2]
        if m[0] == "gun_data":
            prev = summary.setdefault(key, [])
            if prev and prev[-1][0] == "data":
                prev[-1] = ("data", prev[-1][1] + m[4], m[3])
            else:
                prev.append(("data", m[4], m[3]))
        else:
            summary.setdefault(key, []).append(m)
    assert summary == {
        "a": [
            ("gun_inform", CONN, "a", 100, []),
            ("gun_response", CONN, "a", "nofin", 200, [("content-length", "11")]),
            ("data", b"hello world", "fin"),
        ],
        "b": [
            (
                "gun_response",
                CONN,
                "b",
                "nofin",
                201,
                [("x", "1"), ("transfer-encoding", "chunked")],
            ),
            ("data", b"chunk onechunk two", "nofin"),
            ("gun_trailers", CONN, "b", [("t", "v")]),
        ],
        "c": [("gun_response", CONN, "c", "fin", 200, [("content-length", "9")])],
        "d": [("gun_response", CONN, "d", "nofin", 200, []), ("data", b"until the end", "fin")],
    }
    assert out[-1] == Close("closed")


_VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=30,
).map(lambda v: v.strip(" \t"))


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from([200, 201, 206, 404, 500, 599]),
    headers=st.lists(
        st.tuples(st.sampled_from(["X-A", "server", "ETag", "set-cookie"]), _VALUE), max_size=5
    ),
    body=st.lists(st.binary(min_size=1, max_size=40), max_size=5),
    chunked=st.booleans(),
    trailers=st.lists(st.tuples(st.sampled_from(["x-t", "Checksum"]), _VALUE), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_differential_against_h11_server(
    status: int,
    headers: list[tuple[str, str]],
    body: list[bytes],
    chunked: bool,
    trailers: list[tuple[str, str]],
    cuts: list[int],
) -> None:
    """Cross-check: whatever h11's server writes (6.3 framing, 7.1 chunked coding,
    7.1.2 trailers), cut anywhere, the handler gives back the same status, headers
    (lower-case names, values latin-1, order kept), body and trailers."""
    hs = list(headers)
    if not chunked:
        hs.append(("Content-Length", str(sum(map(len, body)))))
        trailers = []
    resp = h11_response(status, hs, body, trailers)
    h = mk()
    rt = get(h)
    out: list[Any] = []
    last = 0
    for cut in [*sorted(c for c in set(cuts) if c < len(resp)), len(resp)]:
        out += h.handle(resp[last:cut])
        last = cut
    msgs = delivered(out)
    assert all(c.to is rt for c in out)
    expected_hs = [(n.lower(), v) for n, v in hs] + (
        [("transfer-encoding", "chunked")] if chunked else []
    )
    empty = not body and not chunked
    assert msgs[0] == ("gun_response", CONN, "r1", "fin" if empty else "nofin", status, expected_hs)
    data = [m for m in msgs[1:] if m[0] == "gun_data"]
    assert b"".join(m[4] for m in data) == b"".join(body)
    assert all(m[3] == "nofin" for m in data[:-1])
    if trailers:
        assert msgs[-1] == ("gun_trailers", CONN, "r1", [(n.lower(), v) for n, v in trailers])
        assert all(m[3] == "nofin" for m in data)
    elif not empty:
        assert data[-1][3] == "fin"
    assert h.down() == []


def test_large_header_block_under_the_limit() -> None:
    """Gun 3.2: max_header_block_size defaults to 100000, far above h11's 16 KiB."""
    h = mk()
    rt = get(h)
    big = "v" * 60000
    cmds = h.handle(f"HTTP/1.1 200 OK\r\nx-big: {big}\r\ncontent-length: 0\r\n\r\n".encode())
    assert cmds == [
        Deliver(
            rt, ("gun_response", CONN, "r1", "fin", 200, [("x-big", big), ("content-length", "0")])
        )
    ]


# ======================================================================================
# 4. Keep-alive and connection: close


def test_connection_close_response() -> None:
    """9.6 + Gun 4.9/7: the pipelined streams behind a ``connection: close`` response get
    "closing" before its final gun_data; Closing(closing_timeout) while the body is
    read; then Close("normal") and no killed streams."""
    h = mk({"closing_timeout": 3000})
    ra, rb, rc = Rec("a"), Rec("b"), Rec("c")
    get(h, "a", ra)
    get(h, "b", rb)
    get(h, "c", rc)
    cmds = h.handle(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nab")
    assert cmds == [
        Deliver(
            ra,
            (
                "gun_response",
                CONN,
                "a",
                "nofin",
                200,
                [("connection", "close"), ("content-length", "4")],
            ),
        ),
        Deliver(rb, ("gun_error", CONN, "b", "closing")),
        Deliver(rc, ("gun_error", CONN, "c", "closing")),
        Deliver(ra, ("gun_data", CONN, "a", "nofin", b"ab")),
        Closing(3000),
    ]
    assert h.down() == ["a"]
    assert h.keepalive() == []
    assert h.handle(b"cd") == [Deliver(ra, ("gun_data", CONN, "a", "fin", b"cd")), Close("normal")]
    assert h.close("normal") == []
    assert h.down() == []


def test_connection_close_response_in_one_read() -> None:
    """Gun 7: errors first, then the final data, then the close (no Closing needed)."""
    h = mk()
    ra, rb = Rec("a"), Rec("b")
    get(h, "a", ra)
    get(h, "b", rb)
    cmds = h.handle(b"HTTP/1.1 204 No Content\r\nConnection: Close\r\n\r\n")
    assert cmds == [
        Deliver(ra, ("gun_response", CONN, "a", "fin", 204, [("connection", "Close")])),
        Deliver(rb, ("gun_error", CONN, "b", "closing")),
        Close("normal"),
    ]
    assert h.down() == []


def test_connection_close_request_holds_later_requests() -> None:
    """9.6: no request may follow one that said close; gunpy holds them (Gun writes them)
    and they get "closing" when the response arrives, as in Gun."""
    h = mk()
    ra, rb = Rec("a"), Rec("b")
    c1 = h.request("a", ra, "GET", "/", [("connection", "close")], b"", {})
    assert wire(c1).endswith(b"connection: close\r\n\r\n")
    assert h.request("b", rb, "GET", "/", [], b"", {}) == []
    assert h.keepalive() == []
    assert h.down() == ["a", "b"]
    cmds = h.handle(HELLO)
    assert cmds == [
        Deliver(ra, ("gun_response", CONN, "a", "nofin", 200, HELLO_HS)),
        Deliver(rb, ("gun_error", CONN, "b", "closing")),
        Deliver(ra, ("gun_data", CONN, "a", "fin", b"hello")),
        Close("normal"),
    ]


@pytest.mark.parametrize(
    ("status_line", "connection", "persistent"),
    [
        ("HTTP/1.1 200 OK", None, True),
        ("HTTP/1.1 200 OK", "keep-alive", True),
        ("HTTP/1.1 200 OK", "Keep-Alive, Upgrade", True),
        ("HTTP/1.1 200 OK", "te", False),  # present without keep-alive/upgrade (Gun)
        ("HTTP/1.1 200 OK", "close", False),
        ("HTTP/1.1 200 OK", "keep-alive, close", False),
        ("HTTP/1.0 200 OK", "keep-alive", False),  # HTTP/1.0 response: Gun closes
    ],
)
def test_response_keepalive_rules(
    status_line: str, connection: str | None, persistent: bool
) -> None:
    """9.3 as Gun reads it (4.9): persistent unless close, HTTP/1.0, or a connection
    header without keep-alive/upgrade."""
    h = mk()
    get(h)
    extra = f"connection: {connection}\r\n" if connection else ""
    cmds = h.handle(f"{status_line}\r\n{extra}content-length: 0\r\n\r\n".encode())
    assert (cmds[-1] == Close("normal")) is not persistent


def test_request_connection_header_rules() -> None:
    """Gun 4.9: a request connection header without keep-alive/upgrade means close too."""
    h = mk()
    h.request("a", Rec(), "GET", "/", [("connection", "te"), ("te", "trailers")], b"", {})
    assert h.request("b", Rec(), "GET", "/", [], b"", {}) == []
    h = mk()
    h.request("a", Rec(), "GET", "/", [("connection", "keep-alive")], b"", {})
    assert wire(h.request("b", Rec(), "GET", "/", [], b"", {}))


# ======================================================================================
# 5. Header and trailer block limits


def _limit(cmds: list[Any], rt: Rec, what: str) -> None:
    assert len(cmds) == 2
    reason = cmds[0].msg[2]
    assert cmds[0] == Deliver(rt, ("gun_error", CONN, reason))
    assert reason[:2] == ("connection_error", "limit_reached") and what in reason[2]
    assert cmds[1] == Close(("error", reason))


def test_header_block_limit_in_one_read() -> None:
    """gun-reference 7: Gun misses a too-big block that arrives whole; gunpy does not.
    Same sequence as Gun's: connection-wide limit_reached, Close(error), then close()
    gives the stream ("closed", reason)."""
    h = mk({"max_header_block_size": 1000})
    rt = get(h)
    resp = b"HTTP/1.1 200 OK\r\nx: " + b"v" * 1000 + b"\r\ncontent-length: 0\r\n\r\n"
    cmds = h.handle(resp)
    _limit(cmds, rt, "header")
    reason = cmds[1].reason
    assert h.close(reason) == [Deliver(rt, ("gun_error", CONN, "r1", ("closed", reason)))]
    assert h.down() == ["r1"]


def test_header_block_limit_incremental() -> None:
    """The limit also holds while the block is still incomplete (Gun's check)."""
    h = mk({"max_header_block_size": 100})
    rt = get(h)
    out: list[Any] = []
    data = b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 40
    for i in range(0, len(data), 7):
        out += h.handle(data[i : i + 7])
        if out:
            break
    _limit(out, rt, "header")
    assert i < 110  # caught as soon as more than 100 bytes are buffered


def test_header_block_limit_is_exact() -> None:
    """The block (status line to the empty line, CRLFs included) may be exactly the limit."""
    resp = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    h = mk({"max_header_block_size": len(resp)})
    rt = get(h)
    assert delivered(h.handle(resp)) == [
        ("gun_response", CONN, "r1", "fin", 200, [("content-length", "0")])
    ]
    h = mk({"max_header_block_size": len(resp) - 1})
    rt = get(h)
    _limit(h.handle(resp), rt, "header")


def test_trailer_block_limit() -> None:
    """Gun 3.2 max_trailer_block_size (default 10000) on the trailer section (7.1.2)."""
    h = mk()
    rt = get(h)
    resp = h11_response(200, [], [b"x"], [("t", "v" * 10000)])
    cmds = h.handle(resp)
    assert cmds[1] == Deliver(rt, ("gun_data", CONN, "r1", "nofin", b"x"))
    _limit(cmds[2:], rt, "trailer")


# ======================================================================================
# 6. Bad input from the server


@pytest.mark.parametrize(
    "resp",
    [
        b"HTTP/1.1 abc OK\r\n\r\n",  # gun-reference 7: Gun crashes on this
        b"HTTP/2 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabX\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",  # nobody asked
        HELLO + b"extra",  # longer than content-length: no request outstanding
    ],
)
def test_protocol_errors(resp: bytes) -> None:
    """Behaviour 6: never an exception; a connection-wide gun_error protocol_error to the
    affected reply_to, then Close(("error", ...)); close() then errors the stream."""
    h = mk()
    rt = get(h)
    cmds = h.handle(resp)
    reason = proto_error(cmds)
    assert cmds[-2].to is rt
    assert isinstance(reason[2], str) and reason[2]
    assert h.handle(b"more") == []
    assert h.handle_eof() == []


def test_bytes_with_no_request_outstanding() -> None:
    """Gun closes when the server talks first; gunpy says why, to the owner."""
    h = mk()
    cmds = h.handle(b"HTTP/1.1 200 OK\r\n\r\n")
    proto_error(cmds)
    assert cmds[-2].to is OWNER
    # Stray empty lines between responses are tolerated (2.2).
    h = mk()
    get(h)
    assert len(h.handle(HELLO + b"\r\n")) == 2
    assert h.handle(b"\r\n") == []


@pytest.mark.parametrize(
    ("resp", "where"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", "body"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab", "body"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx: y\r\n", "body"),
        (b"HTTP/1.1 200 OK\r\ncontent-le", "head"),
    ],
)
def test_eof_mid_response(resp: bytes, where: str) -> None:
    """8: a message cut by the close is incomplete: protocol error, never a fin."""
    h = mk()
    rt = get(h)
    h.handle(resp)
    cmds = h.handle_eof()
    reason = proto_error(cmds)
    assert where in reason[2]
    assert cmds[-2].to is rt
    assert not any(m[0] == "gun_data" and m[3] == "fin" for m in delivered(cmds))


def test_eof_between_responses() -> None:
    """A peer close with no response in progress is Gun's plain ``closed``."""
    h = mk()
    rt = get(h)
    assert h.handle_eof() == [Close("closed")]
    assert h.close("closed") == [Deliver(rt, ("gun_error", CONN, "r1", "closed"))]
    assert h.down() == ["r1"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_garbage_never_raises(data: bytes, step: int) -> None:
    """Behaviour 6: no input makes the handler raise."""
    h = mk({"max_header_block_size": 200, "max_trailer_block_size": 50})
    get(h, "a")
    h.request("b", Rec(), "HEAD", "/", [], b"", {})
    for i in range(0, len(data), step):
        h.handle(data[i : i + step])
    h.handle_eof()
    h.close("closed")
    h.down()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"HTTP/1.1 ",
                b"200 OK\r\n",
                b"\r\n",
                b"transfer-encoding: chunked\r\n",
                b"content-length: 3\r\n",
                b"3\r\nabc\r\n",
                b"0\r\n",
                b"x: y\r\n",
                b"\n",
                b"HTTP/1.1 100 C\r\n\r\n",
                b"HTTP/1.0 200 OK\r\n",
                b"abc",
            ]
        ),
        max_size=20,
    )
)
def test_plausible_garbage_never_raises(pieces: list[bytes]) -> None:
    """Behaviour 6 with HTTP-looking fragments (reaches the body and trailer states)."""
    h = mk({"flow": 2})
    get(h, "a")
    get(h, "b")
    for p in pieces:
        h.handle(p)
        if not h.active():
            h.update_flow("a", 1)
            h.update_flow("b", 1)
    h.handle_eof()
    h.close(("error", "x"))


# ======================================================================================
# 7. close() and down()


def test_close_reasons_and_down() -> None:
    """Gun's close/4 + close_reason/1: "closed" stays bare, anything else is wrapped;
    cancelled streams get nothing; down() lists active + pipelined (cancelled ones too,
    as Gun does), never completed ones (gun-reference 7)."""
    h = mk()
    ra, rb, rc = Rec("a"), Rec("b"), Rec("c")
    get(h, "done")
    get(h, "a", ra)
    get(h, "b", rb)
    get(h, "c", rc)
    h.cancel("b", rb)
    h.handle(HELLO)
    assert h.down() == ["a", "b", "c"]
    assert h.close(("error", "econnreset")) == [
        Deliver(ra, ("gun_error", CONN, "a", ("closed", ("error", "econnreset")))),
        Deliver(rc, ("gun_error", CONN, "c", ("closed", ("error", "econnreset")))),
    ]
    assert h.close("closed") == []  # once only
    assert h.down() == ["a", "b", "c"]
    h = mk()
    get(h, "x", ra)
    assert h.close("closed") == [Deliver(ra, ("gun_error", CONN, "x", "closed"))]


def test_close_during_close_delimited_body() -> None:
    """A body cut by an error or a timeout is not complete: the stream is told it was
    closed (Gun would deliver a fin here, claiming a complete body)."""
    h = mk()
    rt = get(h)
    h.handle(b"HTTP/1.1 200 OK\r\n\r\npartial")
    assert h.close(("error", "etimedout")) == [
        Deliver(rt, ("gun_error", CONN, "r1", ("closed", ("error", "etimedout"))))
    ]
    assert h.down() == ["r1"]


# ======================================================================================
# 8. closing(): graceful shutdown / owner down


def test_closing_idle() -> None:
    """Gun's closing/4 with no streams: close at once."""
    assert mk().closing("shutdown") == [Close("normal")]


def test_closing_with_response_in_progress() -> None:
    """Gun 4.3/shutdown_SUITE: the pipelined streams get ("closing", reason), the current
    response finishes within closing_timeout, then Close("normal")."""
    h = mk()
    ra, rb, rc = Rec("a"), Rec("b"), Rec("c")
    get(h, "a", ra)
    get(h, "b", rb)
    get(h, "c", rc)
    assert h.closing("shutdown") == [
        Deliver(rb, ("gun_error", CONN, "b", ("closing", "shutdown"))),
        Deliver(rc, ("gun_error", CONN, "c", ("closing", "shutdown"))),
        Closing(15000),
    ]
    assert h.down() == ["a"]
    assert h.request("d", rb, "GET", "/", [], b"", {}) == [
        Deliver(rb, ("gun_error", CONN, "d", "closing"))
    ]
    assert h.handle(HELLO) == [
        Deliver(ra, ("gun_response", CONN, "a", "nofin", 200, HELLO_HS)),
        Deliver(ra, ("gun_data", CONN, "a", "fin", b"hello")),
        Close("normal"),
    ]
    assert h.down() == []


# ======================================================================================
# 9. cancel()


def test_cancel_silences_and_drains() -> None:
    """Gun 4.9: HTTP/1.1 cannot cancel; the response is read off the wire without any
    message (not even gun_inform), and the next response is delivered normally."""
    h = mk()
    ra, rb = Rec("a"), Rec("b")
    get(h, "a", ra)
    get(h, "b", rb)
    assert h.cancel("a", ra) == []
    assert h.stream_info("a") == {
        "ref": "a",
        "reply_to": ra,
        "state": "stopping",
        "intermediaries": [],
        "tunnel": None,
    }
    cmds = h.handle(b"HTTP/1.1 103 Hints\r\n\r\n" + h11_response(200, [], [b"x" * 100]) + HELLO)
    assert cmds == [
        Deliver(rb, ("gun_response", CONN, "b", "nofin", 200, HELLO_HS)),
        Deliver(rb, ("gun_data", CONN, "b", "fin", b"hello")),
    ]


def test_cancel_unknown_and_held() -> None:
    """Unknown ref: Gun's "The stream cannot be found."; a held (unsent) request is
    simply never written."""
    h = mk()
    rt = Rec()
    assert h.cancel("zz", rt) == [
        Deliver(rt, ("gun_error", CONN, "zz", ("badstate", "The stream cannot be found.")))
    ]
    h.request("up", rt, "POST", "/", [], None, {})
    h.request("held", rt, "GET", "/held", [], b"", {})
    assert h.cancel("held", rt) == []
    assert h.down() == ["up"]
    assert h.data("up", rt, "fin", b"") == [Send(b"0\r\n\r\n")]


# ======================================================================================
# 10. Flow control


def test_flow_control() -> None:
    """Gun 4.5 / flow_SUITE: flow 1 => one gun_data then the socket is not read
    (SetActive(False)); bytes that still come are kept; update_flow releases them
    merged and reads again."""
    h = mk()
    rt = get(h, req_opts={"flow": 1})
    resp = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"
    assert h.handle(resp + b"abc") == [
        Deliver(rt, ("gun_response", CONN, "r1", "nofin", 200, [("content-length", "9")])),
        Deliver(rt, ("gun_data", CONN, "r1", "nofin", b"abc")),
        SetActive(False),
    ]
    assert h.active() is False
    assert h.handle(b"de") == []
    assert h.handle(b"f") == []
    assert h.update_flow("r1", 1) == [
        Deliver(rt, ("gun_data", CONN, "r1", "nofin", b"def")),
        SetActive(False),
    ]
    assert h.update_flow("r1", 2) == [SetActive(True)]
    assert h.active() is True
    assert h.handle(b"ghi") == [Deliver(rt, ("gun_data", CONN, "r1", "fin", b"ghi"))]


def test_flow_default_from_options_and_eof_while_paused() -> None:
    """Gun 3.2/3.5: http_opts flow is the default, req_opts flow overrides it; an EOF
    seen while paused is handled after the kept bytes are delivered."""
    h = mk({"flow": 1})
    rt = get(h)
    free = get(h, "r2", req_opts={"flow": 5})
    cmds = h.handle(b"HTTP/1.1 200 OK\r\n\r\nab")
    assert cmds[-1] == SetActive(False)
    h.handle(b"cd")
    assert h.handle_eof() == []
    # Two more messages: the kept bytes, then the fin that the EOF makes.
    assert h.update_flow("r1", 2) == [
        Deliver(rt, ("gun_data", CONN, "r1", "nofin", b"cd")),
        Deliver(rt, ("gun_data", CONN, "r1", "fin", b"")),
        Close("closed"),
    ]
    assert h.close("closed") == [Deliver(free, ("gun_error", CONN, "r2", "closed"))]


def test_flow_updates_ignored_without_flow() -> None:
    """Gun 4.5: streams without flow control ignore updates; unknown refs too."""
    h = mk()
    get(h)
    assert h.update_flow("r1", 10) == []
    assert h.update_flow("zz", 10) == []
    assert h.active() is True


def test_cancel_resumes_a_paused_stream() -> None:
    """A cancelled stream needs no budget: its response is drained (Gun would stay
    paused forever)."""
    h = mk()
    rt = get(h, req_opts={"flow": 1})
    h.handle(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabc")
    h.handle(b"def")
    r2 = get(h, "r2")
    assert h.cancel("r1", rt) == [SetActive(True)]
    assert delivered(h.handle(HELLO))[0] == ("gun_response", CONN, "r2", "nofin", 200, HELLO_HS)
    assert r2 is not None


# ======================================================================================
# 11. Keepalive


def test_keepalive() -> None:
    """Gun 3.2/4.6: every ``keepalive`` ms an empty line (which 2.2 lets servers skip),
    never in the middle of a request body."""
    assert mk().keepalive_interval() is None
    assert mk({"keepalive": "infinity"}).keepalive_interval() is None
    h = mk({"keepalive": 5000})
    assert h.keepalive_interval() == 5000
    assert h.keepalive() == [Send(b"\r\n")]
    rt = Rec()
    h.request("r1", rt, "POST", "/", [], None, {})
    assert h.keepalive() == []
    h.data("r1", rt, "fin", b"x")
    assert h.keepalive() == [Send(b"\r\n")]


# ======================================================================================
# 12. HTTP/1.0


def test_http10() -> None:
    """Gun 3.2 version HTTP/1.0: HTTP/1.0 request line, no chunked coding (the body is
    close-delimited), no keep-alive, no Websocket."""
    h = mk({"version": "HTTP/1.0"})
    rt = Rec()
    head = h.request("r1", rt, "POST", "/", [], None, {})
    assert wire(head) == b"POST / HTTP/1.0\r\nhost: 127.0.0.1:8080\r\n\r\n"
    assert h.data("r1", rt, "nofin", b"raw") == [Send(b"raw")]
    assert h.data("r1", rt, "fin", b"") == []
    assert h.ws_upgrade("w", rt, "/ws", [], {}) == [
        Deliver(
            rt,
            (
                "gun_error",
                CONN,
                "w",
                ("badstate", "Websocket cannot be used over an HTTP/1.0 connection."),
            ),
        )
    ]
    # The server answers HTTP/1.1 with keep-alive: Gun still closes after the response.
    assert h.handle(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n") == [
        Deliver(rt, ("gun_response", CONN, "r1", "fin", 200, [("content-length", "0")])),
        Close("normal"),
    ]
    h = mk({"version": "HTTP/1.0"})
    data = wire(h.request("r1", rt, "GET", "/", [], b"", {}))
    assert data.startswith(b"GET / HTTP/1.0\r\ncontent-length: 0\r\n")
    [req] = server_requests(data)
    assert req[0].http_version == b"1.0"


# ======================================================================================
# 13. stream_info


def test_stream_info() -> None:
    """Gun 1 stream_info/2: running/stopping, no intermediaries, no tunnel; None once
    the stream is over or unknown."""
    h = mk()
    rt = get(h)
    assert h.stream_info("r1") == {
        "ref": "r1",
        "reply_to": rt,
        "state": "running",
        "intermediaries": [],
        "tunnel": None,
    }
    assert h.stream_info("zz") is None
    h.handle(HELLO)
    assert h.stream_info("r1") is None


# ======================================================================================
# 14. Websocket and generic upgrades


class FakeOffer:
    pass


@pytest.fixture
def fake_ws(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stubs of ``gunpy.protocols.ws.handshake_offer/check`` (written by another module)."""
    calls = types.SimpleNamespace(checks=[], result={"extensions": [], "protocol": None})
    offer = FakeOffer()

    def handshake_offer(ws_opts: dict[str, Any]) -> tuple[list[tuple[str, str]], Any]:
        hs = [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]
        return hs, offer

    def handshake_check(o: Any, headers: list[tuple[str, str]]) -> Any:
        calls.checks.append((o, headers))
        return calls.result

    mod = types.ModuleType("gunpy.protocols.ws")
    mod.handshake_offer = handshake_offer  # type: ignore[attr-defined]
    mod.handshake_check = handshake_check  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gunpy.protocols.ws", mod)
    monkeypatch.setattr(gunpy.protocols, "ws", mod, raising=False)
    calls.offer = offer
    return calls


WS_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
    b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
WS_101_HS = [
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
]


def test_ws_upgrade_request_and_success(fake_ws: Any) -> None:
    """Gun 4.7: a GET with the handshake headers then the user's, no body framing; a 101
    accepted by handshake_check => gun_upgrade then SwitchProtocol("ws") with the bytes
    that followed the 101 (RFC 6455 4.1)."""
    h = mk()
    rt = Rec()
    cmds = h.ws_upgrade("w", rt, "/ws", [("x-auth", "t"), ("content-length", "5")], {"flow": 3})
    assert wire(cmds) == (
        b"GET /ws HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-auth: t\r\n\r\n"
    )
    [req] = server_requests(wire(cmds))
    assert req[0].method == b"GET" and body_of(req) == b""
    assert h.keepalive() == []  # a CRLF would reach the Websocket peer after a 101
    assert h.down() == ["w"]
    cmds = h.handle(WS_101 + b"\x81\x02hi")
    assert cmds == [
        Deliver(rt, ("gun_upgrade", CONN, "w", ["websocket"], WS_101_HS)),
        SwitchProtocol(
            "ws",
            args={
                "opts": {"flow": 3},
                "ref": "w",
                "reply_to": rt,
                "headers": WS_101_HS,
                "extensions": [],
                "protocol": None,
            },
            buffer=b"\x81\x02hi",
        ),
    ]
    assert fake_ws.checks == [(fake_ws.offer, WS_101_HS)]
    assert h.down() == []
    assert h.handle(b"more") == []


def test_ws_upgrade_failure_drops_the_connection(fake_ws: Any) -> None:
    """Gun 4.7: a bad handshake drops the connection with reason normal; the stream then
    gets ("closed", "normal") from close()."""
    fake_ws.result = "bad accept"
    h = mk()
    rt = Rec()
    h.ws_upgrade("w", rt, "/ws", [], {})
    assert h.handle(WS_101) == [Close("normal")]
    assert h.close("normal") == [Deliver(rt, ("gun_error", CONN, "w", ("closed", "normal")))]
    assert h.down() == ["w"]


def test_ws_upgrade_refused_stays_http(fake_ws: Any) -> None:
    """Gun 4.7 / ws_SUITE reject: a non-101 answer is a normal response (+ body) and the
    connection stays HTTP: the requests held behind the upgrade are written then."""
    h = mk()
    rt, r2 = Rec("w"), Rec("g")
    h.ws_upgrade("w", rt, "/ws", [], {})
    assert h.request("g", r2, "GET", "/g", [], b"", {}) == []
    cmds = h.handle(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nno!")
    assert cmds == [
        Deliver(rt, ("gun_response", CONN, "w", "nofin", 400, [("content-length", "3")])),
        Deliver(rt, ("gun_data", CONN, "w", "fin", b"no!")),
        Send(b"GET /g HTTP/1.1\r\ncontent-length: 0\r\nhost: 127.0.0.1:8080\r\n\r\n"),
    ]
    assert fake_ws.checks == []
    assert h.keepalive() == [Send(b"\r\n")]


def test_ws_upgrade_held_requests_are_errored_on_switch(fake_ws: Any) -> None:
    """Requests made while the upgrade is pending are never written (they would reach the
    Websocket peer); after the switch they get a badstate error (Gun loses them)."""
    h = mk()
    rt, r2 = Rec("w"), Rec("g")
    h.ws_upgrade("w", rt, "/ws", [], {})
    h.request("g", r2, "GET", "/g", [], b"", {})
    cmds = h.handle(WS_101)
    assert cmds[0].msg[0] == "gun_upgrade"
    assert cmds[1] == Deliver(
        r2, ("gun_error", CONN, "g", ("badstate", "This connection only accepts Websocket frames."))
    )
    assert isinstance(cmds[2], SwitchProtocol)
    assert h.down() == []


@pytest.mark.skipif(
    importlib.util.find_spec("gunpy.protocols.ws") is None,
    reason="gunpy.protocols.ws not written yet",
)
def test_ws_upgrade_with_the_real_ws_module() -> None:
    """The real handshake helpers: the key we sent, the accept a server computes from
    it (RFC 6455 4.2.2), and a SwitchProtocol to "ws"."""
    h = mk()
    rt = Rec()
    cmds = h.ws_upgrade("w", rt, "/ws", [], {"compress": True})
    [req] = server_requests(wire(cmds))
    hs = dict(req[0].headers)
    assert hs[b"upgrade"] == b"websocket" and hs[b"sec-websocket-version"] == b"13"
    key = hs[b"sec-websocket-key"]
    accept = base64.b64encode(
        hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    ).decode()
    resp = (
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
        f"sec-websocket-accept: {accept}\r\n\r\n"
    ).encode()
    cmds = h.handle(resp)
    assert cmds[0].msg[:4] == ("gun_upgrade", CONN, "w", ["websocket"])
    assert isinstance(cmds[1], SwitchProtocol) and cmds[1].protocol == "ws"
    assert cmds[1].args["ref"] == "w" and cmds[1].args["reply_to"] is rt
    # A wrong accept value fails the handshake: Gun drops the connection.
    h = mk()
    h.ws_upgrade("w", rt, "/ws", [], {})
    assert h.handle(WS_101) == [Close("normal")]


def test_generic_upgrade_switches_to_raw() -> None:
    """Gun 4.9 / raw_SUITE: connection: upgrade + upgrade: X answered by a matching 101
    => gun_upgrade [X] and SwitchProtocol("raw") with the early data."""
    h = mk()
    rt = Rec()
    cmds = h.request(
        "u", rt, "GET", "/", [("connection", "upgrade"), ("upgrade", "Foo/2")], b"", {}
    )
    [req] = server_requests(wire(cmds))
    assert dict(req[0].headers)[b"upgrade"] == b"Foo/2"
    resp = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: foo/2\r\n\r\nearly"
    hs = [("connection", "upgrade"), ("upgrade", "foo/2")]
    assert h.handle(resp) == [
        Deliver(rt, ("gun_upgrade", CONN, "u", ["foo/2"], hs)),
        SwitchProtocol("raw", args={"ref": "u", "reply_to": rt}, buffer=b"early"),
    ]
    assert h.down() == []


def test_generic_upgrade_mismatch_is_a_protocol_error() -> None:
    """RFC 9110 7.8: a server may only switch to a protocol the client asked for."""
    h = mk()
    rt = Rec()
    h.request("u", rt, "GET", "/", [("connection", "upgrade"), ("upgrade", "foo")], b"", {})
    cmds = h.handle(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: bar\r\n\r\n")
    reason = proto_error(cmds)
    assert "101" in reason[2]


# ======================================================================================
# Options (Gun 3.2)


def test_check_options() -> None:
    """Gun's check_options: the first unknown or ill-typed key, with its value."""
    good = {
        "version": "HTTP/1.0",
        "keepalive": 1000,
        "closing_timeout": "infinity",
        "flow": 3,
        "max_header_block_size": 10,
        "max_trailer_block_size": 10,
        "transform_header_name": str.upper,
        "cookie_ignore_informational": True,
        "content_handlers": ["data"],
    }
    assert check_options(good) is None
    assert check_options({}) is None
    for key, bad in [
        ("version", "HTTP/2"),
        ("keepalive", 0),
        ("keepalive", True),
        ("closing_timeout", -1),
        ("flow", 0),
        ("flow", "infinity"),
        ("max_header_block_size", 1.5),
        ("max_trailer_block_size", 0),
        ("transform_header_name", "upper"),
        ("cookie_ignore_informational", 1),
        ("content_handlers", []),
        ("content_handlers", "data"),
        ("nope", 1),
    ]:
        assert check_options({"flow": 1, key: bad}) == (key, bad)


def test_defaults() -> None:
    """Gun 3.2 defaults apply to an empty dict."""
    h = mk()
    assert h.opts["closing_timeout"] == 15000
    assert h.opts["max_header_block_size"] == 100000
    assert h.opts["max_trailer_block_size"] == 10000
    assert h.content_handlers == ["data"]
    assert h.name == "http"
    assert h.init() == []


def test_recv_size_follows_a_long_body() -> None:
    """The actor's next read asks for what remains of a long content-length body or
    chunk (up to RECV_SIZE_MAX), else RECV_SIZE; never under flow control."""
    from gunpy.protocols.base import RECV_SIZE, RECV_SIZE_MAX

    h = mk()
    get(h)
    get(h, "r2")
    assert h.recv_size() == RECV_SIZE  # waiting for a head
    h.handle(b"HTTP/1.1 200 OK\r\ncontent-length: 3000000\r\n\r\n" + b"x" * 1000)
    assert h.recv_size() == RECV_SIZE_MAX
    h.handle(b"x" * (3000000 - 1000 - 200000))
    assert h.recv_size() == 200000
    h.handle(b"x" * (200000 - RECV_SIZE))
    assert h.recv_size() == RECV_SIZE
    h.handle(b"x" * RECV_SIZE + b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    assert h.recv_size() == RECV_SIZE
    h.handle(b"30d40\r\n" + b"y" * 10)  # a 200,000-byte chunk
    assert h.recv_size() == 200000 - 10

    h = mk()
    get(h, req_opts={"flow": 5})
    h.handle(b"HTTP/1.1 200 OK\r\ncontent-length: 3000000\r\n\r\n")
    assert h.recv_size() == RECV_SIZE
