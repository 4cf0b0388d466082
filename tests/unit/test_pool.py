"""``gunpy.pool`` without servers: authorities, options, the stream tracker, the
manager call protocol.

The tracker is driven with fabricated Gun messages, as a connection would send
them; the fake manager and reply target are plain Pids whose mailboxes the test
reads.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

import gunpy
import gunpy.pool as pool
from gunpy import ANY, TIMEOUT
from gunpy.pool import _CANCELLED, _call, _config_error, _split_authority, _Tracker
from gunpy.process import Mailbox, Pid


def test_authority() -> None:
    """Gun's host header rules (gun_http:host_header/3)."""
    assert pool.authority("example.org", 80) == "example.org"
    assert pool.authority("example.org", 443) == "example.org"
    assert pool.authority("example.org", 443, "tcp") == "example.org:443"
    assert pool.authority("example.org", 80, "tls") == "example.org:80"
    assert pool.authority("example.org", 8080, "ssl") == "example.org:8080"
    assert pool.authority("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert pool.authority("::1", 8080) == "[::1]:8080"
    assert pool.authority(b"h", 81) == "h:81"
    assert _split_authority("h:81") == ("h", 81)
    assert _split_authority("h") == ("h", 80)
    assert _split_authority("[::1]:8080") == ("::1", 8080)
    assert _split_authority("[::1]") == ("::1", 80)


def test_start_pool_option_errors() -> None:
    assert pool.start_pool("h", 1, {"size": -1}) == ("error", ("options", ("size", -1)))
    assert pool.start_pool("h", 1, {"size": True}) == ("error", ("options", ("size", True)))
    assert pool.start_pool("h", 1, {"bad": 1}) == ("error", ("options", ("bad", 1)))
    assert pool.start_pool("h", 1, {"setup_fun": 3}) == ("error", ("options", ("setup_fun", 3)))
    assert pool.start_pool("h", 1, []) == ("error", ("options", []))  # type: ignore[arg-type]
    # A connection option gunpy.open refuses: its error, and no pool left behind.
    bad = pool.start_pool("h", 1, {"conn_opts": {"retry": -1}, "scope": "unit-bad"})
    assert bad == ("error", ("options", ("retry", -1)))
    assert pool.info("h:1", "unit-bad") is None


def test_not_found_and_missing_authority() -> None:
    assert pool.get("/", {"host": "nowhere:1"}) == pool.POOL_NOT_FOUND
    assert pool.post("/", [("Host", b"nowhere:1")], b"x") == pool.POOL_NOT_FOUND
    assert pool.ws_upgrade("/", {"host": "nowhere:1"}) == pool.POOL_NOT_FOUND
    assert pool.ws_send("close", {"authority": "nowhere:1"}) == pool.POOL_NOT_FOUND
    assert pool.await_up("nowhere:1") == pool.POOL_NOT_FOUND
    assert pool.info("nowhere:1") is None
    assert pool.stop_pool("nowhere", 1) == pool.POOL_NOT_FOUND
    with pytest.raises(ValueError):
        pool.get("/", {"accept": "*/*"})
    with pytest.raises(ValueError):
        pool.ws_send("close", {})
    with pytest.raises(ValueError):
        pool.get("/", {"host": "x:1"}, {"checkout_retry": [0]})


def test_config_errors() -> None:
    """Exit reasons after which the pool does not replace a connection."""
    assert _config_error(("shutdown", ("tls_opts", "No such file")))
    assert _config_error(("shutdown", ("tls_alert", ("unknown_ca", "x"))))
    assert _config_error(("shutdown", "eaddrnotavail"))
    assert not _config_error(("shutdown", "econnrefused"))
    assert not _config_error(("shutdown", ("tls_alert", ("handshake_failure", "x"))))
    assert not _config_error("normal")
    assert not _config_error("shutdown")
    assert not _config_error(("exception", RuntimeError()))


# --------------------------------------------------------------------------- the tracker


class Box:
    """A Pid with a mailbox nobody else reads: the test takes its messages."""

    def __init__(self) -> None:
        self.mailbox = Mailbox()
        self.pid = Pid(self.mailbox, name="box")

    def take(self) -> list[Any]:
        out = []
        while (m := self.mailbox.receive((), 0)) is not TIMEOUT:
            out.append(m)
        return out


def tracker(protocol: str = "http2") -> tuple[_Tracker, Box, Box, Pid]:
    manager, target = Box(), Box()
    conn = Pid(None, name="conn")
    t = _Tracker(manager.pid, conn, target.pid)
    t.protocol = protocol
    return t, manager, target, conn


def start(t: _Tracker, token: int, req_fin: bool = True) -> gunpy.Ref:
    ref = gunpy.make_ref()
    with t.lock:
        t.add(ref, token, req_fin)
    return ref


def test_tracker_counts_a_stream_to_its_end() -> None:
    t, manager, target, conn = tracker()
    ref = start(t, 1)
    t.send(("gun_inform", conn, ref, 103, []))
    t.send(("gun_response", conn, ref, "nofin", 200, []))
    t.send(("gun_data", conn, ref, "nofin", b"a"))
    assert manager.take() == []
    t.send(("gun_data", conn, ref, "fin", b"b"))
    assert manager.take() == [("$done", conn, 1)]
    assert [m[0] for m in target.take()] == ["gun_inform", "gun_response", "gun_data", "gun_data"]
    assert not t.active and ref not in pool._by_ref


@pytest.mark.parametrize(
    "last",
    [
        ("gun_response", "fin", 204, []),
        ("gun_trailers", [("x", "y")]),
        ("gun_error", ("stream_error", "refused_stream", "")),
    ],
)
def test_tracker_ends(last: tuple[Any, ...]) -> None:
    t, manager, target, conn = tracker()
    ref = start(t, 7)
    msg = (last[0], conn, ref, *last[1:])
    t.send_many([("gun_response", conn, ref, "nofin", 200, []), msg])
    assert manager.take() == [("$done", conn, 7)]
    assert len(target.take()) == 2


def test_tracker_waits_for_the_request_body() -> None:
    """A response complete before the request body is: the slot is still in use."""
    t, manager, target, conn = tracker()
    ref = start(t, 2, req_fin=False)
    t.send(("gun_response", conn, ref, "fin", 413, []))
    assert manager.take() == []
    t.request_done(ref)
    assert manager.take() == [("$done", conn, 2)]
    target.take()


def test_tracker_ignores_pushed_and_unknown_streams() -> None:
    t, manager, target, conn = tracker()
    ref = start(t, 3)
    pushed = gunpy.make_ref()
    t.send(("gun_push", conn, ref, pushed, "GET", "http://h/p", []))
    t.send(("gun_response", conn, pushed, "fin", 200, []))
    t.send(("gun_error", conn, ("closed", "x")))  # connection-wide
    assert manager.take() == []
    t.send(("gun_response", conn, ref, "fin", 200, []))
    assert manager.take() == [("$done", conn, 3)]
    assert len(target.take()) == 4


def test_tracker_http2_websocket_stream() -> None:
    t, manager, target, conn = tracker("http2")
    ref = start(t, 4)
    t.send(("gun_upgrade", conn, ref, ["websocket"], []))
    t.send(("gun_ws", conn, ref, ("text", "hi")))
    assert manager.take() == []
    t.send(("gun_ws", conn, ref, ("close", 1000, b"")))
    assert manager.take() == [("$done", conn, 4)]
    assert len(target.take()) == 3


def test_tracker_http1_upgrade_dedicates_the_connection() -> None:
    t, manager, target, conn = tracker("http")
    ref = start(t, 5)
    t.send(("gun_upgrade", conn, ref, ["websocket"], []))
    assert manager.take() == [("$upgraded", conn, 5, ref, target.pid)]
    t.send(("gun_ws", conn, ref, "close"))
    assert manager.take() == []
    assert len(target.take()) == 2


def test_tracker_cancel() -> None:
    """HTTP/2: the slot is free at once.  HTTP/1.1: the stream's messages are dropped,
    and the slot is free once the response has been read."""
    t, manager, target, conn = tracker("http2")
    ref = start(t, 6)
    assert t.cancel(ref) is False  # gunpy.cancel does the rest
    assert manager.take() == [("$done", conn, 6)]
    assert t.cancel(ref) is False  # unknown now

    t, manager, target, conn = tracker("http")
    ref = start(t, 8)
    assert t.cancel(ref) is True
    t.send(("gun_response", conn, ref, "nofin", 200, []))
    t.send_many([("gun_data", conn, ref, "nofin", b"a"), ("gun_data", conn, ref, "fin", b"b")])
    assert manager.take() == [("$done", conn, 8)]
    assert target.take() == []


def test_tracker_reset() -> None:
    t, manager, target, conn = tracker()
    refs = [start(t, n) for n in range(3)]
    t.reset()
    assert not t.active and not any(r in pool._by_ref for r in refs)
    t.send(("gun_response", conn, refs[0], "fin", 200, []))
    assert manager.take() == []
    assert len(target.take()) == 1


def test_tracker_counts_before_the_connection_can_answer() -> None:
    """The caller holds the tracker's lock from before the request is sent until
    the stream is counted: a connection answering at once waits for it."""
    t, manager, target, conn = tracker()
    ref = gunpy.make_ref()
    sent = threading.Event()

    def connection() -> None:
        sent.wait()
        t.send(("gun_response", conn, ref, "fin", 200, []))

    th = threading.Thread(target=connection)
    th.start()
    with t.lock:
        sent.set()  # "the request is on its way": the answer blocks on the lock
        t.add(ref, 9, True)
    th.join()
    assert manager.take() == [("$done", conn, 9)]
    target.take()


# --------------------------------------------------------------------------- calls


def fake_manager(script: Any) -> tuple[Pid, threading.Thread]:
    """A thread standing for a manager: ``script(call_msg)`` runs in it."""
    ready: list[Pid] = []
    got = threading.Event()

    def run() -> None:
        ready.append(gunpy.self())
        got.set()
        call = gunpy.receive(("$pool_call", ANY, ANY, ANY, ANY), after=5000)
        script(call)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    got.wait()
    return ready[0], th


def test_call_timeout_cancels() -> None:
    """A call that times out is withdrawn; the manager's CANCELLED is the one reply."""

    def script(call: Any) -> None:
        _, caller, mref, _, _ = call
        gunpy.receive(("$pool_cancel", mref), after=5000)
        caller.send(("$reply", mref, _CANCELLED))

    mgr, th = fake_manager(script)
    assert _call(mgr, "checkout", timeout=10) is TIMEOUT
    th.join()
    assert gunpy.receive(after=0) is TIMEOUT


def test_call_late_reply_is_used() -> None:
    """A reply sent before the manager saw the cancel is the call's result."""

    def script(call: Any) -> None:
        _, caller, mref, _, _ = call
        gunpy.receive(("$pool_cancel", mref), after=5000)
        caller.send(("$reply", mref, "late"))  # as if sent just before the cancel

    mgr, th = fake_manager(script)
    assert _call(mgr, "checkout", timeout=10) == "late"
    th.join()
    assert gunpy.receive(after=0) is TIMEOUT


def test_call_dead_manager() -> None:
    def script(call: Any) -> None:
        raise gunpy.Exit("gone")

    mgr, th = fake_manager(script)
    with pytest.raises(gunpy.NoProc):
        _call(mgr, "info")
    th.join()


def test_await_up_timeout_on_a_pool_that_cannot_come_up() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ok, mgr = pool.start_pool("127.0.0.1", port, {"scope": "unit-down", "size": 2,
                                                  "conn_opts": {"retry": 0}})
    assert ok == "ok"
    try:
        assert pool.await_up(mgr, timeout=20) == ("error", "timeout")
        assert pool.info(mgr)[0] == "degraded"
        assert pool.get("/", {"host": f"127.0.0.1:{port}"}, {"scope": "unit-down"}) == (
            pool.NO_CONNECTION
        )
        assert pool.checkout(mgr, {"checkout_retry": [5]}) is None
    finally:
        assert pool.stop_pool(mgr) == "ok"
    assert gunpy.receive(after=0) is TIMEOUT
