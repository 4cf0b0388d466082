"""Casts carried out on the caller's thread while the connection's actor is idle
(``Connection._inline``, docs/guide/internals: "Who runs the actor").

``ws_send`` of data frames, ``request``/``get``/... and ``data`` on HTTP/1.1 write
their bytes from the caller's thread when the actor sleeps in ``poll()`` with an
empty inbox, holding the inbox's token so that no two threads ever run the
actor's code.  What these tests pin down: it happens (a spy on ``_inline`` records
each answer and the thread that gave it), order is kept when the actor is busy,
the actor finishes what the socket did not take and reports write errors, the
operations that must not run inline do not, and a failure inside an inlined
operation ends the connection as a failure of the actor would.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import gunpy
from gunpy import ANY, _conn
from gunpy._commands import Send, StartTimer
from gunpy.events import EventHandler
from gunpy.protocols.ws import WsHandler
from gunpy.testing import (
    GunMailbox,
    OriginFactory,
    ScriptedOrigin,
    TLSPair,
    assert_receive,
    gun_data,
    gun_down,
    gun_response,
)
from tests.integration.test_ws import open_http, upgraded


@pytest.fixture(autouse=True)
def _fresh_mailbox(gun_mailbox: GunMailbox) -> Iterator[None]:
    yield


@pytest.fixture
def origin(scripted_origin: OriginFactory) -> ScriptedOrigin:
    return scripted_origin()


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, int]]:
    """Every ``_inline`` answer: (operation tag, carried out here?, thread id)."""
    calls: list[tuple[str, bool, int]] = []
    real = _conn.Connection._inline

    def inline(self: Any, op: tuple[Any, ...]) -> bool:
        done = real(self, op)
        calls.append((op[0], done, threading.get_ident()))
        return done

    monkeypatch.setattr(_conn.Connection, "_inline", inline)
    return calls


def actor_of(conn: gunpy.Pid) -> Any:
    """The connection's actor object (white box: its token and socket)."""
    return conn.mailbox._inline.__self__  # type: ignore[union-attr]


def asleep(conn: gunpy.Pid) -> None:
    """Return once the actor sleeps in poll() with nothing to do: it has answered a
    sync call (so handled everything sent before) and given its token up."""
    assert gunpy.info(conn)["state_name"].startswith("connected")
    token = actor_of(conn)._inbox._token
    assert token.acquire(timeout=5)
    token.release()


def messages(peer: Any, n: int) -> list[tuple[str, Any]]:
    """The next ``n`` whole messages the peer got (wsproto hands a big one out in parts)."""
    out: list[tuple[str, Any]] = []
    part: Any = None
    while len(out) < n:
        e = peer.next_event()
        data = getattr(e, "data", getattr(e, "payload", None))
        part = data if part is None else part + data
        if getattr(e, "message_finished", True):
            out.append((type(e).__name__, part))
            part = None
    return out


def test_ws_data_frames_inline_control_frames_cast(origin: ScriptedOrigin, spy: Any) -> None:
    conn, ref, peer, _ = upgraded(origin)
    asleep(conn)
    spy.clear()
    gunpy.ws_send(conn, ref, ("text", "one"))
    gunpy.ws_send(conn, ref, [("binary", b"two"), ("text", "three")])
    gunpy.ws_send(conn, ref, ("ping", b"p"))  # a control frame: the actor's
    asleep(conn)
    gunpy.ws_send(conn, ref, ("text", "four"))
    assert messages(peer, 5) == [
        ("TextMessage", "one"),
        ("BytesMessage", b"two"),
        ("TextMessage", "three"),
        ("Ping", b"p"),
        ("TextMessage", "four"),
    ]
    me = threading.get_ident()
    assert spy == [
        ("$ws_send", True, me),
        ("$ws_send", True, me),
        ("$ws_send", False, me),
        ("$ws_send", True, me),
    ]


def test_busy_actor_queues_and_keeps_order(origin: ScriptedOrigin, spy: Any) -> None:
    conn, ref, peer, _ = upgraded(origin)
    actor = actor_of(conn)
    # The actor's thread gives its token up only while it sleeps in poll(): holding
    # it here is an actor busy with something else.
    token = actor._inbox._token
    assert token.acquire(timeout=5)
    try:
        spy.clear()
        gunpy.ws_send(conn, ref, ("text", "a"))  # cast: the actor is "busy"
        gunpy.ws_send(conn, ref, ("text", "b"))  # cast: "a" waits in its inbox
    finally:
        token.release()
    gunpy.ws_send(conn, ref, ("text", "c"))  # inline only once "a" and "b" are out
    assert messages(peer, 3) == [
        ("TextMessage", "a"),
        ("TextMessage", "b"),
        ("TextMessage", "c"),
    ]
    assert [done for _, done, _ in spy[:2]] == [False, False]


