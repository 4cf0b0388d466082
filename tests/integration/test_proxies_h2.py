"""CONNECT through HTTP/2 proxies: one tunnel per stream, many per connection
(RFC 9113 8.5; gun-reference 4.11; Gun's rfc7540_SUITE connect_* and
tunnel_SUITE h2/h2c rows).

The proxy is ``proxy_servers.H2ConnectProxy`` (h2c, or h2 over TLS); origins are
hypercorn, nginx, tinyproxy behind it, and a raw echo.
"""

from __future__ import annotations

from typing import Any

import pytest

import gunpy
from gunpy import ANY
from gunpy.testing import (
    assert_receive,
    gun_data,
    gun_down,
    gun_error,
    gun_response,
    gun_up,
    gun_upgrade,
    gun_ws,
)
from tests.integration.proxy_servers import EchoOrigin, H2ConnectProxy
from tests.peers import NginxPeer, Peer, TLSFiles

pytestmark = pytest.mark.peers

T = 5000


@pytest.fixture
def tls_opts(trustme_ca: TLSFiles) -> dict[str, Any]:
    return {"cacertfile": str(trustme_ca.ca_file)}


def h2_proxy_conn(proxy: H2ConnectProxy, tls_opts: dict[str, Any] | None = None) -> Any:
    opts: dict[str, Any] = {"retry": 0, "protocols": ["http2"]}
    if tls_opts is not None:
        opts.update({"transport": "tls", "tls_opts": tls_opts})
    ok, conn = gunpy.open("127.0.0.1", proxy.port, opts)
    assert ok == "ok"
    assert_receive(gun_up(conn, "http2"), after=T)
    return conn


def tunnel_to(conn: Any, dest: dict[str, Any], proto: str, tunnel: Any = None) -> Any:
    ref = gunpy.connect(conn, dest, None, {"tunnel": tunnel} if tunnel is not None else None)
    assert_receive(gun_response(conn, ref, "fin", 200), after=T)
    assert_receive(("gun_tunnel_up", conn, ref, proto), after=T)
    return ref


def body_of(conn: Any, ref: Any) -> bytes:
    res = gunpy.await_(conn, ref, T)
    assert res[:3] == ("response", "nofin", 200), res
    got = gunpy.await_body(conn, ref, T)
    assert got[0] == "ok", got
    return bytes(got[1])


def test_many_tunnels_on_one_connection(
    hypercorn_server: Peer, hypercorn_tls_server: Peer, tls_opts: dict[str, Any]
) -> None:
    """rfc7540_SUITE connect_http_via_h2c and friends, at once on one connection."""
    with H2ConnectProxy() as proxy, EchoOrigin() as echo:
        conn = h2_proxy_conn(proxy)
        t_h2 = tunnel_to(
            conn,
            {
                "host": "localhost",
                "port": hypercorn_tls_server.port,
                "transport": "tls",
                "tls_opts": tls_opts,
            },
            "http2",
        )
        t_h1 = tunnel_to(conn, {"host": "127.0.0.1", "port": hypercorn_server.port}, "http")
        t_raw = tunnel_to(
            conn, {"host": "127.0.0.1", "port": echo.port, "protocols": ["raw"]}, "raw"
        )
        refs = [
            gunpy.get(conn, f"/s{i}", None, {"tunnel": t}) for i, t in enumerate([t_h2, t_h1] * 3)
        ]
        for i, r in enumerate(refs):
            assert r[0] is (t_h2 if i % 2 == 0 else t_h1)
            version = "2" if i % 2 == 0 else "1.1"
            assert body_of(conn, r) == f"HTTP/{version} /s{i}\n".encode()
        gunpy.data(conn, t_raw, "nofin", b"raw bytes")
        assert_receive(gun_data(conn, t_raw, "nofin", b"raw bytes"), after=T)
        # The connection is the proxy's; each stream describes its own tunnel.
        info = gunpy.info(conn)
        assert info["intermediaries"] == [] and info["origin_port"] == proxy.port
        ok, si = gunpy.stream_info(conn, t_h2)
        assert si["tunnel"] == {
            "transport": "tls",
            "protocol": "http2",
            "origin_scheme": "https",
            "origin_host": "localhost",
            "origin_port": hypercorn_tls_server.port,
        }
        ok, si = gunpy.stream_info(conn, t_raw)
        assert si["tunnel"]["origin_scheme"] is None and si["tunnel"]["protocol"] == "raw"
        assert [authority for authority, _ in proxy.requests] == [
            f"localhost:{hypercorn_tls_server.port}",
            f"127.0.0.1:{hypercorn_server.port}",
            f"127.0.0.1:{echo.port}",
        ]
        gunpy.close(conn)


