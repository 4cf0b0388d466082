"""Every Python example in the documentation runs.

Each fenced block whose info string is exactly ``python`` in ``docs/**/*.md`` and
``README.md`` is executed.  A page's blocks run in order in one fresh namespace
(later blocks use names bound by earlier ones), in a fresh thread per page, so
each page has its own ``gunpy.self()``, mailbox and owner death: the connections a
page forgets to close are closed when its thread ends, as Gun closes a
connection when its owner exits.  There is no way to skip a block: a ``python``
fence with anything after the language name is an error.  Erlang snippets are
fenced ``erlang`` and are not run.

Before a page runs its namespace holds:

==============  ==================================================================
``gunpy``       the package
``HOST``        ``"127.0.0.1"``
``PORT``,       ``examples/echo_server.py``: Websocket echo on any path, and
``WS_PORT``     ``GET /hello`` answered 200 ``Hello world!\\n`` (then it closes the
                connection, ``connection: close``)
``RAW_PORT``    a TCP echo server (raw-protocol examples)
``HTTP_PORT``   a keep-alive HTTP/1.1 server for the request examples the echo
                server cannot answer (it only accepts GET): any method;
                ``/hello``; ``/echo`` answers the request body (chunked request
                bodies too); ``/stream`` three chunks 50 ms apart; ``/trailers``
                a chunked body with an ``x-checksum`` trailer; ``/inform`` a 103
                then a 200; ``/head`` answers the request line and header lines
                exactly as received; ``/upgrade`` answers a request carrying
                ``connection: upgrade`` with a 101 switching to the protocol its
                ``upgrade`` header names, then echoes raw bytes until the client
                closes; anything else 404
``HTTPS_PORT``  the same server over TLS, certificate for 127.0.0.1/localhost
``CA_FILE``     the path of the CA that signed it (PEM)
``H2_PORT``     hypercorn (tests/peers/asgi_echo.py) on cleartext: HTTP/2 by prior
                knowledge (``protocols: ["http2"]``) or HTTP/1.1; ``/push`` pushes
                ``/pushed.txt``; ``/echo`` (POST) echoes; any other GET answers
                ``HTTP/2 <path>``; Websocket echo (RFC 8441) on any path
==============  ==================================================================

A page whose examples fail only because the HTTP or Websocket protocol handler
has not fully landed yet is listed in ``XFAIL_PAGES`` (non-strict xfail).
"""

from __future__ import annotations

import http.server
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

import gunpy
import gunpy._process

ROOT = Path(__file__).resolve().parent.parent

# Pages whose examples depend on gunpy/protocols/http.py or ws.py being complete.
# Remove entries as the handlers land (the test below fails on stale entries).
XFAIL_PAGES: set[str] = set()

PAGE_TIMEOUT = 60.0  # seconds for all of one page's blocks
SETTLE_TIMEOUT = 10.0  # seconds for a page's actors to stop after its thread ends

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- pages


def doc_pages() -> list[Path]:
    pages = sorted((ROOT / "docs").glob("**/*.md"))
    readme = ROOT / "README.md"
    if readme.exists():
        pages.append(readme)
    return pages


