"""Bad proxies: refusals, proxies that close or never answer, TLS inside a tunnel
that fails (rfc7231_SUITE connect_*_reply, socks_SUITE errors, gun_socks.erl's
reasons).  Every failure is a Gun-shaped message and comes within a bound.

The proxies are scripted (``gunpy.testing.ScriptedOrigin``): they check the exact
bytes gunpy sends and answer with the exact bytes under test.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import gunpy
from gunpy import ANY
from gunpy.testing import (
    Close,
    Delay,
    Expect,
    ExpectClosed,
    ExpectRequest,
    ExpectUntil,
    Respond,
    ScriptedOrigin,
    Send,
    TLSPair,
    assert_receive,
    down,
    gun_conn_error,
    gun_data,
    gun_down,
    gun_error,
    gun_response,
    gun_up,
    refute_receive,
)
from tests.integration.proxy_servers import EchoOrigin

T = 5000

GREETING = b"\x05\x01\x00"
CONNECT_V4 = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"  # 127.0.0.1:80
OK = b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"


def tunnel_up(conn: Any, ref: Any, protocol: Any = ANY) -> tuple[Any, ...]:
    return ("gun_tunnel_up", conn, ref, protocol)


def socks(**kw: Any) -> dict[str, Any]:
    return {"protocols": [("socks", {"host": "127.0.0.1", "port": 80, **kw})]}


# --------------------------------------------------------------------------- CONNECT


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (302, "Found"),
        (403, "Forbidden"),
        (407, "Proxy Authentication Required"),
        (500, "Internal Server Error"),
    ],
)
def test_connect_non_2xx_is_a_plain_response(status: int, reason: str) -> None:
    """rfc7231_SUITE connect_302/403/500_reply: no tunnel, the connection stays
    an HTTP connection to the proxy."""
    script = [
        ExpectRequest("CONNECT", "origin.example:443"),
        Respond(status, {"proxy-authenticate": 'Basic realm="x"'}, b"no tunnel", reason=reason),
        ExpectRequest("GET", "/proxy-status"),
        Respond(200, (), b"proxy"),
    ]
    with ScriptedOrigin(script, name="proxy") as proxy:
        conn = proxy.open()
        ref = gunpy.connect(conn, {"host": "origin.example", "port": 443})
        msg = assert_receive(gun_response(conn, ref, "nofin", status), after=T)
        assert ("proxy-authenticate", 'Basic realm="x"') in msg[5]
        assert gunpy.await_body(conn, ref, T) == ("ok", b"no tunnel")
        refute_receive(tunnel_up(conn, ANY), after=50)
        assert gunpy.info(conn)["intermediaries"] == []
        r = gunpy.get(conn, "/proxy-status")
        assert gunpy.await_(conn, r, T)[:3] == ("response", "nofin", 200)
        proxy.wait()


def test_connect_201_is_a_tunnel() -> None:
    """rfc7231_SUITE connect_201_reply: any 2xx."""
    script = [ExpectRequest("CONNECT"), Send(b"HTTP/1.1 201 Created\r\n\r\n"), Expect(b"raw!")]
    with ScriptedOrigin(script, name="proxy") as proxy:
        conn = proxy.open()
        ref = gunpy.connect(conn, {"host": "o", "port": 1, "protocols": ["raw"]})
        assert_receive(gun_response(conn, ref, "fin", 201, []), after=T)
        assert_receive(tunnel_up(conn, ref, "raw"), after=T)
        gunpy.data(conn, ref, "nofin", b"raw!")
        proxy.wait()


def test_proxy_closes_before_answering_connect() -> None:
    script = [ExpectRequest("CONNECT"), Close()]
    with ScriptedOrigin(script, name="proxy") as proxy:
        conn = proxy.open()
        ref = gunpy.connect(conn, {"host": "o", "port": 1})
        assert_receive(gun_error(conn, ref, "closed"), after=T)
        assert_receive(gun_down(conn, "http", "closed", [ref]), after=T)


def test_proxy_closes_in_the_middle_of_its_answer() -> None:
    script = [ExpectRequest("CONNECT"), Send(b"HTTP/1.1 200 Conn"), Close()]
    with ScriptedOrigin(script, name="proxy") as proxy:
        conn = proxy.open()
        ref = gunpy.connect(conn, {"host": "o", "port": 1})
        err = assert_receive(gun_conn_error(conn), after=T)  # connection-wide
        assert err[2][:2] == ("connection_error", "protocol_error")
        down_msg = assert_receive(gun_down(conn, "http"), after=T)
        assert down_msg[4] == [ref]


def test_proxy_that_never_answers_connect() -> None:
    """Bounded by the caller: await_ times out; cancel then silences the CONNECT,
    and a late 2xx for a cancelled CONNECT closes the connection instead of
    opening a tunnel nobody waits for."""
    with ScriptedOrigin(name="proxy") as proxy:
        conn = proxy.open()
        ref = gunpy.connect(conn, {"host": "o", "port": 1})
        server = proxy.accept()
        server.recv_request(T)
        t0 = time.monotonic()
        assert gunpy.await_(conn, ref, 200) == ("error", "timeout")
        assert time.monotonic() - t0 < 2
        gunpy.cancel(conn, ref)
        ok, si = gunpy.stream_info(conn, ref)
        assert si["state"] == "stopping"
        server.send(b"HTTP/1.1 200 OK\r\n\r\n")
        assert_receive(gun_down(conn, "http", "normal", []), after=T)
        refute_receive(tunnel_up(conn, ANY), after=50)
        refute_receive(gun_response(conn, ref), gun_error(conn, ref), after=0)  # cancelled: silent


def test_shutdown_while_connect_is_pending_is_bounded() -> None:
    with ScriptedOrigin(name="proxy") as proxy:
        conn = proxy.open({"http_opts": {"closing_timeout": 200}})
        mref = gunpy.monitor(conn)
        ref = gunpy.connect(conn, {"host": "o", "port": 1})
        proxy.accept().recv_request(T)
        gunpy.shutdown(conn)
        assert_receive(down(mref, "shutdown"), after=T)
        assert_receive(gun_error(conn, ref, ("closed", "shutdown")), after=0)


def test_tunnel_peer_closes_and_gun_down_names_the_inner_protocol() -> None:
    script = [ExpectRequest("CONNECT"), Send(b"HTTP/1.0 200 OK\r\n\r\n"), Send(b"bye"), Close()]
    with ScriptedOrigin(script, name="proxy") as proxy:
        conn = proxy.open()
        ref = gunpy.connect(conn, {"host": "o", "port": 1, "protocols": ["raw"]})
        assert_receive(tunnel_up(conn, ref, "raw"), after=T)
        assert_receive(gun_data(conn, ref, "nofin", b"bye"), after=T)
        assert_receive(gun_down(conn, "raw", "closed", []), after=T)


# --------------------------------------------------------------------------- TLS inside


def test_tunnel_tls_certificate_refused(tls_pair: TLSPair) -> None:
    """The origin's certificate is not trusted: gun_down with the TLS alert, the
    proxy's protocol in it (Gun's {error, Reason} command)."""
    with EchoOrigin(tls=tls_pair.server_context()) as origin:
        script = [
            ExpectRequest("CONNECT"),
            Send(b"HTTP/1.1 200 OK\r\n\r\n"),
            Call_relay(origin.port),
        ]
        with ScriptedOrigin(script, name="proxy") as proxy:
            conn = proxy.open()
            ref = gunpy.connect(
                conn, {"host": "localhost", "port": origin.port, "transport": "tls"}
            )
            assert_receive(gun_response(conn, ref, "fin", 200), after=T)
            msg = assert_receive(gun_down(conn, "http"), after=T)
            reason = msg[3]
            assert reason[0] == "error" and reason[1][0] == "tls_alert", reason
            assert reason[1][1][0] == "unknown_ca"
            assert msg[4] == []
            refute_receive(tunnel_up(conn, ANY), after=50)


class Call_relay(ExpectUntil):  # reads as a step
    """A scripted proxy step: after its 200, relay to 127.0.0.1:``port``."""

    def __init__(self, port: int) -> None:
        object.__setattr__(self, "marker", b"")
        object.__setattr__(self, "port", port)

    def run(self, conn: Any, timeout: float) -> None:
        import socket
        import threading

        up = socket.create_connection(("127.0.0.1", self.port), timeout / 1000)

        def back() -> None:
            try:
                while data := up.recv(65536):
                    conn.send(data)
            except OSError:
                pass
            conn.close()

        threading.Thread(target=back, daemon=True).start()
        try:
            while True:
                data = conn.recv(timeout)
                if not data:
                    break
                up.sendall(data)
        except (EOFError, TimeoutError, OSError):
            pass
        up.close()


def test_tunnel_tls_over_tls_certificate_refused(tls_pair: TLSPair) -> None:
    """The same with TLS to the proxy (TLS over TLS): same message shapes."""
    with EchoOrigin(tls=tls_pair.server_context()) as origin:
        script = [
            ExpectRequest("CONNECT"),
            Send(b"HTTP/1.1 200 OK\r\n\r\n"),
            Call_relay(origin.port),
        ]
        with ScriptedOrigin(script, tls=tls_pair, name="proxy") as proxy:
            conn = proxy.open()
            assert_receive(gun_up(conn, "http"), after=T)
            ref = gunpy.connect(
                conn, {"host": "localhost", "port": origin.port, "transport": "tls"}
            )
            assert_receive(gun_response(conn, ref, "fin", 200), after=T)
            msg = assert_receive(gun_down(conn, "http"), after=T)
            assert (
                msg[3][0] == "error"
                and msg[3][1][0] == "tls_alert"
                and msg[3][1][1][0] == "unknown_ca"
            )


@pytest.mark.parametrize("proxy_tls", [False, True])
def test_tunnel_tls_handshake_never_answered(proxy_tls: bool, tls_pair: TLSPair) -> None:
    """The proxy says 200 but the other end never speaks TLS: the destination's
    tls_handshake_timeout ends it, gun_down ("error", "timeout")."""
    script = [ExpectRequest("CONNECT"), Send(b"HTTP/1.1 200 OK\r\n\r\n"), ExpectClosed()]
    with ScriptedOrigin(script, tls=tls_pair if proxy_tls else None, name="proxy") as proxy:
        conn = proxy.open()
        dest = {"host": "localhost", "port": 1, "transport": "tls", "tls_handshake_timeout": 200}
        ref = gunpy.connect(conn, dest)
        assert_receive(gun_response(conn, ref, "fin", 200), after=T)
        t0 = time.monotonic()
        assert_receive(gun_down(conn, "http", ("error", "timeout"), []), after=T)
        assert 0.15 < time.monotonic() - t0 < 3
        proxy.wait()


def test_queued_requests_wait_for_the_tunnel_tls_then_fail_with_it() -> None:
    """A request through the tunnel made during its TLS handshake waits for it;
    when the handshake fails (here: never answered, 300 ms) and retry is 0, it
    is told why it will never be sent."""
    script = [ExpectRequest("CONNECT"), Send(b"HTTP/1.1 200 OK\r\n\r\n"), ExpectClosed()]
    with ScriptedOrigin(script, name="proxy") as proxy:
        conn = proxy.open()
        dest = {"host": "localhost", "port": 1, "transport": "tls", "tls_handshake_timeout": 300}
        ref = gunpy.connect(conn, dest)
        assert_receive(gun_response(conn, ref, "fin", 200), after=T)
        r = gunpy.get(conn, "/", None, {"tunnel": ref})
        assert_receive(gun_down(conn, "http", ("error", "timeout"), []), after=T)
        reason = ("closed", ("shutdown", ("error", "timeout")))
        assert_receive(gun_error(conn, r, reason), after=T)
        proxy.wait()


# --------------------------------------------------------------------------- SOCKS5


@pytest.mark.parametrize(
    ("script", "auth", "reason"),
    [
        (
            [
                Expect(b"\x05\x01\x02"),
                Send(b"\x05\x02"),
                Expect(b"\x01\x01u\x01p"),
                Send(b"\x01\x01"),
            ],
            [("username_password", "u", "p")],
            ("error", ("socks5", "username_password_auth_failure")),
        ),
        (
            [Expect(b"\x05\x01\x02"), Send(b"\x05\xff")],
            [("username_password", "u", "p")],
            ("error", ("socks5", "no_acceptable_methods")),
        ),
        (
            [
                Expect(GREETING),
                Send(b"\x05\x00"),
                Expect(CONNECT_V4),
                Send(b"\x05\x05\x00\x01" + bytes(6)),
            ],
            ["none"],
            ("error", ("socks5", "connection_refused")),
        ),
        (
            [
                Expect(GREETING),
                Send(b"\x05\x00"),
                Expect(CONNECT_V4),
                Send(b"\x05\x02\x00\x01" + bytes(6)),
            ],
            ["none"],
            ("error", ("socks5", "connection_not_allowed_by_ruleset")),
        ),
        ([Expect(GREETING), Close()], ["none"], "closed"),
        (
            [
                Expect(GREETING),
                Send(b"\x05\x00"),
                Expect(CONNECT_V4),
                Send(b"\x05\x00\x00"),
                Close(),
            ],
            ["none"],
            "closed",
        ),
    ],
    ids=[
        "auth_refused_01_01",
        "no_method_05_ff",
        "connection_refused",
        "ruleset",
        "closed_after_greeting",
        "closed_mid_reply",
    ],
)
def test_socks_failures(script: list[Any], auth: list[Any], reason: Any) -> None:
    with ScriptedOrigin(script, name="socks") as proxy:
        conn = proxy.open(socks(auth=auth))
        mref = gunpy.monitor(conn)
        queued = gunpy.get(conn, "/never")
        assert_receive(gun_up(conn, "socks"), after=T)
        assert_receive(gun_down(conn, "socks", reason, []), after=T)
        # retry 0: the process ends with the reason; the queued request is told.
        assert_receive(down(mref, ("shutdown", reason)), after=T)
        assert_receive(gun_error(conn, queued, ("closed", ("shutdown", reason))), after=T)
        refute_receive(tunnel_up(conn, ANY), after=0)
        proxy.wait()


def test_socks_proxy_that_never_answers() -> None:
    """gunpy's handshake_timeout (gun_socks has none): bounded, reason "timeout"."""
    script = [Expect(GREETING), ExpectClosed()]
    with ScriptedOrigin(script, name="socks") as proxy:
        conn = proxy.open(socks(handshake_timeout=200))
        assert_receive(gun_up(conn, "socks"), after=T)
        t0 = time.monotonic()
        assert_receive(gun_down(conn, "socks", ("error", ("socks5", "timeout")), []), after=T)
        assert 0.15 < time.monotonic() - t0 < 3
        proxy.wait()


