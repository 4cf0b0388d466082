"""``gunpy.pool`` against real servers: Gun's pool_SUITE, ported, plus gunpy's additions.

Gun's suite runs Cowboy with a ``/delay`` handler and sleeps to let requests
start.  Here a stream is held open for as long as a test wants by sending the
request headers only (``pool.post(path, headers)``): the server (hypercorn's ASGI
echo reads the whole body first) cannot answer before ``pool.data(ref, "fin",
...)``.  Nothing sleeps: the tests wait for messages, for ``DOWN``, or ask the
manager (``pool.info``), whose answers are ordered after everything it was told
before.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import gunpy
import gunpy.pool as pool
from gunpy import ANY, TIMEOUT
from gunpy.testing import GunMailbox
from tests.peers import HERE, NginxPeer, Peer, need_module

HOST = "127.0.0.1"


def auth(port: int) -> str:
    return f"{HOST}:{port}"


@pytest.fixture
def mailbox(gun_mailbox: GunMailbox) -> Iterator[GunMailbox]:
    """``gun_mailbox``, also checking that no pool call left a reply behind."""
    yield gun_mailbox
    left = [m for m in gun_mailbox.messages() if type(m) is tuple and m[:1] == ("$reply",)]
    assert not left, left


Start = Callable[..., gunpy.Pid]


@pytest.fixture
def pools() -> Iterator[Start]:
    """``start(host, port, opts)``: a started pool, stopped after the test."""
    started: list[gunpy.Pid] = []

    def start(host: Any, port: int, opts: dict[str, Any] | None = None) -> gunpy.Pid:
        ok, mgr = pool.start_pool(host, port, opts)
        assert ok == "ok", mgr
        started.append(mgr)
        return mgr

    yield start
    for mgr in started:
        if mgr.is_alive():
            assert pool.stop_pool(mgr) == "ok"


_LIMITED_H2 = r"""
import asyncio, socket, sys
sys.path.insert(0, sys.argv[1])
from hypercorn.asyncio import serve
from hypercorn.config import Config
from asgi_echo import app
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(128)
config = Config()
config.bind = [f"fd://{sock.fileno()}"]
config.accesslog = None
config.errorlog = "-"
config.h2_max_concurrent_streams = int(sys.argv[2])
print("LISTENING", sock.getsockname()[1], flush=True)
asyncio.run(serve(app, config))
"""


@pytest.fixture
def h2_max5_server(tmp_path: Path) -> Iterator[Peer]:
    """hypercorn (the asgi_echo app) announcing SETTINGS_MAX_CONCURRENT_STREAMS 5,
    as Gun's max_streams tests start Cowboy with ``max_concurrent_streams => 5``."""
    need_module("hypercorn")
    argv = [sys.executable, "-c", _LIMITED_H2, str(HERE), "5"]
    with Peer(argv, name="hypercorn-max5", log_path=tmp_path / "hypercorn-max5.log") as peer:
        yield peer


def hold(port: int, scope: Any) -> tuple[gunpy.Pid, gunpy.Ref]:
    """A stream that stays open: request headers only, the body never sent."""
    r = pool.post("/echo", {"host": auth(port)}, {"scope": scope})
    assert r[0] == "async", r
    pool_ref: tuple[gunpy.Pid, gunpy.Ref] = r[1]
    return pool_ref


def finish(pool_ref: tuple[gunpy.Pid, gunpy.Ref], body: bytes = b"done") -> None:
    """End a held stream and read its echo."""
    assert pool.data(pool_ref, "fin", body) == "ok"
    assert pool.await_(pool_ref)[:3] == ("response", "nofin", 200)
    assert pool.await_body(pool_ref) == ("ok", body)


def get_ok(port: int, scope: Any, path: str = "/x", n: int = 8, **extra: Any) -> None:
    streams = [pool.get(path, {"host": auth(port)}, {"scope": scope, **extra}) for _ in range(n)]
    for r in streams:
        assert r[0] == "async", r
    for _, ref in streams:
        assert pool.await_(ref)[:3] == ("response", "nofin", 200)
        assert pool.await_body(ref)[0] == "ok"


def is_close(awaited: Any) -> bool:
    """``("ws", "close")`` or ``("ws", ("close", code, reason))``."""
    return awaited[0] == "ws" and (awaited[1] == "close" or awaited[1][0] == "close")


