"""Websocket against real servers (gun-reference 4.7, ws_SUITE's echo tests, RFC 7692).

Gun's ws_SUITE runs against Cowboy; these run the same exchanges against the
Python servers people deploy (websockets, aiohttp, hypercorn), through nginx's
Websocket reverse proxy, and over TLS.  Each echoes text and binary messages of
1 B, 64 KiB and 1 MiB with permessage-deflate offered and not offered: the
server's own parser and inflater check gunpy's masking, framing and compression,
and gunpy's check the server's.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import gunpy
from gunpy import ANY, TIMEOUT
from tests.peers import Peer, TLSFiles

pytestmark = pytest.mark.peers

KIB = 1024
MIB = 1024 * 1024


def payloads() -> list[tuple[str, Any]]:
    """Frames to echo: 1 B, 64 KiB, 1 MiB; text (with multi-byte UTF-8) and binary
    (random, so deflate cannot shrink it), plus one highly compressible MiB."""
    unit = "aé€😀"  # 1 + 2 + 3 + 4 bytes of UTF-8
    text_64k = "a" * 6 + unit * (64 * KIB // 10)
    assert len(text_64k.encode()) == 64 * KIB
    return [
        ("text", "x"),
        ("binary", b"\x00"),
        ("text", text_64k),
        ("binary", os.urandom(64 * KIB)),
        ("text", os.urandom(MIB // 2).hex()),
        ("binary", os.urandom(MIB)),
        ("binary", b"\x00" * MIB),
        ("text", unit * (MIB // 10)),
    ]


# (fixture, path, does the server accept permessage-deflate?)
SERVERS = {
    "websockets": ("ws_echo_server", "/echo", True),
    "websockets-no-deflate": ("ws_echo_server_no_deflate", "/", False),
    "aiohttp": ("aiohttp_server", "/ws", True),
    "hypercorn": ("hypercorn_server", "/ws", True),
    "nginx": ("nginx_server", "/ws", True),  # a websockets backend, deflate on
}


def open_ws(
    port: int, path: str, ws_opts: dict[str, Any], **opts: Any
) -> tuple[Any, Any, list[Any]]:
    ok, conn = gunpy.open("127.0.0.1", port, {"retry": 0, **opts})
    assert ok == "ok"
    assert gunpy.await_up(conn) == ("ok", "http")
    ref = gunpy.ws_upgrade(conn, path, [], ws_opts)
    result = gunpy.await_(conn, ref)
    assert result[:2] == ("upgrade", ["websocket"]), result
    return conn, ref, result[2]


def extensions(headers: list[tuple[str, str]]) -> str | None:
    values = [v for n, v in headers if n == "sec-websocket-extensions"]
    return ", ".join(values) if values else None


def echo_all(conn: Any, ref: Any, frames: list[tuple[str, Any]]) -> None:
    """Send every frame in one ws_send, then check each echo, in order."""
    gunpy.ws_send(conn, ref, frames)
    for frame in frames:
        got = gunpy.await_(conn, ref, 10000)
        assert got[0] == "ws", got
        assert got[1][0] == frame[0]
        assert len(got[1][1]) == len(frame[1]) and got[1][1] == frame[1], frame[0]


def close_cleanly(conn: Any, ref: Any) -> None:
    """User close (gun-reference 4.7): the server's close is delivered, then
    gun_down(ws, normal, [Ref]); with retry 0 the process exits normal."""
    mref = gunpy.monitor(conn)
    gunpy.ws_send(conn, ref, ("close", 1000, "done"))
    frame = gunpy.await_(conn, ref)
    assert frame[0] == "ws"
    assert frame[1] == "close" or frame[1][:2] == ("close", 1000), frame
    assert gunpy.receive(("gun_down", conn, ANY, ANY, ANY), after=5000) == (
        "gun_down",
        conn,
        "ws",
        "normal",
        [ref],
    )
    down = gunpy.receive(("DOWN", mref, "process", conn, ANY), after=5000)
    assert down is not TIMEOUT and down[4] == "normal"


@pytest.mark.parametrize("compress", [True, False], ids=["deflate", "plain"])
@pytest.mark.parametrize("server", list(SERVERS))
def test_echo(request: pytest.FixtureRequest, server: str, compress: bool) -> None:
    """ws_SUITE send_many against real servers, with and without RFC 7692
    permessage-deflate: 1 B, 64 KiB and 1 MiB text and binary messages come back
    intact, and deflate is in use exactly when offered and accepted."""
    fixture, path, deflate = SERVERS[server]
    peer = request.getfixturevalue(fixture)
    conn, ref, headers = open_ws(peer.port, path, {"compress": compress})
    ext = extensions(headers)
    if compress and deflate:
        assert ext is not None and ext.startswith("permessage-deflate"), headers
    else:
        assert ext is None, headers
    echo_all(conn, ref, payloads())
    close_cleanly(conn, ref)


def test_many_connections_at_once(ws_echo_server: Peer) -> None:
    """Twenty connections upgraded and echoing at the same time, each message coming
    back on its own connection and stream."""
    n = 20
    conns = []
    for _ in range(n):
        ok, conn = gunpy.open("127.0.0.1", ws_echo_server.port, {"retry": 0})
        assert ok == "ok"
        conns.append(conn)
    refs = [
        gunpy.ws_upgrade(conn, f"/c{i}", [], {"compress": i % 2 == 0})
        for i, conn in enumerate(conns)
    ]
    for conn, ref in zip(conns, refs, strict=True):
        assert gunpy.await_(conn, ref)[0] == "upgrade"
    for i, (conn, ref) in enumerate(zip(conns, refs, strict=True)):
        gunpy.ws_send(conn, ref, [("text", f"hello {i}"), ("binary", bytes([i]) * 1000)])
    for i, (conn, ref) in enumerate(zip(conns, refs, strict=True)):
        assert gunpy.await_(conn, ref) == ("ws", ("text", f"hello {i}"))
        assert gunpy.await_(conn, ref) == ("ws", ("binary", bytes([i]) * 1000))
    for conn, ref in zip(conns, refs, strict=True):
        gunpy.ws_send(conn, ref, "close")
    for conn, ref in zip(conns, refs, strict=True):
        assert gunpy.receive(("gun_down", conn, ANY, ANY, ANY), after=5000) == (
            "gun_down",
            conn,
            "ws",
            "normal",
            [ref],
        )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_wss_echo(wss_echo_server: Peer, trustme_ca: TLSFiles, host: str) -> None:
    """Websocket over TLS (wss): the certificate is verified against the trustme CA
    (tls_opts cacertfile), the upgrade and echoes run over the TLS socket."""
    ok, conn = gunpy.open(
        host,
        wss_echo_server.port,
        {
            "transport": "tls",
            "retry": 0,
            "tls_opts": {"cacertfile": str(trustme_ca.ca_file)},
        },
    )
    assert ok == "ok"
    assert gunpy.await_up(conn) == ("ok", "http")
    ref = gunpy.ws_upgrade(conn, "/secure", [], {"compress": True})
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    info = gunpy.info(conn)
    assert (info["transport"], info["protocol"], info["origin_scheme"]) == ("tls", "ws", "https")
    echo_all(conn, ref, payloads())
    close_cleanly(conn, ref)


def test_wss_unknown_ca_is_refused(wss_echo_server: Peer) -> None:
    """Without the CA the TLS handshake fails before any upgrade (verification is on
    by default, gun-reference 3.1 tls_opts)."""
    ok, conn = gunpy.open("127.0.0.1", wss_echo_server.port, {"transport": "tls", "retry": 0})
    result = gunpy.await_up(conn)
    assert result[0] == "error"
    assert result[1][1][1][:1] == ("tls_alert",)


def test_keepalive_pong_from_a_real_server(ws_echo_server: Peer) -> None:
    """ws_SUITE keepalive: Gun's keepalive pings are answered by the server; with
    silence_pings false the pong is delivered as {ws, pong}."""
    conn, ref, _ = open_ws(ws_echo_server.port, "/", {"keepalive": 100, "silence_pings": False})
    assert gunpy.await_(conn, ref) == ("ws", "pong")
    gunpy.ws_send(conn, ref, ("ping", b"mine"))
    while (frame := gunpy.await_(conn, ref)) == ("ws", "pong"):
        pass  # a keepalive pong may come first
    assert frame == ("ws", ("pong", b"mine"))
    close_cleanly(conn, ref)


def test_reject_upgrade_by_a_real_server(aiohttp_server: Peer) -> None:
    """ws_SUITE reject_upgrade against aiohttp: a route that is not a Websocket answers
    200 with a body; gunpy reports it as a response and the connection stays HTTP."""
    ok, conn = gunpy.open("127.0.0.1", aiohttp_server.port, {"retry": 0})
    assert gunpy.await_up(conn) == ("ok", "http")
    ref = gunpy.ws_upgrade(conn, "/")
    assert gunpy.await_(conn, ref) == ("response", "nofin", 200, ANY)
    assert gunpy.await_body(conn, ref) == ("ok", b"hello\n")
    ref2 = gunpy.get(conn, "/chunked")
    assert gunpy.await_(conn, ref2) == ("response", "nofin", 200, ANY)
    assert gunpy.await_body(conn, ref2) == ("ok", b"chunk 0\nchunk 1\nchunk 2\n")
    # And the same connection can still be upgraded on a Websocket route.
    ref3 = gunpy.ws_upgrade(conn, "/ws")
    assert gunpy.await_(conn, ref3)[0] == "upgrade"
    echo_all(conn, ref3, [("text", "after a refusal")])
    close_cleanly(conn, ref3)


def test_nginx_requests_then_upgrade_on_one_connection(nginx_server: Any) -> None:
    """Through nginx: HTTP requests and then the upgrade on one keep-alive
    connection (Gun's guide: ws_upgrade can follow requests)."""
    ok, conn = gunpy.open("127.0.0.1", nginx_server.port, {"retry": 0})
    assert gunpy.await_up(conn) == ("ok", "http")
    ref = gunpy.get(conn, "/small.txt")
    assert gunpy.await_(conn, ref) == ("response", "nofin", 200, ANY)
    assert len(gunpy.await_body(conn, ref)[1]) == 100
    ref = gunpy.ws_upgrade(conn, "/ws", [], {"compress": True})
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    echo_all(conn, ref, [("text", "via nginx"), ("binary", b"\x01" * 100_000)])
    close_cleanly(conn, ref)


def test_wss_flow_control(wss_echo_server: Peer, trustme_ca: TLSFiles) -> None:
    """flow_SUITE flow_ws over TLS: with flow 1, each update_flow releases one echoed
    message, including messages already decrypted and buffered in the TLS layer."""
    conn, ref, _ = open_ws(
        wss_echo_server.port,
        "/",
        {"flow": 1},
        transport="tls",
        tls_opts={"cacertfile": str(trustme_ca.ca_file)},
    )
    n = 50
    gunpy.ws_send(conn, ref, [("text", f"m{i}" * 100) for i in range(n)])
    for i in range(n):
        assert gunpy.await_(conn, ref) == ("ws", ("text", f"m{i}" * 100))
        gunpy.info(conn)
        assert gunpy.receive(("gun_ws", conn, ref, ANY), after=0) is TIMEOUT
        gunpy.update_flow(conn, ref, 1)
    close_cleanly(conn, ref)
