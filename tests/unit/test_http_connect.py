"""Unit tests of CONNECT in the sans-IO HTTP/1.1 handler (gun-reference 1 ``connect``,
3.6, 4.11; Gun's rfc7231_SUITE).

What the handler writes is parsed by h11 in the SERVER role (an independent
HTTP/1.1 implementation, which knows CONNECT's authority-form target).
"""

from __future__ import annotations

import base64
from typing import Any

import h11
import pytest

from gunpy._commands import Close, Closing, Deliver, Send, Tunnel
from gunpy.protocols.base import HandlerContext
from gunpy.protocols.http import HttpHandler

CONN = object()
REF = "connect-ref"


class Rec:
    def __init__(self) -> None:
        self.msgs: list[Any] = []

    def send(self, msg: Any) -> None:
        self.msgs.append(msg)


OWNER = Rec()
ME = Rec()


def mk(opts: dict[str, Any] | None = None) -> HttpHandler:
    ctx = HandlerContext(conn=CONN, owner=OWNER, origin_host="proxy.example", origin_port=3128)
    return HttpHandler(ctx, opts or {})


def dest(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "host": "origin.example",
        "port": 443,
        "transport": "tcp",
        "protocols": ["http"],
        "tls_opts": {},
        "tls_handshake_timeout": "infinity",
    }
    d.update(kw)
    return d


def wire(cmds: list[Any]) -> bytes:
    return b"".join(c.data for c in cmds if isinstance(c, Send))


def delivered(cmds: list[Any]) -> list[Any]:
    return [c.msg for c in cmds if isinstance(c, Deliver)]


def parse(data: bytes) -> h11.Request:
    srv = h11.Connection(h11.SERVER)
    srv.receive_data(data)
    ev = srv.next_event()
    assert isinstance(ev, h11.Request), ev
    return ev


def headers_of(req: h11.Request) -> list[tuple[str, str]]:
    return [(n.decode(), v.decode()) for n, v in req.headers]


# --------------------------------------------------------------------------- request


def test_connect_request_is_authority_form_with_host() -> None:
    cmds = mk().connect(REF, ME, dest(), [], {})
    data = wire(cmds)
    assert data == b"CONNECT origin.example:443 HTTP/1.1\r\nhost: origin.example:443\r\n\r\n"
    req = parse(data)
    assert (req.method, req.target) == (b"CONNECT", b"origin.example:443")


def test_connect_strips_framing_headers_keeps_the_users() -> None:
    hs = [("content-length", "10"), ("transfer-encoding", "chunked"), ("x-trace", "1")]
    req = parse(wire(mk().connect(REF, ME, dest(), hs, {})))
    assert headers_of(req) == [("host", "origin.example:443"), ("x-trace", "1")]


def test_connect_keeps_a_user_host_header() -> None:
    req = parse(wire(mk().connect(REF, ME, dest(), [("host", "other:1")], {})))
    assert headers_of(req) == [("host", "other:1")]


def test_connect_ipv6_literal_is_bracketed() -> None:
    data = wire(mk().connect(REF, ME, dest(host="::1", port=8080), [], {}))
    assert data.startswith(b"CONNECT [::1]:8080 HTTP/1.1\r\nhost: [::1]:8080\r\n")


def test_connect_basic_proxy_authorization_first() -> None:
    req = parse(wire(mk().connect(REF, ME, dest(username="alice", password="s3cret"), [], {})))
    cred = base64.b64encode(b"alice:s3cret").decode()
    assert headers_of(req) == [
        ("proxy-authorization", f"Basic {cred}"),
        ("host", "origin.example:443"),
    ]


def test_connect_user_proxy_authorization_wins() -> None:
    hs = [("proxy-authorization", "Bearer xyz")]
    req = parse(wire(mk().connect(REF, ME, dest(username="a", password="b"), hs, {})))
    assert ("proxy-authorization", "Bearer xyz") in headers_of(req)
    assert len([h for h in headers_of(req) if h[0] == "proxy-authorization"]) == 1


def test_connect_needs_both_username_and_password() -> None:
    req = parse(wire(mk().connect(REF, ME, dest(username="alice"), [], {})))
    assert "proxy-authorization" not in dict(headers_of(req))


def test_connect_utf8_credentials() -> None:
    req = parse(wire(mk().connect(REF, ME, dest(username="zoë", password=b"p\xff"), [], {})))
    value = dict(headers_of(req))["proxy-authorization"]
    assert base64.b64decode(value[6:]) == "zoë".encode() + b":p\xff"


def test_connect_transform_header_name() -> None:
    h = mk({"transform_header_name": str.title})
    data = wire(h.connect(REF, ME, dest(username="a", password="b"), [], {}))
    assert b"\r\nHost: origin.example:443\r\n" in data
    assert data.startswith(b"CONNECT origin.example:443 HTTP/1.1\r\nProxy-Authorization: Basic ")


def test_connect_http10_connection() -> None:
    data = wire(mk({"version": "HTTP/1.0"}).connect(REF, ME, dest(), [], {}))
    assert data.startswith(b"CONNECT origin.example:443 HTTP/1.0\r\n")


