#!/usr/bin/env python3
"""gunpy's Autobahn|Testsuite client: Gun's ``ws_autobahn_SUITE`` in gunpy.

    client.py [--url ws://127.0.0.1:PORT] [--agent gunpy] [--case-timeout 60] [-v | -q]

The URL defaults to ``$AUTOBAHN_URL`` (set by ``run_autobahn.py``).  For each case
``N`` in ``1..getCaseCount`` it does exactly what Gun's suite does:

* ``gunpy.open(host, port, {"retry": 0})``, ``await_up``, a monitor on the connection,
  ``ws_upgrade(conn, "/runCase?case=N&agent=A", [], {"compress": True})`` and waits
  for ``gun_upgrade``;
* echoes every frame it receives: ``("text", _)`` / ``("binary", _)`` as they are,
  ``"close"`` -> ``"close"``, ``("close", code, _)`` -> ``("close", code, "")`` (other
  frames, e.g. pings with ``silence_pings: False``, would be echoed as they are too;
  with the defaults none arrive);
* stops on ``gun_down`` or ``DOWN``, then ``close`` and ``flush`` the connection.

One connection per case, one after the other.  Where Gun's suite waits forever,
this one gives each case ``--case-timeout`` seconds (then closes the connection and
goes on), so a stuck case cannot hang the run.  Gun calls ``/updateReports`` after
every case; this client calls it once at the end (it rewrites the whole report each
time, so calling it per case makes the full run quadratic), which changes nothing
in the report.

Output: nothing per frame.  One line per anomaly (timeout, failed upgrade, a
message Gun's suite would call unexpected), a progress line every 50 cases (none
with ``-q``; one line per case with ``-v``), and a summary line.  Exit status 0
when every case ran to its end, 1 otherwise (the verdicts are the report's, see
``run_autobahn.py`` and ``compare.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import gunpy
from gunpy import ANY

WS_OPTS: dict[str, Any] = {"compress": True}
CONN_OPTS: dict[str, Any] = {"retry": 0}
UPGRADE_TIMEOUT_MS = 10_000
#: Give up the run after this many cases in a row that could not even connect
#: (the server is gone: no point waiting await_up's 5 s for each remaining case).
MAX_CONNECT_FAILURES = 5


class CaseError(Exception):
    """A case could not be run to its end (upgrade failed, timeout...)."""


class ConnectError(CaseError):
    """The connection did not come up (``open`` or ``await_up`` failed)."""


def _connect(host: str, port: int, path: str) -> tuple[Any, Any, Any]:
    """Gun's ``connect/1``: open, await_up, monitor, ws_upgrade, wait for gun_upgrade."""
    ok, conn = gunpy.open(host, port, CONN_OPTS)
    if ok != "ok":
        raise ConnectError(f"open: {conn!r}")
    up = gunpy.await_up(conn)
    if up != ("ok", "http"):
        gunpy.close(conn)
        gunpy.flush(conn)
        raise ConnectError(f"await_up: {up!r}")
    mref = gunpy.monitor(conn)
    ref = gunpy.ws_upgrade(conn, path, [], dict(WS_OPTS))
    msg = gunpy.receive(
        ("gun_upgrade", conn, ref, ANY, ANY),
        ("gun_response", conn, ref, ANY, ANY, ANY),
        ("gun_error", conn, ref, ANY),
        ("gun_error", conn, ANY),
        ("gun_down", conn, ANY, ANY, ANY),
        ("DOWN", mref, "process", conn, ANY),
        after=UPGRADE_TIMEOUT_MS,
    )
    if msg is not gunpy.TIMEOUT and msg[0] == "gun_upgrade" and msg[3] == ["websocket"]:
        return conn, mref, ref
    _close(conn, mref)
    raise CaseError(f"ws_upgrade {path}: {'timeout' if msg is gunpy.TIMEOUT else msg!r}")


def _close(conn: Any, mref: Any) -> None:
    """Gun's ``close/2``: demonitor, close, flush."""
    gunpy.demonitor(mref, flush=True)
    gunpy.close(conn)
    gunpy.flush(conn)


def _echo(frame: Any) -> Any:
    if type(frame) is tuple and frame[0] == "close" and len(frame) == 3:
        return ("close", frame[1], "")
    return frame  # ("text", _), ("binary", _), "close", anything else as it is


