"""Proxies and tunnels against real peers (gun-reference 1 ``connect``, 2
``gun_tunnel_up``, 3.6, 4.4, 4.11, 4.12; Gun's rfc7231_SUITE, socks_SUITE, raw_SUITE
and tunnel_SUITE).

Proxies: tinyproxy (HTTP CONNECT, answers ``HTTP/1.0 200``), dante (SOCKS5, no
authentication and system-user username/password) and the small asyncio proxies
of ``proxy_servers.py`` (HTTPS CONNECT, SOCKS5 over TLS, SOCKS5 with its own
users).  Origins: nginx, hypercorn (HTTP/1.1, h2c; over TLS h2 or http/1.1 by
ALPN) and a raw echo.  Scripted proxies (``gunpy.testing.ScriptedOrigin``) check
exact bytes and reconnection.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import gunpy
from gunpy import ANY, Ref
from gunpy.testing import (
    Close,
    ExpectRequest,
    Respond,
    ScriptedOrigin,
    Send,
    assert_receive,
    gun_data,
    gun_down,
    gun_error,
    gun_response,
    gun_up,
    gun_upgrade,
    gun_ws,
    refute_receive,
)
from tests.integration.proxy_servers import ConnectProxy, EchoOrigin, Socks5Proxy
from tests.peers import NginxPeer, Peer, TLSFiles, start_dante

pytestmark = pytest.mark.peers

T = 5000  # ms: a generous bound for anything on loopback


def tunnel_up(conn: Any, ref: Any, protocol: Any = ANY) -> tuple[Any, ...]:
    return ("gun_tunnel_up", conn, ref, protocol)


def open_proxy(port: int, opts: dict[str, Any] | None = None) -> Any:
    ok, conn = gunpy.open("127.0.0.1", port, {"retry": 0, **(opts or {})})
    assert ok == "ok", conn
    return conn


def connect_ok(
    conn: Any, dest: dict[str, Any], protocol: str, req_opts: dict[str, Any] | None = None
) -> Any:
    """CONNECT, expect the 2xx (fin) then gun_tunnel_up; the CONNECT's ref."""
    ref = gunpy.connect(conn, dest, None, req_opts)
    msg = assert_receive(gun_response(conn, ref, ANY, ANY, ANY), after=T)
    assert msg[3] == "fin" and 200 <= msg[4] < 300, msg
    assert_receive(tunnel_up(conn, ref, protocol), after=T)
    return ref


def get_body(conn: Any, path: str, tunnel: Any = None) -> tuple[Any, int, bytes]:
    ref = gunpy.get(conn, path, None, {"tunnel": tunnel} if tunnel is not None else None)
    res = gunpy.await_(conn, ref, T)
    assert res[0] == "response", res
    if res[1] == "fin":
        return ref, res[2], b""
    body = gunpy.await_body(conn, ref, T)
    assert body[0] == "ok", body
    return ref, res[2], body[1]


@pytest.fixture
def tls_opts(trustme_ca: TLSFiles) -> dict[str, Any]:
    return {"cacertfile": str(trustme_ca.ca_file)}


# --------------------------------------------------------------------------- CONNECT


def test_connect_through_tinyproxy_to_nginx(
    tinyproxy_server: Peer, nginx_server: NginxPeer
) -> None:
    """rfc7231_SUITE connect_http: 200 (tinyproxy answers HTTP/1.0) then the tunnel."""
    conn = open_proxy(tinyproxy_server.port)
    assert_receive(gun_up(conn, "http"), after=T)
    ref = gunpy.connect(conn, {"host": "127.0.0.1", "port": nginx_server.port})
    assert isinstance(ref, Ref)
    assert_receive(gun_response(conn, ref, "fin", 200, ANY), after=T)
    assert gunpy.await_(conn, ref, T) == ("up", "http")
    # Requests carry the CONNECT's ref as tunnel; their refs are (connect, own).
    req, status, body = get_body(conn, "/small.txt", ref)
    assert status == 200 and body == nginx_server.small_body
    assert type(req) is tuple and len(req) == 2 and req[0] is ref and isinstance(req[1], Ref)
    # A Gun-style list works as the tunnel option too.
    _, status, _ = get_body(conn, "/index.html", [ref])
    assert status == 200
    info = gunpy.info(conn)
    assert info["intermediaries"] == [
        {
            "type": "connect",
            "host": "127.0.0.1",
            "port": tinyproxy_server.port,
            "transport": "tcp",
            "protocol": "http",
        }
    ]
    assert (info["origin_scheme"], info["origin_host"], info["origin_port"]) == (
        "http",
        "127.0.0.1",
        nginx_server.port,
    )
    assert (info["transport"], info["protocol"]) == ("tcp", "http")
    gunpy.close(conn)


