"""HTTP/2 through the connection actor: prior knowledge, ALPN, ping (gun-reference 4.10).

The handler's behaviour is unit-tested against h2's server role in
tests/unit/test_http2_handler.py; these tests check that the actor selects and
drives it against a real HTTP/2 server (hypercorn).
"""

from __future__ import annotations

import gunpy
from gunpy import ANY
from tests.origin import Origin
from tests.peers import Peer, TLSFiles


def test_prior_knowledge_h2c(hypercorn_server: Peer) -> None:
    """protocols ["http2"] over TCP: no negotiation, the preface is sent at once."""
    ok, conn = gunpy.open("127.0.0.1", hypercorn_server.port, {"protocols": ["http2"], "retry": 0})
    assert gunpy.await_up(conn) == ("ok", "http2")
    ref = gunpy.get(conn, "/x")
    status = gunpy.await_(conn, ref)
    assert status[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/2 /x\n")
    refs = [gunpy.post(conn, "/echo", [], b"body %d" % i) for i in range(10)]
    for i, r in enumerate(refs):  # ten concurrent streams on one connection
        assert gunpy.await_(conn, r)[:3] == ("response", "nofin", 200)
        assert gunpy.await_body(conn, r) == ("ok", b"body %d" % i)
    gunpy.close(conn)


def test_alpn_h2_is_the_tls_default(hypercorn_tls_server: Peer, trustme_ca: TLSFiles) -> None:
    """Gun 3.1: over TLS the default protocols are [http2, http]; ALPN picks h2."""
    ok, conn = gunpy.open(
        "127.0.0.1",
        hypercorn_tls_server.port,
        {"transport": "tls", "retry": 0, "tls_opts": {"cacertfile": str(trustme_ca.ca_file)}},
    )
    assert gunpy.await_up(conn) == ("ok", "http2")
    ref = gunpy.get(conn, "/y")
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/2 /y\n")
    gunpy.close(conn)


def test_alpn_http11_when_only_http_is_offered(
    hypercorn_tls_server: Peer, trustme_ca: TLSFiles
) -> None:
    ok, conn = gunpy.open(
        "127.0.0.1",
        hypercorn_tls_server.port,
        {
            "transport": "tls",
            "protocols": ["http"],
            "retry": 0,
            "tls_opts": {"cacertfile": str(trustme_ca.ca_file)},
        },
    )
    assert gunpy.await_up(conn) == ("ok", "http")
    ref = gunpy.get(conn, "/z")
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/1.1 /z\n")
    gunpy.close(conn)


def test_ping_ack(hypercorn_server: Peer) -> None:
    """gun:ping/1: the ack is ("gun_notify", conn, "ping_ack", ref); await_ sees it."""
    ok, conn = gunpy.open("127.0.0.1", hypercorn_server.port, {"protocols": ["http2"], "retry": 0})
    assert gunpy.await_up(conn) == ("ok", "http2")
    ref = gunpy.ping(conn)
    assert gunpy.receive(("gun_notify", conn, "ping_ack", ref), after=2000)
    ref2 = gunpy.ping(conn)
    assert gunpy.await_(conn, None) == ("notify", "ping_ack", ref2)
    gunpy.close(conn)


def test_ping_on_http11_ends_the_connection() -> None:
    """ping_SUITE: on HTTP/1.1 a ping is a connection error."""
    with Origin() as origin:
        ok, conn = gunpy.open("127.0.0.1", origin.port, {"retry": 0})
        assert gunpy.await_up(conn) == ("ok", "http")
        origin.accept()
        ref = gunpy.ping(conn)
        assert gunpy.receive(("gun_down", conn, ANY, ANY, ANY), after=2000) == (
            "gun_down", conn, "http", ("error", ("ping_unsupported_by_protocol", ref)), []
        )
