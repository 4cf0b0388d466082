"""HTTP/1.1 against real servers: nginx, aiohttp, a byte-for-byte stdlib server, hypercorn.

Where test_http_rfc9112.py checks exact bytes against a scripted origin, these check
that gunpy and widely used servers understand each other: keep-alive, big bodies,
chunked in both directions, pipelining, trailers, close-delimited bodies.  The
Python peers run once per module (they are stateless); nginx once per session.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

import gunpy
from gunpy import ANY, TIMEOUT
from tests.peers import NginxPeer, Peer, start_aiohttp, start_hypercorn, start_raw_http

_opened: list[gunpy.Pid] = []


@pytest.fixture(autouse=True)
def _cleanup() -> Iterator[None]:
    _opened.clear()
    yield
    for conn in _opened:
        if conn.is_alive():
            gunpy.close(conn)
    _opened.clear()
    while gunpy.receive(after=0) is not TIMEOUT:
        pass


# Module-scoped versions of conftest's peer fixtures (same names, so they keep the
# ``peers`` marker): one server process for all the tests of this module.


@pytest.fixture(scope="module")
def aiohttp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    with start_aiohttp(tmp_path_factory.mktemp("aiohttp")) as peer:
        yield peer


@pytest.fixture(scope="module")
def raw_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    with start_raw_http(tmp_path_factory.mktemp("raw-http")) as peer:
        yield peer


@pytest.fixture(scope="module")
def hypercorn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    with start_hypercorn(tmp_path_factory.mktemp("hypercorn")) as peer:
        yield peer


def up(port: int, **opts: Any) -> gunpy.Pid:
    ok, conn = gunpy.open("127.0.0.1", port, {"retry": 0, **opts})
    assert ok == "ok", conn
    _opened.append(conn)
    assert gunpy.await_up(conn) == ("ok", "http")
    return conn


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def fetch(conn: gunpy.Pid, ref: Any, timeout: int = 5000) -> tuple[int, list[Any], bytes | None]:
    """(status, headers, body) of one stream; body None when the response is fin."""
    res = gunpy.await_(conn, ref, timeout)
    assert res[0] == "response", res
    _, fin, status, headers = res
    if fin == "fin":
        return status, headers, None
    body = gunpy.await_body(conn, ref, timeout)
    assert body[0] == "ok", body
    return status, headers, body[1]


def no_gun_down(conn: gunpy.Pid) -> bool:
    return gunpy.receive(("gun_down", conn, ANY, ANY, ANY), after=0) is TIMEOUT


# =========================================================================== nginx


def test_nginx_keepalive_three_gets_on_one_connection(nginx_server: NginxPeer) -> None:
    """RFC 9112 9.3 persistence: three GETs of the 100 B file on one connection."""
    conn = up(nginx_server.port)
    sock_port = gunpy.info(conn)["sock_port"]
    for _ in range(3):
        status, headers, body = fetch(conn, gunpy.get(conn, "/index.html"))
        assert status == 200
        assert header(headers, "content-length") == "100"
        assert header(headers, "connection") == "keep-alive"
        assert body == nginx_server.small_body
    assert gunpy.info(conn)["sock_port"] == sock_port  # still the same TCP connection
    assert no_gun_down(conn)


def test_nginx_1mib_body(nginx_server: NginxPeer) -> None:
    """A 1 MiB content-length body arrives complete, over several gun_data."""
    conn = up(nginx_server.port)
    ref = gunpy.get(conn, "/big.bin")
    res = gunpy.await_(conn, ref)
    assert res[:3] == ("response", "nofin", 200)
    assert header(res[3], "content-length") == str(nginx_server.big_size)
    chunks = []
    while True:
        m = gunpy.await_(conn, ref)
        assert m[0] == "data", m
        chunks.append(m[2])
        if m[1] == "fin":
            break
    body = b"".join(chunks)
    assert len(body) == nginx_server.big_size
    assert hashlib.sha256(body).hexdigest() == nginx_server.big_sha256
    assert len(chunks) > 1


def test_nginx_head_then_get(nginx_server: NginxPeer) -> None:
    """HEAD: gun_response fin despite content-length (RFC 9112 6.3 item 1); the
    connection goes on."""
    conn = up(nginx_server.port)
    status, headers, body = fetch(conn, gunpy.head(conn, "/big.bin"))
    assert (status, body) == (200, None)
    assert header(headers, "content-length") == str(nginx_server.big_size)
    status, _, body = fetch(conn, gunpy.get(conn, "/small.txt"))
    assert (status, body) == (200, nginx_server.small_body)


def test_nginx_chunked_route(nginx_server: NginxPeer) -> None:
    """RFC 9112 7.1: nginx's SSI route answers chunked."""
    conn = up(nginx_server.port)
    status, headers, body = fetch(conn, gunpy.get(conn, "/chunked/small.txt"))
    assert status == 200
    assert header(headers, "transfer-encoding") == "chunked"
    assert header(headers, "content-length") is None
    assert body == nginx_server.small_body


