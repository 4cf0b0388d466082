"""gunpy.testing.EchoServer, the ``gun_http_echo_server``/``gun_ws_echo_server``
fixtures, and ``tls_pair``/``make_tls_pair``, against gunpy."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

import gunpy
from gunpy import ANY
from gunpy.testing import (
    EchoServer,
    GunMailbox,
    TLSPair,
    assert_receive,
    down,
    gun_data,
    gun_down,
    gun_response,
    gun_trailers,
    gun_up,
    gun_upgrade,
    gun_ws,
    has_headers,
    make_tls_pair,
    refute_receive,
)


@pytest.fixture(autouse=True)
def _fresh_mailbox(gun_mailbox: GunMailbox) -> Iterator[None]:
    yield


def body_of(conn: gunpy.Pid, ref: gunpy.Ref) -> bytes:
    ok, body = gunpy.await_body(conn, ref)
    assert ok == "ok"
    return bytes(body)


# --------------------------------------------------------------------------- HTTP


def test_hello_and_keepalive(gun_http_echo_server: EchoServer) -> None:
    conn = gun_http_echo_server.open()
    assert_receive(gun_up(conn, "http"))
    for _ in range(3):  # one connection, several requests
        ref = gunpy.get(conn, "/hello")
        assert_receive(
            gun_response(conn, ref, "nofin", 200, has_headers({"content-type": "text/plain"}))
        )
        assert_receive(gun_data(conn, ref, "fin", b"Hello world!\n"))
    assert gun_http_echo_server.requests == [("GET", "/hello")] * 3
    assert gun_http_echo_server.url("/x") == f"http://127.0.0.1:{gun_http_echo_server.port}/x"


def test_echo_any_method(gun_http_echo_server: EchoServer) -> None:
    conn = gun_http_echo_server.open()
    ref = gunpy.put(conn, "/things/1?a=b", [("content-type", "application/json")], b'{"a": 1}')
    assert_receive(
        gun_response(
            conn, ref, "nofin", 200,
            has_headers({"content-type": "application/json", "x-echo-method": "PUT",
                         "x-echo-target": "/things/1?a=b"}),
        )
    )  # fmt: skip
    assert body_of(conn, ref) == b'{"a": 1}'
    ref = gunpy.delete(conn, "/things/1")
    assert_receive(gun_response(conn, ref, "fin", 200, has_headers({"x-echo-method": "DELETE"})))
    ref = gunpy.head(conn, "/hello")
    assert_receive(gun_response(conn, ref, "fin", 200, has_headers({"content-length": "13"})))
    ref = gunpy.headers(conn, "POST", "/stream", [("content-type", "text/plain")])
    gunpy.data(conn, ref, "nofin", b"chunked ")
    gunpy.data(conn, ref, "fin", b"body")
    assert_receive(gun_response(conn, ref, "nofin", 200))
    assert body_of(conn, ref) == b"chunked body"
    assert_receive(gun_up(conn))


def test_status_headers_chunked_trailers_close(gun_http_echo_server: EchoServer) -> None:
    conn = gun_http_echo_server.open()
    assert_receive(gun_up(conn))
    ref = gunpy.get(conn, "/status/404")
    assert_receive(gun_response(conn, ref, "fin", 404))
    ref = gunpy.get(conn, "/status/204")
    assert_receive(gun_response(conn, ref, "fin", 204))
    ref = gunpy.get(conn, "/headers", [("x-custom", "v")])
    assert_receive(gun_response(conn, ref, "nofin", 200))
    assert ["x-custom", "v"] in json.loads(body_of(conn, ref))
    ref = gunpy.get(conn, "/chunked")
    assert_receive(
        gun_response(conn, ref, "nofin", 200, has_headers({"transfer-encoding": "chunked"}))
    )
    assert body_of(conn, ref) == b"chunk 1\nchunk 2\nchunk 3\n"
    ref = gunpy.get(conn, "/trailers", [("te", "trailers")])
    assert_receive(gun_response(conn, ref, "nofin", 200))
    assert_receive(gun_data(conn, ref, "nofin", b"Hello world!\n"))
    assert_receive(gun_trailers(conn, ref, [("x-checksum", "6f2e1d")]))
    ref = gunpy.get(conn, "/close")
    assert_receive(gun_response(conn, ref, "nofin", 200, has_headers(connection="close")))
    assert_receive(gun_data(conn, ref, "fin", b"bye\n"))
    assert_receive(gun_down(conn, "http", "normal"))


def test_a_bad_request_gets_400(gun_http_echo_server: EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", gun_http_echo_server.port), timeout=5) as s:
        s.sendall(b"NOT HTTP\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 400 ")


# --------------------------------------------------------------------------- Websocket


def test_ws_echo(gun_ws_echo_server: EchoServer) -> None:
    conn = gun_ws_echo_server.open()
    assert_receive(gun_up(conn))
    ref = gunpy.ws_upgrade(conn, "/any/path", None, {"silence_pings": False})
    assert_receive(gun_upgrade(conn, ref, ["websocket"]))
    gunpy.ws_send(conn, ref, [("text", "Hello!"), ("binary", b"\x00\xff"), ("ping", b"p")])
    assert_receive(gun_ws(conn, ref, ("text", "Hello!")))
    assert_receive(gun_ws(conn, ref, ("binary", b"\x00\xff")))
    assert_receive(gun_ws(conn, ref, ("pong", b"p")))
    big = "x" * 200_000  # fragmented by the server's reads: reassembled before the echo
    gunpy.ws_send(conn, ref, ("text", big))
    assert assert_receive(gun_ws(conn, ref))[3] == ("text", big)
    gunpy.ws_send(conn, ref, ("close", 1000, "done"))
    assert_receive(gun_ws(conn, ref, ("close", 1000, "done")))
    assert_receive(gun_down(conn, "ws", "normal", [ref]))
    assert gun_ws_echo_server.requests == [("GET", "/any/path")]
    assert gun_ws_echo_server.ws_url("/p") == f"ws://127.0.0.1:{gun_ws_echo_server.port}/p"


def test_ws_permessage_deflate_when_offered(gun_ws_echo_server: EchoServer) -> None:
    conn = gun_ws_echo_server.open({"ws_opts": {"compress": True}})
    ref = gunpy.ws_upgrade(conn, "/")
    msg = assert_receive(gun_upgrade(conn, ref, ["websocket"]))
    assert dict(msg[4])["sec-websocket-extensions"].startswith("permessage-deflate")
    gunpy.ws_send(conn, ref, ("text", "squeeze me " * 100))
    assert_receive(gun_ws(conn, ref, ("text", "squeeze me " * 100)))
    assert_receive(gun_up(conn))


def test_ws_without_deflate() -> None:
    with EchoServer(deflate=False) as server:
        conn = server.open({"ws_opts": {"compress": True}})
        ref = gunpy.ws_upgrade(conn, "/")
        msg = assert_receive(gun_upgrade(conn, ref))
        assert "sec-websocket-extensions" not in dict(msg[4])
        gunpy.ws_send(conn, ref, ("text", "plain"))
        assert_receive(gun_ws(conn, ref, ("text", "plain")))
        assert_receive(gun_up(conn))


def test_stop_closes_connections_and_flushes_its_own_cleanup() -> None:
    server = EchoServer()
    conn = server.open()
    mref = gunpy.monitor(conn)
    assert_receive(gun_up(conn))
    ref = gunpy.ws_upgrade(conn, "/")
    assert_receive(gun_upgrade(conn, ref))
    server.stop()
    assert_receive(down(mref, "shutdown"))
    refute_receive(gun_down(conn), after=0)  # gunpy.close: no gun_down
    server.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    assert "EchoServer" in repr(server)


def test_open_refuses_bad_options(gun_http_echo_server: EchoServer) -> None:
    with pytest.raises(AssertionError, match="refused the options"):
        gun_http_echo_server.open({"nonsense": 1})


# --------------------------------------------------------------------------- TLS


def test_tls_pair_fixture(tls_pair: TLSPair) -> None:
    assert tls_pair.hostnames == ("127.0.0.1", "localhost", "::1")
    assert tls_pair.tls_opts == {"cacertfile": tls_pair.ca_file}
    assert tls_pair.tls_opts is not tls_pair.tls_opts  # a new dict each time
    for f in (tls_pair.ca_file, tls_pair.cert_file, tls_pair.key_file):
        assert Path(f).read_bytes().startswith(b"-----BEGIN")
    assert tls_pair.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert isinstance(tls_pair.server_context(), ssl.SSLContext)
    assert "TLSPair 127.0.0.1, localhost, ::1" in repr(tls_pair)


def test_tls_echo_server(tls_pair: TLSPair) -> None:
    with EchoServer(tls=tls_pair) as server:
        assert server.url().startswith("https://") and server.ws_url().startswith("wss://")
        conn = server.open()
        assert_receive(gun_up(conn, "http"))
        ref = gunpy.get(conn, "/hello")
        assert_receive(gun_response(conn, ref, "nofin", 200))
        assert body_of(conn, ref) == b"Hello world!\n"
        ref = gunpy.ws_upgrade(conn, "/")
        assert_receive(gun_upgrade(conn, ref))
        gunpy.ws_send(conn, ref, ("text", "over tls"))
        assert_receive(gun_ws(conn, ref, ("text", "over tls")))


@pytest.mark.parametrize(
    "tls_opts",
    [
        pytest.param(lambda p: {"cacerts": p.ca_pem}, id="cacerts"),
        pytest.param(lambda p: p.client_context(), id="ssl-context"),
        pytest.param(lambda p: p.client_context(alpn=["http/1.1"]), id="ssl-context-alpn"),
    ],
)
def test_other_ways_to_trust_the_pair(tls_pair: TLSPair, tls_opts: object) -> None:
    with EchoServer(tls=tls_pair.server_context(alpn=["http/1.1"])) as server:
        assert server.client_tls_opts is None
        conn = server.open({"transport": "tls", "tls_opts": tls_opts(tls_pair)})  # type: ignore[operator]
        assert_receive(gun_up(conn, "http"))


def test_an_untrusted_certificate_is_refused(tls_pair: TLSPair, tmp_path: Path) -> None:
    other = make_tls_pair(tmp_path)  # another CA
    with EchoServer(tls=other) as server:
        conn = server.open({"tls_opts": tls_pair.tls_opts})
        mref = gunpy.monitor(conn)
        assert_receive(down(mref, ("shutdown", ANY)))


def test_a_certificate_for_other_names(tls_pair: TLSPair) -> None:
    with EchoServer(tls=tls_pair.server_context(hostnames=["example.org"])) as server:
        conn = server.open({"transport": "tls", "tls_opts": tls_pair.tls_opts})
        mref = gunpy.monitor(conn)
        assert_receive(down(mref, ("shutdown", ANY)))  # not valid for 127.0.0.1
        conn = server.open(
            {
                "transport": "tls",
                "tls_opts": {**tls_pair.tls_opts, "server_name_indication": "example.org"},
            }
        )
        assert_receive(gun_up(conn))


def test_make_tls_pair_in_a_temporary_directory() -> None:
    pair = make_tls_pair(hostnames=["localhost"])
    assert pair.hostnames == ("localhost",)
    assert Path(pair.ca_file).exists()