_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_PYTHON = ("python", "py", "python3")


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """The ``python`` blocks of a Markdown page: (line number of the first code
    line, 1-based; code).  Refuses any extra word after ``python`` (no escape hatch)."""
    blocks: list[tuple[int, str]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        words = m["info"].split()
        lang = words[0].lower() if words else ""
        start = i + 1
        j = start
        while j < len(lines):
            close = lines[j].lstrip(" ")
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]).strip():
                break
            j += 1
        if lang in _PYTHON:
            if lang != "python" or len(words) > 1:
                raise ValueError(
                    f"{path.relative_to(ROOT)}:{i + 1}: use a plain ```python fence "
                    f"(got {m['info'].strip()!r}); every Python example must run"
                )
            body = [ln[indent:] if ln[:indent].strip() == "" else ln for ln in lines[start:j]]
            blocks.append((start + 1, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def _params() -> list[Any]:
    out = []
    for p in doc_pages():
        rel = _rel(p)
        marks = []
        if rel in XFAIL_PAGES:
            marks.append(pytest.mark.xfail(strict=False, reason="protocol handler not landed yet"))
        out.append(pytest.param(p, id=rel, marks=marks))
    return out


# --------------------------------------------------------------------------- servers


class _RawEcho:
    """A TCP echo server: every byte received is sent back."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.clients: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="docs-raw-echo", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.clients.append(c)
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c: socket.socket) -> None:
        try:
            while data := c.recv(65536):
                c.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                if c in self.clients:
                    self.clients.remove(c)
            c.close()

    def stop(self) -> None:
        self.sock.close()
        with self.lock:
            clients, self.clients = self.clients, []
        for c in clients:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "docs-origin"
    sys_version = ""

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _reply(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _any(self) -> None:
        body = self._body()
        path = self.path.split("?")[0]
        if path == "/hello":
            self._reply(200, b"Hello world!\n")
        elif path == "/echo":
            self._reply(200, body, self.headers.get("content-type", "application/octet-stream"))
        elif path in ("/stream", "/trailers"):
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("transfer-encoding", "chunked")
            if path == "/trailers":
                self.send_header("trailer", "x-checksum")
            self.end_headers()
            if path == "/stream":
                for n in (1, 2, 3):
                    self._chunk(b"chunk %d\n" % n)
                    time.sleep(0.05)
                self.wfile.write(b"0\r\n\r\n")
            else:
                self._chunk(b"Hello world!\n")
                self.wfile.write(b"0\r\nx-checksum: 6f2e1d\r\n\r\n")
        elif path == "/inform":
            self.send_response_only(103)
            self.send_header("link", "</style.css>; rel=preload; as=style")
            self.end_headers()
            self._reply(200, b"Hello world!\n")
        elif path == "/head":
            # The request head as received: names in their case, in their order.
            head = self.raw_requestline + b"".join(
                f"{n}: {v}\r\n".encode("latin-1") for n, v in self.headers.items()
            )
            self._reply(200, head)
        elif path == "/upgrade" and "upgrade" in self.headers.get("connection", "").lower():
            self.send_response_only(101)
            self.send_header("connection", "upgrade")
            self.send_header("upgrade", self.headers.get("upgrade", ""))
            self.end_headers()
            self.close_connection = True
            try:
                while data := self.rfile.read1(65536):  # raw bytes from now on: echo them
                    self.wfile.write(data)
            except OSError:
                pass
        else:
            self._reply(404, b"Not found\n")

    def __getattr__(self, name: str) -> Any:
        # Any method (TRACE, PROPFIND...) gets the same routes: do_<METHOD> is _any.
        if name.startswith("do_"):
            return self._any
        raise AttributeError(name)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        super().__init__((HOST, 0), _Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, name="docs-http", daemon=True).start()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        # Handshake in the request's thread; the wrapped socket takes the fd over,
        # so close it here (shutdown_request only sees the detached original).
        tls = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
            super().finish_request(tls, client_address)
        except OSError:
            pass  # a client that refused our certificate (the TLS examples)
        finally:
            try:
                tls.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            tls.close()

    def shutdown_request(self, request: Any) -> None:
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gives up (TLS verification examples) is not an error here

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="session")
def doc_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import trustme

    echo = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "echo_server.py"), "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert echo.stdout is not None
    line = echo.stdout.readline().split()
    h2 = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "peers" / "run_hypercorn.py"), "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert h2.stdout is not None
    h2_line = h2.stdout.readline().split()
    raw = _RawEcho()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path_factory.mktemp("docs-tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    plain = _HttpServer()
    tls = _HttpServer(server_ctx)
    try:
        assert line[:1] == ["LISTENING"], f"echo server did not start: {line!r}"
        assert h2_line[:1] == ["LISTENING"], f"hypercorn did not start: {h2_line!r}"
        yield {
            "HOST": HOST,
            "PORT": int(line[1]),
            "WS_PORT": int(line[1]),
            "RAW_PORT": raw.port,
            "HTTP_PORT": plain.port,
            "HTTPS_PORT": tls.port,
            "CA_FILE": str(ca_file),
            "H2_PORT": int(h2_line[1]),
        }
    finally:
        plain.stop()
        tls.stop()
        raw.stop()
        echo.terminate()
        echo.wait(10)
        echo.stdout.close()
        h2.terminate()
        h2.wait(10)
        h2.stdout.close()


# --------------------------------------------------------------------------- the test


def _actors() -> set[Any]:
    return set(pykka.ActorRegistry.get_all())


@pytest.mark.parametrize("page", _params())
def test_page_examples_run(
    page: Path, doc_servers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = python_blocks(page)
    if not blocks:
        return
    rel = _rel(page)
    # pytest replaces threading.excepthook during a test; gunpy's hook is what turns
    # a thread's uncaught exception into its exit reason (docs/guide/processes.md).
    monkeypatch.setattr(threading, "excepthook", gunpy._process._excepthook)
    ns: dict[str, Any] = {"__name__": "docs." + rel, "gunpy": gunpy, **doc_servers}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            for lineno, code in blocks:
                # Pad so tracebacks point at the Markdown file's own line numbers.
                exec(compile("\n" * (lineno - 1) + code, str(page), "exec"), ns)
        except BaseException as e:
            failure.append(e)

    before = _actors()
    t = threading.Thread(target=run, name=f"docs:{rel}", daemon=True)
    t.start()
    t.join(PAGE_TIMEOUT)
    if t.is_alive():
        pytest.fail(f"{rel}: examples still running after {PAGE_TIMEOUT:.0f} s")
    if failure:
        raise failure[0]
    # The page's thread has ended, so the connections it owned are closing; an
    # OwnerActor the page started and did not stop is a bug in the example.
    deadline = time.monotonic() + SETTLE_TIMEOUT
    left = _actors() - before
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = {a for a in left if a.is_alive()}
    if left:
        names = sorted(a.actor_class.__name__ for a in left)
        for a in left:
            a.stop(block=False)
        pytest.fail(f"{rel}: actors still running after the page ended: {names}")


def test_no_python_block_is_skipped() -> None:
    """Only plain ```python fences: python_blocks raises on ``python norun`` etc."""
    for page in doc_pages():
        python_blocks(page)


def test_xfail_list_names_existing_pages() -> None:
    pages = {_rel(p) for p in doc_pages()}
    assert not XFAIL_PAGES - pages, sorted(XFAIL_PAGES - pages)