def test_nginx_204_is_fin(nginx_server: NginxPeer) -> None:
    conn = up(nginx_server.port)
    status, headers, body = fetch(conn, gunpy.get(conn, "/204"))
    assert (status, body) == (204, None)
    assert header(headers, "connection") == "keep-alive"


def test_nginx_301_with_location(nginx_server: NginxPeer) -> None:
    """A 301 with its location and body; following it on the same connection works."""
    conn = up(nginx_server.port)
    status, headers, body = fetch(conn, gunpy.get(conn, "/redirect"))
    assert status == 301
    location = header(headers, "location")
    assert location == f"http://127.0.0.1:{nginx_server.port}/index.html"
    assert body is not None and b"301 Moved Permanently" in body
    status, _, body = fetch(conn, gunpy.get(conn, location.split(str(nginx_server.port), 1)[1]))
    assert (status, body) == (200, nginx_server.small_body)


def test_nginx_pipelined_ten_gets(nginx_server: NginxPeer) -> None:
    """Gun 4.9 pipelining against nginx: ten requests written at once, answered in
    order (content-length and chunked mixed)."""
    conn = up(nginx_server.port)
    paths = ["/index.html", "/chunked/index.html"] * 5
    refs = [gunpy.get(conn, p) for p in paths]
    for path, ref in zip(paths, refs, strict=True):
        status, headers, body = fetch(conn, ref)
        assert status == 200, path
        assert body == nginx_server.small_body, path
        te = header(headers, "transfer-encoding")
        assert te == ("chunked" if path.startswith("/chunked") else None)
    assert no_gun_down(conn)


def test_nginx_post_1mib(nginx_server: NginxPeer) -> None:
    """A 1 MiB request body with content-length, read by nginx."""
    conn = up(nginx_server.port)
    status, _, body = fetch(conn, gunpy.post(conn, "/post", [], nginx_server.big_body))
    assert (status, body) == (200, b"ok\n")


# =========================================================================== aiohttp


def test_aiohttp_sees_guns_request_headers(aiohttp_server: Peer) -> None:
    """The request head as a real server parsed it (peers README): content-length: 0,
    host, then the user's headers, lower-case, in that order, nothing else."""
    conn = up(aiohttp_server.port)
    status, _, body = fetch(conn, gunpy.get(conn, "/headers", [("X-User", "1")]))
    assert status == 200 and body is not None
    assert json.loads(body) == [
        ["content-length", "0"],
        ["host", f"127.0.0.1:{aiohttp_server.port}"],
        ["x-user", "1"],
    ]


def test_aiohttp_post_echo_1mib(aiohttp_server: Peer) -> None:
    body = bytes(range(256)) * 4096
    conn = up(aiohttp_server.port)
    status, headers, got = fetch(
        conn, gunpy.post(conn, "/echo", [("content-type", "application/octet-stream")], body)
    )
    assert status == 200
    assert header(headers, "content-length") == str(len(body))
    assert got == body


def test_aiohttp_post_echo_streamed_with_data(aiohttp_server: Peer) -> None:
    """post/3 + data/4 x4: a chunked request body (RFC 9112 7.1) that aiohttp reassembles."""
    parts = [b"first,", b"second," * 1000, b"", b"last"]
    conn = up(aiohttp_server.port)
    ref = gunpy.post(conn, "/echo", [("content-type", "text/plain")])
    for part in parts[:-1]:
        gunpy.data(conn, ref, "nofin", part)
    gunpy.data(conn, ref, "fin", parts[-1])
    status, _, got = fetch(conn, ref)
    assert (status, got) == (200, b"".join(parts))
    # and put/patch through the same route
    for fun in (gunpy.put, gunpy.patch):
        assert fetch(conn, fun(conn, "/echo", [], b"x" * 10))[::2] == (200, b"x" * 10)