def test_what_the_socket_does_not_take_the_actor_writes(origin: ScriptedOrigin, spy: Any) -> None:
    conn, ref, peer, _ = upgraded(origin)
    asleep(conn)
    spy.clear()
    big = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than the socket buffers hold
    gunpy.ws_send(conn, ref, ("binary", big))
    gunpy.ws_send(conn, ref, ("text", "after"))  # corked output pending: cast
    assert messages(peer, 2) == [("BytesMessage", big), ("TextMessage", "after")]  # read only now
    assert [done for _, done, _ in spy] == [True, False]


def test_a_write_error_is_the_actors_to_report(origin: ScriptedOrigin, spy: Any) -> None:
    conn, ref, _peer, _ = upgraded(origin)
    asleep(conn)
    # Our side can no longer write: the inline send fails with EPIPE and leaves the
    # frame to the actor, whose own write fails and ends the connection.
    actor_of(conn).sock.shutdown(socket.SHUT_WR)
    spy.clear()
    gunpy.ws_send(conn, ref, ("text", "lost"))
    assert spy[0][:2] == ("$ws_send", True)
    assert_receive(gun_down(conn, "ws", ("error", "epipe"), [ref]))


def test_a_failure_inside_an_inlined_operation_ends_the_connection(
    origin: ScriptedOrigin, spy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, ref, _peer, _ = upgraded(origin)
    asleep(conn)
    mref = gunpy.monitor(conn)

    def broken(self: Any, ref: Any, reply_to: Any, frames: Any) -> Any:
        raise RuntimeError("bug in a handler")

    monkeypatch.setattr(WsHandler, "ws_send", broken)
    gunpy.ws_send(conn, ref, ("text", "x"))
    assert spy[-1][:2] == ("$ws_send", True)
    msg = assert_receive(("DOWN", mref, "process", conn, ANY))
    reason = msg[4]
    assert reason[0] == "exception" and str(reason[1]) == "bug in a handler"


def test_commands_for_the_actor_go_to_the_actor(
    origin: ScriptedOrigin, spy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inlined handler call that returns more than Send/Deliver: the rest is the
    actor's (here a timer the handler starts), carried out next and in order."""
    conn, ref, peer, _ = upgraded(origin)
    asleep(conn)
    real = WsHandler.ws_send

    def with_timer(self: Any, ref: Any, reply_to: Any, frames: Any) -> Any:
        return [*real(self, ref, reply_to, frames), StartTimer("probe", 60000), Send(b"")]

    monkeypatch.setattr(WsHandler, "ws_send", with_timer)
    gunpy.ws_send(conn, ref, ("text", "x"))
    assert spy[-1][:2] == ("$ws_send", True)
    assert gunpy.info(conn)  # a sync call: the actor has run the rest by now
    assert actor_of(conn)._inbox.has_timer("h:probe")
    assert messages(peer, 1) == [("TextMessage", "x")]


def test_http_requests_inline_except_with_a_timeout(origin: ScriptedOrigin, spy: Any) -> None:
    conn = open_http(origin)
    server = origin.accept()
    asleep(conn)
    spy.clear()
    r1 = gunpy.get(conn, "/one")
    r2 = gunpy.post(conn, "/two", [("content-type", "text/plain")], b"body")
    r3 = gunpy.get(conn, "/three", [], {"timeout": 5000})  # the actor's timer: cast
    heads = server.recv_until(b"/three HTTP/1.1\r\n")
    assert heads.index(b"GET /one ") < heads.index(b"POST /two ") < heads.index(b"GET /three ")
    me = threading.get_ident()
    assert spy == [("$request", True, me), ("$request", True, me), ("$request", False, me)]
    for r in (r1, r2, r3):
        server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        assert_receive(gun_response(conn, r, "nofin", 200, ANY))
        assert_receive(gun_data(conn, r, "fin", b"ok"))


def test_http_body_data_inline(origin: ScriptedOrigin, spy: Any) -> None:
    conn = open_http(origin)
    server = origin.accept()
    asleep(conn)
    spy.clear()
    ref = gunpy.post(conn, "/up", [("content-type", "text/plain")])
    gunpy.data(conn, ref, "nofin", b"hello ")
    gunpy.data(conn, ref, "fin", b"world")
    wire = server.recv_until(b"0\r\n\r\n")
    assert wire.endswith(b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n")
    assert [(tag, done) for tag, done, _ in spy] == [
        ("$request", True),
        ("$data", True),
        ("$data", True),
    ]
    server.send(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert_receive(gun_response(conn, ref, "fin", 204, ANY))


def test_no_inline_with_an_event_handler(origin: ScriptedOrigin, spy: Any) -> None:
    # Events come in order with the deliveries, from the actor: it does everything.
    conn = open_http(origin, event_handler=(EventHandler(), None))
    server = origin.accept()
    asleep(conn)
    spy.clear()
    ref = gunpy.get(conn, "/")
    server.recv_until(b"\r\n\r\n")
    assert [done for _, done, _ in spy] == [False]
    server.send(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert_receive(gun_response(conn, ref, "fin", 204, ANY))


def test_no_inline_once_the_actor_has_ended(origin: ScriptedOrigin, spy: Any) -> None:
    conn, ref, _peer, _ = upgraded(origin)
    mref = gunpy.monitor(conn)
    gunpy.close(conn)
    assert_receive(("DOWN", mref, "process", conn, ANY))
    spy.clear()
    gunpy.ws_send(conn, ref, ("text", "x"))  # dropped, as a cast to a dead process
    assert spy == []


def test_tls_partial_write_finished_by_the_actor(
    scripted_origin: OriginFactory, tls_pair: TLSPair, spy: Any
) -> None:
    # An SSL write the socket cannot take raises SSLWantWriteError: the actor
    # retries it with the same bytes, as for its own writes.
    origin = scripted_origin(tls=tls_pair.server_context(hostnames=["127.0.0.1"]))
    conn = origin.open({"tls_opts": {"cacerts": tls_pair.ca_pem}})
    assert gunpy.await_up(conn) == ("ok", "http")
    server = origin.accept()
    asleep(conn)
    spy.clear()
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB
    ref = gunpy.post(conn, "/big", [("content-type", "application/octet-stream")], body)
    head = server.recv_until(b"\r\n\r\n")
    assert b"content-length: 8388608\r\n" in head
    rest = head[head.index(b"\r\n\r\n") + 4 :]
    rest += server.recv_exact(len(body) - len(rest))
    assert rest == body
    assert spy[0][:2] == ("$request", True)
    server.send(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert_receive(gun_response(conn, ref, "fin", 204, ANY))


def test_a_reply_to_function_still_runs_in_the_connections_thread(
    origin: ScriptedOrigin, spy: Any
) -> None:
    # Gun calls reply_to funs in the connection process; an inlined request's
    # error for one is delivered by the actor, not by the caller's thread.
    conn = open_http(origin)
    origin.accept()
    asleep(conn)
    me = gunpy.self()
    seen: list[Any] = []

    def reply_to(msg: Any) -> None:
        seen.append(threading.current_thread())
        me.send(("via_fun", msg))

    spy.clear()
    ref = gunpy.request(conn, "GE T", "/", [], b"", {"reply_to": reply_to})
    bad = ("badstate", "The request method or path contains invalid characters.")
    assert_receive(("via_fun", ("gun_error", conn, ref, bad)))
    assert spy[0][:2] == ("$request", True)
    assert seen[0] is not threading.current_thread()
    assert seen[0].name.startswith("Connection")


def test_a_caller_with_a_backlog_casts(origin: ScriptedOrigin, spy: Any) -> None:
    # Messages waiting in the caller's mailbox: more casts are likely to follow, and
    # the actor writes a burst of them in one send (gunpy._api._cast).
    conn, ref, peer, _ = upgraded(origin)
    asleep(conn)
    spy.clear()
    me = gunpy.self()
    me.send(("pending", 1))
    gunpy.ws_send(conn, ref, ("text", "cast"))
    assert spy == []  # not even tried
    assert gunpy.receive(("pending", ANY), after=0) == ("pending", 1)
    asleep(conn)
    gunpy.ws_send(conn, ref, ("text", "inline"))
    assert messages(peer, 2) == [("TextMessage", "cast"), ("TextMessage", "inline")]
    assert spy[0][:2] == ("$ws_send", True)
