"""TLS transport: certificates verified by default (gun-reference 3.1 tls_opts, 4.1).

The ``tls_pair`` fixture (a trustme CA) issues the origin's certificate; the
``scripted_origin`` does the server side of the handshake.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

import gunpy
from gunpy.testing import (
    GunMailbox,
    OriginFactory,
    TLSPair,
    assert_receive,
    down,
    gun_data,
)

RAW = {"protocols": ["raw"], "transport": "tls", "retry": 0}


@pytest.fixture(autouse=True)
def _fresh_mailbox(gun_mailbox: GunMailbox) -> Iterator[None]:
    """An empty mailbox for each test; a Gun message left unread fails it."""
    yield


def test_good_certificate_is_accepted(scripted_origin: OriginFactory, tls_pair: TLSPair) -> None:
    origin = scripted_origin(tls=tls_pair.server_context(hostnames=["127.0.0.1", "localhost"]))
    conn = origin.open({**RAW, "tls_opts": {"cacerts": tls_pair.ca_pem}})
    assert gunpy.await_up(conn) == ("ok", "raw")
    server = origin.accept()
    gunpy.data(conn, None, "nofin", b"secret")
    assert server.recv_exact(6) == b"secret"
    server.send(b"reply")
    assert assert_receive(gun_data(conn, None, "nofin"), after=2000)[4] == b"reply"
    assert gunpy.info(conn)["transport"] == "tls"
    assert gunpy.info(conn)["origin_scheme"] == "https"
    gunpy.close(conn)


def test_cacertfile_and_hostname(scripted_origin: OriginFactory, tls_pair: TLSPair) -> None:
    """A host name is verified against the certificate and sent as SNI."""
    seen: list[str | None] = []
    ctx = tls_pair.server_context(hostnames=["localhost"])
    ctx.sni_callback = lambda sock, name, c: seen.append(name)  # type: ignore[assignment,misc]
    origin = scripted_origin(tls=ctx)
    ok, conn = gunpy.open(
        "localhost", origin.port, {**RAW, "tls_opts": {"cacertfile": tls_pair.ca_file}}
    )
    assert gunpy.await_up(conn) == ("ok", "raw")
    origin.accept()
    assert seen == ["localhost"]
    gunpy.close(conn)


def test_wrong_host_is_refused(scripted_origin: OriginFactory, tls_pair: TLSPair) -> None:
    """A certificate for another name: the handshake fails, reason names it."""
    origin = scripted_origin(tls=tls_pair.server_context(hostnames=["example.org"]))
    conn = origin.open({**RAW, "tls_opts": {"cacerts": tls_pair.ca_pem}})
    result = gunpy.await_up(conn)
    assert result[0] == "error"
    reason = result[1][1]
    assert reason[0] == "shutdown"
    alert, text = reason[1][1]
    assert reason[1][0] == "tls_alert"
    assert alert == "handshake_failure" and "mismatch" in text


def test_unknown_ca_is_refused_by_default(
    scripted_origin: OriginFactory, tls_pair: TLSPair
) -> None:
    """Verification is on by default, against the system trust store."""
    origin = scripted_origin(tls=tls_pair.server_context(hostnames=["127.0.0.1"]))
    conn = origin.open(RAW)  # a bare SSLContext: open() adds no tls_opts
    result = gunpy.await_up(conn)
    assert result[0] == "error"
    assert result[1][1][1][0] == "tls_alert"
    assert result[1][1][1][1][0] == "unknown_ca"


def test_verify_none_and_ssl_context(scripted_origin: OriginFactory, tls_pair: TLSPair) -> None:
    """tls_opts may say verify_none, or be an ssl.SSLContext for full control."""
    origin = scripted_origin(tls=tls_pair.server_context(hostnames=["127.0.0.1"]))
    conn = origin.open({**RAW, "tls_opts": {"verify": "verify_none"}})
    assert gunpy.await_up(conn) == ("ok", "raw")
    origin.accept()
    gunpy.close(conn)
    ctx = ssl.create_default_context()
    tls_pair.ca.configure_trust(ctx)
    conn = origin.open({**RAW, "tls_opts": ctx})
    assert gunpy.await_up(conn) == ("ok", "raw")
    origin.accept()
    gunpy.close(conn)


def test_tls_handshake_timeout(scripted_origin: OriginFactory) -> None:
    """A server that accepts TCP but never answers the ClientHello."""
    origin = scripted_origin()  # plain TCP origin: it never speaks TLS
    conn = origin.open({**RAW, "tls_handshake_timeout": 200})
    assert gunpy.await_up(conn, 5000) == ("error", ("down", ("shutdown", "timeout")))


def test_server_closing_during_handshake_with_retry(scripted_origin: OriginFactory) -> None:
    """An origin that closes during the handshake: each attempt fails, retries run out."""
    origin = scripted_origin()
    conn = origin.open({**RAW, "retry": 1, "retry_timeout": 10})
    mref = gunpy.monitor(conn)
    origin.accept().close()
    origin.accept().close()
    msg = assert_receive(down(mref), after=5000)
    assert msg[4][0] == "shutdown"


def test_bad_certificate_is_not_retried(scripted_origin: OriginFactory, tls_pair: TLSPair) -> None:
    """Gun #192: a certificate that fails verification is not retried (it will not
    fix itself); the process exits at once with the reason, whatever ``retry`` says."""
    origin = scripted_origin(tls=tls_pair.server_context(hostnames=["127.0.0.1"]))
    conn = origin.open({**RAW, "retry": 5, "retry_timeout": 10})
    result = gunpy.await_up(conn)
    assert result[1][1][1][1][0] == "unknown_ca"
    origin.accept_error()  # the one handshake that failed
    with pytest.raises(TimeoutError):  # and no other connection: not retried
        origin.accept(timeout=100)
    assert origin.count == 1