def conns_of(mgr: gunpy.Pid) -> dict[gunpy.Pid, Any]:
    conns: dict[gunpy.Pid, Any] = pool.info(mgr)[1]["conns"]
    return conns


def kill(conn: gunpy.Pid) -> None:
    """Brutal close; returns once the process has ended (``gunpy.close`` waits)."""
    assert gunpy.close(conn) == "ok"
    assert not conn.is_alive()


# --------------------------------------------------------------------------- pool_SUITE


def test_hello_pool_h1(nginx_server: NginxPeer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE hello_pool_h1: 8 requests over a pool of HTTP/1.1 connections."""
    port = nginx_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http"]}, "scope": "hello_h1"})
    assert pool.await_up(mgr) == "ok"
    streams = [pool.get("/small.txt", {"host": auth(port)}, {"scope": "hello_h1"}) for _ in range(8)]
    for _, ref in streams:
        assert pool.await_(ref)[:3] == ("response", "nofin", 200)
        assert pool.await_body(ref) == ("ok", nginx_server.small_body)


def test_hello_pool_h2(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE hello_pool_h2: 800 concurrent requests over 8 HTTP/2 connections
    (hypercorn allows 100 streams per connection: exactly the pool's capacity)."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "scope": "hello_h2"})
    assert pool.await_up(mgr) == "ok"
    state, info = pool.info(mgr)
    assert state == "operational"
    assert all(
        s[:2] == ("up", "http2") and s[2]["max_concurrent_streams"] == 100
        for s in info["conns"].values()
    )
    streams = [pool.get("/hello", {"host": auth(port)}, {"scope": "hello_h2"}) for _ in range(800)]
    assert all(r[0] == "async" for r in streams)
    for _, ref in streams:
        assert pool.await_(ref)[:3] == ("response", "nofin", 200)
        assert pool.await_body(ref) == ("ok", b"HTTP/2 /hello\n")
    assert set(pool.info(mgr)[1]["streams"].values()) == {0}


class PoolWsHandler:
    """Gun's test/pool_ws_handler.erl: every frame goes to the process in ``user_opts``."""

    @staticmethod
    def init(reply_to: Any, ref: Any, headers: Any, opts: dict[str, Any]) -> gunpy.Pid:
        pid: gunpy.Pid = opts["user_opts"]
        return pid

    @staticmethod
    def handle(frame: Any, state: gunpy.Pid) -> tuple[str, int, gunpy.Pid]:
        state.send(frame)
        return ("ok", 0, state)


def ws_setup(conn: gunpy.Pid, msg: Any, state: Any) -> Any:
    """pool_SUITE hello_pool_ws's setup_fun: upgrade once up, done once upgraded."""
    match msg:
        case ("gun_up", _, "http"):
            gunpy.ws_upgrade(conn, "/ws")
            return ("setup", state)
        case ("gun_upgrade", _, ref, _, _):
            return ("up", "ws", {"ws": ref})
    return ("setup", state)


def test_hello_pool_ws(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE hello_pool_ws: connections upgraded by the setup_fun serve ws_send."""
    port = hypercorn_server.port
    me = gunpy.self()
    mgr = pools(
        HOST,
        port,
        {
            "conn_opts": {
                "protocols": ["http"],
                "ws_opts": {"default_protocol": PoolWsHandler, "user_opts": me},
            },
            "scope": "hello_ws",
            "setup_fun": (ws_setup, None),
        },
    )
    assert pool.await_up(mgr) == "ok"
    conns = conns_of(mgr)
    assert len(conns) == 8 and all(s[:2] == ("up", "ws") for s in conns.values())
    for i in range(8):
        assert pool.ws_send(("text", f"Hello {i}!"), {"authority": auth(port), "scope": "hello_ws"}) == "ok"
    got = sorted(gunpy.receive(("text", ANY), after=5000)[1] for _ in range(8))
    assert got == sorted(f"Hello {i}!" for i in range(8))
    # No plain HTTP connection in this pool: requests find none.
    assert pool.get("/", {"host": auth(port)}, {"scope": "hello_ws"}) == pool.NO_CONNECTION


def test_max_streams_h1(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE max_streams_h1: one stream per HTTP/1.1 connection."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http"]}, "scope": "max_h1", "size": 1})
    assert pool.await_up(mgr) == "ok"
    held = hold(port, "max_h1")
    assert pool.get("/x", {"host": auth(port)}, {"scope": "max_h1"}) == pool.NO_CONNECTION
    # With checkout_retry the checkout waits (here in vain) for the sum of the list.
    r = pool.get("/x", {"host": auth(port)}, {"scope": "max_h1", "checkout_retry": [20, 20]})
    assert r == pool.NO_CONNECTION
    assert pool.info(mgr)[1]["waiters"] == 0
    finish(held)
    get_ok(port, "max_h1", n=1)


def wait_for_waiter(mgr: gunpy.Pid) -> None:
    """Until a checkout waits in the manager (each info call is a round trip to it)."""
    for _ in range(100_000):
        if pool.info(mgr)[1]["waiters"]:
            return
    raise AssertionError("no checkout waiting")


def checkout_in_thread(path: str, port: int, scope: Any) -> tuple[gunpy.Pid, gunpy.Ref]:
    """Start a thread doing a pooled GET with checkout_retry; returns (thread pid, mref):
    it sends the request's result to this process and waits to be told to end."""
    import threading

    parent = gunpy.self()
    box: list[gunpy.Pid] = []
    started = threading.Event()

    def run() -> None:
        box.append(gunpy.self())
        started.set()
        r = pool.get(path, {"host": auth(port)}, {"scope": scope, "checkout_retry": [100] * 100})
        if r[0] == "async":
            r = (r[0], pool.await_(r[1])[:3], pool.await_body(r[1]))
        parent.send(("checked_out", r))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    started.wait()
    return box[0], gunpy.monitor(box[0])


def test_max_streams_h1_retry(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE max_streams_h1_retry: a checkout with checkout_retry gets the
    connection as soon as its stream ends."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http"]}, "scope": "retry_h1", "size": 1})
    assert pool.await_up(mgr) == "ok"
    held = hold(port, "retry_h1")
    _, mref = checkout_in_thread("/later", port, "retry_h1")
    wait_for_waiter(mgr)
    finish(held)
    msg = gunpy.receive(("checked_out", ANY), after=5000)
    assert msg[1] == ("async", ("response", "nofin", 200), ("ok", b"HTTP/1.1 /later\n"))
    assert gunpy.receive(("DOWN", mref, ANY, ANY, ANY), after=5000)


