"""gunpy.testing.ScriptedOrigin and the ``scripted_origin`` fixture, against gunpy.

Each test opens real gunpy connections to the origin and checks both sides: the
bytes the origin recorded and the messages gunpy sent the test.  The test thread
never sleeps: it waits on messages, on the origin's recorded bytes, or on scripts.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import gunpy
import gunpy.process
from gunpy import ANY
from gunpy.testing import (
    AcceptWs,
    Call,
    Close,
    Delay,
    Expect,
    ExpectClosed,
    ExpectRequest,
    ExpectUntil,
    ExpectWs,
    GunMailbox,
    HalfClose,
    OriginConn,
    OriginFactory,
    PauseReading,
    Request,
    Reset,
    Respond,
    ResumeReading,
    ScriptedOrigin,
    ScriptError,
    Send,
    SendWs,
    Step,
    TLSPair,
    assert_receive,
    down,
    gun_data,
    gun_down,
    gun_error,
    gun_response,
    gun_up,
    gun_upgrade,
    gun_ws,
    has_headers,
    http_response,
    refused_port,
    refute_receive,
)

RAW = {"protocols": ["raw"]}


@pytest.fixture(autouse=True)
def _fresh_mailbox(gun_mailbox: GunMailbox) -> Iterator[None]:
    """Every test here also proves gun_mailbox: no Gun message may be left over."""
    yield


def get_head(path: str, origin: ScriptedOrigin) -> bytes:
    """The request head gunpy sends for ``gunpy.get(conn, path)``."""
    return b"GET %s HTTP/1.1\r\ncontent-length: 0\r\nhost: 127.0.0.1:%d\r\n\r\n" % (
        path.encode(),
        origin.port,
    )


# --------------------------------------------------------------------------- scripts


def test_http_script_records_every_byte_and_answers(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin(
        [
            ExpectRequest("GET", "/hello", headers={"content-length": "0"}),
            Respond(200, {"content-type": "text/plain"}, b"Hello world!\n"),
            ExpectRequest("POST", "/echo", body=b"ping"),
            Respond(201, [("x-a", "1")], b""),
            ExpectClosed(),
        ]
    )
    conn = origin.open()
    assert_receive(gun_up(conn, "http"))
    ref = gunpy.get(conn, "/hello")
    assert_receive(
        gun_response(conn, ref, "nofin", 200, has_headers({"content-type": "text/plain"}))
    )
    assert_receive(gun_data(conn, ref, "fin", b"Hello world!\n"))
    ref2 = gunpy.post(conn, "/echo", [("content-type", "text/plain")], b"ping")
    assert_receive(gun_response(conn, ref2, "fin", 201, has_headers({"x-a": "1"})))
    gunpy.close(conn)
    origin.wait()
    (server,) = origin.conns
    assert server.received.startswith(get_head("/hello", origin))
    assert server.received.endswith(b"\r\n\r\nping")
    assert [(r.method, r.target, r.body) for r in server.requests] == [
        ("GET", "/hello", b""),
        ("POST", "/echo", b"ping"),
    ]
    assert server.requests[1].header("Content-Type") == "text/plain"
    assert server.requests[0].raw == get_head("/hello", origin)
    assert server.eof == "closed"
    assert server.script_done and server.script_error is None
    assert origin.count == 1 and origin.transport == "tcp"


def test_a_failed_step_is_a_script_error(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin(
        [ExpectRequest("GET", "/a", headers={"x-want": "1"}, body=b"x"), Respond(200)]
    )
    conn = origin.open()
    gunpy.get(conn, "/b", {"x-want": "2"})
    with pytest.raises(ScriptError) as e:
        origin.wait()
    text = str(e.value)
    assert text.startswith(
        "origin1 connection #1, step 1 ExpectRequest(method='GET', target='/a', "
        "headers={'x-want': '1'}, body=b'x'): AssertionError: target '/b', expected '/a'; "
        "header x-want: ['2'], expected '1'; body b'', expected b'x'"
    )
    assert "received so far: b'GET /b HTTP/1.1" in text
    assert origin.errors == [e.value]
    assert origin.conns[0].script_error is e.value
    assert isinstance(e.value, AssertionError)
    with pytest.raises(ScriptError):
        origin.check()
    with pytest.raises(ScriptError):
        origin.stop()
    scripted_origin.origins.remove(origin)  # reported here: not again at teardown
    assert_receive(gun_up(conn))
    gunpy.close(conn)


def test_steps_on_raw_bytes(scripted_origin: OriginFactory) -> None:
    """Expect, ExpectUntil, Send, Call and HalfClose on the raw protocol."""
    seen: list[bytes] = []
    origin = scripted_origin(
        [
            Expect(b"hello"),
            ExpectUntil(b"\n"),
            Call(lambda c: seen.append(c.received)),
            Send(b"pong"),
            HalfClose(),
            ExpectClosed(b""),  # gunpy closes on the origin's FIN, sending nothing more
        ]
    )
    conn = origin.open(RAW)
    assert_receive(gun_up(conn, "raw"))
    gunpy.data(conn, None, "nofin", b"hello")
    gunpy.data(conn, None, "nofin", b" world\n")
    assert_receive(gun_data(conn, None, "nofin", b"pong"))
    assert_receive(gun_down(conn, "raw", "closed", []))  # the origin's FIN
    origin.wait(conns=1)
    assert seen == [b"hello world\n"]
    assert origin.conns[0].eof is not None


def test_delay_waits_in_the_origin_not_in_the_test(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin([ExpectRequest(), Delay(300), Respond(204)])
    conn = origin.open()
    assert_receive(gun_up(conn))
    t0 = time.monotonic()
    ref = gunpy.get(conn, "/")
    refute_receive(gun_response(conn, ref), after=100)  # the test thread is free meanwhile
    assert_receive(gun_response(conn, ref, "fin", 204), after=5000)
    assert time.monotonic() - t0 >= 0.29
    gunpy.close(conn)


def test_close_and_reset_end_the_connection(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin(scripts=[[ExpectRequest(), Close()], [ExpectRequest(), Reset()]])
    c1 = origin.open()
    origin.accept()  # connections get scripts in accept order: c1 first
    c2 = origin.open()
    ref1 = gunpy.get(c1, "/")
    assert_receive(gun_error(c1, ref1, "closed"))
    assert_receive(gun_down(c1, "http", "closed", [ref1]))
    ref2 = gunpy.get(c2, "/")
    assert_receive(gun_error(c2, ref2, ("closed", ("error", "econnreset"))))
    assert_receive(gun_down(c2, "http", ("error", "econnreset"), [ref2]))
    assert_receive(gun_up(c1))
    assert_receive(gun_up(c2))
    origin.wait()
    assert {c.closed for c in origin.conns} == {"closed", "reset"}


def test_scripts_one_per_connection_follow_a_reconnect(scripted_origin: OriginFactory) -> None:
    """Gun reconnects after a loss: the first connection drops, the second answers."""
    origin = scripted_origin(scripts=[[Close()], [ExpectRequest("GET", "/"), Respond(204)]])
    conn = origin.open({"retry": 1, "retry_timeout": 10})
    assert_receive(gun_up(conn))
    assert_receive(gun_down(conn, "http", "closed"))
    assert_receive(gun_up(conn))
    ref = gunpy.get(conn, "/")
    assert_receive(gun_response(conn, ref, "fin", 204))
    origin.wait()
    assert [c.index for c in origin.conns] == [1, 2]
    assert origin.conns[0].script is not origin.conns[1].script


def test_connections_beyond_the_scripts_are_driven_by_the_test(
    scripted_origin: OriginFactory,
) -> None:
    origin = scripted_origin(scripts=[[Respond(204)]])
    c1 = origin.open(RAW)
    first = origin.accept()
    assert first.script is not None
    c2 = origin.open(RAW)
    second = origin.accept()
    assert second.script is None
    second.send(b"manual")
    assert_receive(gun_data(c2, None, "nofin", b"manual"))
    assert assert_receive(gun_data(c1, None, "nofin"))[4].startswith(b"HTTP/1.1 204 No Content")
    assert_receive(gun_up(c1))
    assert_receive(gun_up(c2))


def test_pause_and_resume_reading(scripted_origin: OriginFactory) -> None:
    """A server that stops reading: nothing is recorded until it reads again."""
    origin = scripted_origin(reading=False)
    conn = origin.open(RAW)
    assert_receive(gun_up(conn))
    server = origin.accept()
    gunpy.data(conn, None, "nofin", b"while paused")
    with pytest.raises(TimeoutError, match="nothing after 50 ms"):
        server.recv_exact(12, timeout=50)
    assert server.received == b""
    server.resume_reading()
    assert server.recv_exact(12) == b"while paused"
    server.pause_reading()
    gunpy.data(conn, None, "nofin", b"again")
    with pytest.raises(TimeoutError):
        server.recv(timeout=50)
    server.resume_reading()
    assert server.recv() == b"again"
    gunpy.close(conn)


def test_pause_reading_steps_make_send_timeout_fire(scripted_origin: OriginFactory) -> None:
    """tcp_opts send_timeout against a server that stops reading (gun-reference 3.1)."""
    origin = scripted_origin([PauseReading(), Delay(60_000), ResumeReading()])
    conn = origin.open({**RAW, "tcp_opts": {"send_timeout": 200, "sndbuf": 4096}})
    mref = gunpy.monitor(conn)
    assert_receive(gun_up(conn))
    origin.accept().sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for _ in range(200):
        gunpy.data(conn, None, "nofin", b"x" * 65536)
    assert_receive(gun_down(conn, "raw"), after=10_000)
    assert_receive(down(mref), after=10_000)
    origin.stop(check=False)  # the Delay is not over: not a failure here
    scripted_origin.origins.remove(origin)


def test_unix_socket_origin(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin([ExpectRequest("GET", "/"), Respond(200, body=b"unix")], unix=True)
    assert origin.path is not None and origin.transport == "unix"
    conn = origin.open()
    ref = gunpy.get(conn, "/")
    assert_receive(gun_response(conn, ref, "nofin", 200))
    assert_receive(gun_data(conn, ref, "fin", b"unix"))
    assert origin.conns[0].requests[0].header("host") == "localhost"
    assert_receive(gun_up(conn))
    gunpy.close(conn)


@pytest.mark.parametrize("host", ["127.0.0.2", "::1"], ids=["ipv4", "ipv6"])
def test_origin_on_another_address(scripted_origin: OriginFactory, host: str) -> None:
    """``host``: another loopback address, IPv4 or IPv6; open() connects to it."""
    try:
        origin = scripted_origin(
            [ExpectRequest("GET", "/"), Respond(204)], host=host, name="elsewhere"
        )
    except OSError as e:  # no IPv6 loopback here
        pytest.skip(f"cannot listen on {host}: {e}")
    assert origin.host == host and origin.port != 0 and origin.transport == "tcp"
    assert f"{'[::1]' if host == '::1' else host}:{origin.port}" in repr(origin)
    conn = origin.open()
    ref = gunpy.get(conn, "/")
    assert_receive(gun_response(conn, ref, "fin", 204))
    origin.wait()
    host_header = f"[{host}]" if ":" in host else host
    assert origin.conns[0].requests[0].header("host") == f"{host_header}:{origin.port}"
    assert origin.conns[0].sock.getsockname()[0] == host
    assert_receive(gun_up(conn))


def test_origin_on_a_given_port(scripted_origin: OriginFactory) -> None:
    """``port``: listen there; a port that cannot be bound raises, and nothing is left open."""
    port = refused_port()
    origin = scripted_origin(port=port)
    assert origin.port == port
    conn = origin.open(RAW)
    assert_receive(gun_up(conn, "raw"))
    assert origin.accept().index == 1
    with pytest.raises(OSError):  # in use (and nothing leaks: warnings are errors here)
        ScriptedOrigin(port=port)
    assert len(scripted_origin.origins) == 1


def test_tls_origin_with_tls_pair(scripted_origin: OriginFactory, tls_pair: TLSPair) -> None:
    origin = scripted_origin(
        [ExpectRequest("GET", "/"), Respond(200, body=b"secure")], tls=tls_pair
    )
    assert origin.transport == "tls"
    conn = origin.open()  # transport and tls_opts filled in from the pair
    assert_receive(gun_up(conn, "http"))
    assert gunpy.info(conn)["origin_scheme"] == "https"
    ref = gunpy.get(conn, "/")
    assert_receive(gun_response(conn, ref, "nofin", 200))
    assert_receive(gun_data(conn, ref, "fin", b"secure"))
    origin.wait()
    assert isinstance(origin.conns[0].sock, ssl.SSLSocket)
    with pytest.raises(NotImplementedError):
        origin.conns[0].half_close()
    gunpy.close(conn)


def test_tls_origin_that_the_client_does_not_trust(
    scripted_origin: OriginFactory, tls_pair: TLSPair
) -> None:
    origin = scripted_origin(tls=tls_pair.server_context(hostnames=["example.org"]))
    assert origin.client_tls_opts is None  # a bare SSLContext says nothing about the client
    conn = origin.open({"transport": "tls", "tls_opts": tls_pair.tls_opts})
    mref = gunpy.monitor(conn)
    err = origin.accept_error()
    assert isinstance(err, (ssl.SSLError, OSError))
    assert_receive(down(mref, ("shutdown", ANY)))
    assert origin.count == 1 and origin.conns == []


def test_accept_error_on_a_good_connection_is_an_assertion(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin()
    conn = origin.open(RAW)
    with pytest.raises(AssertionError, match="expected a failed TLS handshake"):
        origin.accept_error()
    assert_receive(gun_up(conn))


def test_websocket_steps(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin(
        [
            AcceptWs(target="/ws"),
            ExpectWs("hi"),
            SendWs(("text", "hello")),
            ExpectWs(b"\x00\x01"),
            SendWs(b"\x02"),
            SendWs(("ping", b"p")),
            ExpectWs(("pong", b"p")),
            SendWs(("close", 1000, "bye")),
            ExpectWs(("close", 1000, "")),
            Close(),
        ]
    )
    conn = origin.open()
    assert_receive(gun_up(conn))
    ref = gunpy.ws_upgrade(conn, "/ws")
    assert_receive(gun_upgrade(conn, ref, ["websocket"]))
    gunpy.ws_send(conn, ref, ("text", "hi"))
    assert_receive(gun_ws(conn, ref, ("text", "hello")))
    gunpy.ws_send(conn, ref, ("binary", b"\x00\x01"))
    assert_receive(gun_ws(conn, ref, ("binary", b"\x02")))
    assert_receive(gun_ws(conn, ref, ("close", 1000, "bye")))
    assert_receive(gun_down(conn, "ws", "normal", [ref]))
    origin.wait()
    assert origin.conns[0].requests[0].is_ws_upgrade


def test_step_by_step_api(scripted_origin: OriginFactory) -> None:
    """The API tests/origin.py had, for tests that drive the origin themselves."""
    origin = scripted_origin()
    conn = origin.open()
    server = origin.accept(timeout=5000)
    assert isinstance(server, OriginConn) and server.index == 1
    ref = gunpy.post(conn, "/up", [("content-type", "a/b")], b"0123456789")
    head = server.recv_request()
    assert head.startswith(b"POST /up HTTP/1.1\r\n") and head.endswith(b"\r\n\r\n")
    assert server.recv_exact(4) == b"0123"
    assert server.unread == b"456789"
    assert server.recv_until(b"7") == b"4567"
    assert server.recv() == b"89"
    server.send(http_response(200, {"x-y": "z"}, b"ok"))
    assert_receive(gun_response(conn, ref, "nofin", 200, has_headers(x_y="z")))
    assert_receive(gun_data(conn, ref, "fin", b"ok"))
    with pytest.raises(TimeoutError, match=r"recv_exact\(1\): nothing after 20 ms; unread: b''"):
        server.recv_exact(1, timeout=20)
    ref = gunpy.headers(conn, "POST", "/chunks", [("content-type", "a/b")])
    gunpy.data(conn, ref, "nofin", b"abc")
    gunpy.data(conn, ref, "fin", b"de")
    req = server.recv_http_request()
    assert isinstance(req, Request)
    assert (req.method, req.target, req.body) == ("POST", "/chunks", b"abcde")
    assert req.header("transfer-encoding") == "chunked"
    assert req.raw.endswith(b"0\r\n\r\n")
    server.send(http_response(204))
    assert_receive(gun_response(conn, ref, "fin", 204))
    server.wait_received(b"/chunks")
    assert_receive(gun_up(conn))
    gunpy.close(conn)
    assert server.wait_closed() == b""
    with pytest.raises(EOFError, match="the connection ended"):
        server.recv_exact(1)
    assert server.recv() == b""
    server.close()
    server.close()  # idempotent
    with pytest.raises(ConnectionError):
        server.send(b"late")
    assert "OriginConn #1" in repr(server) and "closed" in repr(server)


def test_wait_closed_returns_what_came_before_the_close(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin()
    conn = origin.open(RAW)
    server = origin.accept()
    gunpy.data(conn, None, "nofin", b"last words")
    server.wait_received(b"words")
    gunpy.close(conn)
    assert server.wait_closed() == b"last words"
    assert_receive(gun_up(conn))


def test_request_trailers_are_parsed(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin()
    conn = origin.open()
    server = origin.accept()
    raw = (
        b"POST /t HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n0\r\nx-sum: 1\r\nx-more: 2\r\n\r\n"
    )
    # Written by hand: the client side here is a plain socket.
    with socket.create_connection(("127.0.0.1", origin.port)) as s:
        s.sendall(raw)
        other = origin.accept()
        req = other.recv_http_request()
        assert req.body == b"abc"
        assert req.trailers == [("x-sum", "1"), ("x-more", "2")]
        assert req.raw == raw
        assert other.requests == [req]
    assert server.index == 1 and other.index == 2
    assert_receive(gun_up(conn))


def test_http_response_bytes() -> None:
    assert http_response() == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    assert http_response(404, {"a": "b"}, b"nope") == (
        b"HTTP/1.1 404 Not Found\r\na: b\r\ncontent-length: 4\r\n\r\nnope"
    )
    assert http_response(204) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert (
        http_response(101, [(b"upgrade", b"x")])
        == b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"
    )
    assert (
        http_response(200, [("transfer-encoding", "chunked")], b"0\r\n\r\n").count(
            b"content-length"
        )
        == 0
    )
    assert http_response(599, reason="Odd", version="HTTP/1.0", content_length=False) == (
        b"HTTP/1.0 599 Odd\r\n\r\n"
    )
    assert http_response(299) == b"HTTP/1.1 299 Unknown\r\ncontent-length: 0\r\n\r\n"


def test_refused_port() -> None:
    port = refused_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_custom_step(scripted_origin: OriginFactory) -> None:
    class Echo(Step):
        def run(self, conn: OriginConn, timeout: float) -> None:
            conn.send(conn.recv(timeout))

    origin = scripted_origin([Echo(), Echo()])
    conn = origin.open(RAW)
    for word in (b"one", b"two"):
        gunpy.data(conn, None, "nofin", word)
        assert_receive(gun_data(conn, None, "nofin", word))
    origin.wait()
    assert_receive(gun_up(conn))
    with pytest.raises(NotImplementedError):
        Step().run(origin.conns[0], 1)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="not both"):
        ScriptedOrigin([Close()], scripts=[[Close()]])
    with pytest.raises(TypeError, match="must be a Step"):
        ScriptedOrigin(["GET / HTTP/1.1"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be a Step"):
        ScriptedOrigin(scripts=[[Close()], [b"x"]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="Unix"):
        ScriptedOrigin(unix=True, tls=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    with pytest.raises(TypeError, match="no host or port"):
        ScriptedOrigin(unix=True, port=8080)
    with pytest.raises(TypeError, match="no host or port"):
        ScriptedOrigin(unix=True, host="127.0.0.2")


def test_wait_reports_missing_connections_and_slow_scripts() -> None:
    with ScriptedOrigin(scripts=[[Close()], [Close()]]) as origin:
        with pytest.raises(ScriptError, match=r"0 of 2 expected connections after 30 ms"):
            origin.wait(timeout=30)
        origin.scripts = None  # expect nothing more at stop
    with ScriptedOrigin([ExpectRequest()]) as origin:
        conn = origin.open()
        with pytest.raises(ScriptError, match=r"connection #1 at step 1 ExpectRequest"):
            origin.wait(timeout=30)
        ref = gunpy.get(conn, "/")
        origin.wait()
        gunpy.close(conn)
    assert_receive(gun_up(conn))
    gunpy.flush(ref)


def test_stop_is_idempotent_and_closes_what_open_made() -> None:
    origin = ScriptedOrigin()
    conn = origin.open(RAW)
    assert_receive(gun_up(conn))
    mref = gunpy.monitor(conn)
    origin.stop()
    assert_receive(down(mref, "shutdown"))
    origin.stop()
    assert "ScriptedOrigin origin tcp 127.0.0.1:" in repr(origin)


def test_stop_removes_only_the_messages_its_own_cleanup_caused() -> None:
    """Closing a connection with a request in flight makes gunpy send gun_error: that
    is stop()'s doing and is flushed; what the test left stays for gun_mailbox."""
    origin = ScriptedOrigin([ExpectRequest()])
    conn = origin.open()
    assert_receive(gun_up(conn))
    gunpy.self().send(("gun_data", conn, "left by the test", "fin", b""))
    ref = gunpy.get(conn, "/")
    origin.wait()  # the request is at the origin; no answer will come
    origin.stop()
    assert gunpy.receive(gun_error(conn, ref), after=0) is gunpy.TIMEOUT
    assert_receive(gun_data(conn, "left by the test"), after=0)


