"""Hostile servers: malformed responses, blocks over the limits, endless bodies,
oversized and invalid Websocket messages, slowloris, early and unasked-for 101s.

Each test checks three things: the connection ends (or carries on) with a clear
error naming what went wrong; memory stays bounded by the configured limits; and
another connection, to a healthy server in another process, keeps working
(``healthy.check()``).  The scripted origin (``gunpy.testing.ScriptedOrigin``)
plays the hostile server byte for byte.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from wsproto.events import CloseConnection

import gunpy
from gunpy import ANY, TIMEOUT
from gunpy.testing import OriginConn, ScriptedOrigin
from tests.peers import Peer
from tests.reliability._support import (
    ServerWs,
    Tracker,
    rss,
    until_down,
    ws_frame,
)

MiB = 1024 * 1024


class Healthy:
    """A connection to the healthy server, opened before the hostile one."""

    def __init__(self, track: Tracker, peer: Peer) -> None:
        self.conn = track.open(peer.port, retry=0)
        assert gunpy.await_up(self.conn) == ("ok", "http")
        self.check()

    def check(self) -> None:
        ref = gunpy.get(self.conn, "/hello")
        assert gunpy.await_(self.conn, ref, 5000)[:3] == ("response", "nofin", 200)
        assert gunpy.await_body(self.conn, ref, 5000) == ("ok", b"Hello world!\n")


@pytest.fixture
def healthy(track: Tracker, healthy_server: Peer) -> Iterator[Healthy]:
    h = Healthy(track, healthy_server)
    yield h
    gunpy.close(h.conn)


def connect(track: Tracker, origin: ScriptedOrigin, **opts: Any) -> tuple[gunpy.Pid, gunpy.Ref, OriginConn]:
    conn = track.open(origin.port, **opts)
    assert gunpy.await_up(conn) == ("ok", "http")
    return conn, gunpy.monitor(conn), origin.accept()


def protocol_error_end(conn: Any, ref: Any, kind: str, text: str) -> tuple[list[Any], Any]:
    """What a connection-wide error ends with (retry 0): the 3-tuple gun_error to the
    stream's process, the stream's ("closed", ...), gun_down, then the exit."""
    reason = ("connection_error", kind, text)
    return (
        [
            ("gun_error", conn, reason),
            ("gun_error", conn, ref, ("closed", ("error", reason))),
            ("gun_down", conn, "http", ("error", reason), [ref]),
        ],
        ("shutdown", ("error", reason)),
    )


# --------------------------------------------------------------------------- malformed heads


MALFORMED = [
    pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", "Invalid status line 'HTTP/1.1 abc OK'.", id="status-not-a-number"),
    pytest.param(b"HTTP/1.1 20 OK\r\n\r\n", "Invalid status line 'HTTP/1.1 20 OK'.", id="status-two-digits"),
    pytest.param(b"HTTP/1.1 099 Odd\r\n\r\n", "Invalid status code 99.", id="status-below-100"),
    pytest.param(b"HTTP/2.0 200 OK\r\n\r\n", "Invalid status line 'HTTP/2.0 200 OK'.", id="version-2"),
    pytest.param(b"ICY 200 OK\r\n\r\n", "Invalid status line 'ICY 200 OK'.", id="not-http"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", None, id="binary-garbage"),
    pytest.param(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "Invalid header line 'no colon here'.", id="header-no-colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\nbad name: v\r\n\r\n", "Invalid header line 'bad name: v'.", id="header-name-space"),
    pytest.param(b"HTTP/1.1 200 OK\r\nx: a\x00b\r\n\r\n", "Invalid header line 'x: a\\x00b'.", id="header-nul"),
    pytest.param(b"HTTP/1.1 200 OK\r\n : v\r\n\r\n", "Invalid header line ' : v'.", id="fold-first-line"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\ncontent-length: 12x\r\n\r\n",
        "Invalid content-length header '12x'.",
        id="content-length-not-a-number",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
        "Invalid content-length header '5, 6'.",
        id="content-length-twice-different",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        "Invalid content-length header '-1'.",
        id="content-length-negative",
    ),
]


@pytest.mark.parametrize(("wire", "text"), MALFORMED)
def test_malformed_head(wire: bytes, text: str | None, track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """gun-reference 7: never a crash; a protocol_error naming the bad line."""
    conn, mref, server = connect(track, origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(wire)
    msgs, reason = until_down(conn, mref)
    if text is None:
        text = msgs[0][2][2]
        assert text.startswith("Invalid status line")
    assert (msgs, reason) == protocol_error_end(conn, ref, "protocol_error", text)
    healthy.check()


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        pytest.param(b"zz\r\n", "Invalid chunk size line b'zz\\r'.", id="chunk-size-not-hex"),
        pytest.param(b"5\r\nhelloXX", "Chunk data is not followed by CRLF.", id="chunk-no-crlf"),
        pytest.param(b"1" * 5000, "The chunk size line is too long.", id="chunk-line-endless"),
        pytest.param(b"1" * 17 + b"\r\n", "Invalid chunk size line b'11111111111111111\\r'.", id="chunk-size-over-16-digits"),
    ],
)
def test_malformed_chunked_body(wire: bytes, text: str, track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    conn, mref, server = connect(track, origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + wire)
    msgs, reason = until_down(conn, mref)
    assert msgs[0] == ("gun_response", conn, ref, "nofin", 200, [("transfer-encoding", "chunked")])
    expected = protocol_error_end(conn, ref, "protocol_error", text)
    data = [m for m in msgs[1:] if m[0] == "gun_data"]
    assert (msgs[1 + len(data) :], reason) == expected
    healthy.check()


def test_response_with_no_request(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """A server that talks first: the owner (no stream) gets the error and gun_down."""
    conn, mref, server = connect(track, origin)
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    msgs, reason = until_down(conn, mref)
    err = ("connection_error", "protocol_error", "The server sent data while no request was outstanding.")
    assert (msgs, reason) == (
        [("gun_error", conn, err), ("gun_down", conn, "http", ("error", err), [])],
        ("shutdown", ("error", err)),
    )
    healthy.check()


def test_eof_in_the_middle_of_a_head(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    conn, mref, server = connect(track, origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-le")
    server.close()
    msgs, reason = until_down(conn, mref)
    text = "The server closed the connection in the middle of a response head."
    assert (msgs, reason) == protocol_error_end(conn, ref, "protocol_error", text)
    healthy.check()


# --------------------------------------------------------------------------- limits


def _limit_text(what: str, limit: int) -> str:
    return f"The response {what} block is larger than the max_{what}_block_size option ({limit} bytes)."


def _dribble(server: OriginConn, head: bytes, line: bytes, stop: threading.Event) -> threading.Thread:
    """Send ``head``, then ``line`` over and over, one send each, until the client closes."""

    def run() -> None:
        try:
            server.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server.send(head)
            while not stop.is_set():
                server.send(line)
        except OSError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("how", ["one_read", "dribbled", "endless"])
def test_header_block_over_the_limit(how: str, track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """max_header_block_size (Gun: 100 kB) holds however the bytes arrive (gun-reference 7:
    Gun misses a block over the limit that arrives in one read)."""
    limit = 100000 if how == "one_read" else 4000
    conn, mref, server = connect(track, origin, http_opts={"max_header_block_size": limit})
    ref = gunpy.get(conn, "/")
    server.recv_request()
    stop = threading.Event()
    t = None
    if how == "one_read":
        # A complete block of 100.5 kB, end included, in one write.
        server.send(b"HTTP/1.1 200 OK\r\n" + b"x-pad: " + b"a" * 100500 + b"\r\n\r\n")
    elif how == "dribbled":
        t = _dribble(server, b"HTTP/1.1 200 OK\r\n", b"x-pad: aaaaaaaaaaaaaaaa\r\n", stop)
    else:  # one header line that never ends
        t = _dribble(server, b"HTTP/1.1 200 OK\r\nx-pad: ", b"a" * 100, stop)
    try:
        msgs, reason = until_down(conn, mref)
    finally:
        stop.set()
        server.close()
        if t is not None:
            t.join(5)
    assert (msgs, reason) == protocol_error_end(conn, ref, "limit_reached", _limit_text("header", limit))
    healthy.check()


@pytest.mark.parametrize("how", ["one_read", "dribbled"])
def test_trailer_block_over_the_limit(how: str, track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """max_trailer_block_size (Gun: 10 kB)."""
    limit = 10000 if how == "one_read" else 2000
    conn, mref, server = connect(track, origin, http_opts={"max_trailer_block_size": limit})
    ref = gunpy.get(conn, "/")
    server.recv_request()
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
    stop = threading.Event()
    t = None
    if how == "one_read":
        server.send(head + b"x-pad: " + b"a" * 10500 + b"\r\n\r\n")
    else:
        t = _dribble(server, head, b"x-pad: aaaaaaaaaaaaaaaa\r\n", stop)
    try:
        msgs, reason = until_down(conn, mref)
    finally:
        stop.set()
        server.close()
        if t is not None:
            t.join(5)
    assert msgs[0][:5] == ("gun_response", conn, ref, "nofin", 200)
    assert ("gun_data", conn, ref, "nofin", b"ok") in msgs
    end = protocol_error_end(conn, ref, "limit_reached", _limit_text("trailer", limit))
    assert (msgs[-3:], reason) == end
    healthy.check()


# --------------------------------------------------------------------------- endless body + flow control


ENDLESS_TOTAL = 200 * MiB


class EndlessChunks:
    """Sends an endless chunked body; ``blocked`` is set when a send has waited 1 s
    for buffer space (the client stopped reading).  ``sent``: the bytes written."""

    def __init__(self, server: OriginConn, chunk: int = 64 * 1024) -> None:
        self.server = server
        self.sent = 0
        self.blocked = threading.Event()
        self.stop = threading.Event()
        self.frame = b"%x\r\n" % chunk + b"z" * chunk + b"\r\n"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self.server.send(self.frame, timeout=1000)
                except TimeoutError:
                    # Not written after 1 s: blocked.  The frame stays queued; an empty
                    # send behind it returns once it has been written.
                    self.blocked.set()
                    while not self.stop.is_set():
                        try:
                            self.server.send(b"", timeout=1000)
                            break
                        except TimeoutError:
                            continue
                    else:
                        return
                self.sent += len(self.frame)
        except OSError:
            pass


def test_endless_chunked_body_with_flow_1_is_bounded(
    track: Tracker, origin: ScriptedOrigin, healthy: Healthy
) -> None:
    """flow: 1 (Gun 4.5): one gun_data, then the socket is not read: the server's send
    blocks (TCP pushes back) and gunpy holds at most one read.  Then the body is
    consumed with update_flow while the server pushes 200 MiB: RSS stays flat."""
    conn, mref, server = connect(track, origin)
    ref = gunpy.get(conn, "/endless", [], {"flow": 1})
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    pusher = EndlessChunks(server)
    try:
        assert gunpy.receive(("gun_response", conn, ref, "nofin", 200, ANY), after=5000) is not TIMEOUT
        first = gunpy.receive(("gun_data", conn, ref, "nofin", ANY), after=5000)
        assert first is not TIMEOUT
        base = rss()
        assert pusher.blocked.wait(15), "the server's send never blocked"
        # Blocked: what is in flight is the kernel's socket buffers, not gunpy's memory.
        in_flight = pusher.sent
        assert in_flight < 32 * MiB, f"{in_flight} bytes sent before the server blocked"
        assert gunpy.receive(("gun_data", conn, ref, ANY, ANY), after=100) is TIMEOUT
        assert rss() - base < 4 * MiB
        # Now read it all, one message per update_flow, while the server keeps pushing.
        got = len(first[4])
        peak = base
        n = 0
        while got < ENDLESS_TOTAL:
            gunpy.update_flow(conn, ref, 1)
            m = gunpy.receive(("gun_data", conn, ref, "nofin", ANY), after=5000)
            assert m is not TIMEOUT
            got += len(m[4])
            n += 1
            if n % 256 == 0:
                peak = max(peak, rss())
        peak = max(peak, rss())
        print(
            f"\nendless body: the server blocked with {in_flight / MiB:.1f} MiB sent; "
            f"{got / MiB:.0f} MiB read in {n + 1} gun_data; RSS {(peak - base) / MiB:+.1f} MiB at most"
        )
        assert peak - base < 8 * MiB, f"RSS grew {(peak - base) / MiB:.1f} MiB over {got / MiB:.0f} MiB"
    finally:
        pusher.stop.set()
        gunpy.close(conn)
        server.close()
        pusher.thread.join(5)
    healthy.check()


def test_informational_flood_is_bounded(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """flow: 1 bounds gun_data, not gun_inform.  A server sending 103s forever makes
    gunpy deliver them as fast as it can parse, whatever the caller's pace: its
    mailbox grows without bound.  Desired: give up after a bounded number of 1xx
    responses to one request with a protocol error (Go's net/http allows 5; the
    test accepts up to 1,000)."""
    conn, mref, server = connect(track, origin)
    ref = gunpy.get(conn, "/", [], {"flow": 1})
    server.recv_request()
    stop = threading.Event()
    t = _dribble(server, b"", b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" * 100, stop)
    informs = 0
    try:
        while informs <= 10000:
            m = gunpy.receive(("gun_inform", conn, ref, ANY, ANY), ("gun_error", conn, ANY), ("gun_error", conn, ref, ANY), after=5000)
            assert m is not TIMEOUT, f"nothing after {informs} gun_inform"
            if m[0] != "gun_inform":
                break
            informs += 1
        assert informs <= 1000, f"{informs} gun_inform and counting"
    finally:
        stop.set()
        gunpy.close(conn)
        server.close()
        t.join(5)
    healthy.check()


# --------------------------------------------------------------------------- Websocket


def ws_connect(track: Tracker, origin: ScriptedOrigin, ws_opts: dict[str, Any] | None = None, extra: bytes = b"", **kw: Any) -> tuple[gunpy.Pid, gunpy.Ref, Any, ServerWs]:
    conn, mref, server = connect(track, origin, **({"ws_opts": ws_opts} if ws_opts else {}))
    ref = gunpy.ws_upgrade(conn, "/ws")
    ws = ServerWs.accept(server, extra=extra, **kw)
    assert gunpy.receive(("gun_upgrade", conn, ref, ["websocket"], ANY), after=3000) is not TIMEOUT
    return conn, mref, ref, ws


def _close_handshake(ws: ServerWs, code: int) -> None:
    """The client sent close ``code``: answer it."""
    events = ws.events(1)
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [code], events
    ws.send(closes[0].response())


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(ws_frame(2, b"b" * 2048), id="one-frame"),
        pytest.param(
            ws_frame(2, b"b" * 200, fin=False) + b"".join(ws_frame(0, b"b" * 200, fin=False) for _ in range(9)) + ws_frame(0, b"", fin=True),
            id="fragments",
        ),
        pytest.param(ws_frame(1, "é".encode() * 600), id="text"),
    ],
)
def test_ws_message_over_max_message_size(wire: bytes, track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """ws_opts max_message_size: close 1009, and the user is told (gun-reference 7)."""
    conn, mref, ref, ws = ws_connect(track, origin, {"max_message_size": 1024})
    ws.server.send(wire)
    msg = gunpy.receive(("gun_ws", conn, ref, ANY), after=5000)
    assert msg == ("gun_ws", conn, ref, ("close", 1009, "Message too big."))
    _close_handshake(ws, 1009)
    msgs, reason = until_down(conn, mref)
    assert (msgs, reason) == ([("gun_down", conn, "ws", "normal", [ref])], "normal")
    healthy.check()


def test_ws_frame_declared_1gib_is_cut_at_the_limit(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """A frame whose header says 1 GiB: the limit fires on the bytes that arrived (the
    message is never buffered whole).  The server goes on streaming the frame, so
    its close can never come (it would be payload): closing_timeout ends it."""
    conn, mref, ref, ws = ws_connect(track, origin, {"max_message_size": 1024, "closing_timeout": 300})
    ws.server.send(bytes([0x82, 127]) + (1 << 30).to_bytes(8, "big") + b"b" * 2048)
    msg = gunpy.receive(("gun_ws", conn, ref, ANY), after=5000)
    assert msg == ("gun_ws", conn, ref, ("close", 1009, "Message too big."))
    stop = threading.Event()
    t = _dribble(ws.server, b"", b"b" * 65536, stop)
    try:
        msgs, reason = until_down(conn, mref)
    finally:
        stop.set()
        ws.server.close()
        t.join(5)
    assert (msgs, reason) == ([("gun_down", conn, "ws", "normal", [ref])], "normal")
    healthy.check()


class WsChild:
    """``tests/reliability/_ws_child.py``: a Websocket client in a fresh process, whose
    peak RSS (ru_maxrss) shows what a hostile server made it hold."""

    def __init__(self, origin: ScriptedOrigin, ws_opts: dict[str, Any], extra: bytes = b"") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability._ws_child", str(origin.port), json.dumps(ws_opts)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        self.ws = ServerWs.accept(origin.accept(10000), extra=extra)
        ready = self.line()
        assert ready[0] == "READY", ready
        self.base = int(ready[1])  # peak RSS so far
        self.base_now = int(ready[2])  # current RSS

    def line(self) -> list[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().split()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def test_ws_deflate_bomb_is_bounded(origin: ScriptedOrigin, healthy: Healthy) -> None:
    """A 250 KiB compressed frame that inflates to 256 MiB, max_message_size 1 MiB:
    close 1009 before it is inflated; the client's peak RSS hardly moves."""
    child = WsChild(
        origin,
        {"compress": True, "max_message_size": MiB},
        extra=b"sec-websocket-extensions: permessage-deflate\r\n",
    )
    try:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = b"".join(c.compress(b"\0" * MiB) for _ in range(256)) + c.flush(zlib.Z_SYNC_FLUSH)
        child.ws.server.send(ws_frame(2, bomb[:-4], rsv1=True))
        out = child.line()
        assert out[:3] == ["WS", "close", "1009"], out
        grew = int(out[3]) - child.base
        assert grew < 16 * MiB, f"peak RSS grew {grew / MiB:.1f} MiB"
    finally:
        child.stop()
    healthy.check()