def test_max_streams_h2_size_1(h2_max5_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE max_streams_h2_size_1: the server's SETTINGS_MAX_CONCURRENT_STREAMS
    (5) bounds the streams of a connection."""
    port = h2_max5_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "size": 1})
    assert pool.await_up(mgr) == "ok"
    assert next(iter(conns_of(mgr).values()))[2]["max_concurrent_streams"] == 5
    held = [hold(port, "default") for _ in range(5)]
    assert pool.get("/x", {"host": auth(port)}) == pool.NO_CONNECTION
    finish(held.pop())
    get_ok(port, "default", n=1)
    for h in held:
        finish(h)


def test_max_streams_h2_size_1_retry(
    h2_max5_server: Peer, pools: Start, mailbox: GunMailbox
) -> None:
    """pool_SUITE max_streams_h2_size_1_retry."""
    port = h2_max5_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "size": 1})
    assert pool.await_up(mgr) == "ok"
    held = [hold(port, "default") for _ in range(5)]
    assert pool.get("/x", {"host": auth(port)}) == pool.NO_CONNECTION
    _, mref = checkout_in_thread("/later", port, "default")
    wait_for_waiter(mgr)
    finish(held.pop())
    msg = gunpy.receive(("checked_out", ANY), after=5000)
    assert msg[1] == ("async", ("response", "nofin", 200), ("ok", b"HTTP/2 /later\n"))
    assert gunpy.receive(("DOWN", mref, ANY, ANY, ANY), after=5000)
    for h in held:
        finish(h)


def test_max_streams_h2_size_2(h2_max5_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE max_streams_h2_size_2: 2 connections x 5 streams, spread evenly."""
    port = h2_max5_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "size": 2})
    assert pool.await_up(mgr) == "ok"
    held = [hold(port, "default") for _ in range(10)]
    assert sorted(pool.info(mgr)[1]["streams"].values()) == [5, 5]
    assert pool.get("/x", {"host": auth(port)}) == pool.NO_CONNECTION
    for h in held:
        finish(h)
    assert sorted(pool.info(mgr)[1]["streams"].values()) == [0, 0]


