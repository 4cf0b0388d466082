"""Connection lifecycle (gun-reference 4.1-4.3): up, down, retries, owner, shutdown.

These use the raw protocol so they test the connection actor alone; each test
drives a scripted loopback origin (``gunpy.testing``'s ``scripted_origin``), as
Gun's gun_SUITE and shutdown_SUITE do with ``gun_test:init_origin``.  Every test
starts with an empty mailbox and must leave no Gun message unread (``gun_mailbox``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import gunpy
from gunpy import ANY, OwnerActor
from gunpy.testing import (
    Close,
    GunMailbox,
    OriginFactory,
    ScriptedOrigin,
    assert_receive,
    down,
    gun_conn_error,
    gun_data,
    gun_down,
    gun_error,
    gun_up,
    refused_port,
    refute_receive,
)

RAW = {"protocols": ["raw"]}
DEFAULT_RETRY = 5  # gunpy's (and Gun's) default ``retry``: origin.open() makes it 0


@pytest.fixture(autouse=True)
def _fresh_mailbox(gun_mailbox: GunMailbox) -> Iterator[None]:
    """An empty mailbox for each test; a Gun message left unread fails it."""
    yield


@pytest.fixture
def origin(scripted_origin: OriginFactory) -> ScriptedOrigin:
    return scripted_origin()


def open_raw(port: int, **opts: object) -> gunpy.Pid:
    """A raw connection to a port no ScriptedOrigin listens on (refused ones)."""
    ok, conn = gunpy.open("127.0.0.1", port, {**RAW, **opts})
    assert ok == "ok"
    return conn


# -- up, data, down ---------------------------------------------------------------


def test_gun_up_then_raw_data_both_ways(origin: ScriptedOrigin) -> None:
    """gun_up on connect; raw bytes in as gun_data nofin (ref None), out with data/4."""
    conn = origin.open({**RAW, "retry": 0})
    assert gunpy.await_up(conn) == ("ok", "raw")
    server = origin.accept()
    gunpy.data(conn, None, "nofin", b"ping")
    assert server.recv_exact(4) == b"ping"
    server.send(b"pong")
    assert assert_receive(gun_data(conn, None, "nofin"), after=2000)[4] == b"pong"
    gunpy.close(conn)


def test_requests_before_up_are_queued_and_sent_in_order(origin: ScriptedOrigin) -> None:
    """Gun postpones requests made while not connected and sends them once up."""
    conn = origin.open({**RAW, "retry": 0})
    for chunk in (b"a", b"b", b"c"):
        gunpy.data(conn, None, "nofin", chunk)
    server = origin.accept()
    assert server.recv_exact(3) == b"abc"
    assert_receive(gun_up(conn, "raw"))
    gunpy.close(conn)


def test_drop_after_up_gives_gun_down_then_reconnects(origin: ScriptedOrigin) -> None:
    """A loss after gun_up: gun_down(conn, protocol, closed, killed), then a new gun_up."""
    conn = origin.open({**RAW, "retry": 1})
    assert gunpy.await_up(conn) == ("ok", "raw")
    server = origin.accept()
    server.send(b"hello")  # progress: the retry budget is restored after the loss
    assert_receive(gun_data(conn, ANY), after=2000)
    server.close()
    assert assert_receive(gun_down(conn), after=2000) == ("gun_down", conn, "raw", "closed", [])
    assert gunpy.await_up(conn) == ("ok", "raw")
    origin.accept()
    gunpy.close(conn)


def test_retry_0_exits_with_shutdown_reason_on_refused() -> None:
    """retry 0: one attempt, then the process exits {shutdown, econnrefused} (gun_SUITE
    shutdown_reason)."""
    conn = open_raw(refused_port(), retry=0)
    assert gunpy.await_up(conn) == ("error", ("down", ("shutdown", "econnrefused")))


def test_retry_n_waits_retry_timeout_after_an_immediate_first_retry() -> None:
    """retry 2, retry_timeout 300: attempts at 0, ~0 (first retry immediate, Gun #70),
    then after 300 ms; then exit."""
    t0 = time.monotonic()
    conn = open_raw(refused_port(), retry=2, retry_timeout=300)
    assert gunpy.await_up(conn) == ("error", ("down", ("shutdown", "econnrefused")))
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.3  # the second retry waited retry_timeout
    assert elapsed < 0.6 + 2  # and the first did not (generous bound for slow CI)


def test_retry_fun_decides_retries_and_timeouts() -> None:
    """retry_fun(retries, opts) -> {retries, timeout}: called for each retry."""
    calls = []

    def fun(retries: int, opts: dict) -> dict:
        calls.append(retries)
        return {"retries": retries - 1, "timeout": 10}

    conn = open_raw(refused_port(), retry=3, retry_fun=fun)
    assert gunpy.await_up(conn, 5000)[0] == "error"
    assert calls == [3, 2, 1]


def test_no_reconnect_storm_against_accept_then_close(scripted_origin: OriginFactory) -> None:
    """Better than Gun (gun-reference 7): a server that accepts and closes at once
    does not reset the retry budget, so retry 2 means three connections in all."""
    origin = scripted_origin([Close()])  # every connection: accepted, then closed
    conn = origin.open({**RAW, "retry": 2, "retry_timeout": 20})
    mref = gunpy.monitor(conn)
    ups = 0
    downs = 0
    while True:
        msg = assert_receive(gun_up(conn), gun_down(conn), down(mref), after=5000)
        if msg[0] == "gun_up":
            ups += 1
        elif msg[0] == "gun_down":
            downs += 1
        else:
            assert msg[4] == ("shutdown", "closed")
            break
    assert ups == 3 and downs == 3
    assert origin.count == 3


# -- owner ---------------------------------------------------------------------


def test_owner_thread_exit_closes_connection(origin: ScriptedOrigin) -> None:
    """Gun monitors its owner: the owner's normal exit ends the connection (normal)."""
    box: list[gunpy.Pid] = []

    def owner() -> None:
        conn = origin.open({**RAW, "retry": 0})
        assert gunpy.await_up(conn) == ("ok", "raw")
        box.append(conn)

    t = threading.Thread(target=owner)
    t.start()
    t.join()
    server = origin.accept()
    mref = gunpy.monitor(box[0])
    assert assert_receive(down(mref), after=5000)[4] == "normal"
    assert server.wait_closed() == b""


def test_owner_death_while_not_connected_stops_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not connected (waiting to retry): the owner's death stops the process now."""
    # pytest replaces threading.excepthook during a test; gunpy's hook is what turns
    # a thread's uncaught exception into its exit reason, so put it back.
    import gunpy._process

    monkeypatch.setattr(threading, "excepthook", gunpy._process._excepthook)
    box: list[gunpy.Pid] = []
    ready = threading.Event()
    go = threading.Event()

    def owner() -> None:
        box.append(open_raw(refused_port(), retry=5, retry_timeout=60000))
        ready.set()
        go.wait(5)
        raise gunpy.Exit("crashed")

    t = threading.Thread(target=owner)
    t.start()
    ready.wait(5)
    mref = gunpy.monitor(box[0])
    go.set()
    t.join()
    assert assert_receive(down(mref), after=5000)[4] == ("shutdown", ("owner_down", "crashed"))


class _Owner(OwnerActor):
    def on_receive(self, message: object) -> object:
        if message == "open":
            conn = self.origin.open({**RAW, "retry": 0})
            return gunpy.await_up(conn), conn
        if message == "die":
            raise gunpy.Exit("boom")
        return None

    def __init__(self, origin: ScriptedOrigin) -> None:
        super().__init__()
        self.origin = origin


def test_owner_actor_exit_reason_propagates(origin: ScriptedOrigin) -> None:
    """An OwnerActor owner that exits 'boom': the connection closes gracefully and
    exits {shutdown, {owner_down, boom}} (shutdown_SUITE)."""
    ref = _Owner.start(origin)
    up, conn = ref.ask("open")
    assert up == ("ok", "raw")
    server = origin.accept()
    mref = gunpy.monitor(conn)
    ref.tell("die")
    assert assert_receive(down(mref), after=5000)[4] == ("shutdown", ("owner_down", "boom"))
    assert server.wait_closed() == b""


def test_set_owner_moves_gun_down_to_the_new_owner(origin: ScriptedOrigin) -> None:
    """set_owner: the new owner gets gun_down; the old one nothing more."""
    conn = origin.open({**RAW, "retry": 0})
    assert gunpy.await_up(conn) == ("ok", "raw")
    server = origin.accept()
    got: list[object] = []
    pids: list[gunpy.Pid] = []
    ready = threading.Event()

    def new_owner() -> None:
        pids.append(gunpy.self())
        ready.set()
        got.append(assert_receive(gun_down(conn), after=5000))

    t = threading.Thread(target=new_owner)
    t.start()
    assert ready.wait(5)
    gunpy.set_owner(conn, pids[0])
    assert gunpy.info(conn)["owner"] is pids[0]
    server.close()
    t.join(6)
    assert got and got[0] == ("gun_down", conn, "raw", "closed", [])
    refute_receive(gun_down(conn), after=100)


def test_set_owner_by_another_process_is_refused(origin: ScriptedOrigin) -> None:
    conn = origin.open({**RAW, "retry": 0})
    assert gunpy.await_up(conn) == ("ok", "raw")
    origin.accept()
    errors: list[object] = []

    def intruder() -> None:
        gunpy.set_owner(conn, gunpy.self())
        errors.append(assert_receive(gun_conn_error(conn), after=5000))

    t = threading.Thread(target=intruder)
    t.start()
    t.join(6)
    assert errors and errors[0][2][0] == "badstate"
    assert gunpy.info(conn)["owner"] is gunpy.self()
    gunpy.close(conn)


# -- shutdown and close ----------------------------------------------------------


def test_shutdown_is_graceful_and_sends_no_gun_down(origin: ScriptedOrigin) -> None:
    """gun:shutdown: the process exits 'shutdown'; no gun_down (gun-reference 4.2)."""
    conn = origin.open({**RAW, "retry": DEFAULT_RETRY})
    assert gunpy.await_up(conn) == ("ok", "raw")
    server = origin.accept()
    mref = gunpy.monitor(conn)
    gunpy.shutdown(conn)
    assert assert_receive(down(mref), after=5000)[4] == "shutdown"
    assert server.wait_closed() == b""
    refute_receive(gun_down(conn), after=50)


def test_close_is_brutal_and_synchronous(origin: ScriptedOrigin) -> None:
    conn = origin.open({**RAW, "retry": DEFAULT_RETRY})
    assert gunpy.await_up(conn) == ("ok", "raw")
    origin.accept()
    assert gunpy.close(conn) == "ok"
    assert not conn.is_alive()
    refute_receive(gun_down(conn), after=50)


def test_shutdown_while_not_connected_exits_at_once() -> None:
    conn = open_raw(refused_port(), retry=5, retry_timeout=60000)
    mref = gunpy.monitor(conn)
    gunpy.shutdown(conn)
    assert assert_receive(down(mref), after=5000)[4] == "shutdown"


def test_queued_requests_get_an_error_when_the_connection_never_comes_up() -> None:
    """Better than Gun (gun-reference 7): a stream queued before gun_up on a connection
    that never comes up gets a gun_error instead of silence."""
    # retry 2 with a 300 ms retry_timeout: the process lives >= 300 ms, so the request
    # below surely reaches it while it is not connected (and is queued).
    conn = open_raw(refused_port(), retry=2, retry_timeout=300)
    ref = gunpy.get(conn, "/")
    msg = assert_receive(gun_error(conn, ref), after=5000)
    assert msg == ("gun_error", conn, ref, ("closed", ("shutdown", "econnrefused")))


# -- info, options -------------------------------------------------------------------


def test_info_has_guns_keys(origin: ScriptedOrigin) -> None:
    conn = origin.open({**RAW, "retry": DEFAULT_RETRY})
    assert gunpy.await_up(conn) == ("ok", "raw")
    origin.accept()
    info = gunpy.info(conn)
    for key in (
        "owner",
        "socket",
        "transport",
        "protocol",
        "state_name",
        "sock_ip",
        "sock_port",
        "origin_scheme",
        "origin_host",
        "origin_port",
        "intermediaries",
    ):
        assert key in info, key
    assert info["owner"] is gunpy.self()
    assert info["transport"] == "tcp"
    assert info["protocol"] == "raw"
    assert info["state_name"] == "connected_data_only"
    assert (info["origin_host"], info["origin_port"]) == ("127.0.0.1", origin.port)
    gunpy.close(conn)
    with pytest.raises(gunpy.NoProc):
        gunpy.info(conn)


def test_info_while_not_connected_has_no_protocol() -> None:
    conn = open_raw(refused_port(), retry=5, retry_timeout=60000)
    info = gunpy.info(conn)
    assert info["state_name"] in ("not_connected", "connecting")
    assert "protocol" not in info and "sock_ip" not in info
    gunpy.close(conn)


@pytest.mark.parametrize(
    ("opts", "reason"),
    [
        ({"bogus": 1}, ("options", ("bogus", 1))),
        ({"retry": -1}, ("options", ("retry", -1))),
        ({"retry": "5"}, ("options", ("retry", "5"))),
        ({"retry_timeout": 1.5}, ("options", ("retry_timeout", 1.5))),
        ({"connect_timeout": "never"}, ("options", ("connect_timeout", "never"))),
        ({"transport": "quic"}, ("options", ("transport", "quic"))),
        ({"protocols": ["http", "raw"]}, ("options", ("protocols", ["http", "raw"]))),
        ({"protocols": ["gopher"]}, ("options", ("protocols", ["gopher"]))),
        ({"retry_fun": 3}, ("options", ("retry_fun", 3))),
        ({"tcp_opts": {"send_timeout": -5}}, ("options", ("tcp_opts", ("send_timeout", -5)))),
        ({"tls_opts": {"verify": "maybe"}}, ("options", ("tls_opts", ("verify", "maybe")))),
        ({"raw_opts": {"flow": 0}}, ("options", ("raw", ("flow", 0)))),
        ({"http_opts": {"keepalive": "x"}}, ("options", ("http", ("keepalive", "x")))),
        ({"ws_opts": {"compress": "yes"}}, ("options", ("ws", ("compress", "yes")))),
    ],
)
def test_bad_options_are_refused_by_name(opts: dict, reason: tuple) -> None:
    assert gunpy.open("127.0.0.1", 80, opts) == ("error", reason)


# -- timeouts and transports -----------------------------------------------------------


def test_connect_timeout() -> None:
    """connect_timeout covers the TCP connect: a listener whose accept queue is full
    drops our SYN, so the connect never completes."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue (its size is backlog + 1)
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        conn = open_raw(port, retry=0, connect_timeout=200)
        assert gunpy.await_up(conn, 5000) == ("error", ("down", ("shutdown", "timeout")))
    finally:
        for f in fillers:
            f.close()
        lsock.close()


def test_send_timeout_ends_a_connection_to_a_server_that_stops_reading(
    scripted_origin: OriginFactory,
) -> None:
    """Gun #224: send_timeout (default 15 s) ends a send blocked on a peer that does
    not read, so a stuck server cannot hang the client."""
    origin = scripted_origin(reading=False)  # never reads
    conn = origin.open({**RAW, "retry": 0, "tcp_opts": {"send_timeout": 200, "sndbuf": 4096}})
    assert gunpy.await_up(conn) == ("ok", "raw")
    origin.accept()
    gunpy.data(conn, None, "nofin", b"x" * (16 * 1024 * 1024))
    msg = assert_receive(gun_down(conn), after=10000)
    assert msg == ("gun_down", conn, "raw", ("error", "timeout"), [])


def test_unix_socket(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin(unix=True)
    assert origin.path is not None
    conn = origin.open({**RAW, "retry": 0})  # gunpy.open_unix(origin.path, ...)
    assert gunpy.await_up(conn) == ("ok", "raw")
    server = origin.accept()
    gunpy.data(conn, None, "nofin", b"over unix")
    assert server.recv_exact(9) == b"over unix"
    assert gunpy.info(conn)["origin_host"] == "localhost"
    gunpy.close(conn)


def test_script_that_forgets_to_close_still_exits(origin: ScriptedOrigin) -> None:
    """The main thread as owner: when it returns, the watchdog sees it within ~50 ms
    and the connection closes, so the interpreter (whose connection threads are
    non-daemon) exits instead of hanging."""
    code = (
        "import gunpy\n"
        f"ok, conn = gunpy.open('127.0.0.1', {origin.port}, {{'protocols': ['raw']}})\n"
        "print(gunpy.await_up(conn), flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "('ok', 'raw')"