def test_ws_tiny_fragments_are_bounded_by_max_message_size(origin: ScriptedOrigin, healthy: Healthy) -> None:
    """A message sent as one-byte fragments (and empty ones), max_message_size 256 KiB:
    what the client holds stays near the payload, not ~50 bytes per fragment.  A
    ping in the middle (delivered: silence_pings false) is the measuring point."""
    child = WsChild(origin, {"max_message_size": 256 * 1024, "silence_pings": False})
    try:
        server = child.ws.server
        slow = 60000  # ms: a send may wait that long for the client to read
        one = b"".join(ws_frame(0, b"x", fin=False) for _ in range(10000))
        server.send(ws_frame(2, b"x", fin=False), timeout=slow)
        for _ in range(20):  # 200,000 one-byte fragments: 0.19 MiB of payload
            server.send(one, timeout=slow)
        server.send(ws_frame(0, b"", fin=False) * 100000, timeout=slow)  # no payload at all
        server.send(ws_frame(9, b"now"), timeout=slow)
        out = child.line()
        assert out[:3] == ["WS", "ping", "3"], out
        grew = int(out[4]) - child.base_now  # the fragments are held right now
        server.send(ws_frame(0, b"", fin=True), timeout=slow)
        out = child.line()
        assert out[:3] == ["WS", "binary", str(200001)], out
        assert grew < 4 * MiB, f"peak RSS grew {grew / MiB:.1f} MiB for a 0.19 MiB message"
    finally:
        child.stop()
    healthy.check()


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(ws_frame(1, b"\xff\xfe"), id="invalid-bytes"),
        pytest.param(ws_frame(1, b"\xed\xa0\x80"), id="surrogate"),
        pytest.param(ws_frame(1, "é".encode()[:1], fin=False) + ws_frame(0, b"\x41"), id="split-sequence"),
    ],
)
def test_ws_invalid_utf8(wire: bytes, track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """Invalid UTF-8 in a text message: close 1007 (RFC 6455 8.1), the user is told."""
    conn, mref, ref, ws = ws_connect(track, origin)
    ws.server.send(wire)
    msg = gunpy.receive(("gun_ws", conn, ref, ANY), after=5000)
    assert msg is not TIMEOUT
    assert msg[3][:2] == ("close", 1007)
    _close_handshake(ws, 1007)
    msgs, reason = until_down(conn, mref)
    assert (msgs, reason) == ([("gun_down", conn, "ws", "normal", [ref])], "normal")
    healthy.check()


def test_ws_server_sends_frames_with_the_101(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """Frames in the same write as the 101 (RFC 6455 allows the server to send at
    once): they are delivered right after gun_upgrade."""
    conn, mref, server = connect(track, origin)
    ref = gunpy.ws_upgrade(conn, "/ws")
    ServerWs.accept(server, trailing=ws_frame(1, b"early") + ws_frame(2, b"\x00\x01"))
    assert gunpy.receive(("gun_upgrade", conn, ref, ["websocket"], ANY), after=3000) is not TIMEOUT
    assert gunpy.receive(("gun_ws", conn, ref, ANY), after=3000) == ("gun_ws", conn, ref, ("text", "early"))
    assert gunpy.receive(("gun_ws", conn, ref, ANY), after=3000) == ("gun_ws", conn, ref, ("binary", b"\x00\x01"))
    gunpy.close(conn)
    healthy.check()


def test_ws_server_sends_frames_before_the_101(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """A frame before the 101 is not HTTP: protocol_error on the upgrade stream."""
    conn, mref, server = connect(track, origin)
    ref = gunpy.ws_upgrade(conn, "/ws")
    server.recv_request()
    server.send(ws_frame(1, b"too early") + b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    msgs, reason = until_down(conn, mref)
    text = msgs[0][2][2]
    assert text.startswith("Invalid status line")
    assert (msgs, reason) == protocol_error_end(conn, ref, "protocol_error", text)
    healthy.check()


def test_ws_server_sends_frames_inside_the_101_head(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """Frame bytes between the 101's header lines: an invalid header line."""
    conn, mref, server = connect(track, origin)
    ref = gunpy.ws_upgrade(conn, "/ws")
    server.recv_request()
    server.send(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n" + ws_frame(1, b"x") + b"\r\n\r\n")
    msgs, reason = until_down(conn, mref)
    text = msgs[0][2][2]
    assert text.startswith("Invalid header line")
    assert (msgs, reason) == protocol_error_end(conn, ref, "protocol_error", text)
    healthy.check()


def test_101_to_a_plain_get(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """A 101 nobody asked for (Gun 2.4: connection error protocol_error)."""
    conn, mref, server = connect(track, origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
    msgs, reason = until_down(conn, mref)
    text = "Unexpected 101 response: no upgrade was requested."
    assert (msgs, reason) == protocol_error_end(conn, ref, "protocol_error", text)
    healthy.check()


def test_ws_101_with_a_bad_accept(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """A 101 whose sec-websocket-accept is wrong: Gun drops the connection (normal);
    the upgrade stream gets ("closed", "normal") (gun-reference 4.7)."""
    conn, mref, server = connect(track, origin)
    ref = gunpy.ws_upgrade(conn, "/ws")
    server.recv_request()
    server.send(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-accept: bm90IHRoZSByaWdodCBvbmU=\r\n\r\n"
    )
    msgs, reason = until_down(conn, mref)
    assert (msgs, reason) == (
        [("gun_error", conn, ref, ("closed", "normal")), ("gun_down", conn, "http", "normal", [ref])],
        "normal",
    )
    healthy.check()


def test_ws_server_floods_pings(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """10,000 pings: each answered with a pong, none delivered (silence_pings), and the
    messages after them still arrive."""
    conn, mref, ref, ws = ws_connect(track, origin)
    ws.server.send(ws_frame(9, b"p") * 10000 + ws_frame(1, b"after"))
    assert gunpy.receive(("gun_ws", conn, ref, ANY), after=10000) == ("gun_ws", conn, ref, ("text", "after"))
    pongs = 0
    while pongs < 10000:
        evs = ws.events(1)
        assert evs, f"only {pongs} pongs"
        pongs += len(evs)
    gunpy.close(conn)
    healthy.check()


# --------------------------------------------------------------------------- slowloris


class Drip:
    """Sends ``data`` one byte every ``interval`` seconds until stopped or refused."""

    def __init__(self, server: OriginConn, data: bytes, interval: float = 0.1) -> None:
        self.server = server
        self.data = data
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        try:
            while not self.stop.wait(self.interval):
                self.server.send(self.data[i % len(self.data) : i % len(self.data) + 1])
                i += 1
        except OSError:
            pass

    def end(self) -> None:
        self.stop.set()
        self.thread.join(5)


SLOW_HEAD = b"HTTP/1.1 200 OK\r\nx-slow: " + b"a" * 100000


def test_slowloris_head_is_ended_by_a_request_timeout(
    track: Tracker, origin: ScriptedOrigin, healthy: Healthy
) -> None:
    """A server dripping one byte every 100 ms of a head that never ends (the 100 kB
    header limit would take ~3 hours).  The request option ``timeout`` (gunpy's
    answer to Gun issue #317) ends the stream and, on HTTP/1.1, the connection."""
    conn, mref, server = connect(track, origin)
    t0 = time.monotonic()
    ref = gunpy.get(conn, "/", [], {"timeout": 1000})
    server.recv_request()
    drip = Drip(server, SLOW_HEAD)
    try:
        m = gunpy.receive(("gun_error", conn, ref, ANY), after=5000)
        assert m == ("gun_error", conn, ref, "timeout")
        assert time.monotonic() - t0 < 4
        assert gunpy.receive(("gun_down", conn, ANY, ANY, ANY), after=5000) is not TIMEOUT
    finally:
        drip.end()
        gunpy.close(conn)
    healthy.check()


@pytest.mark.parametrize("end", ["shutdown", "close", "cancel"])
def test_slowloris_what_ends_it_today(end: str, track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """What the user can do today against a slowloris head: ``shutdown`` (bounded by
    closing_timeout) or ``close`` end it; ``cancel`` only silences the stream (HTTP/1.1
    cannot abandon a response), the drip goes on and the connection stays busy."""
    conn, mref, server = connect(track, origin, http_opts={"closing_timeout": 300})
    ref = gunpy.get(conn, "/")
    server.recv_request()
    drip = Drip(server, SLOW_HEAD)
    try:
        # Let a few bytes through: the head is in progress.
        assert gunpy.receive(("gun_response", conn, ref, ANY, ANY, ANY), after=300) is TIMEOUT
        if end == "shutdown":
            gunpy.shutdown(conn)
            msgs, reason = until_down(conn, mref)
            assert (msgs, reason) == ([("gun_error", conn, ref, ("closed", "shutdown"))], "shutdown")
        elif end == "close":
            gunpy.close(conn)
            msgs, reason = until_down(conn, mref)
            assert (msgs, reason) == ([("gun_error", conn, ref, ("closed", "shutdown"))], "shutdown")
        else:
            gunpy.cancel(conn, ref)
            info = gunpy.stream_info(conn, ref)
            assert info[1]["state"] == "stopping"  # still in the pipeline, being drained
            assert conn.is_alive()
            gunpy.close(conn)
    finally:
        drip.end()
    healthy.check()


def test_slowloris_does_not_slow_other_connections(track: Tracker, origin: ScriptedOrigin, healthy: Healthy) -> None:
    """Ten dripping connections at once: the healthy connection answers as fast as ever."""
    conns = []
    drips = []
    try:
        for _ in range(10):
            conn, mref, server = connect(track, origin)
            gunpy.get(conn, "/")
            server.recv_request()
            drips.append(Drip(server, SLOW_HEAD, 0.01))
            conns.append(conn)
        t0 = time.monotonic()
        for _ in range(20):
            healthy.check()
        assert time.monotonic() - t0 < 10
    finally:
        for d in drips:
            d.end()
        for c in conns:
            gunpy.close(c)

