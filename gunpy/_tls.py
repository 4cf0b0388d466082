"""TLS client contexts: certificates are verified by default.

Gun adds, unless given: the OS trust store (``cacerts``), HTTPS hostname checking,
``alpn_advertised_protocols`` from ``protocols``, and SNI for host names (not IP
addresses).  ``tls_opts`` may also be a ready ``ssl.SSLContext`` for full control.

Also here: Gun-shaped reasons for socket and TLS errors (``errno_reason``,
``tls_reason``), and ``TlsLayer``, a TLS session over memory BIOs for TLS inside a
tunnel whose bytes do not come straight from the socket (TLS over TLS, TLS inside
an HTTP/2 stream): Gun's ``gun_tls_proxy`` without the extra process.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
from typing import Any, cast

_ALPN = {"http": "http/1.1", "http2": "h2"}


def client_context(tls_opts: Any, protocols: list[str]) -> ssl.SSLContext:
    if isinstance(tls_opts, ssl.SSLContext):
        return tls_opts
    opts: dict[str, Any] = tls_opts or {}
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=opts.get("cacertfile"),
        cadata=opts.get("cacerts"),
    )
    if opts.get("verify") == "verify_none":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif "check_hostname" in opts:
        ctx.check_hostname = bool(opts["check_hostname"])
    if "certfile" in opts:
        ctx.load_cert_chain(opts["certfile"], opts.get("keyfile"), opts.get("password"))
    versions = opts.get("versions")
    if versions:
        order = {"tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3}
        vs = sorted(order[v] for v in versions)
        ctx.minimum_version = vs[0]
        ctx.maximum_version = vs[-1]
    if "ciphers" in opts:
        ctx.set_ciphers(opts["ciphers"])
    alpn = opts.get("alpn_advertised_protocols")
    if alpn is None:
        alpn = [_ALPN[p] for p in protocols if p in _ALPN]
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def server_hostname(host: str, tls_opts: Any) -> str | None:
    """The name to verify and send as SNI.

    Python sends no SNI for an IP address but still checks the certificate's IP
    SANs when given the address here, which is what Gun does.
    """
    if isinstance(tls_opts, dict):
        sni = tls_opts.get("server_name_indication")
        if sni == "disable":
            return None
        if sni is not None:
            return str(sni)
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host.strip("[]")
    except ValueError:
        return host


def errno_reason(e: BaseException) -> Any:
    """An Erlang-style reason for a socket error: ``"econnrefused"``, ``"timeout"``..."""
    if isinstance(e, socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(e, OSError) and e.errno is not None and e.errno in errno.errorcode:
        return errno.errorcode[e.errno].lower()
    return str(e) or type(e).__name__


def tls_reason(e: BaseException) -> Any:
    """Gun reports TLS failures as ``{tls_alert, {Alert, Text}}``; keep that shape."""
    if isinstance(e, ssl.SSLCertVerificationError):
        code = getattr(e, "verify_code", 0)
        text = getattr(e, "verify_message", "") or str(e)
        if code in (18, 19, 20, 21, 2):
            alert = "unknown_ca"
        elif code == 10:
            alert = "certificate_expired"
        elif code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
            alert = "handshake_failure"
        else:
            alert = "bad_certificate"
        return ("tls_alert", (alert, text))
    if isinstance(e, ssl.SSLEOFError):
        # The peer closed (or reset: Python's ssl cannot tell) without an alert:
        # Gun's ssl reports {error, closed}.
        return "closed"
    if isinstance(e, ssl.SSLError):
        name = (e.reason or "handshake_failure").lower()
        return ("tls_alert", (name, str(e)))
    return errno_reason(e)


class TlsLayer:
    """One TLS session inside a tunnel, over the bytes of what is below it (TLS
    over TLS): ``ssl.SSLObject`` on two memory BIOs, Gun's ``gun_tls_proxy``."""

    __slots__ = ("incoming", "obj", "outgoing")

    def __init__(self, ctx: ssl.SSLContext, hostname: str | None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=False, server_hostname=hostname
        )


# Reused read buffers (as _conn._recv_bufs, for the same reason): ``read(65536)``
# allocates 64 KiB and shrinks it to what came, and the small survivors fragment
# the malloc arenas of long-running connections (docs/guide/failures.md, "Leaks
# and the soak").  A buffer is held for one call only.
_read_bufs: list[bytearray] = []


def tls_read(layer: TlsLayer) -> bytes | None:
    """All the plaintext a layer can give now; None when its peer closed."""
    try:
        buf = _read_bufs.pop()
    except IndexError:
        buf = bytearray(65536)
    parts: list[bytes] = []
    try:
        with memoryview(buf) as view:
            while True:
                try:
                    # With a buffer, read() returns a count (typeshed says bytes).
                    n = cast(int, layer.obj.read(65536, buf))
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    return None
                if not n:
                    return None
                parts.append(view[:n].tobytes())
    finally:
        _read_bufs.append(buf)
    if not parts:
        return b""
    return parts[0] if len(parts) == 1 else b"".join(parts)


def negotiated(alpn: str | None, names: list[str]) -> str:
    """Gun's gun_protocols:negotiated/2: the protocol after a TLS handshake
    inside a tunnel, from ALPN and the ``protocols`` names offered."""
    if alpn == "h2" and "http2" in names:
        return "http2"
    if alpn == "http/1.1" and "http" in names:
        return "http"
    return names[0] if len(names) == 1 else "http"