def test_kill_restart_h1(nginx_server: NginxPeer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE kill_restart_h1: a connection process that ends is replaced."""
    port = nginx_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http"]}, "scope": "kill_h1"})
    assert pool.await_up(mgr) == "ok"
    get_ok(port, "kill_h1", "/small.txt")
    before = set(conns_of(mgr))
    victim = next(iter(before))
    kill(victim)
    # The manager saw the DOWN before this call (it monitored the connection first),
    # and replaced the connection; the new one may already be up (Gun's test also
    # expects "degraded" here, which a fast local server can beat).
    info = pool.info(mgr)[1]
    assert victim not in info["conns"] and len(info["conns"]) == 8
    assert pool.await_up(mgr) == "ok"
    get_ok(port, "kill_h1", "/small.txt")
    assert set(conns_of(mgr)) - before and victim not in conns_of(mgr)


def test_kill_restart_h2(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE kill_restart_h2."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "scope": "kill_h2"})
    assert pool.await_up(mgr) == "ok"
    get_ok(port, "kill_h2", n=800)
    victim = next(iter(conns_of(mgr)))
    kill(victim)
    assert victim not in conns_of(mgr)
    assert pool.await_up(mgr) == "ok"
    get_ok(port, "kill_h2", n=800)


def test_kill_with_streams_in_flight(
    h2_max5_server: Peer, pools: Start, mailbox: GunMailbox
) -> None:
    """The streams of a killed connection end in an error for their callers; the
    pool's new connection serves the next requests."""
    port = h2_max5_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "size": 1})
    assert pool.await_up(mgr) == "ok"
    held = [hold(port, "default") for _ in range(5)]
    conn = held[0][0]
    kill(conn)
    for h in held:
        assert pool.await_(h)[0] == "error"
        pool.flush(h)
    assert pool.await_up(mgr) == "ok"
    assert conn not in conns_of(mgr)
    assert pool.info(mgr)[1]["streams"] == dict.fromkeys(conns_of(mgr), 0)
    get_ok(port, "default", n=5)


def test_reconnect_h1(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE reconnect_h1: connections the server closed reconnect by themselves
    (the same processes) and serve again.  Gun's test waits for Cowboy's idle
    timeout; here every request asks the server to close."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http"]}, "scope": "reconnect_h1"})
    assert pool.await_up(mgr) == "ok"
    before = set(conns_of(mgr))
    streams = [
        pool.get("/x", {"host": auth(port), "connection": "close"}, {"scope": "reconnect_h1"})
        for _ in range(8)
    ]
    for _, ref in streams:
        assert pool.await_(ref)[:3] == ("response", "nofin", 200)
        assert pool.await_body(ref) == ("ok", b"HTTP/1.1 /x\n")
    assert pool.await_up(mgr) == "ok"
    get_ok(port, "reconnect_h1", checkout_retry=[100] * 50)
    assert set(conns_of(mgr)) == before


