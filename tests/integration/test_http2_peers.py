"""HTTP/2 against real servers: hypercorn (h2c and h2 over TLS) and nginx (h2 over TLS).

hypercorn serves tests/peers/asgi_echo.py (routes listed there) with prior
knowledge on cleartext (``protocols: ["http2"]``) and by ALPN over TLS; most tests
run on both (the ``h2`` fixture).  hypercorn 0.17+ sends
SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, so Websocket over HTTP/2 (RFC 8441) is tested
against it for real; the refusal when a server does not set it is tested against
the scripted server in test_http2.py.  nginx (Debian's nginx-light is built
``--with-http_v2_module``) serves static files over ``listen ... ssl http2``.
Each docstring names the RFC 9113 / RFC 8441 section or the Gun test it mirrors.
Nothing sleeps: every wait is on a message, with a timeout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

import gunpy
from gunpy import ANY, TIMEOUT
from tests.peers import NginxPeer, Peer, TLSFiles, start_hypercorn

pytestmark = pytest.mark.peers

MIB = 1 << 20

_opened: list[gunpy.Pid] = []


@pytest.fixture(autouse=True)
def _cleanup() -> Iterator[None]:
    """Close every connection a test opened and empty the test thread's mailbox."""
    _opened.clear()
    yield
    for conn in _opened:
        if conn.is_alive():
            gunpy.close(conn)
    _opened.clear()
    while gunpy.receive(after=0) is not TIMEOUT:
        pass


def _open(port: int, opts: dict[str, Any]) -> gunpy.Pid:
    ok, conn = gunpy.open("127.0.0.1", port, {"retry": 0, **opts})
    assert ok == "ok", conn
    _opened.append(conn)
    assert gunpy.await_up(conn) == ("ok", "http2")
    return conn


class H2:
    """How to reach one HTTP/2 server: ``open(**opts)`` gives a connection that is up."""

    def __init__(self, port: int, scheme: str, base: dict[str, Any]) -> None:
        self.port = port
        self.scheme = scheme
        self.base = base

    def open(self, **opts: Any) -> gunpy.Pid:
        http2_opts = {**self.base.get("http2_opts", {}), **opts.pop("http2_opts", {})}
        return _open(self.port, {**self.base, **opts, "http2_opts": http2_opts})


@pytest.fixture(scope="module")
def hypercorn_h2c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """One hypercorn (cleartext) for the module: starting one per test is most of
    the time these tests take (conftest's ``hypercorn_server`` is per test)."""
    with start_hypercorn(tmp_path_factory.mktemp("h2c"), name="hypercorn-h2c") as peer:
        yield peer


@pytest.fixture(scope="module")
def hypercorn_h2(tmp_path_factory: pytest.TempPathFactory, trustme_ca: TLSFiles) -> Iterator[Peer]:
    """One hypercorn over TLS (h2 or http/1.1 by ALPN) for the module."""
    with start_hypercorn(tmp_path_factory.mktemp("h2"), tls=trustme_ca, name="hypercorn-h2") as p:
        yield p


@pytest.fixture(params=["h2c", "h2"])
def h2(request: pytest.FixtureRequest, trustme_ca: TLSFiles) -> Iterator[H2]:
    """hypercorn with prior knowledge (h2c) or over TLS by ALPN (h2).  The test's
    connections are closed before the next test (hypercorn would keep them)."""
    if request.param == "h2c":
        peer: Peer = request.getfixturevalue("hypercorn_h2c")
        yield H2(peer.port, "http", {"protocols": ["http2"]})
    else:
        peer = request.getfixturevalue("hypercorn_h2")
        tls_opts = {"cacertfile": str(trustme_ca.ca_file)}
        yield H2(peer.port, "https", {"transport": "tls", "tls_opts": tls_opts})
    for conn in _opened:
        if conn.is_alive():
            gunpy.close(conn)


def response(conn: gunpy.Pid, ref: gunpy.Ref) -> tuple[str, int, dict[str, str]]:
    """``await_`` a response: (fin, status, headers as a dict)."""
    msg = gunpy.await_(conn, ref)
    assert msg[0] == "response", msg
    return msg[1], msg[2], dict(msg[3])