def run_case(host: str, port: int, path: str, timeout: float) -> tuple[int, str | None]:
    """Gun's ``loop/3`` for one connection: returns (frames echoed, anomaly or None)."""
    conn, mref, ref = _connect(host, port, path)
    deadline = time.monotonic() + timeout
    frames = 0
    anomaly: str | None = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                anomaly = f"timeout: still open after {timeout:g}s ({frames} frames echoed)"
                break
            msg = gunpy.receive(after=left * 1000)  # any message, as Gun's loop/3
            if msg is gunpy.TIMEOUT:
                continue
            tag = msg[0] if type(msg) is tuple and msg else None
            if tag == "gun_ws" and msg[1] == conn and msg[2] == ref:
                gunpy.ws_send(conn, ref, _echo(msg[3]))
                frames += 1
            elif tag == "gun_down" and msg[1] == conn:
                break
            elif tag == "DOWN" and msg[1] == mref:
                if msg[4] != "normal":
                    anomaly = f"connection process exited: {msg[4]!r}"
                break
            else:
                # Gun's suite logs "Unexpected message" and ends the case.
                anomaly = f"unexpected message: {msg!r}"[:300]
                break
    finally:
        _close(conn, mref)
    return frames, anomaly


def get_case_count(host: str, port: int) -> int:
    conn, mref, ref = _connect(host, port, "/getCaseCount")
    try:
        msg = gunpy.receive(("gun_ws", conn, ref, ("text", ANY)), after=UPGRADE_TIMEOUT_MS)
        if msg is gunpy.TIMEOUT:
            raise CaseError("/getCaseCount: no answer")
        return int(msg[3][1])
    finally:
        _close(conn, mref)


def update_reports(host: str, port: int, agent: str, timeout: float) -> None:
    """Gun's ``update_reports/0``: the server writes its reports, then closes."""
    conn, mref, ref = _connect(host, port, f"/updateReports?agent={agent}")
    try:
        msg = gunpy.receive(
            ("gun_ws", conn, ref, ANY),
            ("gun_down", conn, ANY, ANY, ANY),
            ("DOWN", mref, "process", conn, ANY),
            after=timeout * 1000,
        )
        if msg is gunpy.TIMEOUT:
            raise CaseError(f"/updateReports: no close within {timeout:g}s")
    finally:
        _close(conn, mref)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=os.environ.get("AUTOBAHN_URL", "ws://127.0.0.1:9001"))
    ap.add_argument("--agent", default="gunpy")
    ap.add_argument(
        "--case-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="give up a case after S seconds (default 60)",
    )
    ap.add_argument("--report-timeout", type=float, default=300.0, metavar="S")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    a = ap.parse_args(argv)
    u = urlsplit(a.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80

    t0 = time.monotonic()
    count = get_case_count(host, port)
    print(f"autobahn client: {count} cases against {a.url} as agent {a.agent!r}", flush=True)
    bad = 0
    down = 0  # cases in a row that could not connect
    slowest: tuple[float, int] = (0.0, 0)
    for n in range(1, count + 1):
        c0 = time.monotonic()
        try:
            frames, anomaly = run_case(
                host, port, f"/runCase?case={n}&agent={a.agent}", a.case_timeout
            )
            down = 0
        except ConnectError as exc:
            frames, anomaly = 0, str(exc)
            down += 1
        except CaseError as exc:
            frames, anomaly = 0, str(exc)
            down = 0
        took = time.monotonic() - c0
        slowest = max(slowest, (took, n))
        if anomaly is not None:
            bad += 1
            print(f"  case {n}: {anomaly}", flush=True)
        elif a.verbose:
            print(f"  case {n}: {frames} frames echoed in {took:.2f}s", flush=True)
        if not a.quiet and not a.verbose and (n % 50 == 0 or n == count):
            print(f"  {n}/{count} cases, {time.monotonic() - t0:.1f}s", flush=True)
        if down >= MAX_CONNECT_FAILURES:
            print(f"autobahn client: {down} cases in a row could not connect: giving up")
            return 2
    r0 = time.monotonic()
    update_reports(host, port, a.agent, a.report_timeout)
    print(
        f"autobahn client: {count} cases in {r0 - t0:.1f}s (slowest: case {slowest[1]}, "
        f"{slowest[0]:.2f}s), reports written in {time.monotonic() - r0:.1f}s, "
        f"{bad} case(s) not run to their end",
        flush=True,
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