def test_open_refuses_bad_options() -> None:
    with ScriptedOrigin() as origin, pytest.raises(AssertionError, match="refused the options"):
        origin.open({"nonsense": 1})


def test_origin_factory_outside_pytest() -> None:
    with OriginFactory() as make:
        a = make([ExpectRequest(), Respond(204)])
        b = make(unix=True, name="mine")
        assert (a.name, b.name) == ("origin1", "mine")
        conn = a.open()
        ref = gunpy.get(conn, "/")
        assert_receive(gun_response(conn, ref, "fin", 204))
        assert make.errors() == []
    assert a.stopping and b.stopping
    assert_receive(gun_up(conn))
    with pytest.raises(ScriptError, match="did not finish"), OriginFactory() as make:
        o = make([ExpectRequest()])
        conn = o.open(RAW)
        o.accept()
    assert_receive(gun_up(conn))


def test_the_origin_thread_may_be_busy_while_the_test_receives(
    scripted_origin: OriginFactory,
) -> None:
    """Many connections at once, each with its own script thread."""
    origin = scripted_origin([ExpectRequest(), Delay(100), Respond(204)])
    conns = [origin.open() for _ in range(5)]
    refs = [gunpy.get(c, "/") for c in conns]
    for c, r in zip(conns, refs, strict=True):
        assert_receive(gun_response(c, r, "fin", 204))
        assert_receive(gun_up(c))
    origin.wait(conns=5)
    assert len({c._thread.ident for c in origin.conns}) == 5


def test_send_without_waiting(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin()
    conn = origin.open(RAW)
    server = origin.accept()
    server.send(b"a", wait=False)
    server.send(b"b", wait=False)
    server.send(b"c")
    got = b""
    while got != b"abc":
        got += assert_receive(gun_data(conn, None, "nofin"))[4]
    assert_receive(gun_up(conn))


def test_threads_end_with_the_origin() -> None:
    before = set(threading.enumerate())
    with ScriptedOrigin([ExpectRequest(), Respond(204)], unix=True) as origin:
        conn = origin.open()
        ref = gunpy.get(conn, "/")
        assert_receive(gun_response(conn, ref))
        assert_receive(gun_up(conn))
    left: list[Any] = [
        t for t in threading.enumerate() if t not in before and t.name.startswith("origin")
    ]
    assert left == []