def test_tls_proxy_tls_origin_big_bodies(
    hypercorn_tls_server: Peer, trustme_ca: TLSFiles, tls_opts: dict[str, Any]
) -> None:
    """h2 over TLS to the proxy, h2 over TLS inside a stream: TLS in DATA frames,
    flow-controlled both ways."""
    with H2ConnectProxy(tls=trustme_ca.server_context()) as proxy:
        conn = h2_proxy_conn(proxy, tls_opts)
        t = tunnel_to(
            conn,
            {
                "host": "localhost",
                "port": hypercorn_tls_server.port,
                "transport": "tls",
                "tls_opts": tls_opts,
            },
            "http2",
        )
        big = bytes(range(256)) * 4096  # 1 MiB
        r = gunpy.post(
            conn, "/echo", [("content-type", "application/octet-stream")], big, {"tunnel": t}
        )
        assert body_of(conn, r) == big
        p = gunpy.ping(conn, {"tunnel": t})  # the origin's HTTP/2, not the proxy's
        assert_receive(("gun_notify", conn, "ping_ack", p), after=T)
        gunpy.close(conn)


def test_connect_headers_and_auth() -> None:
    with H2ConnectProxy() as proxy, EchoOrigin() as echo:
        conn = h2_proxy_conn(proxy)
        dest = {
            "host": "127.0.0.1",
            "port": echo.port,
            "username": "u",
            "password": "p",
            "protocols": ["raw"],
        }
        ref = gunpy.connect(conn, dest, [("x-trace", "7"), ("content-length", "3")])
        assert_receive(("gun_tunnel_up", conn, ref, "raw"), after=T)
        authority, headers = proxy.requests[0]
        fields = dict(headers)
        assert fields[b":method"] == b"CONNECT" and authority == f"127.0.0.1:{echo.port}"
        assert b":scheme" not in fields and b":path" not in fields  # RFC 9113 8.5
        assert fields[b"proxy-authorization"] == b"Basic dTpw"
        assert fields[b"x-trace"] == b"7" and b"content-length" not in fields
        gunpy.close(conn)


def test_refused_connect_is_a_response() -> None:
    with H2ConnectProxy() as proxy:
        conn = h2_proxy_conn(proxy)
        ref = gunpy.connect(conn, {"host": "127.0.0.1", "port": gunpy.testing.refused_port()})
        assert_receive(gun_response(conn, ref, "fin", 502), after=T)
        # The connection to the proxy goes on.
        with EchoOrigin() as echo:
            t = tunnel_to(
                conn, {"host": "127.0.0.1", "port": echo.port, "protocols": ["raw"]}, "raw"
            )
            gunpy.data(conn, t, "nofin", b"x")
            assert_receive(gun_data(conn, t, "nofin", b"x"), after=T)
        gunpy.close(conn)


def test_nested_http11_proxy_inside_an_h2_tunnel(
    tinyproxy_server: Peer, nginx_server: NginxPeer
) -> None:
    """tunnel_SUITE h2c_http_http: refs grow one per tunnel; stream_info at each level."""
    with H2ConnectProxy() as proxy:
        conn = h2_proxy_conn(proxy)
        t1 = tunnel_to(conn, {"host": "127.0.0.1", "port": tinyproxy_server.port}, "http")
        t2 = tunnel_to(conn, {"host": "127.0.0.1", "port": nginx_server.port}, "http", t1)
        assert t2 == (t1, t2[1])
        r = gunpy.get(conn, "/small.txt", None, {"tunnel": t2})
        assert len(r) == 3 and r[:2] == t2
        assert body_of(conn, r) == nginx_server.small_body
        h2_proxy = {
            "type": "connect",
            "host": "127.0.0.1",
            "port": proxy.port,
            "transport": "tcp",
            "protocol": "http2",
        }
        tiny = {
            "type": "connect",
            "host": "127.0.0.1",
            "port": tinyproxy_server.port,
            "transport": "tcp",
            "protocol": "http",
        }
        ok, si1 = gunpy.stream_info(conn, t1)
        assert si1["intermediaries"] == [] and si1["tunnel"]["origin_port"] == tinyproxy_server.port
        ok, si2 = gunpy.stream_info(conn, t2)
        assert si2["intermediaries"] == [h2_proxy]
        assert si2["tunnel"]["origin_port"] == nginx_server.port
        slow = gunpy.get(conn, "/big.bin", None, {"tunnel": t2})
        ok, si3 = gunpy.stream_info(conn, slow)
        assert si3 is not None and si3["intermediaries"] == [h2_proxy, tiny]
        assert len(body_of(conn, slow)) == 1 << 20
        # A request that names only the first tunnel is refused inside it.
        bad = gunpy.get(conn, "/small.txt", None, {"tunnel": t1})
        err = assert_receive(gun_error(conn, bad, ANY), after=T)
        assert err[3][0] == "badstate" and "tunnel option" in err[3][1]
        gunpy.close(conn)