def settings_of(conn: gunpy.Pid) -> dict[str, Any]:
    """The server's SETTINGS (needs ``notify_settings_changed``)."""
    msg = gunpy.receive(("gun_notify", conn, "settings_changed", ANY), after=5000)
    assert msg is not TIMEOUT, "no settings_changed"
    settings: dict[str, Any] = msg[3]
    return settings


# =========================================================================== hypercorn: requests


def test_get(h2: H2) -> None:
    """RFC 9113 8.1: a GET; the response head, then its body (``await_``/``await_body``)."""
    conn = h2.open()
    ref = gunpy.get(conn, "/hello", [("accept", "text/plain")])
    fin, status, headers = response(conn, ref)
    assert (fin, status) == ("nofin", 200)
    assert headers["content-type"] == "text/plain" and headers["content-length"] == "14"
    assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/2 /hello\n")
    assert gunpy.info(conn)["protocol"] == "http2"


def test_head(h2: H2) -> None:
    """RFC 9110 9.3.2 over HTTP/2: a HEAD gets the GET's head and no body, and the
    request ends with its HEADERS frame."""
    conn = h2.open()
    ref = gunpy.head(conn, "/hello")
    fin, status, headers = response(conn, ref)
    assert status == 200 and headers["content-length"] == "14"
    if fin == "nofin":  # hypercorn ends the stream with an empty DATA frame
        assert gunpy.await_(conn, ref) == ("data", "fin", b"")
    assert gunpy.await_(conn, ref, 0) == ("error", "timeout")