def test_connect_request_bytes_and_proxy_auth() -> None:
    """rfc7231_SUITE connect_authority_form, connect_proxy_authorization,
    connect_delay: exact bytes, the 2xx may come late, then the tunnel is used."""
    cred = base64.b64encode(b"essen:myrealpasswordis").decode()
    script = [
        ExpectRequest(
            "CONNECT",
            "origin.example:8443",
            {"host": "origin.example:8443", "proxy-authorization": f"Basic {cred}", "x-a": "1"},
        ),
        Send(b"HTTP/1.1 200 Connection established\r\n\r\n"),
        ExpectRequest("GET", "/inside", {"host": "origin.example:8443"}),
        Respond(200, {"x-origin": "yes"}, b"tunnelled"),
    ]
    with ScriptedOrigin(script, name="proxy") as proxy:
        conn = proxy.open()
        ref = gunpy.connect(
            conn,
            {
                "host": "origin.example",
                "port": 8443,
                "username": "essen",
                "password": "myrealpasswordis",
            },
            {"x-a": "1", "content-length": "5", "transfer-encoding": "chunked"},
        )
        assert_receive(gun_response(conn, ref, "fin", 200, []), after=T)
        assert_receive(tunnel_up(conn, ref, "http"), after=T)
        req = gunpy.get(conn, "/inside", None, {"tunnel": ref})
        assert gunpy.await_(conn, req, T)[:3] == ("response", "nofin", 200)
        assert gunpy.await_body(conn, req, T) == ("ok", b"tunnelled")
        proxy.wait()
        head = proxy.conns[0].received.split(b"\r\n\r\n")[0]
        assert head.startswith(b"CONNECT origin.example:8443 HTTP/1.1\r\n")
        assert b"content-length" not in head and b"transfer-encoding" not in head


def test_connect_to_https_origin_through_tinyproxy(
    tinyproxy_server: Peer, hypercorn_tls_server: Peer, tls_opts: dict[str, Any]
) -> None:
    """rfc7231_SUITE connect_https: TLS inside the tunnel; h2 by ALPN by default."""
    conn = open_proxy(tinyproxy_server.port)
    dest = {
        "host": "localhost",
        "port": hypercorn_tls_server.port,
        "transport": "tls",
        "tls_opts": tls_opts,
    }
    ref = connect_ok(conn, dest, "http2")
    _, status, body = get_body(conn, "/x", ref)
    assert (status, body) == (200, b"HTTP/2 /x\n")
    info = gunpy.info(conn)
    assert (info["transport"], info["protocol"], info["origin_scheme"]) == ("tls", "http2", "https")
    # The CONNECT's stream_info describes the tunnel (tunnel_SUITE).
    ok, si = gunpy.stream_info(conn, ref)
    assert ok == "ok" and si["ref"] is ref and si["state"] == "running"
    assert si["intermediaries"] == []
    assert si["tunnel"] == {
        "transport": "tls",
        "protocol": "http2",
        "origin_scheme": "https",
        "origin_host": "localhost",
        "origin_port": hypercorn_tls_server.port,
    }
    gunpy.close(conn)


def test_connect_to_https_origin_http11_only(
    tinyproxy_server: Peer, hypercorn_tls_server: Peer, tls_opts: dict[str, Any]
) -> None:
    conn = open_proxy(tinyproxy_server.port)
    dest = {
        "host": "127.0.0.1",
        "port": hypercorn_tls_server.port,
        "transport": "tls",
        "tls_opts": tls_opts,
        "protocols": ["http"],
    }
    ref = connect_ok(conn, dest, "http")
    _, status, body = get_body(conn, "/y", ref)
    assert (status, body) == (200, b"HTTP/1.1 /y\n")
    gunpy.close(conn)


