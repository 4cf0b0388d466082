"""TLS client contexts: certificates are verified by default.

Gun adds, unless given: the OS trust store (``cacerts``), HTTPS hostname checking,
``alpn_advertised_protocols`` from ``protocols``, and SNI for host names (not IP
addresses).  ``tls_opts`` may also be a ready ``ssl.SSLContext`` for full control.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any

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
