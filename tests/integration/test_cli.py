"""The gunpy command line, run as a subprocess against loopback servers (issue 10)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gunpy.testing import EchoServer, TLSPair, refused_port

ROOT = Path(__file__).resolve().parents[2]


def gunpy_cli(*args: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "gunpy", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_get_prints_each_gun_message(gun_http_echo_server: EchoServer) -> None:
    out = gunpy_cli("get", f"http://127.0.0.1:{gun_http_echo_server.port}/hello")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("('gun_up', <Pid") and lines[0].endswith("'http')")
    assert lines[1].startswith("('gun_response', <Pid") and ", 'nofin', 200, [" in lines[1]
    assert lines[-1].startswith("('gun_data', <Pid") and "'fin', b'Hello world!\\n')" in lines[-1]


def test_body_only_and_post_data(gun_http_echo_server: EchoServer) -> None:
    url = f"http://127.0.0.1:{gun_http_echo_server.port}"
    out = gunpy_cli("get", url + "/hello", "--body")
    assert (out.returncode, out.stdout) == (0, "Hello world!\n")
    out = gunpy_cli("post", url + "/echo", "-d", "payload", "-H", "content-type: text/x", "--body")
    assert (out.returncode, out.stdout) == (0, "payload")


def test_fail_on_http_error(gun_http_echo_server: EchoServer) -> None:
    url = f"http://127.0.0.1:{gun_http_echo_server.port}/status/404"
    assert gunpy_cli("get", url).returncode == 0
    assert gunpy_cli("get", url, "--fail").returncode == 5


def test_refused_connection_exits_1() -> None:
    out = gunpy_cli("get", f"http://127.0.0.1:{refused_port()}/")
    assert out.returncode == 1
    assert "econnrefused" in out.stderr


def test_bad_url_exits_2() -> None:
    for args in (("get", "gopher://example/"), ("get", "http:///nohost"), ("ws", "http://x/")):
        out = gunpy_cli(*args)
        assert out.returncode == 2, args
        assert out.stderr.startswith("gunpy: ")


def test_tls_unknown_ca_exits_3_and_cacert_fixes_it(tls_pair: TLSPair) -> None:
    with EchoServer(tls=tls_pair) as server:
        url = f"https://127.0.0.1:{server.port}/hello"
        out = gunpy_cli("get", url, "--http1")
        assert out.returncode == 3 and "unknown_ca" in out.stderr
        out = gunpy_cli("get", url, "--http1", "--cacert", tls_pair.ca_file, "--body")
        assert (out.returncode, out.stdout) == (0, "Hello world!\n")
        out = gunpy_cli("get", url, "--http1", "--insecure", "--body")
        assert (out.returncode, out.stdout) == (0, "Hello world!\n")


def test_interactive_websocket_session(gun_ws_echo_server: EchoServer) -> None:
    out = gunpy_cli(
        "ws",
        f"ws://127.0.0.1:{gun_ws_echo_server.port}/chat",
        stdin="hello\n/binary 00ff\n/ping abc\n/close\n",
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "('gun_upgrade'" in text and "['websocket']" in text
    assert "('text', 'hello'))" in text
    assert "('binary', b'\\x00\\xff'))" in text
    assert "('pong', b'abc'))" in text
    assert "'close'" in text or "('close', 1000" in text
    assert "('gun_down'" in text


def test_websocket_session_ends_at_end_of_input(gun_ws_echo_server: EchoServer) -> None:
    out = gunpy_cli("ws", f"ws://127.0.0.1:{gun_ws_echo_server.port}/", "--compress", stdin="x\n")
    assert out.returncode == 0, out.stderr
    assert "('text', 'x'))" in out.stdout


def test_trace_prints_the_event_timeline(gun_http_echo_server: EchoServer) -> None:
    """--trace: one stderr line per Gun event, in order, with times (issue 10)."""
    out = gunpy_cli("get", f"http://127.0.0.1:{gun_http_echo_server.port}/hello", "--trace")
    assert out.returncode == 0, out.stderr
    trace = [line.split() for line in out.stderr.splitlines() if line.startswith("trace ")]
    names = [t[4] for t in trace]
    assert names[:5] == [
        "init",
        "domain_lookup_start",
        "domain_lookup_end",
        "connect_start",
        "connect_end",
    ]
    assert names[5:11] == [
        "request_start",
        "request_headers",
        "request_end",
        "response_start",
        "response_headers",
        "response_end",
    ]
    assert names[-1] == "terminate"
    assert trace[0][1:3] == ["0.000", "ms"]
    times = [float(t[1]) for t in trace]
    assert times == sorted(times)
    assert "status=200" in out.stderr and "path='/hello'" in out.stderr
    # stdout still has the messages, untouched by the trace.
    assert out.stdout.splitlines()[0].startswith("('gun_up', <Pid")


def test_trace_websocket_frames(gun_ws_echo_server: EchoServer) -> None:
    url = f"ws://127.0.0.1:{gun_ws_echo_server.port}/ws"
    out = gunpy_cli("ws", url, "--trace", stdin="hello\n")
    assert out.returncode == 0, out.stderr
    assert "ws_send_frame_start" in out.stderr and "frame=('text', 'hello')" in out.stderr
    assert "ws_recv_frame_header" in out.stderr and "type='text'" in out.stderr
