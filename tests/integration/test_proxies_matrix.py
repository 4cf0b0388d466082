"""The proxy matrix (Gun's tunnel_SUITE, in smaller): every proxy kind in front of
every origin kind, then two proxies in a row.

Proxies: ``http`` (tinyproxy, CONNECT), ``https`` (CONNECT over TLS, the asyncio
proxy of ``proxy_servers.py``), ``socks5`` (dante), ``socks5tls`` (SOCKS5 over
TLS).  Origins: ``http`` (nginx), ``https`` (hypercorn over TLS, HTTP/1.1 by
ALPN), ``h2`` (hypercorn over TLS, HTTP/2 by ALPN), ``h2c`` (hypercorn, HTTP/2 by
prior knowledge), ``raw`` and ``rawtls`` (an echo server).  Each case goes through,
sends one request (or echoes raw bytes) and checks ``info``'s intermediaries and
origin, as tunnel_SUITE's ``do_info`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import gunpy
from gunpy import ANY
from gunpy.testing import assert_receive, gun_up
from tests.integration.proxy_servers import (
    ConnectProxy,
    EchoOrigin,
    H2ConnectProxy,
    Socks5Proxy,
)
from tests.peers import NginxPeer, TLSFiles, start_dante, start_hypercorn, start_tinyproxy

pytestmark = pytest.mark.peers

T = 5000
PROXIES = ["http", "https", "h2c", "h2", "socks5", "socks5tls"]
ORIGINS = ["http", "https", "h2", "h2c", "raw", "rawtls"]


@dataclass
class Endpoints:
    ports: dict[str, int]
    tls_opts: dict[str, Any]
    nginx: NginxPeer


@pytest.fixture(scope="module")
def endpoints(
    tmp_path_factory: pytest.TempPathFactory, trustme_ca: TLSFiles, nginx_server: NginxPeer
) -> Iterator[Endpoints]:
    d: Path = tmp_path_factory.mktemp("proxy-matrix")
    ctx = trustme_ca.server_context
    with (
        start_tinyproxy(d / "tinyproxy") as tiny,
        start_dante(d / "dante") as dante,
        ConnectProxy(tls=ctx()) as https_proxy,
        Socks5Proxy(tls=ctx()) as socks_tls,
        H2ConnectProxy() as h2c_proxy,
        H2ConnectProxy(tls=ctx()) as h2_proxy,
        start_hypercorn(d, name="hc") as hc,
        start_hypercorn(d, tls=trustme_ca, name="hc-tls") as hc_tls,
        EchoOrigin() as raw,
        EchoOrigin(tls=ctx()) as rawtls,
    ):
        yield Endpoints(
            ports={
                "proxy:http": tiny.port,
                "proxy:https": https_proxy.port,
                "proxy:socks5": dante.port,
                "proxy:socks5tls": socks_tls.port,
                "proxy:h2c": h2c_proxy.port,
                "proxy:h2": h2_proxy.port,
                "http": nginx_server.port,
                "https": hc_tls.port,
                "h2": hc_tls.port,
                "h2c": hc.port,
                "raw": raw.port,
                "rawtls": rawtls.port,
            },
            tls_opts={"cacertfile": str(trustme_ca.ca_file)},
            nginx=nginx_server,
        )


def origin_spec(kind: str, ep: Endpoints) -> tuple[dict[str, Any], str]:
    """Destination keys for an origin, and the protocol expected inside."""
    host = "localhost"
    spec: dict[str, Any] = {"host": host, "port": ep.ports[kind]}
    proto = {
        "http": "http",
        "https": "http",
        "h2": "http2",
        "h2c": "http2",
        "raw": "raw",
        "rawtls": "raw",
    }[kind]
    if kind in ("https", "h2", "rawtls"):
        spec["transport"] = "tls"
        spec["tls_opts"] = ep.tls_opts
    spec["protocols"] = [proto]
    return spec, proto


def proxy_transport(kind: str) -> str:
    return "tls" if kind in ("https", "socks5tls", "h2") else "tcp"


def proxy_protocol(kind: str) -> str:
    return "socks" if kind.startswith("socks") else "http2" if kind.startswith("h2") else "http"


def intermediary(kind: str, port: int, host: str) -> dict[str, Any]:
    return {
        "type": "socks5" if kind.startswith("socks") else "connect",
        "host": host,
        "port": port,
        "transport": proxy_transport(kind),
        "protocol": proxy_protocol(kind),
    }


def hop(kind: str, port: int, inner: dict[str, Any], ep: Endpoints) -> dict[str, Any]:
    """A destination for reaching proxy ``kind`` whose own next hop is ``inner``."""
    d: dict[str, Any] = {"host": "localhost", "port": port}
    if proxy_transport(kind) == "tls":
        d["transport"] = "tls"
        d["tls_opts"] = ep.tls_opts
    if kind.startswith("socks"):
        d["protocols"] = [("socks", inner)]
    else:
        d["protocols"] = [proxy_protocol(kind)]
    return d


def check_origin(conn: Any, kind: str, tunnel: Any, ep: Endpoints) -> None:
    if kind in ("raw", "rawtls"):
        gunpy.data(conn, tunnel, "nofin", b"Hello world!")
        got = b""
        while len(got) < 12:
            msg = assert_receive(("gun_data", conn, tunnel, "nofin", ANY), after=T)
            got += msg[4]
        assert got == b"Hello world!"
        return
    path = "/small.txt" if kind == "http" else "/proxied"
    ref = gunpy.get(conn, path, None, {"tunnel": tunnel} if tunnel is not None else None)
    res = gunpy.await_(conn, ref, T)
    assert res[:3] == ("response", "nofin", 200), res
    body = gunpy.await_body(conn, ref, T)
    if kind == "http":
        assert body == ("ok", ep.nginx.small_body)
    else:
        version = "2" if kind in ("h2", "h2c") else "1.1"
        assert body == ("ok", f"HTTP/{version} /proxied\n".encode())


def open_first(kind: str, port: int, inner: dict[str, Any] | None, ep: Endpoints) -> Any:
    opts: dict[str, Any] = {"retry": 0}
    if proxy_transport(kind) == "tls":
        opts["transport"] = "tls"
        opts["tls_opts"] = ep.tls_opts
    if kind.startswith("socks"):
        assert inner is not None
        opts["protocols"] = [("socks", inner)]
    else:
        opts["protocols"] = [proxy_protocol(kind)]
    ok, conn = gunpy.open("127.0.0.1", port, opts)
    assert ok == "ok"
    assert_receive(gun_up(conn, proxy_protocol(kind)), after=T)
    return conn


def through(conn: Any, kind: str, dest: dict[str, Any], proto: str, tunnel: Any) -> Any:
    """Go through proxy ``kind`` (already reached) to ``dest``; the new tunnel ref."""
    if kind.startswith("socks"):
        # The SOCKS handshake runs by itself: its tunnel comes up on the same ref.
        assert_receive(("gun_tunnel_up", conn, tunnel, proto), after=T)
        return tunnel
    ref = gunpy.connect(conn, dest, None, {"tunnel": tunnel} if tunnel is not None else None)
    assert_receive(("gun_response", conn, ref, "fin", 200, ANY), after=T)
    assert_receive(("gun_tunnel_up", conn, ref, proto), after=T)
    return ref


@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize("proxy", PROXIES)
def test_one_proxy(proxy: str, origin: str, endpoints: Endpoints) -> None:
    ep = endpoints
    dest, proto = origin_spec(origin, ep)
    pport = ep.ports[f"proxy:{proxy}"]
    conn = open_first(proxy, pport, dest, ep)
    tunnel = through(conn, proxy, dest, proto, None)
    check_origin(conn, origin, tunnel, ep)
    info = gunpy.info(conn)
    if proxy.startswith("h2"):
        # tunnel_SUITE do_info: no connection-wide intermediaries for HTTP/2; the
        # connection's origin is the proxy, the tunnel belongs to the stream.
        assert info["intermediaries"] == []
        assert (info["origin_port"], info["protocol"]) == (pport, "http2")
        ok, si = gunpy.stream_info(conn, tunnel)
        assert si["tunnel"]["origin_port"] == ep.ports[origin]
        assert si["tunnel"]["protocol"] == proto
    else:
        assert info["intermediaries"] == [intermediary(proxy, pport, "127.0.0.1")]
        assert (info["origin_host"], info["origin_port"], info["protocol"]) == (
            "localhost",
            ep.ports[origin],
            proto,
        )
        assert info["transport"] == dest.get("transport", "tcp")
    gunpy.close(conn)


@pytest.mark.parametrize("origin", ["http", "h2", "rawtls"])
@pytest.mark.parametrize("proxy2", PROXIES)
@pytest.mark.parametrize("proxy1", PROXIES)
def test_two_proxies(proxy1: str, proxy2: str, origin: str, endpoints: Endpoints) -> None:
    """tunnel_SUITE: proxy1 -> proxy2 -> origin; refs, stream_info and info."""
    if proxy1 == proxy2 and proxy1 in ("http", "socks5"):
        pytest.skip("tinyproxy and dante refuse to proxy to themselves (loop prevention)")
    ep = endpoints
    dest, proto = origin_spec(origin, ep)
    p1, p2 = ep.ports[f"proxy:{proxy1}"], ep.ports[f"proxy:{proxy2}"]
    second = hop(proxy2, p2, dest, ep)
    conn = open_first(proxy1, p1, second, ep)
    t1 = through(conn, proxy1, second, proxy_protocol(proxy2), None)
    t2 = through(conn, proxy2, dest, proto, t1)
    if not proxy1.startswith("socks") and not proxy2.startswith("socks"):
        assert type(t2) is tuple and t2[0] is t1  # CONNECT through CONNECT
    check_origin(conn, origin, t2, ep)
    info = gunpy.info(conn)
    i1, i2 = intermediary(proxy1, p1, "127.0.0.1"), intermediary(proxy2, p2, "localhost")
    # tunnel_SUITE do_info: the connection-wide view stops at the first HTTP/2 hop.
    if proxy1.startswith("h2"):
        assert info["intermediaries"] == []
        assert (info["origin_port"], info["protocol"]) == (p1, "http2")
    elif proxy2.startswith("h2"):
        assert info["intermediaries"] == [i1]
        assert (info["origin_port"], info["protocol"]) == (p2, "http2")
    else:
        assert info["intermediaries"] == [i1, i2]
        assert (info["origin_port"], info["protocol"]) == (ep.ports[origin], proto)
    if not proxy2.startswith("socks"):
        # The second CONNECT's stream_info: the first proxy in front, the origin behind.
        ok, si = gunpy.stream_info(conn, t2)
        assert ok == "ok" and si["tunnel"]["origin_port"] == ep.ports[origin], si
        assert si["intermediaries"] == [i1], si
    gunpy.close(conn)
