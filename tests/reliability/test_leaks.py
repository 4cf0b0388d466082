"""Leaks: many open/request/close cycles leave nothing behind.

``GUNPY_LEAK_CYCLES`` HTTP cycles (default 2,000; ``make soak`` runs 10,000) against
nginx (keep-alive HTTP/1.1) and ``GUNPY_LEAK_WS_SESSIONS`` Websocket sessions
(default 300; 1,000 under ``make soak``) against the websockets echo server.  Each
cycle opens a connection, makes a request (or an upgrade and an echo), ends it one
of several ways (``close``, ``shutdown``, the server closing, the owner thread
exiting), and waits for the connection process's ``DOWN``.  Afterwards the
connection threads, the pykka registry, the open fds and the test thread's mailbox
are back where they started, and RSS has not grown by more than a few MiB.

The figures (cycles per second, RSS growth) are printed with ``-s`` and quoted in
docs/guide/failures.md.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from typing import Any

import gunpy
from gunpy import ANY, TIMEOUT
from gunpy.testing import ScriptedOrigin
from tests.reliability._support import Resources, leaks, rss, settle

CYCLES = int(os.environ.get("GUNPY_LEAK_CYCLES", "2000"))
WS_SESSIONS = int(os.environ.get("GUNPY_LEAK_WS_SESSIONS", "300"))
MiB = 1024 * 1024


def _down(conn: gunpy.Pid, mref: gunpy.Ref) -> Any:
    msg = gunpy.receive(("DOWN", mref, "process", conn, ANY), after=10000)
    assert msg is not TIMEOUT, f"{conn!r} did not exit"
    return msg[4]


def _mailbox_len() -> int:
    box = gunpy.self().mailbox
    assert box is not None
    return len(box)


def http_cycle(port: int, i: int, small: bytes) -> None:
    ok, conn = gunpy.open("127.0.0.1", port, {"retry": 0})
    assert ok == "ok"
    mref = gunpy.monitor(conn)
    how = i % 4
    headers = [("connection", "close")] if how == 2 else []
    ref = gunpy.get(conn, "/small.txt", headers)
    assert gunpy.await_(conn, ref, 5000)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref, 5000) == ("ok", small)
    if how == 0:
        gunpy.close(conn)
        assert _down(conn, mref) == "shutdown"
    elif how == 1:
        gunpy.shutdown(conn)
        assert _down(conn, mref) == "shutdown"
    elif how == 2:
        # connection: close: gunpy closes after the response; retry 0: the process exits.
        assert _down(conn, mref) == "normal"
    else:
        # The owner thread exits: the connection closes ("normal").
        box: list[Any] = []

        def owner() -> None:
            ok, c = gunpy.open("127.0.0.1", port, {"retry": 0})
            r = gunpy.get(c, "/small.txt")
            box.append((c, gunpy.await_body(c, r, 5000) if gunpy.await_(c, r, 5000)[0] == "response" else None))

        t = threading.Thread(target=owner)
        t.start()
        t.join(10)
        c2, body = box[0]
        m2 = gunpy.monitor(c2)
        assert body == ("ok", small)
        assert _down(c2, m2) == "normal"
        gunpy.close(conn)
        assert _down(conn, mref) == "shutdown"
    gunpy.flush(conn)


def test_http_cycles_leave_nothing(nginx_server: Any) -> None:
    small = nginx_server.small_body
    for i in range(8):  # warm-up: first-use allocations (timer thread, caches)
        http_cycle(nginx_server.port, i, small)
    base = settle(Resources.snapshot())
    rss0 = rss()
    t0 = time.monotonic()
    for i in range(CYCLES):
        http_cycle(nginx_server.port, i, small)
    elapsed = time.monotonic() - t0
    after = settle(base)
    grew = rss() - rss0
    print(
        f"\nleaks: {CYCLES} HTTP cycles in {elapsed:.1f} s ({CYCLES / elapsed:.0f}/s); "
        f"RSS {grew / MiB:+.1f} MiB; {after.describe()}"
    )
    assert leaks(base, after) == []
    assert after.conn_threads == base.conn_threads
    assert _mailbox_len() == 0
    assert grew < 16 * MiB, (
        f"RSS grew {grew / MiB:.1f} MiB over {CYCLES} cycles (while "
        "see test_a_closed_connection_is_freed)"
    )


def ws_session(port: int, i: int) -> None:
    ok, conn = gunpy.open("127.0.0.1", port, {"retry": 0})
    assert ok == "ok"
    mref = gunpy.monitor(conn)
    assert gunpy.await_up(conn) == ("ok", "http")
    ref = gunpy.ws_upgrade(conn, "/echo")
    assert gunpy.await_(conn, ref, 5000)[0] == "upgrade"
    gunpy.ws_send(conn, ref, [("text", f"hello {i}"), ("binary", bytes([i % 256]) * 100)])
    assert gunpy.await_(conn, ref, 5000) == ("ws", ("text", f"hello {i}"))
    assert gunpy.await_(conn, ref, 5000) == ("ws", ("binary", bytes([i % 256]) * 100))
    how = i % 3
    if how == 0:
        gunpy.close(conn)
        assert _down(conn, mref) == "shutdown"
    elif how == 1:
        # shutdown: close 1001, the echo server's close reply, then exit.
        gunpy.shutdown(conn)
        assert _down(conn, mref) == "shutdown"
        assert gunpy.await_(conn, ref, 0)[0] in ("ws", "error")
    else:
        # The user's close frame; the server answers; gun_down normal; retry 0: exit.
        gunpy.ws_send(conn, ref, ("close", 1000, "bye"))
        assert gunpy.await_(conn, ref, 5000) == ("ws", ("close", 1000, "bye"))
        assert _down(conn, mref) == "normal"
        assert gunpy.receive(("gun_down", conn, "ws", "normal", [ref]), after=0) is not TIMEOUT
    gunpy.flush(conn)


def test_ws_sessions_leave_nothing(ws_echo_server: Any) -> None:
    for i in range(6):
        ws_session(ws_echo_server.port, i)
    base = settle(Resources.snapshot())
    rss0 = rss()
    t0 = time.monotonic()
    for i in range(WS_SESSIONS):
        ws_session(ws_echo_server.port, i)
    elapsed = time.monotonic() - t0
    after = settle(base)
    grew = rss() - rss0
    print(
        f"\nleaks: {WS_SESSIONS} Websocket sessions in {elapsed:.1f} s "
        f"({WS_SESSIONS / elapsed:.0f}/s); RSS {grew / MiB:+.1f} MiB; {after.describe()}"
    )
    assert leaks(base, after) == []
    assert _mailbox_len() == 0
    assert grew < 16 * MiB, f"RSS grew {grew / MiB:.1f} MiB over {WS_SESSIONS} sessions"


def test_a_closed_connection_is_freed(origin: ScriptedOrigin) -> None:
    """Once a connection has exited and the user holds no reference to it, nothing
    else does: its Pid and mailbox are freed.  (Erlang drops the monitors a process
    holds when it dies.)"""

    def one() -> weakref.ref[gunpy.Pid]:
        ok, conn = gunpy.open("127.0.0.1", origin.port, {"retry": 0})
        assert gunpy.await_up(conn) == ("ok", "http")
        mref = gunpy.monitor(conn)
        gunpy.close(conn)
        assert gunpy.receive(("DOWN", mref, ANY, ANY, ANY), after=5000) is not TIMEOUT
        gunpy.flush(conn)
        return weakref.ref(conn)

    ref = one()
    settle(Resources.snapshot())  # its thread has ended
    gc.collect()
    assert ref() is None, [type(r).__name__ for r in gc.get_referrers(ref())]