@pytest.mark.parametrize("code", [200, 204, 404, 503])
def test_aiohttp_status(aiohttp_server: Peer, code: int) -> None:
    """aiohttp's empty replies: content-length 0 (or none for 204): gun_response fin."""
    conn = up(aiohttp_server.port)
    status, headers, body = fetch(conn, gunpy.get(conn, f"/status/{code}"))
    assert (status, body) == (code, None)
    assert header(headers, "content-length") == (None if code == 204 else "0")


def test_aiohttp_chunked_stream_with_flow_control(aiohttp_server: Peer) -> None:
    """flow 1 against a real streaming server (gun-reference 4.5): one gun_data, then
    silence until update_flow; the whole body arrives in the end."""
    conn = up(aiohttp_server.port)
    ref = gunpy.get(conn, "/stream?n=64&size=16384", [], {"flow": 1})
    res = gunpy.await_(conn, ref)
    assert res[:3] == ("response", "nofin", 200)
    assert header(res[3], "transfer-encoding") == "chunked"
    first = gunpy.await_(conn, ref)
    assert first[:2] == ("data", "nofin")
    assert gunpy.await_(conn, ref, 300) == ("error", "timeout")
    gunpy.update_flow(conn, ref, 10_000)
    body = gunpy.await_body(conn, ref)
    assert body[0] == "ok"
    assert first[2] + body[1] == b"x" * (64 * 16384)


# =========================================================================== raw_http (stdlib)


def test_raw_http_trailers(raw_http_server: Peer) -> None:
    """RFC 9112 7.1.2: chunked body + trailer section -> ``("ok", body, trailers)``."""
    conn = up(raw_http_server.port)
    ref = gunpy.get(conn, "/trailers")
    res = gunpy.await_(conn, ref)
    assert res == (
        "response",
        "nofin",
        200,
        [
            ("content-type", "text/plain"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-checksum, x-trailer-two"),
        ],
    )
    assert gunpy.await_body(conn, ref) == (
        "ok",
        b"hello world",
        [("x-checksum", "abc123"), ("x-trailer-two", "2")],
    )


def test_raw_http_chunk_extensions_are_ignored(raw_http_server: Peer) -> None:
    """RFC 9112 7.1.1: chunk extensions (quoted values included) are ignored."""
    conn = up(raw_http_server.port)
    status, _, body = fetch(conn, gunpy.get(conn, "/chunk-ext"))
    assert (status, body) == (200, b"hello world")
    status, _, body = fetch(conn, gunpy.get(conn, "/nothing-here"))  # keep-alive
    assert (status, body) == (404, b"not found\n")


def test_raw_http_close_delimited_body(raw_http_server: Peer) -> None:
    """RFC 9112 6.3 item 8: the body ends with the server's close; ``connection: close``
    makes that the expected end: gun_data fin, gun_down(normal) with no killed stream
    (gun-reference 7), and the process exits normal (retry 0)."""
    conn = up(raw_http_server.port)
    mref = gunpy.monitor(conn)
    ref = gunpy.get(conn, "/close-delimited")
    status, headers, body = fetch(conn, ref)
    assert (status, body) == (200, b"until the end\n")
    assert header(headers, "connection") == "close"
    assert gunpy.receive(("gun_down", conn, ANY, ANY, ANY), after=3000) == (
        "gun_down",
        conn,
        "http",
        "normal",
        [],
    )
    assert gunpy.receive(("DOWN", mref, ANY, ANY, ANY), after=3000)[4] == "normal"


# =========================================================================== hypercorn


def test_hypercorn_http11(hypercorn_server: Peer) -> None:
    """hypercorn (h11 underneath) over HTTP/1.1: GET, chunked GET, streamed POST echo."""
    conn = up(hypercorn_server.port)
    status, headers, body = fetch(conn, gunpy.get(conn, "/x"))
    assert (status, body) == (200, b"HTTP/1.1 /x\n")
    assert header(headers, "content-length") == "12"
    status, headers, body = fetch(conn, gunpy.get(conn, "/chunked"))
    assert (status, body) == (200, b"chunk 0\nchunk 1\nchunk 2\n")
    assert header(headers, "transfer-encoding") == "chunked"
    ref = gunpy.post(conn, "/echo", [])
    gunpy.data(conn, ref, "nofin", b"echo ")
    gunpy.data(conn, ref, "fin", b"me")
    assert fetch(conn, ref)[::2] == (200, b"echo me")
    assert no_gun_down(conn)