def test_connect_to_h2c_origin(tinyproxy_server: Peer, hypercorn_server: Peer) -> None:
    """rfc7231_SUITE connect_h2c: HTTP/2 by prior knowledge inside the tunnel."""
    conn = open_proxy(tinyproxy_server.port)
    ref = connect_ok(
        conn, {"host": "127.0.0.1", "port": hypercorn_server.port, "protocols": ["http2"]}, "http2"
    )
    refs = [gunpy.get(conn, f"/p{i}", None, {"tunnel": ref}) for i in range(5)]
    for i, r in enumerate(refs):
        assert gunpy.await_(conn, r, T)[:3] == ("response", "nofin", 200)
        assert gunpy.await_body(conn, r, T) == ("ok", f"HTTP/2 /p{i}\n".encode())
    gunpy.close(conn)


def test_https_proxy_tls_over_tls(
    hypercorn_tls_server: Peer, trustme_ca: TLSFiles, tls_opts: dict[str, Any]
) -> None:
    """rfc7231_SUITE connect_https_over_https_proxy: TLS to the proxy, TLS inside."""
    with ConnectProxy(tls=trustme_ca.server_context()) as proxy:
        conn = open_proxy(proxy.port, {"transport": "tls", "tls_opts": tls_opts})
        assert_receive(gun_up(conn, "http"), after=T)
        dest = {
            "host": "localhost",
            "port": hypercorn_tls_server.port,
            "transport": "tls",
            "tls_opts": tls_opts,
        }
        ref = connect_ok(conn, dest, "http2")
        _, status, body = get_body(conn, "/over-tls", ref)
        assert (status, body) == (200, b"HTTP/2 /over-tls\n")
        # A body bigger than one TLS record, both ways, through both sessions.
        big = bytes(range(256)) * 1024
        r = gunpy.post(
            conn, "/echo", [("content-type", "application/octet-stream")], big, {"tunnel": ref}
        )
        assert gunpy.await_(conn, r, T)[:3] == ("response", "nofin", 200)
        assert gunpy.await_body(conn, r, T) == ("ok", big)
        info = gunpy.info(conn)
        assert info["intermediaries"][0]["transport"] == "tls"
        assert info["transport"] == "tls"
        gunpy.close(conn)


def test_proxy_auth_accepted_and_refused(nginx_server: NginxPeer) -> None:
    """A 407 is a plain response (no tunnel); the connection stays an HTTP
    connection to the proxy and the next CONNECT may succeed."""
    with ConnectProxy(users={"alice": "wonderland"}) as proxy:
        conn = open_proxy(proxy.port)
        dest = {"host": "127.0.0.1", "port": nginx_server.port}
        bad = gunpy.connect(conn, {**dest, "username": "alice", "password": "no"})
        assert gunpy.await_(conn, bad, T)[:3] == ("response", "nofin", 407)
        assert gunpy.await_body(conn, bad, T) == ("ok", b"denied")
        refute_receive(tunnel_up(conn, ANY), after=50)
        ref = connect_ok(conn, {**dest, "username": "alice", "password": "wonderland"}, "http")
        _, status, _ = get_body(conn, "/small.txt", ref)
        assert status == 200
        assert (
            base64.b64decode(proxy.requests[1].split(b"Basic ")[1].split(b"\r\n")[0])
            == b"alice:wonderland"
        )
        gunpy.close(conn)


