"""A Websocket client in a fresh process, for peak-memory measurements.

    python -m tests.reliability._ws_child PORT 'WS_OPTS_JSON'

Connects to 127.0.0.1:PORT, upgrades ``/ws`` with the given ``ws_opts``, prints
``READY <ru_maxrss bytes>``, then one line per ``gun_ws`` message,
``WS <kind> <code or length> <ru_maxrss bytes> <current RSS bytes>``, until a close
frame or the connection's end (``DOWN <reason>``).  ``ru_maxrss`` is the process's
peak RSS, so what the hostile server made it hold at any moment shows, however
briefly; the current RSS shows what it holds now.
"""

from __future__ import annotations

import json
import resource
import sys

import gunpy
from gunpy import ANY, TIMEOUT


def peak() -> str:
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * resource.getpagesize()
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024} {current}"


def main(port: int, ws_opts: dict[str, object]) -> None:
    ok, conn = gunpy.open("127.0.0.1", port, {"retry": 0, "ws_opts": ws_opts})
    assert ok == "ok"
    mref = gunpy.monitor(conn)
    assert gunpy.await_up(conn) == ("ok", "http")
    ref = gunpy.ws_upgrade(conn, "/ws")
    assert gunpy.receive(("gun_upgrade", conn, ref, ANY, ANY), after=5000) is not TIMEOUT
    print("READY", peak(), flush=True)
    while True:
        m = gunpy.receive(("gun_ws", conn, ref, ANY), ("DOWN", mref, ANY, ANY, ANY), after=30000)
        if m is TIMEOUT or m[0] == "DOWN":
            print("DOWN", "timeout" if m is TIMEOUT else repr(m[4]), flush=True)
            return
        frame = m[3]
        if frame in ("close", "ping", "pong"):
            print("WS", frame, 0, peak(), flush=True)
        elif frame[0] == "close":
            print("WS", "close", frame[1], peak(), flush=True)
        else:
            print("WS", frame[0], len(frame[1]), peak(), flush=True)
        if frame == "close" or frame[0] == "close":
            gunpy.close(conn)
            return


if __name__ == "__main__":
    main(int(sys.argv[1]), json.loads(sys.argv[2]))
