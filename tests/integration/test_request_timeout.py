"""The request option ``timeout`` (a gunpy addition; Gun issue #317 asks for it).

No complete response within ``timeout`` ms: the stream is cancelled and its
reply_to gets ``("gun_error", conn, ref, "timeout")``.  The slowloris case (HTTP/1.1,
the late response on the wire: the connection is closed too) is in
tests/reliability/test_hostile.py.
"""

from __future__ import annotations

import pytest

import gunpy
from gunpy import ANY
from gunpy.testing import EchoServer, assert_receive, refute_receive
from tests.peers import Peer


def test_a_response_in_time_is_not_touched(gun_http_echo_server: EchoServer) -> None:
    ok, conn = gunpy.open("127.0.0.1", gun_http_echo_server.port, {"retry": 0})
    ref = gunpy.get(conn, "/hello", [], {"timeout": 300})
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"Hello world!\n")
    refute_receive(("gun_error", conn, ref, ANY), after=500)  # the timer was stopped
    gunpy.close(conn)


def test_a_request_queued_behind_a_slow_one_times_out_alone(scripted_origin) -> None:  # type: ignore[no-untyped-def]
    """HTTP/1.1, the late stream is not the one on the wire: only it is cancelled."""
    origin = scripted_origin()
    conn = origin.open({"retry": 0})
    server = origin.accept()
    first = gunpy.get(conn, "/first")
    second = gunpy.get(conn, "/second", [], {"timeout": 200})
    server.recv_request()
    server.recv_request()
    assert_receive(("gun_error", conn, second, "timeout"), after=3000)
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert gunpy.await_(conn, first)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, first) == ("ok", b"ok")
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate")  # drained, silenced
    refute_receive(("gun_response", conn, second, ANY, ANY, ANY), after=300)
    gunpy.close(conn)


@pytest.mark.peers
def test_http2_stream_times_out_and_the_connection_stays(hypercorn_server: Peer) -> None:
    """HTTP/2: the late stream is reset (RST_STREAM CANCEL); the others go on."""
    ok, conn = gunpy.open("127.0.0.1", hypercorn_server.port, {"protocols": ["http2"], "retry": 0})
    assert gunpy.await_up(conn) == ("ok", "http2")
    slow = gunpy.post(conn, "/echo", [], None, {"timeout": 200})  # body never finished
    assert_receive(("gun_error", conn, slow, "timeout"), after=3000)
    ref = gunpy.get(conn, "/after")
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/2 /after\n")
    gunpy.close(conn)


def test_bad_timeout_is_refused() -> None:
    with pytest.raises(gunpy.OptionsError):
        gunpy.get(gunpy.self(), "/", [], {"timeout": 0})
