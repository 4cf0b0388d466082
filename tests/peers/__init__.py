"""Real peers for gunpy's integration tests, all on 127.0.0.1.

Import as ``from tests.peers import Peer, free_port, need, ...``; the pytest
fixtures built on these live in ``tests/conftest.py``.  The files next to this
module are the peers' programs and configuration templates:

=====================  ==================================================================
``echo_websockets.py`` websockets echo server (permessage-deflate unless --no-deflate; TLS)
``echo_aiohttp.py``    aiohttp: HTTP/1.1 routes (chunked, POST echo, /headers...) + WS echo
``asgi_echo.py``       ASGI app served by ``run_hypercorn.py``: HTTP/1.1, h2c, h2 over TLS,
                       HTTP/2 trailers, WebSocket echo
``raw_http.py``        byte-for-byte HTTP/1.1 replies: trailers, chunk extensions, a body
                       delimited by close
``nginx.conf.in``      nginx 1.22: static 100 B / 1 MiB files, chunked, 204, 301, /ws proxy
``nginx_h2.conf.in``   nginx 1.22 over TLS with ``http2`` (ALPN h2): the same static files
``tinyproxy.conf.in``  tinyproxy: HTTP forward proxy and CONNECT tunnels
``danted.conf.in``     dante: SOCKS5 (no auth, or RFC 1929 against system users)
``install_debian_peers.sh``  installs nginx-light, tinyproxy, dante-server (``make peers``)
=====================  ==================================================================

Rules every peer here follows: it binds 127.0.0.1 only, on a port it picked itself
(port 0, announced by a ``LISTENING <port>`` line) or on :func:`free_port`; it is a
child of the test process, started in its own process group, with stdout and
stderr in a log file; it is stopped by its own handle (SIGTERM, wait, SIGKILL):
PID 1 on the CI machine does not reap orphans, so nothing may be left behind.

A missing peer program calls :func:`pytest.skip` on a developer's machine but
:func:`pytest.fail` when ``GUNPY_REQUIRE_PEERS=1`` (set by ``make test`` under CI),
so CI never passes by silently skipping its peers.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

__all__ = [
    "HERE",
    "HOST",
    "REQUIRE_PEERS_ENV",
    "NginxPeer",
    "Peer",
    "PeerError",
    "TLSFiles",
    "free_port",
    "make_tls",
    "need",
    "need_module",
    "require_peers",
    "start_aiohttp",
    "start_dante",
    "start_hypercorn",
    "start_nginx",
    "start_nginx_h2",
    "start_raw_http",
    "start_tinyproxy",
    "start_ws_echo",
    "wait_port",
]

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
REQUIRE_PEERS_ENV = "GUNPY_REQUIRE_PEERS"
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_LISTENING = re.compile(rb"^LISTENING (\d+)\s*$", re.MULTILINE)


# --------------------------------------------------------------------------- basics


def require_peers() -> bool:
    """True when a missing peer must fail the run (``GUNPY_REQUIRE_PEERS=1``)."""
    return os.environ.get(REQUIRE_PEERS_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _missing(what: str) -> None:
    if require_peers():
        pytest.fail(f"{what} ({REQUIRE_PEERS_ENV} is set: peers are required)", pytrace=False)
    pytest.skip(what)


def need(binary: str) -> str:
    """The full path of *binary* (PATH, then the sbin dirs), else skip (or fail under CI)."""
    path = shutil.which(binary)
    if path is None:
        for d in SBIN_DIRS:
            candidate = os.path.join(d, binary)
            if os.access(candidate, os.X_OK):
                path = candidate
                break
    if path is None:
        _missing(f"{binary} is not installed (run `make peers`)")
        raise AssertionError("unreachable")  # pragma: no cover  (skip/fail raise)
    return path


def need_module(name: str) -> ModuleType:
    """Import *name*, else skip (or fail under CI): the Python-side twin of :func:`need`."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing(f"Python module {name} is not installed ({exc}; run `make venv`)")
        raise AssertionError("unreachable") from exc  # pragma: no cover


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS's pick; a tiny race window).

    Prefer peers that bind port 0 themselves and print ``LISTENING <port>``;
    use this only for programs that must be told their port (nginx, tinyproxy, danted).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def port_accepts(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    try:
        socket.create_connection((host, port), timeout).close()
    except OSError:
        return False
    return True


def wait_port(port: int, timeout: float = 15.0, host: str = HOST) -> None:
    """Wait until *port* accepts a TCP connection; :class:`PeerError` after *timeout*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(port, host):
            return
        time.sleep(0.05)
    raise PeerError(f"nothing accepted connections on {host}:{port} within {timeout:.0f}s")


# --------------------------------------------------------------------------- Peer


class PeerError(RuntimeError):
    """A peer failed to start (its log's tail is in the message)."""

    def __init__(self, message: str, *, exited: bool = False) -> None:
        super().__init__(message)
        self.exited = exited


_LIVE: set[Peer] = set()


@atexit.register
def _stop_leftovers() -> None:  # teardown was skipped (e.g. Ctrl-C during setup)
    for peer in list(_LIVE):
        peer.stop()


class Peer:
    """One peer process, a child of this process, with its output in a log file.

    *argv* is started at once in its own process group (stdin from /dev/null,
    stdout+stderr to *log_path*).  Readiness: when *port* is None, the peer must
    print ``LISTENING <port>`` (that port becomes ``self.port``); when *port* is
    given, the first of that line or *port* accepting a connection.  A peer that
    exits or is not ready within *startup_timeout* raises :class:`PeerError`
    (after being stopped).  :meth:`stop` (or ``with Peer(...)``) ends it by its
    own handle: SIGTERM, wait, SIGKILL, then SIGKILL to what is left of its
    process group (nginx workers, dante children).
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        name: str | None = None,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        host: str = HOST,
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.host = host
        self.stop_timeout = stop_timeout
        self._own_log = log_path is None
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"gunpy-peer-{self.name}-", suffix=".log")
            os.close(fd)
            log_path = tmp
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.add(self)
        try:
            self.port: int = self._wait_ready(port, startup_timeout)
        except BaseException:
            self.stop()
            raise

    # -- start-up

    @classmethod
    def on_free_port(
        cls, build: Callable[[int], Sequence[str | os.PathLike[str]]], attempts: int = 3, **kw: Any
    ) -> Peer:
        """Start ``build(port)`` on a :func:`free_port`; retry on a new port if the
        peer exits during start-up (the port was taken in the race window)."""
        for attempt in range(attempts):
            port = free_port()
            try:
                return cls(build(port), port=port, **kw)
            except PeerError as exc:
                if not exc.exited or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_ready(self, port: int | None, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            m = _LISTENING.search(self._read_log())
            if m:
                return int(m.group(1))
            if port is not None and port_accepts(port, self.host):
                return port
            if self.proc.poll() is not None:
                raise PeerError(
                    f"peer {self.name} exited with {self.proc.returncode} during start-up\n"
                    f"{self.describe()}",
                    exited=True,
                )
            if time.monotonic() > deadline:
                raise PeerError(
                    f"peer {self.name} not ready after {timeout:.0f}s\n{self.describe()}"
                )
            time.sleep(0.02)

    # -- use

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    def ws_url(self, path: str = "/", scheme: str = "ws") -> str:
        return self.url(path, scheme)

    def _read_log(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    def log_text(self) -> str:
        return self._read_log().decode("utf-8", "replace")

    def describe(self, lines: int = 30) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"  argv: {' '.join(self.argv)}\n  log {self.log_path}:\n{tail}"

    # -- stop

    def stop(self) -> int | None:
        """Stop the peer (idempotent); returns its exit status."""
        if self not in _LIVE:
            return self.proc.returncode
        _LIVE.discard(self)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # children it left (the process group's id is the peer's pid: ours alone)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._own_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
        return self.proc.returncode

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self.proc.returncode}"
        return f"<Peer {self.name} {self.host}:{getattr(self, 'port', '?')} pid={self.proc.pid} {state}>"


# --------------------------------------------------------------------------- Python peers


def _py(script: str, *args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, str(HERE / script), *(os.fspath(a) for a in args)]


def start_ws_echo(
    log_dir: Path, *, deflate: bool = True, tls: TLSFiles | None = None, name: str = "ws-echo"
) -> Peer:
    """websockets echo server (``echo_websockets.py``): ``ws[s]://127.0.0.1:P/<any>``."""
    need_module("websockets")
    args: list[str | os.PathLike[str]] = ["0"]
    if not deflate:
        args.append("--no-deflate")
    if tls is not None:
        args += ["--tls", tls.cert_file, tls.key_file]
    return Peer(_py("echo_websockets.py", *args), name=name, log_path=log_dir / f"{name}.log")


def start_aiohttp(log_dir: Path, name: str = "aiohttp") -> Peer:
    """aiohttp server (``echo_aiohttp.py``): HTTP/1.1 routes + ``/ws`` echo."""
    need_module("aiohttp")
    return Peer(_py("echo_aiohttp.py", "0"), name=name, log_path=log_dir / f"{name}.log")


def start_hypercorn(log_dir: Path, *, tls: TLSFiles | None = None, name: str = "hypercorn") -> Peer:
    """hypercorn + ``asgi_echo.py``: HTTP/1.1, h2c, WS; with *tls*, h2/http1.1 by ALPN."""
    need_module("hypercorn")
    args: list[str | os.PathLike[str]] = ["0"]
    if tls is not None:
        args += ["--tls", tls.cert_file, tls.key_file]
    return Peer(_py("run_hypercorn.py", *args), name=name, log_path=log_dir / f"{name}.log")


def start_raw_http(log_dir: Path, name: str = "raw-http") -> Peer:
    """``raw_http.py``: hand-written HTTP/1.1 replies (trailers, chunk extensions...)."""
    return Peer(_py("raw_http.py", "0"), name=name, log_path=log_dir / f"{name}.log")


# --------------------------------------------------------------------------- nginx


SMALL_BODY: bytes = (
    b"gunpy nginx peer: a static file of exactly one hundred bytes".ljust(99, b".") + b"\n"
)
BIG_SIZE = 1 << 20


@dataclass
class NginxPeer:
    """A running nginx (see ``nginx.conf.in``) and what it serves."""

    peer: Peer
    prefix: Path
    ws_backend_port: int
    small_body: bytes = SMALL_BODY
    big_sha256: str = ""
    big_size: int = BIG_SIZE

    @property
    def port(self) -> int:
        return self.peer.port

    @property
    def host(self) -> str:
        return self.peer.host

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return self.peer.url(path, scheme)

    def ws_url(self, path: str = "/ws") -> str:
        return self.peer.url(path, "ws")

    @property
    def big_body(self) -> bytes:
        return (self.prefix / "html" / "big.bin").read_bytes()

    def stop(self) -> int | None:
        return self.peer.stop()


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def start_nginx(prefix: Path, ws_backend_port: int) -> NginxPeer:
    """nginx in the foreground with everything under *prefix*; ``/ws`` proxies to
    ``127.0.0.1:ws_backend_port``."""
    exe = need("nginx")
    prefix = prefix.resolve()
    for d in ("logs", "tmp", "html"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    html = prefix / "html"
    (html / "small.txt").write_bytes(SMALL_BODY)
    (html / "index.html").write_bytes(SMALL_BODY)
    big = random.Random(20240229).randbytes(BIG_SIZE)
    (html / "big.bin").write_bytes(big)
    template = (HERE / "nginx.conf.in").read_text()
    conf = prefix / "nginx.conf"

    def build(port: int) -> list[str]:
        text = (
            template.replace("@USER_LINE@", "user root;" if _as_root() else "")
            .replace("@PORT@", str(port))
            .replace("@WSPORT@", str(ws_backend_port))
        )
        conf.write_text(text)
        return [exe, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "logs" / "error.log"),
                "-g", "daemon off;"]  # fmt: skip

    peer = Peer.on_free_port(build, name="nginx", log_path=prefix / "logs" / "stdout.log")
    return NginxPeer(peer, prefix, ws_backend_port, big_sha256=hashlib.sha256(big).hexdigest())


def start_nginx_h2(prefix: Path, tls: TLSFiles) -> NginxPeer:
    """nginx serving the static files of :func:`start_nginx` over TLS with HTTP/2
    (``listen ... ssl http2``: ALPN ``h2``, else http/1.1); trust ``tls.ca_file``."""
    exe = need("nginx")
    prefix = prefix.resolve()
    for d in ("logs", "tmp", "html"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    html = prefix / "html"
    (html / "small.txt").write_bytes(SMALL_BODY)
    (html / "index.html").write_bytes(SMALL_BODY)
    big = random.Random(20240229).randbytes(BIG_SIZE)
    (html / "big.bin").write_bytes(big)
    template = (HERE / "nginx_h2.conf.in").read_text()
    conf = prefix / "nginx.conf"

    def build(port: int) -> list[str]:
        text = (
            template.replace("@USER_LINE@", "user root;" if _as_root() else "")
            .replace("@PORT@", str(port))
            .replace("@CERT@", str(Path(tls.cert_file).resolve()))
            .replace("@KEY@", str(Path(tls.key_file).resolve()))
        )
        conf.write_text(text)
        return [exe, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "logs" / "error.log"),
                "-g", "daemon off;"]  # fmt: skip

    peer = Peer.on_free_port(build, name="nginx-h2", log_path=prefix / "logs" / "stdout.log")
    return NginxPeer(peer, prefix, 0, big_sha256=hashlib.sha256(big).hexdigest())


# --------------------------------------------------------------------------- proxies


def start_tinyproxy(workdir: Path) -> Peer:
    """tinyproxy: HTTP forward proxy and CONNECT to any port, on 127.0.0.1."""
    exe = need("tinyproxy")
    workdir.mkdir(parents=True, exist_ok=True)
    template = (HERE / "tinyproxy.conf.in").read_text()
    conf = workdir / "tinyproxy.conf"
    # As root tinyproxy insists on dropping privileges to some user; nobody will do.
    user_lines = "User nobody\nGroup nogroup" if _as_root() else ""

    def build(port: int) -> list[str]:
        conf.write_text(template.replace("@PORT@", str(port)).replace("@USER_LINES@", user_lines))
        return [exe, "-d", "-c", str(conf)]

    return Peer.on_free_port(build, name="tinyproxy", log_path=workdir / "tinyproxy.log")


def start_dante(workdir: Path, method: str = "none") -> Peer:
    """dante SOCKS5 server on 127.0.0.1; *method* ``none`` or ``username`` (system users)."""
    exe = need("danted")
    workdir.mkdir(parents=True, exist_ok=True)
    template = (HERE / "danted.conf.in").read_text()
    conf = workdir / "danted.conf"
    user_lines = "user.privileged: root\nuser.unprivileged: nobody" if _as_root() else ""

    def build(port: int) -> list[str]:
        conf.write_text(
            template.replace("@PORT@", str(port))
            .replace("@METHOD@", method)
            .replace("@USER_LINES@", user_lines)
        )
        return [exe, "-f", str(conf), "-p", str(workdir / "danted.pid")]

    return Peer.on_free_port(build, name="danted", log_path=workdir / "danted.log")


# --------------------------------------------------------------------------- TLS


@dataclass
class TLSFiles:
    """A throw-away CA (trustme) and a server certificate for 127.0.0.1, ::1, localhost.

    ``ca_file``: the CA in PEM (what a client trusts); ``cert_file``: the server's
    chain in PEM; ``key_file``: its private key.  ``ca``/``cert`` are the trustme
    objects, for issuing more certificates (e.g. a client certificate).
    """

    ca: Any
    cert: Any
    ca_file: Path
    cert_file: Path
    key_file: Path
    hostnames: tuple[str, ...] = field(default=("127.0.0.1", "localhost", "::1"))

    def server_context(self, alpn: Sequence[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def client_context(self, alpn: Sequence[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx


def make_tls(directory: Path) -> TLSFiles:
    """Make a CA and a server certificate with trustme; write the PEM files in *directory*."""
    trustme = need_module("trustme")
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    hostnames = ("127.0.0.1", "localhost", "::1")
    cert = ca.issue_cert(*hostnames)
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    with open(cert_file, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    return TLSFiles(ca, cert, ca_file, cert_file, key_file, hostnames)