def test_nested_connect_tunnels(
    tinyproxy_server: Peer,
    hypercorn_tls_server: Peer,
    trustme_ca: TLSFiles,
    tls_opts: dict[str, Any],
) -> None:
    """tunnel_SUITE http_https_h2: CONNECT through a CONNECT tunnel; refs grow by
    one per tunnel; stream_info at each layer; info lists both proxies."""
    with ConnectProxy(tls=trustme_ca.server_context()) as proxy2:
        conn = open_proxy(tinyproxy_server.port)
        r1 = connect_ok(
            conn,
            {
                "host": "localhost",
                "port": proxy2.port,
                "transport": "tls",
                "tls_opts": tls_opts,
                "protocols": ["http"],
            },
            "http",
        )
        dest = {
            "host": "localhost",
            "port": hypercorn_tls_server.port,
            "transport": "tls",
            "tls_opts": tls_opts,
        }
        r2 = connect_ok(conn, dest, "http2", {"tunnel": r1})
        assert r2[0] is r1 and len(r2) == 2
        r3, status, body = get_body(conn, "/deep", r2)
        assert (status, body) == (200, b"HTTP/2 /deep\n")
        assert len(r3) == 3 and r3[:2] == r2
        p1 = {
            "type": "connect",
            "host": "127.0.0.1",
            "port": tinyproxy_server.port,
            "transport": "tcp",
            "protocol": "http",
        }
        p2 = {
            "type": "connect",
            "host": "localhost",
            "port": proxy2.port,
            "transport": "tls",
            "protocol": "http",
        }
        assert gunpy.info(conn)["intermediaries"] == [p1, p2]
        ok, si1 = gunpy.stream_info(conn, r1)
        assert si1["intermediaries"] == [] and si1["tunnel"] == {
            "transport": "tls",
            "protocol": "http",
            "origin_scheme": "https",
            "origin_host": "localhost",
            "origin_port": proxy2.port,
        }
        ok, si2 = gunpy.stream_info(conn, r2)
        assert si2["intermediaries"] == [p1]
        assert (
            si2["tunnel"]["protocol"] == "http2"
            and si2["tunnel"]["origin_port"] == hypercorn_tls_server.port
        )
        # A stream inside: its own info, every intermediary in front.
        r4 = gunpy.get(conn, "/slow", None, {"tunnel": r2})
        ok, si4 = gunpy.stream_info(conn, r4)
        assert ok == "ok" and si4 is not None and si4["intermediaries"] == [p1, p2]
        assert gunpy.await_(conn, r4, T)[0] == "response"
        gunpy.close(conn)


def test_wrong_or_missing_tunnel_option(tinyproxy_server: Peer, nginx_server: NginxPeer) -> None:
    conn = open_proxy(tinyproxy_server.port)
    assert_receive(gun_up(conn), after=T)
    # Before any tunnel: a tunnel ref is refused (Gun: "The stream is not a tunnel.").
    fake = gunpy.make_ref()
    r = gunpy.get(conn, "/", None, {"tunnel": fake})
    assert_receive(gun_error(conn, r, ("badstate", "The stream is not a tunnel.")), after=T)
    ref = connect_ok(conn, {"host": "127.0.0.1", "port": nginx_server.port}, "http")
    # Inside the tunnel a request must say so (Gun crashes on this one).
    r = gunpy.get(conn, "/small.txt")
    err = assert_receive(gun_error(conn, r, ANY), after=T)
    assert err[3][0] == "badstate" and "tunnel option" in err[3][1]
    # Another ref than the tunnel's.
    r = gunpy.get(conn, "/small.txt", None, {"tunnel": fake})
    assert assert_receive(gun_error(conn, r, ANY), after=T)[3][0] == "badstate"
    # The connection still works.
    _, status, _ = get_body(conn, "/small.txt", ref)
    assert status == 200
    with pytest.raises(gunpy.OptionsError):
        gunpy.get(conn, "/", None, {"tunnel": "not a ref"})
    gunpy.close(conn)


def test_connect_refused_while_a_stream_is_active() -> None:
    script = [ExpectRequest("GET", "/slow"), Respond(200, (), b"ok")]
    with ScriptedOrigin(script, name="proxy") as proxy:
        conn = proxy.open()
        r = gunpy.get(conn, "/slow")
        c = gunpy.connect(conn, {"host": "example.org", "port": 443})
        assert_receive(
            gun_error(
                conn,
                c,
                (
                    "badstate",
                    "CONNECT can only be used with HTTP/1.1 when no other streams are active.",
                ),
            ),
            after=T,
        )
        assert gunpy.await_(conn, r, T)[0] == "response"
        proxy.wait()


