"""Bad certificates: refused by default, with a reason that names the problem, and
never retried (Gun issue #192).

Four bad certificates, each served by a TLS listener that records every handshake
attempt (``TlsAttempts``): expired (trustme, ``not_after`` in the past),
self-signed (built with ``cryptography``), for another host name, and signed by an
unknown CA.  With the default options each is refused: the process exits
``("shutdown", ("tls_alert", (alert, text)))`` and a request queued meanwhile is
told.  ``verify: "verify_none"`` accepts them, and only when asked.

Retries (``retry: 5, retry_timeout: 100``): the desired behaviour, decided here, is
**exactly one attempt**.  A certificate that fails verification will not fix
itself in 100 ms; retrying only hammers a server that is already misconfigured,
and every attempt costs it a full handshake.  (Gun retries like any other
failure; its issue #192 proposes a ``retry_on_bad_cert`` option.)  Handshake
failures that may be transient (the server closing mid-handshake) are retried,
spaced by ``retry_timeout`` after the immediate first retry.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import gunpy
from gunpy.testing import ScriptedOrigin
from tests.reliability._support import TlsAttempts, Tracker, until_down


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def ctx_from(cert: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


def self_signed(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (tmp / "self.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "self.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "self.pem", tmp / "self.key")
    return ctx


def server_ctx(kind: str, ca: trustme.CA, tmp: Path) -> ssl.SSLContext:
    now = datetime.datetime.now(datetime.timezone.utc)
    if kind == "expired":
        return ctx_from(
            ca.issue_cert(
                "127.0.0.1",
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            )
        )
    if kind == "self_signed":
        return self_signed(tmp)
    if kind == "wrong_host":
        return ctx_from(ca.issue_cert("example.org"))
    if kind == "unknown_ca":
        return ctx_from(trustme.CA().issue_cert("127.0.0.1"))
    assert kind == "good"
    return ctx_from(ca.issue_cert("127.0.0.1"))


def ca_pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


# The default options trust the system store plus (here) our CA: only the named
# defect can be the reason for the refusal.  (alert, words the text must contain)
REFUSALS = {
    "expired": ("certificate_expired", "certificate has expired"),
    "self_signed": ("unknown_ca", "self-signed certificate"),
    "wrong_host": ("handshake_failure", "IP address mismatch"),
    "unknown_ca": ("unknown_ca", "unable to get local issuer certificate"),
}


@pytest.fixture
def listener(request: pytest.FixtureRequest, ca: trustme.CA, tmp_path: Path) -> Iterator[TlsAttempts]:
    with TlsAttempts(server_ctx(request.param, ca, tmp_path)) as t:
        yield t


@pytest.mark.parametrize("listener", list(REFUSALS), indirect=True)
def test_bad_certificate_refused_once_with_its_reason(
    listener: TlsAttempts, ca: trustme.CA, track: Tracker, request: pytest.FixtureRequest
) -> None:
    kind = request.node.callspec.params["listener"]
    alert, words = REFUSALS[kind]
    t0 = time.monotonic()
    listener.gate.clear()  # the server answers the ClientHello once the request is queued
    conn = track.open(
        listener.port,
        transport="tls",
        retry=5,
        retry_timeout=100,
        tls_opts={"cacerts": ca_pem(ca)},
    )
    ref = gunpy.get(conn, "/")  # queued until the handshake: it must be told
    mref = gunpy.monitor(conn)
    # info is handled after the get (same sender, FIFO): the request is queued.  (A
    # request still in the mailbox when the process exits is lost: see
    # test_faults.py::test_a_request_still_in_the_mailbox_at_exit_is_told.)
    assert gunpy.info(conn)["state_name"] in ("connecting", "initial_tls_handshake")
    listener.gate.set()
    msgs, reason = until_down(conn, mref)
    assert reason[0] == "shutdown"
    tag, (got_alert, text) = reason[1]
    assert (tag, got_alert) == ("tls_alert", alert)
    assert words in text, text
    assert msgs == [("gun_error", conn, ref, ("closed", reason))]
    # Exactly one handshake, however many retries were allowed (Gun issue #192).
    attempts = listener.sentinel()
    assert len(attempts) == 1, attempts
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("listener", list(REFUSALS), indirect=True)
def test_verify_none_accepts_only_when_asked(listener: TlsAttempts, track: Tracker) -> None:
    conn = track.open(listener.port, transport="tls", tls_opts={"verify": "verify_none"})
    assert gunpy.await_up(conn) == ("ok", "http")
    gunpy.close(conn)
    assert [r for _, r in listener.sentinel()] == ["ok"]


@pytest.mark.parametrize("listener", ["good"], indirect=True)
def test_good_certificate_with_verify_peer(listener: TlsAttempts, ca: trustme.CA, track: Tracker) -> None:
    conn = track.open(
        listener.port, transport="tls", tls_opts={"verify": "verify_peer", "cacerts": ca_pem(ca)}
    )
    assert gunpy.await_up(conn) == ("ok", "http")
    gunpy.close(conn)


@pytest.mark.parametrize("listener", ["good"], indirect=True)
def test_default_trust_store_refuses_a_private_ca(listener: TlsAttempts, track: Tracker) -> None:
    """No cacerts: the system store, which does not know our CA: refused, once."""
    conn = track.open(listener.port, transport="tls", retry=5, retry_timeout=100)
    error, (down, (shutdown, (tag, (alert, _text)))) = gunpy.await_up(conn, 5000)
    assert (error, down, shutdown, tag, alert) == ("error", "down", "shutdown", "tls_alert", "unknown_ca")
    assert len(listener.sentinel()) == 1


def test_transient_handshake_failures_are_retried_with_spacing(track: Tracker) -> None:
    """The server closing mid-handshake may be transient: retried (3 attempts with
    retry 2), the first retry at once, the second after retry_timeout."""
    with ScriptedOrigin() as origin:
        t0 = time.monotonic()
        conn = track.open(origin.port, transport="tls", retry=2, retry_timeout=300)
        mref = gunpy.monitor(conn)
        stamps = []
        for _ in range(3):
            origin.accept().close()
            stamps.append(time.monotonic() - t0)
        msgs, reason = until_down(conn, mref)
        assert reason[0] == "shutdown"
        assert origin.count == 3
        assert stamps[2] - stamps[1] >= 0.25  # spaced by retry_timeout (generous)
        assert stamps[1] - stamps[0] < 0.25 + 2  # the first retry was immediate-ish
        assert msgs == []


def test_handshake_never_answered_is_bounded_by_tls_handshake_timeout(track: Tracker) -> None:
    with ScriptedOrigin() as origin:
        conn = track.open(origin.port, transport="tls", tls_handshake_timeout=300)
        origin.accept()
        assert gunpy.await_up(conn, 5000) == ("error", ("down", ("shutdown", "timeout")))


def test_bad_certificate_after_a_reconnect_is_not_retried_either(ca: trustme.CA, track: Tracker, tmp_path: Path) -> None:
    """Up with a good certificate; the server restarts with an expired one: the
    reconnect fails verification once, and the process exits."""
    good = server_ctx("good", ca, tmp_path)
    expired = server_ctx("expired", ca, tmp_path)
    with ScriptedOrigin(tls=good) as origin:
        conn = track.open(origin.port, transport="tls", retry=5, retry_timeout=100, tls_opts={"cacerts": ca_pem(ca)})
        assert gunpy.await_up(conn) == ("ok", "http")
        server = origin.accept()
        origin.tls = expired  # the next handshakes use the expired certificate
        server.close()
        mref = gunpy.monitor(conn)
        msgs, reason = until_down(conn, mref)
        assert msgs[-1][0] == "gun_down"
        assert reason[1][1][0] == "certificate_expired"
        assert isinstance(origin.accept_error(), ssl.SSLError)
        with pytest.raises(TimeoutError):  # and no other connection
            origin.accept(0)
