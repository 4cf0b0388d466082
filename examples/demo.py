"""`make demo`: Gun's Websocket chapter, line by line, in gunpy.

Starts a real Websocket echo server (the `websockets` package's) on loopback in a
child process, then: open, await_up, ws_upgrade with the receive/after block
(upgrade / response / error / timeout), ws_send of a text frame, then of a list
of frames, then a close, printing each gun_ws message as it arrives.
"""

from __future__ import annotations

import os
import subprocess
import sys

import gunpy


def start_echo_server() -> tuple[subprocess.Popen[str], int]:
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(
        [sys.executable, os.path.join(here, "echo_server.py"), "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if line[:1] != ["LISTENING"]:
        proc.kill()
        raise SystemExit(f"echo server did not start: {line!r}")
    return proc, int(line[1])


def main() -> None:
    server, port = start_echo_server()
    try:
        run(port)
    finally:
        server.terminate()
        server.wait()


def run(port: int) -> None:
    # {ok, ConnPid} = gun:open("127.0.0.1", Port, #{retry => 0}),
    ok, conn = gunpy.open("127.0.0.1", port, {"retry": 0})
    print("open      ->", (ok, conn))
    # {ok, Protocol} = gun:await_up(ConnPid),
    print("await_up  ->", gunpy.await_up(conn))

    # StreamRef = gun:ws_upgrade(ConnPid, "/websocket"),
    ref = gunpy.ws_upgrade(conn, "/websocket")
    # receive
    #     {gun_upgrade, ConnPid, StreamRef, [<<"websocket">>], Headers} -> ...;
    #     {gun_response, ConnPid, _, _, Status, Headers} -> exit({ws_upgrade_failed, ...});
    #     {gun_error, ConnPid, StreamRef, Reason} -> exit({ws_upgrade_failed, Reason})
    # after 1000 -> exit(timeout)
    # end.
    for msg in gunpy.select(after=1000):
        match msg:
            case ("gun_upgrade", c, r, ["websocket"], headers) if (c, r) == (conn, ref):
                print("upgraded  ->", msg[:4], f"+ {len(headers)} headers")
                break
            case ("gun_response", c, _, _, status, headers) if c == conn:
                raise gunpy.Exit(("ws_upgrade_failed", status, headers))
            case ("gun_error", c, r, reason) if (c, r) == (conn, ref):
                raise gunpy.Exit(("ws_upgrade_failed", reason))
    else:
        raise gunpy.Exit("timeout")

    # gun:ws_send(ConnPid, StreamRef, {text, "Hello!"}).
    gunpy.ws_send(conn, ref, ("text", "Hello!"))
    print("received  ->", gunpy.receive(("gun_ws", conn, ref, gunpy.ANY), after=1000))

    # gun:ws_send(ConnPid, StreamRef, [{text, "Hello!"}, {binary, BinaryValue}]).
    gunpy.ws_send(conn, ref, [("text", "Hello!"), ("binary", b"\x00\x01\x02")])
    for _ in range(2):
        # receive {gun_ws, ConnPid, StreamRef, Frame} -> handle_frame(...) end.
        print("received  ->", gunpy.receive(("gun_ws", conn, ref, gunpy.ANY), after=1000))

    # gun:ws_send(ConnPid, StreamRef, close): Gun waits for the server's close frame,
    # delivers it, closes the socket and reports gun_down(..., ws, normal, [StreamRef]).
    gunpy.ws_send(conn, ref, "close")
    print("received  ->", gunpy.receive(("gun_ws", conn, ref, gunpy.ANY), after=1000))
    down = ("gun_down", conn, gunpy.ANY, gunpy.ANY, gunpy.ANY)
    print("received  ->", gunpy.receive(down, after=1000))
    gunpy.close(conn)


if __name__ == "__main__":
    main()