def test_tunnel_is_not_reestablished_after_reconnect() -> None:
    """gun-reference 4.1: the tunnel is forgotten, the origin is the proxy again."""
    first = [
        ExpectRequest("CONNECT", "origin.example:80"),
        Send(b"HTTP/1.1 200 OK\r\n\r\n"),
        ExpectRequest("GET", "/in"),
        Respond(200, (), b"in"),
        Close(),
    ]
    second = [ExpectRequest("GET", "/after"), Respond(204)]
    with ScriptedOrigin(scripts=[first, second], name="proxy") as proxy:
        conn = proxy.open({"retry": 1, "retry_timeout": 10})
        assert_receive(gun_up(conn, "http"), after=T)
        ref = connect_ok(conn, {"host": "origin.example", "port": 80}, "http")
        _, status, body = get_body(conn, "/in", ref)
        assert (status, body) == (200, b"in")
        assert_receive(gun_down(conn, "http", "closed", []), after=T)
        assert_receive(gun_up(conn, "http"), after=T)
        info = gunpy.info(conn)
        assert info["intermediaries"] == [] and info["origin_host"] == "127.0.0.1"
        assert info["origin_port"] == proxy.port
        assert gunpy.stream_info(conn, ref) == ("ok", None)
        r = gunpy.get(conn, "/after")
        assert_receive(gun_response(conn, r, "fin", 204), after=T)
        proxy.wait()
        # The host header is the proxy's again.
        assert f"\r\nhost: 127.0.0.1:{proxy.port}\r\n".encode() in proxy.conns[1].received


def test_websocket_through_a_tunnel(tinyproxy_server: Peer, hypercorn_server: Peer) -> None:
    conn = open_proxy(tinyproxy_server.port)
    ref = connect_ok(conn, {"host": "127.0.0.1", "port": hypercorn_server.port}, "http")
    ws = gunpy.ws_upgrade(conn, "/ws", None, {"tunnel": ref})
    assert type(ws) is tuple and ws[0] is ref
    assert_receive(gun_upgrade(conn, ws, ["websocket"]), after=T)
    gunpy.ws_send(conn, ws, ("text", "through the tunnel"))
    assert_receive(gun_ws(conn, ws, ("text", "through the tunnel")), after=T)
    gunpy.close(conn)


def test_ping_through_a_tunnel_to_h2(tinyproxy_server: Peer, hypercorn_server: Peer) -> None:
    conn = open_proxy(tinyproxy_server.port)
    ref = connect_ok(
        conn, {"host": "127.0.0.1", "port": hypercorn_server.port, "protocols": ["http2"]}, "http2"
    )
    p = gunpy.ping(conn, {"tunnel": ref})
    assert_receive(("gun_notify", conn, "ping_ack", p), after=T)
    gunpy.close(conn)


# --------------------------------------------------------------------------- raw


def test_raw_through_connect(tinyproxy_server: Peer) -> None:
    """raw_SUITE connect_raw: messages carry the CONNECT's ref; data is sent on it."""
    with EchoOrigin() as echo:
        conn = open_proxy(tinyproxy_server.port)
        ref = connect_ok(
            conn, {"host": "127.0.0.1", "port": echo.port, "protocols": ["raw"]}, "raw"
        )
        gunpy.data(conn, ref, "nofin", b"Hello world!")
        assert gunpy.await_(conn, ref, T) == ("data", "nofin", b"Hello world!")
        info = gunpy.info(conn)
        assert info["state_name"] == "connected_data_only" and info["protocol"] == "raw"
        ok, si = gunpy.stream_info(conn, ref)
        assert si["tunnel"]["protocol"] == "raw" and si["tunnel"]["origin_scheme"] is None
        gunpy.close(conn)


def test_rawtls_through_https_proxy(trustme_ca: TLSFiles, tls_opts: dict[str, Any]) -> None:
    """raw_SUITE connect_raw over TLS over TLS, with reply_to."""
    with (
        EchoOrigin(tls=trustme_ca.server_context()) as echo,
        ConnectProxy(tls=trustme_ca.server_context()) as proxy,
    ):
        conn = open_proxy(proxy.port, {"transport": "tls", "tls_opts": tls_opts})
        other = gunpy.Mailbox()
        other_pid = gunpy.Pid(other)
        ref = gunpy.connect(
            conn,
            {
                "host": "localhost",
                "port": echo.port,
                "transport": "tls",
                "tls_opts": tls_opts,
                "protocols": ["raw"],
            },
            None,
            {"reply_to": other_pid},
        )
        assert (
            other.receive(((("gun_response", conn, ref, "fin", 200, ANY)),), T / 1000)
            != gunpy.TIMEOUT
        )
        assert other.receive(((("gun_tunnel_up", conn, ref, "raw")),), T / 1000) != gunpy.TIMEOUT
        gunpy.data(conn, ref, "nofin", b"x" * 100_000)
        got = b""
        while len(got) < 100_000:
            msg = other.receive((("gun_data", conn, ref, "nofin", ANY),), T / 1000)
            assert msg is not gunpy.TIMEOUT
            got += msg[4]
        assert got == b"x" * 100_000
        gunpy.close(conn)