def test_push_promise_no_crash(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE push_promise_no_crash: a pushed stream does not count against the
    connection, nor break it."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "scope": "push", "size": 1})
    assert pool.await_up(mgr) == "ok"
    r = pool.get("/push", {"host": auth(port)}, {"scope": "push"})
    assert r[0] == "async"
    conn, _ = pool_ref = r[1]
    msg = pool.await_(pool_ref)
    assert msg[:3] == ("push", msg[1], "GET")
    pushed = (conn, msg[1])
    assert pool.await_(pool_ref)[:3] == ("response", "nofin", 200)
    assert pool.await_body(pool_ref) == ("ok", b"pushed\n")
    assert pool.await_(pushed)[:3] == ("response", "nofin", 200)
    assert pool.await_body(pushed) == ("ok", b"HTTP/2 /pushed.txt\n")
    assert pool.info(mgr)[1]["streams"] == {conn: 0}
    get_ok(port, "push", n=1)


def test_stop_pool(hypercorn_server: Peer, mailbox: GunMailbox) -> None:
    """pool_SUITE stop_pool: stopping ends the manager and its connections, and
    frees the (scope, authority) for a new pool."""
    port = hypercorn_server.port
    ok, mgr = pool.start_pool(HOST, port, {"scope": "stop", "size": 2})
    assert ok == "ok"
    assert pool.start_pool(HOST, port, {"scope": "stop"}) == ("error", ("already_started", mgr))
    assert pool.await_up(mgr) == "ok"
    conns = list(conns_of(mgr))
    mrefs = [gunpy.monitor(c) for c in conns]
    assert pool.stop_pool(HOST, port, {"scope": "stop"}) == "ok"
    assert not mgr.is_alive()
    for mref, c in zip(mrefs, conns, strict=True):
        assert gunpy.receive(("DOWN", mref, "process", c, ANY), after=5000)
    assert pool.info(auth(port), "stop") is None
    assert pool.await_up(auth(port), "stop") == pool.POOL_NOT_FOUND
    assert pool.get("/", {"host": auth(port)}, {"scope": "stop"}) == pool.POOL_NOT_FOUND
    assert pool.stop_pool(HOST, port, {"scope": "stop"}) == pool.POOL_NOT_FOUND
    ok, mgr2 = pool.start_pool(HOST, port, {"scope": "stop", "size": 1})
    assert ok == "ok" and mgr2 is not mgr
    assert pool.await_up(auth(port), "stop") == "ok"
    assert pool.stop_pool(mgr2) == "ok"


def test_await_up_during_stop(mailbox: GunMailbox) -> None:
    """A caller of await_up learns that the pool stopped (Gun: {error, {terminate, ...}})."""
    import threading

    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens: the pool never comes up
    ok, mgr = pool.start_pool(HOST, port, {"scope": "stopping", "conn_opts": {"retry": 0}})
    assert ok == "ok"
    parent = gunpy.self()

    def waiter() -> None:
        parent.send(("await_up", pool.await_up(mgr, timeout="infinity")))

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert pool.await_up(mgr, timeout=50) == ("error", "timeout")
    assert pool.info(mgr)[1]["waiters"] in (0, 1)  # ours is gone; the thread's maybe there
    wait_for_waiter(mgr)
    assert pool.stop_pool(mgr) == "ok"
    msg = gunpy.receive(("await_up", ANY), after=5000)
    assert msg[1] == ("error", ("terminate", "degraded", "normal"))
    t.join()


def test_degraded_configuration_error(pools: Start, mailbox: GunMailbox) -> None:
    """pool_SUITE degraded_configuration_error: a connection that failed on its
    configuration is not replaced; the pool stays degraded, and can be stopped."""
    server = socket.create_server((HOST, 0))  # TCP connects; TLS never starts
    try:
        port = server.getsockname()[1]
        conn_opts = {
            "retry": 0,
            "transport": "tls",
            "tls_opts": {"cacertfile": "/nonexistent/ca.pem"},
        }
        mgr = pools(HOST, port, {"conn_opts": conn_opts, "scope": "degraded", "size": 1})
        for c in conns_of(mgr):
            mref = gunpy.monitor(c)
            down = gunpy.receive(("DOWN", mref, "process", c, ANY), after=5000)
            assert down[4][0] == "shutdown" and down[4][1][0] == "tls_opts"
        state, info = pool.info(mgr)
        assert (state, info["conns"]) == ("degraded", {})
        assert pool.stop_pool(HOST, port, {"scope": "degraded", "transport": "tls"}) == "ok"
    finally:
        server.close()


# --------------------------------------------------------------------------- more


def test_cancel_h2(h2_max5_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """cancel on HTTP/2 resets the stream: its slot is free at once."""
    port = h2_max5_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "size": 1})
    assert pool.await_up(mgr) == "ok"
    held = [hold(port, "default") for _ in range(5)]
    assert pool.get("/x", {"host": auth(port)}) == pool.NO_CONNECTION
    assert pool.cancel(held.pop()) == "ok"
    get_ok(port, "default", n=1)
    for h in held:
        finish(h)