def test_post_echo_1mib(h2: H2) -> None:
    """RFC 9113 6.9: a 1 MiB request body against hypercorn's 65535-byte windows goes
    out as its WINDOW_UPDATEs come; the 1 MiB answer fits gunpy's 8 MB windows."""
    conn = h2.open()
    body = bytes(range(256)) * (MIB // 256)
    ref = gunpy.post(conn, "/echo", [("content-type", "application/octet-stream")], body)
    fin, status, headers = response(conn, ref)
    assert (fin, status, headers["content-length"]) == ("nofin", 200, str(MIB))
    ok, got = gunpy.await_body(conn, ref)
    assert ok == "ok" and len(got) == MIB and got == body


def test_streamed_body_with_data(h2: H2) -> None:
    """gun-reference 1 (``headers`` then ``data/4``): a request body in pieces,
    small and large, ended by an empty ``fin``."""
    conn = h2.open()
    ref = gunpy.headers(conn, "POST", "/echo", [("content-type", "application/octet-stream")])
    parts = [b"first ", b"x" * 100000, b"", b"y" * 70000, b" last"]
    for part in parts:
        gunpy.data(conn, ref, "nofin", part)
    gunpy.data(conn, ref, "fin", b"")
    assert response(conn, ref)[:2] == ("nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"".join(parts))


def test_body_without_content_length(h2: H2) -> None:
    """RFC 9113 8.1: without content-length the body ends with END_STREAM (hypercorn
    writes the three ASGI body messages as it likes: one DATA frame or several)."""
    conn = h2.open()
    ref = gunpy.get(conn, "/chunked")
    fin, status, headers = response(conn, ref)
    assert (fin, status) == ("nofin", 200) and "content-length" not in headers
    assert gunpy.await_body(conn, ref) == ("ok", b"chunk 0\nchunk 1\nchunk 2\n")


def test_100_concurrent_streams(h2: H2) -> None:
    """RFC 9113 5.1.2: hypercorn allows 100 concurrent streams; 100 requests made at
    once all run on one connection and every answer finds its ref.  The 101st fails
    at once with ``too_many_streams`` (Gun 2.2), without waiting for a slot."""
    conn = h2.open(http2_opts={"notify_settings_changed": True})
    assert settings_of(conn)["max_concurrent_streams"] == 100
    refs = [gunpy.get(conn, f"/stream/{i}") for i in range(100)]
    extra = gunpy.get(conn, "/stream/extra")
    assert gunpy.await_(conn, extra) == (
        "error",
        ("stream_error", ("stream_error", "too_many_streams",
                          "Maximum concurrency limit has been reached.")),
    )  # fmt: skip
    for i, ref in enumerate(refs):
        assert response(conn, ref)[:2] == ("nofin", 200)
        assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/2 /stream/%d\n" % i)
    # The slots are free again.
    ref = gunpy.get(conn, "/again")
    assert response(conn, ref)[1] == 200
    assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/2 /again\n")


def test_100_concurrent_posts(h2: H2) -> None:
    """RFC 9113 5.1 and 6.9: 100 concurrent request bodies of 20 kB, each larger than
    a frame, share the connection window; each echo comes back whole."""
    conn = h2.open()
    bodies = [bytes([i]) * 20000 for i in range(100)]
    refs = [gunpy.post(conn, "/echo", [], b) for b in bodies]
    for ref, body in zip(refs, bodies, strict=True):
        assert response(conn, ref)[:2] == ("nofin", 200)
        assert gunpy.await_body(conn, ref) == ("ok", body)


def test_trailers(h2: H2) -> None:
    """RFC 9113 8.1 (trailers), RFC 9110 10.1.4: with ``te: trailers`` hypercorn sends
    trailers; ``await_body`` returns them with the body."""
    conn = h2.open()
    ref = gunpy.get(conn, "/trailers", [("te", "trailers")])
    fin, status, headers = response(conn, ref)
    assert (fin, status, headers["trailer"]) == ("nofin", 200, "x-checksum")
    assert gunpy.await_body(conn, ref) == (
        "ok", b"hello world\n", [("x-checksum", "abc123"), ("x-trailer-two", "2")]
    )  # fmt: skip


def test_trailers_message_by_message(h2: H2) -> None:
    """gun-reference 2: ``gun_trailers`` ends the response; the data before it is
    ``nofin``."""
    conn = h2.open()
    ref = gunpy.get(conn, "/trailers", [("te", "trailers")])
    assert response(conn, ref)[:2] == ("nofin", 200)
    assert gunpy.await_(conn, ref) == ("data", "nofin", b"hello world\n")
    assert gunpy.await_(conn, ref) == (
        "trailers", [("x-checksum", "abc123"), ("x-trailer-two", "2")]
    )  # fmt: skip


def test_request_headers_as_the_server_sees_them(h2: H2) -> None:
    """RFC 9113 8.2 and 8.3.1: header names go lower-case, ``host`` becomes
    ``:authority`` (hypercorn shows it back as ``host``), connection-specific
    headers are dropped, ``te: trailers`` is kept."""
    conn = h2.open()
    ref = gunpy.get(
        conn,
        "/headers",
        [("X-Mixed-Case", "v"), ("connection", "keep-alive"), ("te", "trailers")],
    )
    assert response(conn, ref)[:2] == ("nofin", 200)
    ok, body = gunpy.await_body(conn, ref)
    seen = json.loads(body)
    assert ["host", f"127.0.0.1:{h2.port}"] in seen
    assert ["x-mixed-case", "v"] in seen and ["te", "trailers"] in seen
    assert not [p for p in seen if p[0] == "connection"]


def test_cancel_then_reuse_the_connection(h2: H2) -> None:
    """RFC 9113 5.4.2 (gun-reference 4.10): ``cancel`` resets one stream only; the
    connection serves the next request."""
    conn = h2.open()
    ref = gunpy.get(conn, "/chunked")
    gunpy.cancel(conn, ref)
    again = gunpy.get(conn, "/after-cancel")
    assert response(conn, again)[1] == 200
    assert gunpy.await_body(conn, again) == ("ok", b"HTTP/2 /after-cancel\n")
    gunpy.flush(ref)
    assert gunpy.stream_info(conn, ref) == ("ok", None)


def test_server_push(h2: H2) -> None:
    """RFC 9113 8.4 (gun-reference 2, gun_push): hypercorn pushes ``/pushed.txt``;
    ``gun_push`` comes before the response, the pushed response under its new ref."""
    conn = h2.open()
    ref = gunpy.get(conn, "/push")
    push = gunpy.await_(conn, ref)
    assert push[0] == "push", push
    _, new_ref, method, uri, headers = push
    assert (method, uri) == ("GET", f"{h2.scheme}://127.0.0.1:{h2.port}/pushed.txt")
    assert ("accept", "text/plain") in headers
    assert response(conn, ref)[:2] == ("nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"pushed\n")
    assert response(conn, new_ref)[:2] == ("nofin", 200)
    assert gunpy.await_body(conn, new_ref) == ("ok", b"HTTP/2 /pushed.txt\n")


def test_ping(h2: H2) -> None:
    """ping_SUITE gun_ping: a PING to hypercorn is acked, ``await_`` on the ping's ref
    returns ``("notify", "ping_ack", ref)``; requests go on meanwhile."""
    conn = h2.open()
    ping = gunpy.ping(conn)
    ref = gunpy.get(conn, "/p")
    assert gunpy.await_(conn, ping) == ("notify", "ping_ack", ping)
    assert response(conn, ref)[1] == 200
    assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/2 /p\n")


def test_flow_control(h2: H2) -> None:
    """flow_SUITE flow_http2 against a real server (RFC 9113 6.9, gun-reference 4.5):
    with ``flow: 1`` and a stream window of 65535, the first DATA frame spends the
    budget, so no stream WINDOW_UPDATE goes out: hypercorn stops after exactly 65535
    bytes (every frame that fits the window is still delivered, and costs one, so the
    budget goes below zero as in Gun).  An ``update_flow`` that brings the budget back
    above zero sends one WINDOW_UPDATE of size + margin (cowlib's ensure_window:
    131070) and exactly that much more comes.  No message ever crosses those
    limits, and the body arrives whole."""
    conn = h2.open(http2_opts={"initial_stream_window_size": 65535})
    body = bytes(range(256)) * (MIB // 256)
    ref = gunpy.post(conn, "/echo", [], body, {"flow": 1})
    assert response(conn, ref)[:2] == ("nofin", 200)
    got = b""
    budget = 1  # gunpy's count: one per gun_data
    limit = 65535
    rounds = 0
    while True:
        msg = gunpy.await_(conn, ref)
        assert msg[0] == "data", (msg, len(got), limit)
        got += msg[2]
        budget -= 1
        assert len(got) <= limit, (len(got), limit)  # never past the granted window
        if msg[1] == "fin":
            break
        if len(got) == limit:  # the window is spent, and withheld: nothing is queued
            assert budget <= 0
            assert gunpy.await_(conn, ref, 0) == ("error", "timeout")
            if budget < 0:
                gunpy.update_flow(conn, ref, -budget)  # back to 0: still paused
                budget = 0
            gunpy.update_flow(conn, ref, 1)
            budget = 1
            limit += 131070
            rounds += 1
    assert got == body
    assert rounds == (MIB - 65535) // 131070 + 1  # 8


# =========================================================================== hypercorn: Websocket


def test_server_enables_the_connect_protocol(h2: H2) -> None:
    """RFC 8441 3: hypercorn's SETTINGS carry SETTINGS_ENABLE_CONNECT_PROTOCOL = 1
    (seen through ``notify_settings_changed``, as ws_SUITE's http2 group waits for)."""
    conn = h2.open(http2_opts={"notify_settings_changed": True})
    assert settings_of(conn)["enable_connect_protocol"] is True


def test_ws_upgrade_and_echo(h2: H2) -> None:
    """RFC 8441 4-5 (ws_SUITE http2 group): ``ws_upgrade`` on an HTTP/2 connection
    is an extended CONNECT; hypercorn accepts; text and binary frames echo; a close
    ends the stream, not the connection."""
    conn = h2.open()
    ref = gunpy.ws_upgrade(conn, "/ws")
    msg = gunpy.await_(conn, ref)
    assert msg[:2] == ("upgrade", ["websocket"]), msg
    gunpy.ws_send(conn, ref, [("text", "hello"), ("binary", b"\x00\x01\x02" * 1000)])
    assert gunpy.await_(conn, ref) == ("ws", ("text", "hello"))
    assert gunpy.await_(conn, ref) == ("ws", ("binary", b"\x00\x01\x02" * 1000))
    gunpy.ws_send(conn, ref, ("close", 1000, "bye"))
    assert gunpy.await_(conn, ref) == ("ws", ("close", 1000, "bye"))  # hypercorn echoes the reason
    # The connection is still HTTP/2 and still up.
    get = gunpy.get(conn, "/after-ws")
    assert response(conn, get)[1] == 200
    assert gunpy.await_body(conn, get) == ("ok", b"HTTP/2 /after-ws\n")
    assert gunpy.receive(("gun_down", conn, ANY, ANY, ANY), after=0) is TIMEOUT


def test_several_ws_streams_beside_http_streams(h2: H2) -> None:
    """ws_SUITE http2 (gun-reference 4.7): several Websocket streams and HTTP
    streams share one connection; each stream gets its own echoes; closing one
    Websocket leaves the others running."""
    conn = h2.open()
    wss = [gunpy.ws_upgrade(conn, f"/ws/{i}") for i in range(3)]
    gets = [gunpy.get(conn, f"/h/{i}") for i in range(3)]
    for ws in wss:
        assert gunpy.await_(conn, ws)[:2] == ("upgrade", ["websocket"])
    for i, ws in enumerate(wss):
        gunpy.ws_send(conn, ws, [("text", f"to {i}"), ("binary", bytes([i]) * 50000)])
    for i, get in enumerate(gets):
        assert response(conn, get)[1] == 200
        assert gunpy.await_body(conn, get) == ("ok", b"HTTP/2 /h/%d\n" % i)
    for i, ws in enumerate(wss):
        assert gunpy.await_(conn, ws) == ("ws", ("text", f"to {i}"))
        assert gunpy.await_(conn, ws) == ("ws", ("binary", bytes([i]) * 50000))
    gunpy.ws_send(conn, wss[0], ("close", 1000, "one"))
    assert gunpy.await_(conn, wss[0]) == ("ws", ("close", 1000, "one"))
    for i, ws in enumerate(wss[1:], start=1):
        gunpy.ws_send(conn, ws, ("text", f"again {i}"))
        assert gunpy.await_(conn, ws) == ("ws", ("text", f"again {i}"))
    post = gunpy.post(conn, "/echo", [], b"still http")
    assert response(conn, post)[1] == 200
    assert gunpy.await_body(conn, post) == ("ok", b"still http")


def test_shutdown_with_websocket_streams(h2: H2) -> None:
    """shutdown_SUITE (HTTP/2 + Websocket): ``shutdown`` sends GOAWAY NO_ERROR, then a
    close 1001 on each Websocket stream (a gunpy difference, see
    gunpy/protocols/http2.py).  hypercorn closes the whole connection as soon as it
    reads a GOAWAY (its h2 protocol answers ConnectionTerminated with Closed), so
    the streams are told ``closed``, or see hypercorn's close echo if it got there
    first; either way the connection exits with reason ``shutdown``, no gun_down.
    (Streams finishing after our GOAWAY: the scripted tests and nginx below.)"""
    conn = h2.open()
    mref = gunpy.monitor(conn)
    wss = [gunpy.ws_upgrade(conn, f"/ws/{i}") for i in range(2)]
    for ws in wss:
        assert gunpy.await_(conn, ws, mref)[:2] == ("upgrade", ["websocket"])
    gunpy.shutdown(conn)
    for ws in wss:
        msg = gunpy.await_(conn, ws, mref)
        assert msg == ("error", ("stream_error", "closed")) or (
            msg[0] == "ws" and msg[1][:2] == ("close", 1001)
        ), msg
    down = gunpy.receive(("DOWN", mref, "process", conn, ANY), after=5000)
    assert down is not TIMEOUT and down[4] == "shutdown"
    assert gunpy.receive(("gun_down", conn, ANY, ANY, ANY), after=0) is TIMEOUT


# =========================================================================== nginx


def _nginx(nginx: NginxPeer, trustme_ca: TLSFiles, **opts: Any) -> gunpy.Pid:
    """The TLS default protocols, ``["http2", "http"]``: ALPN picks h2."""
    return _open(
        nginx.port,
        {"transport": "tls", "tls_opts": {"cacertfile": str(trustme_ca.ca_file)}, **opts},
    )


def test_nginx_get_small_and_big(nginx_h2_server: NginxPeer, trustme_ca: TLSFiles) -> None:
    """Gun 3.1 + RFC 9113: nginx over TLS, h2 by ALPN: 100 B and 1 MiB static files."""
    conn = _nginx(nginx_h2_server, trustme_ca)
    small = gunpy.get(conn, "/small.txt")
    big = gunpy.get(conn, "/big.bin")
    fin, status, headers = response(conn, small)
    assert (fin, status, headers["content-length"]) == ("nofin", 200, "100")
    assert headers["content-type"] == "text/plain"
    assert gunpy.await_body(conn, small) == ("ok", nginx_h2_server.small_body)
    fin, status, headers = response(conn, big)
    assert (fin, status, headers["content-length"]) == ("nofin", 200, str(MIB))
    ok, body = gunpy.await_body(conn, big)
    assert ok == "ok" and hashlib.sha256(body).hexdigest() == nginx_h2_server.big_sha256


def test_nginx_head_204_404(nginx_h2_server: NginxPeer, trustme_ca: TLSFiles) -> None:
    """RFC 9113 8.1: bodyless answers end with their HEADERS frame (``fin``)."""
    conn = _nginx(nginx_h2_server, trustme_ca)
    head = gunpy.head(conn, "/big.bin")
    no_content = gunpy.get(conn, "/204")
    fin, status, headers = response(conn, head)
    assert (fin, status, headers["content-length"]) == ("fin", 200, str(MIB))
    assert response(conn, no_content)[:2] == ("fin", 204)
    missing = gunpy.get(conn, "/404")
    assert response(conn, missing)[:2] == ("nofin", 404)
    ok, _ = gunpy.await_body(conn, missing)
    assert ok == "ok"


def test_nginx_concurrent_streams(nginx_h2_server: NginxPeer, trustme_ca: TLSFiles) -> None:
    """RFC 9113 5.1.2: 100 concurrent GETs of both files on one connection."""
    conn = _nginx(nginx_h2_server, trustme_ca)
    refs = [gunpy.get(conn, "/small.txt" if i % 10 else "/big.bin") for i in range(100)]
    for i, ref in enumerate(refs):
        assert response(conn, ref)[1] == 200
        ok, body = gunpy.await_body(conn, ref)
        if i % 10:
            assert body == nginx_h2_server.small_body
        else:
            assert hashlib.sha256(body).hexdigest() == nginx_h2_server.big_sha256


def test_nginx_post_1mib(nginx_h2_server: NginxPeer, trustme_ca: TLSFiles) -> None:
    """RFC 9113 6.9: a 1 MiB request body to nginx (which reads and drops it)."""
    conn = _nginx(nginx_h2_server, trustme_ca)
    ref = gunpy.post(conn, "/post", [("content-type", "application/octet-stream")], bytes(MIB))
    assert response(conn, ref)[:2] == ("nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"ok\n")


def test_nginx_ping_and_shutdown(nginx_h2_server: NginxPeer, trustme_ca: TLSFiles) -> None:
    """ping_SUITE against nginx; then ``shutdown`` (GOAWAY NO_ERROR) ends the
    connection with reason ``shutdown`` once the running stream is done."""
    conn = _nginx(nginx_h2_server, trustme_ca)
    ping = gunpy.ping(conn)
    assert gunpy.await_(conn, ping) == ("notify", "ping_ack", ping)
    mref = gunpy.monitor(conn)
    ref = gunpy.get(conn, "/big.bin")
    gunpy.shutdown(conn)
    assert gunpy.await_(conn, ref, mref)[:2] == ("response", "nofin")
    ok, body = gunpy.await_body(conn, ref, mref)
    assert ok == "ok" and len(body) == MIB
    down = gunpy.receive(("DOWN", mref, "process", conn, ANY), after=5000)
    assert down is not TIMEOUT and down[4] == "shutdown"