def test_upgrade_to_raw_inside_a_tunnel(tinyproxy_server: Peer) -> None:
    """raw_SUITE http11_upgrade_raw, through a CONNECT tunnel: the 101's ref is the
    tunnelled stream's, raw data follows on it."""
    origin_script = [
        ExpectRequest("GET", "/", {"upgrade": "custom", "connection": "upgrade"}),
        Send(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: custom\r\n\r\nearly"
        ),
    ]
    with ScriptedOrigin(origin_script, name="origin") as origin:
        conn = open_proxy(tinyproxy_server.port)
        ref = connect_ok(conn, {"host": "127.0.0.1", "port": origin.port}, "http")
        up = gunpy.get(conn, "/", {"connection": "upgrade", "upgrade": "custom"}, {"tunnel": ref})
        assert_receive(gun_upgrade(conn, up, ["custom"]), after=T)
        assert_receive(gun_data(conn, up, "nofin", b"early"), after=T)
        origin.wait()
        gunpy.data(conn, up, "nofin", b"raw bytes")
        assert origin.conns[0].recv_exact(9, T) == b"raw bytes"
        origin.conns[0].send(b"back")
        assert_receive(gun_data(conn, up, "nofin", b"back"), after=T)
        assert gunpy.info(conn)["protocol"] == "raw"
        gunpy.close(conn)


# --------------------------------------------------------------------------- SOCKS5


def socks_opts(port: int, **kw: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, **kw}


def test_socks_to_nginx_through_dante(dante_server: Peer, nginx_server: NginxPeer) -> None:
    """socks_SUITE socks5_tcp_http_none: gun_up(socks), gun_tunnel_up(None, http),
    then requests without a tunnel option."""
    conn = open_proxy(dante_server.port, {"protocols": [("socks", socks_opts(nginx_server.port))]})
    assert_receive(gun_up(conn, "socks"), after=T)
    assert gunpy.await_(conn, None, T) == ("up", "http")
    _, status, body = get_body(conn, "/small.txt")
    assert (status, body) == (200, nginx_server.small_body)
    info = gunpy.info(conn)
    assert info["intermediaries"] == [
        {
            "type": "socks5",
            "host": "127.0.0.1",
            "port": dante_server.port,
            "transport": "tcp",
            "protocol": "socks",
        }
    ]
    assert (info["origin_host"], info["origin_port"], info["protocol"]) == (
        "127.0.0.1",
        nginx_server.port,
        "http",
    )
    gunpy.close(conn)


def test_requests_made_during_the_socks_handshake_wait_for_it(
    dante_server: Peer, nginx_server: NginxPeer
) -> None:
    conn = open_proxy(dante_server.port, {"protocols": [("socks", socks_opts(nginx_server.port))]})
    ref = gunpy.get(conn, "/small.txt")  # before gun_up even
    assert gunpy.await_(conn, ref, T)[:3] == ("response", "nofin", 200)
    assert_receive(gun_up(conn, "socks"), after=0)
    assert_receive(tunnel_up(conn, None, "http"), after=0)
    gunpy.close(conn)