def test_connect_only_when_no_other_stream_is_active() -> None:
    h = mk()
    h.request("r1", ME, "GET", "/", [], b"", {})
    cmds = h.connect(REF, ME, dest(), [], {})
    assert wire(cmds) == b""
    assert delivered(cmds) == [
        (
            "gun_error",
            CONN,
            REF,
            (
                "badstate",
                "CONNECT can only be used with HTTP/1.1 when no other streams are active.",
            ),
        )
    ]


# --------------------------------------------------------------------------- response


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/1.1 200 Connection established",
        b"HTTP/1.0 200 OK",
        b"HTTP/1.1 201 Created",
        b"HTTP/1.1 299 Whatever",
    ],
)
def test_2xx_makes_a_tunnel(status_line: bytes) -> None:
    h = mk()
    d = dest(transport="tls", protocols=["http2", "http"])
    h.connect(REF, ME, d, [], {})
    cmds = h.handle(status_line + b"\r\nproxy-agent: test\r\n\r\n")
    status = int(status_line.split()[1])
    assert delivered(cmds) == [
        ("gun_response", CONN, REF, "fin", status, [("proxy-agent", "test")])
    ]
    t = cmds[-1]
    assert isinstance(t, Tunnel)
    assert (t.kind, t.ref, t.reply_to, t.destination, t.buffer) == ("connect", REF, ME, d, b"")
    # The handler is finished: the bytes are the tunnel's now.
    assert h.handle(b"\x16\x03\x01") == []
    assert h.down() == [] and h.close("closed") == []


def test_2xx_framing_headers_are_ignored_and_following_bytes_are_the_tunnels() -> None:
    h = mk()
    h.connect(REF, ME, dest(protocols=["raw"]), [], {})
    cmds = h.handle(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\nSSH-2.0-banner\r\n"
    )
    t = cmds[-1]
    assert isinstance(t, Tunnel) and t.buffer == b"SSH-2.0-banner\r\n"


def test_1xx_then_2xx() -> None:
    h = mk()
    h.connect(REF, ME, dest(), [], {})
    cmds = h.handle(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n")
    assert delivered(cmds) == [
        ("gun_inform", CONN, REF, 100, []),
        ("gun_response", CONN, REF, "fin", 200, []),
    ]
    assert isinstance(cmds[-1], Tunnel)


@pytest.mark.parametrize("status", [302, 403, 407, 500])
def test_other_status_is_an_ordinary_response(status: int) -> None:
    h = mk()
    h.connect(REF, ME, dest(), [], {})
    cmds = h.handle(f"HTTP/1.1 {status} No\r\ncontent-length: 6\r\n\r\ndenied".encode())
    assert delivered(cmds) == [
        ("gun_response", CONN, REF, "nofin", status, [("content-length", "6")]),
        ("gun_data", CONN, REF, "fin", b"denied"),
    ]
    assert not [c for c in cmds if isinstance(c, Tunnel | Close)]
    # The connection is still an HTTP connection to the proxy.
    assert wire(h.request("r2", ME, "GET", "/", [], b"", {})).startswith(b"GET / HTTP/1.1\r\n")


def test_requests_made_while_connect_is_pending_are_held() -> None:
    h = mk()
    h.connect(REF, ME, dest(), [], {})
    assert wire(h.request("r2", ME, "GET", "/", [], b"", {})) == b""  # never written into a tunnel
    assert h.keepalive() == []  # no empty line during a CONNECT either (Gun)
    cmds = h.handle(b"HTTP/1.1 200 OK\r\n\r\n")
    errors = [m for m in delivered(cmds) if m[0] == "gun_error"]
    assert len(errors) == 1 and errors[0][2] == "r2" and errors[0][3][0] == "badstate"
    assert isinstance(cmds[-1], Tunnel)


def test_held_request_is_written_after_a_refusal() -> None:
    h = mk()
    h.connect(REF, ME, dest(), [], {})
    h.request("r2", ME, "GET", "/after", [], b"", {})
    cmds = h.handle(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
    assert wire(cmds).startswith(b"GET /after HTTP/1.1\r\n")


def test_cancelled_connect_that_succeeds_closes() -> None:
    h = mk()
    h.connect(REF, ME, dest(), [], {})
    assert h.cancel(REF, ME) == []
    cmds = h.handle(b"HTTP/1.1 200 OK\r\n\r\n")
    assert delivered(cmds) == []
    assert cmds == [Close("normal")]


def test_shutdown_while_connect_is_pending_closes_on_2xx() -> None:
    h = mk()
    h.connect(REF, ME, dest(), [], {})
    assert isinstance(h.closing("shutdown")[-1], Closing)
    cmds = h.handle(b"HTTP/1.1 200 OK\r\n\r\n")
    assert cmds[-1] == Close("normal")


def test_pending_connect_is_killed_by_a_disconnect() -> None:
    h = mk()
    h.connect(REF, ME, dest(), [], {})
    assert h.down() == [REF]
    assert [c.msg for c in h.close("closed")] == [("gun_error", CONN, REF, "closed")]


def test_stream_info_of_a_pending_connect() -> None:
    h = mk()
    h.connect(REF, ME, dest(), [], {})
    info = h.stream_info(REF)
    assert info is not None and info["ref"] == REF and info["state"] == "running"
