"""TLS transport: certificates verified by default (gun-reference 3.1 tls_opts, 4.1).

A trustme CA issues the origin's certificate; the scripted origin (tests/origin.py)
does the server side of the handshake.
"""

from __future__ import annotations

import ssl

import pytest
import trustme

import gunpy
from gunpy import ANY, TIMEOUT
from tests.origin import Origin

RAW = {"protocols": ["raw"], "transport": "tls", "retry": 0}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


def ca_pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


def test_good_certificate_is_accepted(ca: trustme.CA) -> None:
    with Origin(tls=server_context(ca, "127.0.0.1", "localhost")) as origin:
        ok, conn = gunpy.open("127.0.0.1", origin.port, {**RAW, "tls_opts": {"cacerts": ca_pem(ca)}})
        assert gunpy.await_up(conn) == ("ok", "raw")
        server = origin.accept()
        gunpy.data(conn, None, "nofin", b"secret")
        assert server.recv_exact(6) == b"secret"
        server.send(b"reply")
        assert gunpy.receive(("gun_data", conn, None, "nofin", ANY), after=2000)[4] == b"reply"
        assert gunpy.info(conn)["transport"] == "tls"
        assert gunpy.info(conn)["origin_scheme"] == "https"
        gunpy.close(conn)


def test_cacertfile_and_hostname(ca: trustme.CA, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A host name is verified against the certificate and sent as SNI."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    seen: list[str | None] = []
    ctx = server_context(ca, "localhost")
    ctx.sni_callback = lambda sock, name, c: seen.append(name)  # type: ignore[assignment,misc]
    with Origin(tls=ctx) as origin:
        ok, conn = gunpy.open("localhost", origin.port, {**RAW, "tls_opts": {"cacertfile": str(path)}})
        assert gunpy.await_up(conn) == ("ok", "raw")
        origin.accept()
        assert seen == ["localhost"]
        gunpy.close(conn)


def test_wrong_host_is_refused(ca: trustme.CA) -> None:
    """A certificate for another name: the handshake fails, reason names it."""
    with Origin(tls=server_context(ca, "example.org")) as origin:
        ok, conn = gunpy.open("127.0.0.1", origin.port, {**RAW, "tls_opts": {"cacerts": ca_pem(ca)}})
        result = gunpy.await_up(conn)
        assert result[0] == "error"
        reason = result[1][1]
        assert reason[0] == "shutdown"
        alert, text = reason[1][1]
        assert reason[1][0] == "tls_alert"
        assert alert == "handshake_failure" and "mismatch" in text


def test_unknown_ca_is_refused_by_default(ca: trustme.CA) -> None:
    """Verification is on by default, against the system trust store."""
    with Origin(tls=server_context(ca, "127.0.0.1")) as origin:
        ok, conn = gunpy.open("127.0.0.1", origin.port, RAW)
        result = gunpy.await_up(conn)
        assert result[0] == "error"
        assert result[1][1][1][0] == "tls_alert"
        assert result[1][1][1][1][0] == "unknown_ca"


def test_verify_none_and_ssl_context(ca: trustme.CA) -> None:
    """tls_opts may say verify_none, or be an ssl.SSLContext for full control."""
    with Origin(tls=server_context(ca, "127.0.0.1")) as origin:
        ok, conn = gunpy.open("127.0.0.1", origin.port, {**RAW, "tls_opts": {"verify": "verify_none"}})
        assert gunpy.await_up(conn) == ("ok", "raw")
        origin.accept()
        gunpy.close(conn)
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        ok, conn = gunpy.open("127.0.0.1", origin.port, {**RAW, "tls_opts": ctx})
        assert gunpy.await_up(conn) == ("ok", "raw")
        origin.accept()
        gunpy.close(conn)


def test_tls_handshake_timeout() -> None:
    """A server that accepts TCP but never answers the ClientHello."""
    with Origin() as origin:  # plain TCP origin: it never speaks TLS
        ok, conn = gunpy.open(
            "127.0.0.1", origin.port, {**RAW, "tls_handshake_timeout": 200}
        )
        assert gunpy.await_up(conn, 5000) == ("error", ("down", ("shutdown", "timeout")))


def test_server_closing_during_handshake_with_retry() -> None:
    """An origin that closes during the handshake: each attempt fails, retries run out."""
    with Origin() as origin:
        ok, conn = gunpy.open(
            "127.0.0.1", origin.port, {**RAW, "retry": 1, "retry_timeout": 10}
        )
        mref = gunpy.monitor(conn)
        origin.accept().close()
        origin.accept().close()
        msg = gunpy.receive(("DOWN", mref, ANY, ANY, ANY), after=5000)
        assert msg is not TIMEOUT
        assert msg[4][0] == "shutdown"


def test_bad_certificate_is_not_retried(ca: trustme.CA) -> None:
    """Gun #192: a certificate that fails verification is not retried (it will not
    fix itself); the process exits at once with the reason, whatever ``retry`` says."""
    with Origin(tls=server_context(ca, "127.0.0.1")) as origin:
        ok, conn = gunpy.open(
            "127.0.0.1", origin.port, {**RAW, "retry": 5, "retry_timeout": 10}
        )
        result = gunpy.await_up(conn)
        assert result[1][1][1][1][0] == "unknown_ca"
        origin.accept_error()  # the one handshake that failed
        assert origin.accepted.empty()
        assert origin.count == 1