def test_socks_state_while_negotiating() -> None:
    """The proxy says nothing yet: connected_no_input, operations wait."""
    with ScriptedOrigin(name="socks") as proxy:
        conn = proxy.open({"protocols": [("socks", socks_opts(80))]})
        server = proxy.accept()
        assert server.recv_exact(3, T) == b"\x05\x01\x00"
        assert_receive(gun_up(conn, "socks"), after=T)
        info = gunpy.info(conn)
        assert info["state_name"] == "connected_no_input" and info["protocol"] == "socks"
        assert info["origin_scheme"] is None
        ref = gunpy.get(conn, "/queued")
        server.send(b"\x05\x00")
        assert server.recv_exact(10, T) == b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
        server.send(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
        assert_receive(tunnel_up(conn, None, "http"), after=T)
        head = server.recv_request(T)
        assert head.startswith(b"GET /queued HTTP/1.1\r\n") and b"\r\nhost: 127.0.0.1\r\n" in head
        server.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        assert_receive(gun_response(conn, ref, "fin", 204), after=T)


@pytest.fixture
def system_user() -> Iterator[tuple[str, str]]:
    """A temporary system user for dante's username method (needs root)."""
    if os.geteuid() != 0 or not (shutil.which("useradd") and shutil.which("chpasswd")):
        pytest.skip("dante's username method checks system users: needs root and useradd")
    user, password = "gunpy" + secrets.token_hex(3), secrets.token_hex(8)
    subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", user], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
        yield user, password
    finally:
        subprocess.run(["userdel", user], check=False)


def test_dante_username_password(
    system_user: tuple[str, str], tmp_path: Path, nginx_server: NginxPeer
) -> None:
    """socks_SUITE socks5_tcp_http_username_password, against dante (RFC 1929)."""
    user, password = system_user
    with start_dante(tmp_path / "dante", method="username") as dante:
        auth = [("username_password", user, password)]
        conn = open_proxy(
            dante.port, {"protocols": [("socks", socks_opts(nginx_server.port, auth=auth))]}
        )
        assert_receive(tunnel_up(conn, None, "http"), after=T)
        _, status, _ = get_body(conn, "/small.txt")
        assert status == 200
        gunpy.close(conn)
        bad = [("username_password", user, "wrong")]
        conn = open_proxy(
            dante.port, {"protocols": [("socks", socks_opts(nginx_server.port, auth=bad))]}
        )
        assert_receive(
            gun_down(conn, "socks", ("error", ("socks5", "username_password_auth_failure")), []),
            after=T,
        )


def test_socks_username_password_own_proxy(nginx_server: NginxPeer) -> None:
    with Socks5Proxy(users={"u": "p"}) as proxy:
        conn = open_proxy(
            proxy.port,
            {
                "protocols": [
                    (
                        "socks",
                        socks_opts(
                            nginx_server.port, auth=[("username_password", "u", "p"), "none"]
                        ),
                    )
                ]
            },
        )
        assert_receive(tunnel_up(conn, None, "http"), after=T)
        _, status, _ = get_body(conn, "/small.txt")
        assert status == 200
        assert proxy.requests == [("127.0.0.1", nginx_server.port)]
        gunpy.close(conn)


def test_socks_over_tls_to_h2_over_tls(
    hypercorn_tls_server: Peer, trustme_ca: TLSFiles, tls_opts: dict[str, Any]
) -> None:
    """socks_SUITE socks5_tls_h2_none: TLS to the proxy, TLS to the origin inside."""
    with Socks5Proxy(tls=trustme_ca.server_context()) as proxy:
        opts = socks_opts(
            hypercorn_tls_server.port, host="localhost", transport="tls", tls_opts=tls_opts
        )
        conn = open_proxy(
            proxy.port, {"transport": "tls", "tls_opts": tls_opts, "protocols": [("socks", opts)]}
        )
        assert_receive(gun_up(conn, "socks"), after=T)
        assert_receive(tunnel_up(conn, None, "http2"), after=T)
        _, status, body = get_body(conn, "/socks-tls")
        assert (status, body) == (200, b"HTTP/2 /socks-tls\n")
        info = gunpy.info(conn)
        assert info["intermediaries"][0] == {
            "type": "socks5",
            "host": "127.0.0.1",
            "port": proxy.port,
            "transport": "tls",
            "protocol": "socks",
        }
        assert (info["transport"], info["origin_scheme"]) == ("tls", "https")
        gunpy.close(conn)


def test_socks_chain(dante_server: Peer, nginx_server: NginxPeer) -> None:
    """socks_SUITE socks5_tcp_socks5_tcp_http: SOCKS inside SOCKS."""
    with Socks5Proxy() as first:
        inner = ("socks", socks_opts(nginx_server.port))
        outer = socks_opts(dante_server.port, protocols=[inner])
        conn = open_proxy(first.port, {"protocols": [("socks", outer)]})
        assert_receive(gun_up(conn, "socks"), after=T)
        assert_receive(tunnel_up(conn, None, "socks"), after=T)
        assert_receive(tunnel_up(conn, None, "http"), after=T)
        _, status, _ = get_body(conn, "/small.txt")
        assert status == 200
        types = [(i["type"], i["port"]) for i in gunpy.info(conn)["intermediaries"]]
        assert types == [("socks5", first.port), ("socks5", dante_server.port)]
        gunpy.close(conn)


def test_socks_through_connect(
    tinyproxy_server: Peer, dante_server: Peer, nginx_server: NginxPeer
) -> None:
    """socks_SUITE socks5_through_connect: the CONNECT's ref runs through it all."""
    conn = open_proxy(tinyproxy_server.port)
    dest = {
        "host": "127.0.0.1",
        "port": dante_server.port,
        "protocols": [("socks", socks_opts(nginx_server.port))],
    }
    ref = gunpy.connect(conn, dest)
    assert_receive(gun_response(conn, ref, "fin", 200), after=T)
    assert_receive(tunnel_up(conn, ref, "socks"), after=T)
    assert_receive(tunnel_up(conn, ref, "http"), after=T)
    _, status, _ = get_body(conn, "/small.txt", ref)
    assert status == 200
    assert [i["type"] for i in gunpy.info(conn)["intermediaries"]] == ["connect", "socks5"]
    gunpy.close(conn)


def test_connect_through_socks(dante_server: Peer, hypercorn_server: Peer) -> None:
    with ConnectProxy() as proxy:
        conn = open_proxy(dante_server.port, {"protocols": [("socks", socks_opts(proxy.port))]})
        assert_receive(tunnel_up(conn, None, "http"), after=T)
        ref = connect_ok(conn, {"host": "127.0.0.1", "port": hypercorn_server.port}, "http")
        _, status, body = get_body(conn, "/z", ref)
        assert (status, body) == (200, b"HTTP/1.1 /z\n")
        assert [i["type"] for i in gunpy.info(conn)["intermediaries"]] == ["socks5", "connect"]
        gunpy.close(conn)


def test_raw_through_socks(dante_server: Peer) -> None:
    """raw_SUITE socks5_tcp_raw: the connection-wide raw protocol, ref None."""
    with EchoOrigin() as echo:
        conn = open_proxy(
            dante_server.port, {"protocols": [("socks", socks_opts(echo.port, protocols=["raw"]))]}
        )
        assert_receive(tunnel_up(conn, None, "raw"), after=T)
        gunpy.data(conn, None, "nofin", b"ping")
        assert_receive(gun_data(conn, None, "nofin", b"ping"), after=T)
        gunpy.close(conn)


def test_socks_options_are_checked() -> None:
    assert gunpy.open("127.0.0.1", 1080, {"protocols": [("socks", {"port": 80})]}) == (
        "error",
        ("options", ("socks", ("host", None))),
    )
    assert gunpy.open(
        "127.0.0.1", 1080, {"protocols": [("socks", {"host": "h", "port": 80, "auth": ["x"]})]}
    ) == (
        "error",
        ("options", ("socks", ("auth", ["x"]))),
    )
    # socks_opts gives the defaults, the protocols entry the rest.
    ok, conn = gunpy.open(
        "127.0.0.1",
        1,
        {"retry": 0, "socks_opts": {"host": "h"}, "protocols": [("socks", {"port": 80})]},
    )
    assert ok == "ok"
    gunpy.close(conn)
    with pytest.raises(gunpy.OptionsError):
        gunpy.connect(conn, {"host": "h"})  # no port
    with pytest.raises(gunpy.OptionsError):
        gunpy.connect(conn, {"host": "h", "port": 1, "protocols": ["http2", "http"]})  # TCP: one
    with pytest.raises(gunpy.OptionsError):
        gunpy.connect(conn, {"host": "h", "port": 1, "bogus": 1})