def test_cancel_h1(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """cancel on HTTP/1.1: no more messages for the stream, and the connection is
    handed out again only once the cancelled response has been read."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http"]}, "scope": "cancel_h1", "size": 1})
    assert pool.await_up(mgr) == "ok"
    held = hold(port, "cancel_h1")
    assert pool.cancel(held) == "ok"
    # The request is not even complete: the connection is still busy with it.
    assert pool.get("/x", {"host": auth(port)}, {"scope": "cancel_h1"}) == pool.NO_CONNECTION
    assert pool.data(held, "fin", b"bye") == "ok"
    # Its response is read, unseen; then the connection is free again.
    get_ok(port, "cancel_h1", n=1, checkout_retry=[100] * 50)
    def of_held(m: Any) -> bool:
        return type(m) is tuple and len(m) > 2 and m[2] is held[1]

    assert gunpy.receive(of_held, after=0) is TIMEOUT


def test_request_functions(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """Every request function, data, stream_info, update_flow and flush on (conn, ref)."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "scope": "fns", "size": 2})
    assert pool.await_up(mgr) == "ok"
    h = {"host": auth(port)}
    o = {"scope": "fns"}
    for r, body in [
        (pool.request("PUT", "/r", h, b"request", o), b"request"),
        (pool.post("/p", h, b"post", o), b"post"),
        (pool.put("/p", h, b"put", o), b"put"),
        (pool.patch("/p", h, b"patch", o), b"patch"),
        (pool.delete("/d", h, o), b"delete-ignored"),
        (pool.options("/o", h, o), None),
        (pool.get("/g", h, o), b"HTTP/2 /g\n"),
    ]:
        assert r[0] == "async"
        resp = pool.await_(r[1])
        assert resp[:3] == ("response", "nofin", 200), resp
        got = pool.await_body(r[1])
        if body not in (None, b"delete-ignored"):
            assert got == ("ok", body)
    r = pool.head("/h", h, o)
    resp = pool.await_(r[1])
    assert resp[0] == "response" and resp[2] == 200
    if resp[1] == "nofin":  # hypercorn ends a HEAD's stream with an empty DATA frame
        assert pool.await_body(r[1]) == ("ok", b"")
    # Headers now, body later.
    r = pool.headers("POST", "/s", h, o)
    assert r[0] == "async"
    info = pool.stream_info(r[1])
    assert info[0] == "ok" and info[1]["ref"] is r[1][1]
    assert pool.data(r[1], "nofin", b"a") == "ok"
    assert pool.data(r[1], "fin", b"b") == "ok"
    assert pool.await_(r[1])[:3] == ("response", "nofin", 200)
    assert pool.await_body(r[1]) == ("ok", b"ab")
    # post/put/patch with a dict as body: the options, headers only.
    r = pool.post("/s", h, {"scope": "fns"})
    assert r[0] == "async"
    finish(r[1], b"late")
    # Flow control through the pool: with flow 1 the 1 MiB echo only comes through
    # because each message is paid for with update_flow (HTTP/2 withholds the window).
    big = bytes(range(256)) * 4096
    r = pool.post("/echo", h, big, {"scope": "fns", "flow": 1})
    assert pool.await_(r[1])[:3] == ("response", "nofin", 200)
    got, fin = b"", "nofin"
    while fin == "nofin":
        _, fin, chunk = pool.await_(r[1])
        got += chunk
        assert pool.update_flow(r[1], 1) == "ok"
    assert got == big
    # flush drops what arrived for one stream only.
    a = pool.get("/a", h, o)
    b = pool.get("/b", h, o)
    assert pool.await_(b[1])[:3] == ("response", "nofin", 200)
    assert pool.await_body(b[1]) == ("ok", b"HTTP/2 /b\n")
    assert pool.await_(a[1])[:3] == ("response", "nofin", 200)
    gunpy.receive(("gun_data", a[1][0], a[1][1], "fin", ANY), after=5000)
    assert sum(pool.info(mgr)[1]["streams"].values()) == 0
    assert pool.flush(a[1]) == "ok"


def test_reply_to(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """reply_to another process: it gets the messages, and the slot is counted free
    when the stream ends there."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http"]}, "scope": "reply_to", "size": 1})
    assert pool.await_up(mgr) == "ok"

    class Sink(gunpy.OwnerActor):
        def on_receive(self, message: Any) -> Any:
            if message == "get":
                return self.receive(("gun_data", ANY, ANY, "fin", ANY), after=5000)[4]
            return None

    sink = Sink.start()
    try:
        target = gunpy.process.as_pid(sink)
        r = pool.get("/elsewhere", {"host": auth(port)}, {"scope": "reply_to", "reply_to": target})
        assert r[0] == "async"
        assert sink.ask("get") == b"HTTP/1.1 /elsewhere\n"
        assert pool.info(mgr)[1]["streams"] == {r[1][0]: 0}
        get_ok(port, "reply_to", n=1)
    finally:
        sink.stop()


def test_ws_upgrade_h1(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool.ws_upgrade over HTTP/1.1: the connection becomes the caller's Websocket;
    when it goes down it comes back as HTTP and serves requests again."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http"]}, "scope": "ws_h1", "size": 1})
    assert pool.await_up(mgr) == "ok"
    r = pool.ws_upgrade("/ws", {"host": auth(port)}, {"scope": "ws_h1"})
    assert r[0] == "async"
    ws = r[1]
    assert pool.await_(ws)[:2] == ("upgrade", ["websocket"])
    assert pool.ws_send(ws, ("text", "hi")) == "ok"
    assert pool.await_(ws) == ("ws", ("text", "hi"))
    state, info = pool.info(mgr)
    assert info["conns"][ws[0]][:2] == ("up", "ws")
    assert info["conns_meta"][ws[0]] == {"ws": ws[1], "dedicated": gunpy.self()}
    assert pool.get("/x", {"host": auth(port)}, {"scope": "ws_h1"}) == pool.NO_CONNECTION
    assert pool.ws_send(ws, "close") == "ok"
    assert is_close(pool.await_(ws))
    get_ok(port, "ws_h1", n=1, checkout_retry=[100] * 50)


def test_ws_upgrade_h2(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """pool.ws_upgrade over HTTP/2 (RFC 8441): the Websocket is one stream of the
    connection, counted until it is closed."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "scope": "ws_h2", "size": 1})
    assert pool.await_up(mgr) == "ok"
    r = pool.ws_upgrade("/ws", {"host": auth(port)}, {"scope": "ws_h2"})
    assert r[0] == "async"
    ws = r[1]
    assert pool.await_(ws)[:2] == ("upgrade", ["websocket"])
    get_ok(port, "ws_h2", n=3)  # the same connection keeps serving requests
    assert pool.info(mgr)[1]["streams"] == {ws[0]: 1}
    assert pool.ws_send(ws, [("text", "a"), ("binary", b"b")]) == "ok"
    assert pool.await_(ws) == ("ws", ("text", "a"))
    assert pool.await_(ws) == ("ws", ("binary", b"b"))
    assert pool.ws_send(ws, "close") == "ok"
    assert is_close(pool.await_(ws))
    assert pool.info(mgr)[1]["streams"] == {ws[0]: 0}


def test_info_checkout_and_missing(hypercorn_server: Peer, pools: Start, mailbox: GunMailbox) -> None:
    """info/0, checkout/2, start_pool_if_missing, and the errors."""
    port = hypercorn_server.port
    mgr = pools(HOST, port, {"scope": "info", "size": 2})
    assert pool.await_up(auth(port), "info") == "ok"
    everything = [i for i in pool.info() if i["scope"] == "info"]
    assert len(everything) == 1 and everything[0]["state"] == "operational"
    assert everything[0]["authority"] == auth(port)
    co = pool.checkout(mgr)
    assert co is not None and co[0] in conns_of(mgr) and co[1] == {}
    assert pool.get("/", {"host": auth(port)}, {"scope": "nope"}) == pool.POOL_NOT_FOUND
    assert pool.get("/", {"host": "elsewhere:1"}, {"scope": "info"}) == pool.POOL_NOT_FOUND
    assert pool.ws_send("close", {"authority": auth(port), "scope": "info"}) == pool.NO_WS_CONNECTION
    with pytest.raises(ValueError):
        pool.get("/", {}, {"scope": "info"})
    # The authority option instead of a host header.
    r = pool.get("/auth", [], {"scope": "info", "authority": auth(port)})
    assert r[0] == "async"
    assert pool.await_(r[1])[:3] == ("response", "nofin", 200)
    assert pool.await_body(r[1]) == ("ok", b"HTTP/1.1 /auth\n")
    # start_pool_if_missing: the pool starts, and checkout_retry waits for it.
    r = pool.get(
        "/new",
        {"host": auth(port)},
        {"scope": "missing", "start_pool_if_missing": True, "checkout_retry": [100] * 50},
    )
    assert r[0] == "async"
    assert pool.await_(r[1])[:3] == ("response", "nofin", 200)
    assert pool.await_body(r[1]) == ("ok", b"HTTP/1.1 /new\n")
    assert pool.stop_pool(HOST, port, {"scope": "missing"}) == "ok"
