"""A throw-away certificate authority and a server certificate (trustme), for tests."""

from __future__ import annotations

import atexit
import os
import shutil
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_HOSTNAMES", "TLSPair", "TrustmeMissing", "make_tls_pair"]

#: The names the default server certificate is valid for.
DEFAULT_HOSTNAMES: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")


class TrustmeMissing(ImportError):
    """``trustme`` (a test-only dependency) is not installed."""


def _trustme() -> Any:
    try:
        import trustme
    except ImportError as exc:
        raise TrustmeMissing(
            "gunpy.testing TLS helpers need trustme: pip install trustme (or gunpy[test])"
        ) from exc
    return trustme


class TLSPair:
    """Both ends of a TLS test: a CA, a server certificate it signed, and the client's trust.

    ``server_context()`` is what a loopback server wraps its sockets with;
    ``tls_opts`` is what ``gunpy.open`` needs to trust that server
    (``{"transport": "tls", "tls_opts": pair.tls_opts}``).  The PEM files live in
    ``directory``: ``ca_file`` (the CA certificate), ``cert_file`` (the server's
    chain) and ``key_file`` (its private key).
    """

    def __init__(self, ca: Any, directory: Path, hostnames: Sequence[str]) -> None:
        self.ca = ca  #: the ``trustme.CA``, to issue more certificates
        self.hostnames = tuple(hostnames)
        self.directory = directory
        self.cert = ca.issue_cert(*self.hostnames)  #: the server's ``trustme.LeafCert``
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = str(directory / "ca.pem")
        self.cert_file = str(directory / "server.pem")
        self.key_file = str(directory / "server.key")
        ca.cert_pem.write_to_path(self.ca_file)
        self.cert.private_key_pem.write_to_path(self.key_file)
        with open(self.cert_file, "wb") as f:
            for blob in self.cert.cert_chain_pems:
                f.write(blob.bytes())

    @property
    def ca_pem(self) -> str:
        """The CA certificate in PEM (``tls_opts`` ``cacerts`` takes it as well)."""
        pem: bytes = self.ca.cert_pem.bytes()
        return pem.decode("ascii")

    @property
    def tls_opts(self) -> dict[str, Any]:
        """gunpy ``tls_opts`` that trust this CA (a new dict each time)."""
        return {"cacertfile": self.ca_file}

    def server_context(
        self, alpn: Sequence[str] | None = None, hostnames: Sequence[str] | None = None
    ) -> ssl.SSLContext:
        """A server-side context with this pair's certificate (or a new one for
        ``hostnames``, signed by the same CA); ``alpn``: protocols to offer."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert = self.cert if hostnames is None else self.ca.issue_cert(*hostnames)
        cert.configure_cert(ctx)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def client_context(self, alpn: Sequence[str] | None = None) -> ssl.SSLContext:
        """A client-side context trusting the CA (usable as ``tls_opts`` itself)."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def __repr__(self) -> str:
        return f"<TLSPair {', '.join(self.hostnames)} in {self.directory}>"


def make_tls_pair(
    directory: str | os.PathLike[str] | None = None,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
) -> TLSPair:
    """A new CA and a server certificate for ``hostnames``, written to ``directory``
    (a temporary directory removed at exit when None).

    Raises ``TrustmeMissing`` (an ``ImportError``) when trustme is not installed.
    """
    trustme = _trustme()
    if directory is None:
        tmp = tempfile.mkdtemp(prefix="gunpy-tls-")
        atexit.register(shutil.rmtree, tmp, True)
        directory = tmp
    return TLSPair(trustme.CA(), Path(directory), hostnames)