def test_socks_inside_an_h2_tunnel(dante_server: Peer, nginx_server: NginxPeer) -> None:
    with H2ConnectProxy() as proxy:
        conn = h2_proxy_conn(proxy)
        dest = {
            "host": "127.0.0.1",
            "port": dante_server.port,
            "protocols": [("socks", {"host": "127.0.0.1", "port": nginx_server.port})],
        }
        ref = gunpy.connect(conn, dest)
        assert_receive(("gun_tunnel_up", conn, ref, "socks"), after=T)
        r = gunpy.get(conn, "/small.txt", None, {"tunnel": ref})  # waits for the SOCKS handshake
        assert_receive(("gun_tunnel_up", conn, ref, "http"), after=T)
        assert body_of(conn, r) == nginx_server.small_body
        gunpy.close(conn)


def test_websocket_inside_an_h2_tunnel(hypercorn_server: Peer) -> None:
    with H2ConnectProxy() as proxy:
        conn = h2_proxy_conn(proxy)
        t = tunnel_to(conn, {"host": "127.0.0.1", "port": hypercorn_server.port}, "http")
        ws = gunpy.ws_upgrade(conn, "/ws", None, {"tunnel": t})
        assert_receive(gun_upgrade(conn, ws, ["websocket"]), after=T)
        gunpy.ws_send(conn, ws, ("text", "deep"))
        assert_receive(gun_ws(conn, ws, ("text", "deep")), after=T)
        gunpy.close(conn)


def test_far_end_closes_a_tunnel_the_others_go_on(hypercorn_server: Peer) -> None:
    with H2ConnectProxy() as proxy, EchoOrigin() as echo:
        conn = h2_proxy_conn(proxy)
        t_raw = tunnel_to(
            conn, {"host": "127.0.0.1", "port": echo.port, "protocols": ["raw"]}, "raw"
        )
        t_h1 = tunnel_to(conn, {"host": "127.0.0.1", "port": hypercorn_server.port}, "http")
        echo.stop()  # the raw origin goes away: its tunnel ends
        assert_receive(gun_error(conn, t_raw, "closed"), after=T)
        r = gunpy.get(conn, "/still", None, {"tunnel": t_h1})
        assert body_of(conn, r) == b"HTTP/1.1 /still\n"
        gunpy.data(conn, t_raw, "nofin", b"late")
        err = assert_receive(gun_error(conn, t_raw, ANY), after=T)
        assert err[3][0] == "badstate"
        gunpy.close(conn)


def test_cancel_a_tunnel(hypercorn_server: Peer) -> None:
    with H2ConnectProxy() as proxy:
        conn = h2_proxy_conn(proxy)
        t = tunnel_to(conn, {"host": "127.0.0.1", "port": hypercorn_server.port}, "http")
        gunpy.cancel(conn, t)
        assert gunpy.stream_info(conn, t) == ("ok", None)
        r = gunpy.get(conn, "/x", None, {"tunnel": t})
        err = assert_receive(gun_error(conn, r, ANY), after=T)
        assert err[3][0] == "badstate"
        gunpy.close(conn)


def test_connection_loss_kills_the_streams_inside(hypercorn_server: Peer) -> None:
    proxy = H2ConnectProxy()
    try:
        conn = h2_proxy_conn(proxy)
        t = tunnel_to(conn, {"host": "127.0.0.1", "port": hypercorn_server.port}, "http")
        r = gunpy.get(conn, "/never", None, {"tunnel": t})
        assert body_of(conn, r) == b"HTTP/1.1 /never\n"
        r2 = gunpy.post(conn, "/pending", [], None, {"tunnel": t})  # body never ends
    finally:
        proxy.stop()
    down = assert_receive(gun_down(conn, "http2", ANY), after=T)
    assert t in down[4] and r2 in down[4]
    assert_receive(gun_error(conn, r2, ANY), after=T)