def test_socks_default_timeout_is_bounded() -> None:
    from gunpy.protocols.socks import DEFAULT_HANDSHAKE_TIMEOUT

    assert DEFAULT_HANDSHAKE_TIMEOUT == 15000


def test_socks_failure_is_retried_like_any_connection_failure() -> None:
    """Gun: a SOCKS error is a disconnect; with retry the proxy is tried again."""
    bad = [
        Expect(GREETING),
        Send(b"\x05\x00"),
        Expect(CONNECT_V4),
        Send(b"\x05\x01\x00\x01" + bytes(6)),
    ]
    good = [
        Expect(GREETING),
        Send(b"\x05\x00"),
        Expect(CONNECT_V4),
        Send(OK),
        ExpectRequest("GET", "/"),
        Respond(204),
    ]
    with ScriptedOrigin(scripts=[bad, good], name="socks") as proxy:
        conn = proxy.open({**socks(), "retry": 1, "retry_timeout": 10})
        assert_receive(
            gun_down(conn, "socks", ("error", ("socks5", "general_socks_server_failure")), []),
            after=T,
        )
        assert_receive(gun_up(conn, "socks"), after=T)
        assert_receive(tunnel_up(conn, None, "http"), after=T)
        r = gunpy.get(conn, "/")
        assert_receive(gun_response(conn, r, "fin", 204), after=T)
        proxy.wait()


def test_socks_slow_proxy_in_pieces_within_the_timeout() -> None:
    script = [
        Expect(GREETING),
        Send(b"\x05"),
        Delay(20),
        Send(b"\x00"),
        Expect(CONNECT_V4),
        Send(OK[:3]),
        Delay(20),
        Send(OK[3:] + b"HTTP/1.1 204 No Content\r\n\r\n"),
    ]
    with ScriptedOrigin(script, name="socks") as proxy:
        conn = proxy.open(socks(handshake_timeout=2000, protocols=["raw"]))
        assert_receive(tunnel_up(conn, None, "raw"), after=T)
        # Bytes that came with the reply belong to the protocol inside.
        assert_receive(gun_data(conn, None, "nofin", b"HTTP/1.1 204 No Content\r\n\r\n"), after=T)
        proxy.wait()


def test_socks_over_tls_proxy_rejects_auth(tls_pair: TLSPair) -> None:
    script = [Expect(GREETING), Send(b"\x05\xff")]
    with ScriptedOrigin(script, tls=tls_pair, name="socks") as proxy:
        conn = proxy.open(socks())
        assert_receive(
            gun_down(conn, "socks", ("error", ("socks5", "no_acceptable_methods")), []), after=T
        )
        proxy.wait()
