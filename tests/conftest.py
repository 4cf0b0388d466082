"""Fixtures that start real peers on 127.0.0.1 (see tests/peers/__init__.py).

Every peer fixture yields a running peer (a :class:`tests.peers.Peer`, or an
object with ``.port``, ``.host``, ``.url(path)``) and stops it by its own handle
afterwards; logs go under pytest's tmp dir.  A missing peer program skips the
test, or fails it when ``GUNPY_REQUIRE_PEERS=1`` (``make test`` sets it under CI).

==========================  =======  ==================================================
fixture                     scope    what
==========================  =======  ==================================================
``ws_echo_server``          func     websockets echo, permessage-deflate on, any path
``ws_echo_server_no_deflate``  func  the same without permessage-deflate
``wss_echo_server``         func     the same over TLS (trust ``trustme_ca.ca_file``)
``aiohttp_server``          func     aiohttp: /, /chunked, /stream, /status/N, /redirect,
                                     /headers, /echo (any method), /ws (echo, deflate)
``hypercorn_server``        func     hypercorn (asgi_echo.py): HTTP/1.1 + h2c + WS echo
``hypercorn_tls_server``    func     the same over TLS: h2 / http/1.1 by ALPN
``raw_http_server``         func     byte-for-byte HTTP/1.1: /trailers, /chunk-ext,
                                     /close-delimited
``nginx_server``            session  nginx (:class:`tests.peers.NginxPeer`): /small.txt
                                     and /index.html (100 B), /big.bin (1 MiB),
                                     /chunked/<file>, /gz/<file>, /204, /404, /redirect
                                     (301), /post, /ws (proxy to a websockets echo)
``nginx_h2_server``         session  nginx over TLS with ``http2`` (ALPN h2, else
                                     http/1.1; trust ``trustme_ca.ca_file``): /small.txt,
                                     /index.html (100 B), /big.bin (1 MiB), /204, /404,
                                     /post
``tinyproxy_server``        func     tinyproxy: HTTP forward proxy + CONNECT
``dante_server``            func     dante SOCKS5, no authentication
``trustme_ca``              session  :class:`tests.peers.TLSFiles`: CA + server cert for
                                     127.0.0.1/localhost/::1, ``server_context()``,
                                     ``client_context()``, ``ca_file``...
==========================  =======  ==================================================

Tests that use a peer fixture get the ``peers`` marker automatically
(``pytest -m 'not peers'`` runs the rest).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import (
    NginxPeer,
    Peer,
    TLSFiles,
    make_tls,
    start_aiohttp,
    start_dante,
    start_hypercorn,
    start_nginx,
    start_nginx_h2,
    start_raw_http,
    start_tinyproxy,
    start_ws_echo,
)

PEER_FIXTURES = frozenset(
    {
        "ws_echo_server",
        "ws_echo_server_no_deflate",
        "wss_echo_server",
        "aiohttp_server",
        "hypercorn_server",
        "hypercorn_tls_server",
        "raw_http_server",
        "nginx_server",
        "nginx_h2_server",
        "tinyproxy_server",
        "dante_server",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PEER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peers)


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="session")
def trustme_ca(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throw-away CA and a server certificate for 127.0.0.1, localhost, ::1."""
    return make_tls(tmp_path_factory.mktemp("tls"))


# --------------------------------------------------------------------------- Python peers


@pytest.fixture
def ws_echo_server(tmp_path: Path) -> Iterator[Peer]:
    """websockets echo server, permessage-deflate on: ``ws_echo_server.ws_url('/any')``."""
    with start_ws_echo(tmp_path) as peer:
        yield peer


@pytest.fixture
def ws_echo_server_no_deflate(tmp_path: Path) -> Iterator[Peer]:
    """websockets echo server that refuses permessage-deflate."""
    with start_ws_echo(tmp_path, deflate=False, name="ws-echo-no-deflate") as peer:
        yield peer


@pytest.fixture
def wss_echo_server(tmp_path: Path, trustme_ca: TLSFiles) -> Iterator[Peer]:
    """websockets echo server over TLS (certificate from ``trustme_ca``)."""
    with start_ws_echo(tmp_path, tls=trustme_ca, name="wss-echo") as peer:
        yield peer


@pytest.fixture
def aiohttp_server(tmp_path: Path) -> Iterator[Peer]:
    """aiohttp HTTP/1.1 server + ``/ws`` echo (routes in tests/peers/echo_aiohttp.py)."""
    with start_aiohttp(tmp_path) as peer:
        yield peer


@pytest.fixture
def hypercorn_server(tmp_path: Path) -> Iterator[Peer]:
    """hypercorn over cleartext: HTTP/1.1, h2c (prior knowledge or Upgrade), WebSocket."""
    with start_hypercorn(tmp_path) as peer:
        yield peer


@pytest.fixture
def hypercorn_tls_server(tmp_path: Path, trustme_ca: TLSFiles) -> Iterator[Peer]:
    """hypercorn over TLS: h2 or http/1.1 by ALPN (trust ``trustme_ca.ca_file``)."""
    with start_hypercorn(tmp_path, tls=trustme_ca, name="hypercorn-tls") as peer:
        yield peer


@pytest.fixture
def raw_http_server(tmp_path: Path) -> Iterator[Peer]:
    """Hand-written HTTP/1.1 replies: trailers, chunk extensions, close-delimited body."""
    with start_raw_http(tmp_path) as peer:
        yield peer


# --------------------------------------------------------------------------- nginx


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxPeer]:
    """nginx (one for the whole session) with its own websockets echo behind ``/ws``."""
    base = tmp_path_factory.mktemp("nginx")
    with start_ws_echo(base, name="nginx-ws-backend") as backend:
        nginx = start_nginx(base / "prefix", backend.port)
        try:
            yield nginx
        finally:
            nginx.stop()


@pytest.fixture(scope="session")
def nginx_h2_server(
    tmp_path_factory: pytest.TempPathFactory, trustme_ca: TLSFiles
) -> Iterator[NginxPeer]:
    """nginx (one for the whole session) serving its static files over HTTP/2 and TLS."""
    nginx = start_nginx_h2(tmp_path_factory.mktemp("nginx-h2") / "prefix", trustme_ca)
    try:
        yield nginx
    finally:
        nginx.stop()


# --------------------------------------------------------------------------- proxies


@pytest.fixture
def tinyproxy_server(tmp_path: Path) -> Iterator[Peer]:
    """tinyproxy: ``GET http://...`` forward proxy and ``CONNECT host:port`` to any port."""
    with start_tinyproxy(tmp_path / "tinyproxy") as peer:
        yield peer


@pytest.fixture
def dante_server(tmp_path: Path) -> Iterator[Peer]:
    """dante SOCKS5 proxy without authentication."""
    with start_dante(tmp_path / "dante") as peer:
        yield peer
