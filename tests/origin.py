"""A scripted origin: the Python counterpart of Gun's ``gun_test:init_origin``.

A loopback server (TCP, TLS or Unix socket, port 0) run by a thread.  The test
drives it step by step: ``accept()`` the next connection, ``recv_until`` what the
client sent (every byte is recorded), ``send`` a scripted answer, ``close`` or
``reset`` it.  Every wait has a timeout; nothing sleeps.
"""

from __future__ import annotations

import os
import queue
import socket
import ssl
import struct
import tempfile
import threading
from typing import Any


class OriginConn:
    """One accepted connection, seen from the server side."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = b""  # every byte the client sent, in order

    def recv_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        """Read until ``marker`` has been received; return everything up to and
        including it (and keep the rest for the next call)."""
        self.sock.settimeout(timeout)
        buf = getattr(self, "_buf", b"")
        while marker not in buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"client closed before {marker!r}; got {buf!r}")
            self.received += data
            buf += data
        i = buf.index(marker) + len(marker)
        self._buf = buf[i:]
        return buf[:i]

    def recv_exact(self, n: int, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        buf = getattr(self, "_buf", b"")
        while len(buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"client closed after {buf!r}")
            self.received += data
            buf += data
        self._buf = buf[n:]
        return buf[:n]

    def recv_request(self, timeout: float = 5.0) -> bytes:
        """An HTTP request head (up to the blank line)."""
        return self.recv_until(b"\r\n\r\n", timeout)

    def wait_closed(self, timeout: float = 5.0) -> bytes:
        """Read until the client closes; return what came meanwhile."""
        self.sock.settimeout(timeout)
        got = getattr(self, "_buf", b"")
        self._buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return got
            if not data:
                return got
            self.received += data
            got += data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


class Origin:
    """A scripted loopback origin; ``port`` (or ``path`` for Unix) once started."""

    def __init__(
        self,
        tls: ssl.SSLContext | None = None,
        unix: bool = False,
        backlog: int = 16,
    ) -> None:
        self.tls = tls
        self.unix = unix
        self.path: str | None = None
        if unix:
            self._dir = tempfile.mkdtemp(prefix="gunpy-origin-")
            self.path = os.path.join(self._dir, "origin.sock")
            self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.lsock.bind(self.path)
            self.port = 0
        else:
            self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.lsock.bind(("127.0.0.1", 0))
            self.port = self.lsock.getsockname()[1]
        self.lsock.listen(backlog)
        self.accepted: queue.Queue[OriginConn | BaseException] = queue.Queue()
        self.conns: list[OriginConn] = []
        self.count = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="origin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            if self._stop:
                sock.close()
                return
            if self.tls is not None:
                try:
                    sock.settimeout(5)
                    sock = self.tls.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    self.count += 1
                    self.accepted.put(e)
                    continue
            self.count += 1
            c = OriginConn(sock)
            self.conns.append(c)
            self.accepted.put(c)

    def accept(self, timeout: float = 5.0) -> OriginConn:
        """The next accepted connection (raises queue.Empty after ``timeout``)."""
        c = self.accepted.get(timeout=timeout)
        if isinstance(c, BaseException):
            raise c
        return c

    def accept_error(self, timeout: float = 5.0) -> BaseException:
        """The error of the next connection whose TLS handshake failed."""
        c = self.accepted.get(timeout=timeout)
        assert isinstance(c, BaseException), f"expected a failed handshake, got {c!r}"
        return c

    def stop(self) -> None:
        self._stop = True
        try:
            self.lsock.close()
        except OSError:
            pass
        for c in self.conns:
            c.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
                os.rmdir(self._dir)
            except OSError:
                pass

    def __enter__(self) -> Origin:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def refused_port() -> int:
    """A loopback port nothing listens on (bound then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
