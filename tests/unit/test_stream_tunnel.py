"""Unit tests of ``gunpy.protocols.tunnel.StreamTunnel``, the tunnel inside an
HTTP/2 stream, without sockets: bytes in through ``handle``, user operations
through ``op``, commands out (for the HTTP/2 stream).  What it writes for an
HTTP/1.1 origin is parsed by h11's server role.
"""

from __future__ import annotations

import ssl
from typing import Any

import h11
import pytest

from gunpy._commands import CancelTimer, Close, Deliver, Send, StartTimer
from gunpy.protocols.base import HandlerContext
from gunpy.protocols.tunnel import StreamTunnel

CONN = object()
T = "tunnel-ref"


class Rec:
    def __init__(self) -> None:
        self.msgs: list[Any] = []

    def send(self, msg: Any) -> None:
        self.msgs.append(msg)


OWNER = Rec()
ME = Rec()


def mk(**dest: Any) -> StreamTunnel:
    d = {"host": "origin.example", "port": 80, "transport": "tcp", "protocols": ["http"], **dest}
    ctx = HandlerContext(
        conn=CONN, owner=OWNER, origin_host="proxy", origin_port=8443, transport="tls"
    )
    return StreamTunnel(ctx, T, ME, d)


def delivered(cmds: list[Any]) -> list[Any]:
    return [c.msg for c in cmds if isinstance(c, Deliver)]


def wire(cmds: list[Any]) -> bytes:
    return b"".join(c.data for c in cmds if isinstance(c, Send))


def test_http_inside_a_stream() -> None:
    t = mk()
    assert delivered(t.start()) == [("gun_tunnel_up", CONN, T, "http")]
    ref = (T, "r1")
    cmds = t.op(("$request", ref, ME, "GET", "/x", [], b"", {}))
    srv = h11.Connection(h11.SERVER)
    srv.receive_data(wire(cmds))
    req = srv.next_event()
    assert isinstance(req, h11.Request) and req.target == b"/x"
    assert (b"host", b"origin.example") in list(req.headers)  # the tunnel's origin
    cmds = t.handle(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")
    assert delivered(cmds) == [
        ("gun_response", CONN, ref, "nofin", 200, [("content-length", "2")]),
        ("gun_data", CONN, ref, "fin", b"hi"),
    ]
    info = t.stream_info(ref)
    assert info is None  # finished
    assert t.describe() == {
        "transport": "tcp",
        "protocol": "http",
        "origin_scheme": "http",
        "origin_host": "origin.example",
        "origin_port": 80,
    }


def test_refs_must_name_the_tunnel() -> None:
    t = mk()
    t.start()
    cmds = t.op(("$request", "plain", ME, "GET", "/", [], b"", {}))
    assert delivered(cmds)[0][3][0] == "badstate" and "tunnel option" in delivered(cmds)[0][3][1]
    cmds = t.op(("$request", (T, "x", "y"), ME, "GET", "/", [], b"", {}))
    assert delivered(cmds)[0][3] == ("badstate", "The stream is not a tunnel.")


def test_raw_inside_and_the_far_end_closing() -> None:
    t = mk(protocols=["raw"])
    t.start()
    assert wire(t.op(("$data", T, ME, "nofin", b"out"))) == b"out"
    assert delivered(t.handle(b"in")) == [("gun_data", CONN, T, "nofin", b"in")]
    cmds = t.handle_eof()
    assert delivered(cmds) == [("gun_error", CONN, T, "closed")]
    assert Close("closed") in cmds
    # Over: operations are refused, input ignored.
    assert delivered(t.op(("$data", T, ME, "nofin", b"late"))) == [("gun_error", CONN, T, "closed")]
    assert t.handle(b"late") == []


def test_tls_inside_waits_then_times_out_and_queued_requests_are_told() -> None:
    t = mk(transport="tls", tls_handshake_timeout=100, tls_opts={"verify": "verify_none"})
    cmds = t.start()
    hello = wire(cmds)
    assert hello[:1] == b"\x16"  # a TLS handshake record: the ClientHello
    assert StartTimer("$tls", 100) in cmds
    assert t.op(("$request", (T, "r"), ME, "GET", "/", [], b"", {})) == []  # queued
    cmds = t.timeout("$tls")
    assert delivered(cmds) == [
        ("gun_error", CONN, T, ("closed", ("error", "timeout"))),
        ("gun_error", CONN, (T, "r"), ("closed", ("error", "timeout"))),
    ]
    assert CancelTimer("$tls") in cmds and Close(("error", "timeout")) in cmds


def test_tls_inside_with_a_real_server_side(tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("origin.example").configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server_ctx.wrap_bio(inc, out, server_side=True)
    t = mk(
        transport="tls",
        tls_opts={"cacerts": ca.cert_pem.bytes().decode()},
        protocols=["http2", "http"],
    )
    to_server = wire(t.start())
    cmds: list[Any] = []
    for _ in range(10):  # the handshake, round trip by round trip
        inc.write(to_server)
        try:
            srv.do_handshake()
        except ssl.SSLWantReadError:
            pass
        cmds = t.handle(out.read())
        to_server = wire(cmds)
        if delivered(cmds):
            break
    assert delivered(cmds) == [("gun_tunnel_up", CONN, T, "http")]  # ALPN picked http/1.1
    inc.write(to_server)  # the client's Finished
    inc.write(wire(t.op(("$request", (T, "r"), ME, "GET", "/tls", [], b"", {}))))
    assert srv.read(1000).startswith(b"GET /tls HTTP/1.1\r\n")
    srv.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert delivered(t.handle(out.read())) == [("gun_response", CONN, (T, "r"), "fin", 204, [])]


def test_close_and_down_report_the_inner_streams() -> None:
    t = mk()
    t.start()
    t.op(("$request", (T, "r"), ME, "GET", "/", [], b"", {}))
    assert t.close("closed") == [Deliver(ME, ("gun_error", CONN, (T, "r"), "closed"))]
    assert t.down() == [(T, "r")]
