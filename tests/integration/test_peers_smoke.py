"""The peer fixtures work: one quick check per peer, with the standard library and
the peers' own client libraries only (never gunpy), so a failure here is the test
bench's, not gunpy's."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import ssl
import struct
import threading

import pytest
from websockets.sync.client import connect

from tests.peers import NginxPeer, Peer, TLSFiles, need, require_peers

TIMEOUT = 5.0


def _ws_echo(
    url: str,
    *,
    sock: socket.socket | None = None,
    ssl_context: ssl.SSLContext | None = None,
    compression: str | None = "deflate",
) -> tuple[str | bytes, str | None]:
    with connect(
        url,
        sock=sock,
        ssl=ssl_context,
        compression=compression,
        open_timeout=TIMEOUT,
        max_size=None,
    ) as ws:
        ws.send("hello")
        text = ws.recv(timeout=TIMEOUT)
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\x01\xff"
        assert ws.response is not None
        return text, ws.response.headers.get("Sec-WebSocket-Extensions")


def _get(
    conn: http.client.HTTPConnection, path: str, **headers: str
) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    return resp, resp.read()


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return head


# --------------------------------------------------------------------------- helpers


def test_need_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUNPY_REQUIRE_PEERS", raising=False)
    assert not require_peers()
    with pytest.raises(pytest.skip.Exception):
        need("gunpy-no-such-program")
    monkeypatch.setenv("GUNPY_REQUIRE_PEERS", "1")
    assert require_peers()
    with pytest.raises(pytest.fail.Exception):
        need("gunpy-no-such-program")
    assert need("sh").endswith("/sh")


# --------------------------------------------------------------------------- websockets


def test_ws_echo_server(ws_echo_server: Peer) -> None:
    text, ext = _ws_echo(ws_echo_server.ws_url("/any/path"))
    assert text == "hello"
    assert ext is not None and "permessage-deflate" in ext
    conn = http.client.HTTPConnection(*ws_echo_server.address, timeout=TIMEOUT)
    resp, body = _get(conn, "/healthz")
    conn.close()
    assert (resp.status, body) == (200, b"ok\n")


def test_ws_echo_server_no_deflate(ws_echo_server_no_deflate: Peer) -> None:
    text, ext = _ws_echo(ws_echo_server_no_deflate.ws_url("/"))
    assert text == "hello"
    assert ext is None


def test_wss_echo_server(wss_echo_server: Peer, trustme_ca: TLSFiles) -> None:
    text, _ = _ws_echo(wss_echo_server.ws_url("/", "wss"), ssl_context=trustme_ca.client_context())
    assert text == "hello"


# --------------------------------------------------------------------------- aiohttp


def test_aiohttp_server(aiohttp_server: Peer) -> None:
    conn = http.client.HTTPConnection(*aiohttp_server.address, timeout=TIMEOUT)
    resp, body = _get(conn, "/")
    assert (resp.status, body) == (200, b"hello\n")
    assert resp.getheader("Content-Length") == "6"
    sock = conn.sock
    resp, body = _get(conn, "/chunked")  # same connection: keep-alive
    assert conn.sock is sock
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"
    conn.request("POST", "/echo", body=b"posted body", headers={"Content-Type": "text/plain"})
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"posted body")
    resp, body = _get(conn, "/headers", **{"X-Gunpy": "1"})
    assert ["X-Gunpy", "1"] in json.loads(body)
    resp, _ = _get(conn, "/status/204")
    assert resp.status == 204
    conn.close()
    text, ext = _ws_echo(aiohttp_server.ws_url("/ws"), compression="deflate")
    assert text == "hello" and ext is not None and "permessage-deflate" in ext


# --------------------------------------------------------------------------- hypercorn


def _h2_get(
    sock: socket.socket, authority: str, path: str, te_trailers: bool = False
) -> tuple[dict[bytes, bytes], bytes, dict[bytes, bytes]]:
    """One HTTP/2 GET with the h2 state machine (hypercorn's own dependency)."""
    import h2.config
    import h2.connection
    import h2.events

    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", authority)]
    if te_trailers:
        headers.append(("te", "trailers"))
    c.send_headers(1, headers, end_stream=True)
    sock.sendall(c.data_to_send())
    resp: dict[bytes, bytes] = {}
    trailers: dict[bytes, bytes] = {}
    body = b""
    while True:
        data = sock.recv(65536)
        assert data, "connection closed before the stream ended"
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                resp = dict(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                c.acknowledge_received_data(ev.flow_controlled_length, 1)
            elif isinstance(ev, h2.events.StreamEnded):
                return resp, body, trailers
        sock.sendall(c.data_to_send())


def test_hypercorn_server(hypercorn_server: Peer) -> None:
    conn = http.client.HTTPConnection(*hypercorn_server.address, timeout=TIMEOUT)
    resp, body = _get(conn, "/x")
    assert (resp.status, body) == (200, b"HTTP/1.1 /x\n")
    resp, body = _get(conn, "/chunked")
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"
    conn.close()
    # h2c with prior knowledge
    with socket.create_connection(hypercorn_server.address, TIMEOUT) as sock:
        authority = f"127.0.0.1:{hypercorn_server.port}"
        headers, body, _ = _h2_get(sock, authority, "/y")
        assert headers[b":status"] == b"200" and body == b"HTTP/2 /y\n"
    with socket.create_connection(hypercorn_server.address, TIMEOUT) as sock:
        _, body, trailers = _h2_get(sock, authority, "/trailers", te_trailers=True)
        assert body == b"hello world\n"
        assert trailers == {b"x-checksum": b"abc123", b"x-trailer-two": b"2"}
    text, _ = _ws_echo(hypercorn_server.ws_url("/ws"))
    assert text == "hello"


def test_hypercorn_tls_server(hypercorn_tls_server: Peer, trustme_ca: TLSFiles) -> None:
    ctx = trustme_ca.client_context(alpn=["h2", "http/1.1"])
    with (
        socket.create_connection(hypercorn_tls_server.address, TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
    ctx = trustme_ca.client_context(alpn=["http/1.1"])
    conn = http.client.HTTPSConnection(*hypercorn_tls_server.address, timeout=TIMEOUT, context=ctx)
    resp, body = _get(conn, "/z")
    conn.close()
    assert (resp.status, body) == (200, b"HTTP/1.1 /z\n")


# --------------------------------------------------------------------------- raw HTTP/1.1


def test_raw_http_server_trailers(raw_http_server: Peer) -> None:
    with socket.create_connection(raw_http_server.address, TIMEOUT) as sock:
        sock.sendall(b"GET /trailers HTTP/1.1\r\nhost: x\r\nte: trailers\r\n\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\n") or b"\r\n0\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"0\r\nx-checksum: abc123\r\nx-trailer-two: 2\r\n\r\n")
    conn = http.client.HTTPConnection(*raw_http_server.address, timeout=TIMEOUT)
    _, body = _get(conn, "/chunk-ext")
    assert body == b"hello world"
    _, body = _get(conn, "/close-delimited")
    assert body == b"until the end\n"
    conn.close()


# --------------------------------------------------------------------------- nginx


def test_nginx_server(nginx_server: NginxPeer) -> None:
    conn = http.client.HTTPConnection(nginx_server.host, nginx_server.port, timeout=TIMEOUT)
    resp, body = _get(conn, "/small.txt")
    assert resp.status == 200 and body == nginx_server.small_body and len(body) == 100
    assert resp.getheader("Content-Length") == "100"
    sock = conn.sock
    resp, body = _get(conn, "/big.bin")
    assert conn.sock is sock  # keep-alive
    assert len(body) == 1 << 20 and body == nginx_server.big_body
    resp, body = _get(conn, "/chunked/small.txt")
    assert resp.getheader("Transfer-Encoding") == "chunked" and body == nginx_server.small_body
    resp, body = _get(conn, "/gz/small.txt", **{"Accept-Encoding": "gzip"})
    assert resp.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(body) == nginx_server.small_body
    resp, body = _get(conn, "/204")
    assert (resp.status, body) == (204, b"")
    resp, _ = _get(conn, "/redirect")
    assert resp.status == 301
    assert resp.getheader("Location", "").endswith("/index.html")
    conn.close()
    text, _ = _ws_echo(nginx_server.ws_url("/ws"))
    assert text == "hello"


# --------------------------------------------------------------------------- proxies


def test_tinyproxy_server(tinyproxy_server: Peer, ws_echo_server: Peer) -> None:
    # CONNECT tunnel, then a websocket through it
    sock = socket.create_connection(tinyproxy_server.address, TIMEOUT)
    target = f"127.0.0.1:{ws_echo_server.port}"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    status = _read_head(sock).split(b"\r\n")[0]
    assert status.split(b" ")[1] == b"200", status
    text, _ = _ws_echo(ws_echo_server.ws_url("/"), sock=sock)
    assert text == "hello"
    # forward proxy: absolute-form request
    conn = http.client.HTTPConnection(*tinyproxy_server.address, timeout=TIMEOUT)
    resp, body = _get(conn, ws_echo_server.url("/healthz"))
    conn.close()
    assert (resp.status, body) == (200, b"ok\n")


def test_dante_server(dante_server: Peer, ws_echo_server: Peer) -> None:
    sock = socket.create_connection(dante_server.address, TIMEOUT)
    sock.sendall(b"\x05\x01\x00")  # SOCKS5, one method: no authentication
    assert sock.recv(2) == b"\x05\x00"
    sock.sendall(
        b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", ws_echo_server.port)
    )
    reply = sock.recv(10)
    assert reply[:2] == b"\x05\x00", reply
    text, _ = _ws_echo(ws_echo_server.ws_url("/"), sock=sock)
    assert text == "hello"


# --------------------------------------------------------------------------- TLS


def test_trustme_ca(trustme_ca: TLSFiles) -> None:
    server_ctx = trustme_ca.server_context(alpn=["h2", "http/1.1"])
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(tls.recv(16))
                except (ssl.SSLError, OSError):
                    conn.close()  # the client refused our certificate

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        ctx = trustme_ca.client_context(alpn=["http/1.1"])
        with (
            socket.create_connection(listener.getsockname(), TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.selected_alpn_protocol() == "http/1.1"
            tls.sendall(b"ping")
            assert tls.recv(16) == b"ping"
        # a name the certificate does not cover is refused
        with (
            socket.create_connection(listener.getsockname(), TIMEOUT) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            ctx.wrap_socket(raw, server_hostname="example.org")
        t.join(TIMEOUT)
    for path in (trustme_ca.ca_file, trustme_ca.cert_file, trustme_ca.key_file):
        assert path.read_bytes().startswith(b"-----BEGIN ")
