"""The soak: many connections kept busy for minutes against a server that injects
faults, with a ledger proving every request got exactly one final answer.

    python -m tests.reliability.soak            (make soak)

Environment (defaults in brackets): ``GUNPY_SOAK_SECONDS`` [600],
``GUNPY_SOAK_CONNS`` [500], ``GUNPY_SOAK_FAULTS`` (probability of a fault per
request and per Websocket message) [0.05], ``GUNPY_SOAK_WS`` (share of the
connections that run Websocket echo sessions) [0.1], ``GUNPY_SOAK_DEPTH``
(requests in flight per HTTP connection, pipelined) [2], ``GUNPY_SOAK_SEED`` [1].

The server is ``tests/reliability/fault_server.py`` in its own process: closes,
resets, half-closes, slow and dribbled answers, ``connection: close``, malformed
status lines.  One thread (this one) owns every connection and reads every
message, as a Gun user's process would.

The ledger (``tests.reliability._support.Ledger``): a request's final answer is a
response that completes (``gun_response`` fin, ``gun_data`` fin, ``gun_trailers``),
a 4-tuple ``gun_error``, or -- if neither came -- the ``gun_down`` that lists it
or its connection's ``DOWN``.  At the end, after a drain, the run fails if a
request got no final answer (lost), more than one (twice), a message after its
final answer (late), a completed request listed as killed in a ``gun_down``, a
response for another request (``x-req`` mismatch), or messages out of order; or
if threads, fds or pykka actors are left behind.  Websocket messages (one in
flight per connection) have their own ledger: each gets its echo, or the end of
its Websocket (``gun_down`` listing it, a close frame, the ``DOWN``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gunpy
from gunpy import TIMEOUT
from tests.peers import Peer
from tests.reliability._support import Ledger, Resources, fault_server_argv, leaks, rss, settle

MiB = 1024 * 1024

PATHS = [
    ("GET", "/hello", None),
    ("GET", "/size/3000", None),
    ("GET", "/chunked/2500", None),
    ("POST", "/echo", b"e" * 700),
    ("GET", "/slow/20", None),
    ("HEAD", "/size/100", None),
]


@dataclass
class Report:
    seconds: float = 0.0
    conns: int = 0
    requests: int = 0
    completed: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    ended_by_down: int = 0
    downs: collections.Counter[str] = field(default_factory=collections.Counter)
    ups: int = 0
    exits: collections.Counter[str] = field(default_factory=collections.Counter)
    reopened: int = 0
    ws_sessions: int = 0
    ws_messages: int = 0
    ws_echoed: int = 0
    ws_ended: int = 0
    lost: list[Any] = field(default_factory=list)
    twice: dict[Any, Any] = field(default_factory=dict)
    late: list[Any] = field(default_factory=list)
    killed_completed: list[Any] = field(default_factory=list)
    mismatched: list[Any] = field(default_factory=list)
    out_of_order: list[Any] = field(default_factory=list)
    ws_lost: list[Any] = field(default_factory=list)
    ws_bad: list[Any] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    rss_start: int = 0
    rss_peak: int = 0
    rss_end: int = 0
    server_faults: str = ""

    @property
    def violations(self) -> list[str]:
        out = []
        for name in ("lost", "twice", "late", "killed_completed", "mismatched", "out_of_order", "ws_lost", "ws_bad", "leaks"):
            v = getattr(self, name)
            if v:
                sample = list(v.items())[:3] if isinstance(v, dict) else list(v)[:3]
                out.append(f"{name}: {len(v)} (e.g. {sample!r})")
        return out

    def text(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0
        lines = [
            f"soak: {self.conns} connections for {self.seconds:.0f} s",
            f"  HTTP requests: {self.requests} ({rate:.0f}/s): {self.completed} completed, "
            f"{sum(self.errors.values())} gun_error, {self.ended_by_down} ended by gun_down/DOWN only",
            f"  gun_error reasons: {dict(self.errors.most_common(8))}",
            f"  gun_down: {sum(self.downs.values())} {dict(self.downs.most_common(8))}; gun_up: {self.ups}",
            f"  connection exits: {dict(self.exits)}; reopened: {self.reopened}",
            f"  Websocket: {self.ws_sessions} sessions, {self.ws_messages} messages, "
            f"{self.ws_echoed} echoed, {self.ws_ended} ended by the Websocket's end",
            f"  RSS: start {self.rss_start / MiB:.0f} MiB, peak {self.rss_peak / MiB:.0f} MiB, "
            f"end {self.rss_end / MiB:.0f} MiB",
            f"  server faults injected: {self.server_faults or '?'}",
            "  violations: " + ("none" if not self.violations else "; ".join(self.violations)),
        ]
        return "\n".join(lines)


def _reason_class(r: Any) -> str:
    if isinstance(r, str):
        return r
    if isinstance(r, tuple) and r:
        if r[0] in ("closed", "error", "shutdown") and len(r) > 1:
            return f"{r[0]}:{_reason_class(r[1])}"
        if r[0] == "connection_error" and len(r) > 1:
            return f"connection_error:{r[1]}"
        return str(r[0])
    return type(r).__name__


class Soak:
    def __init__(
        self,
        port: int,
        conns: int,
        *,
        ws_share: float = 0.1,
        depth: int = 2,
        seed: int = 1,
        faults: float = 0.0,
    ) -> None:
        self.port = port
        self.n = conns
        self.depth = depth
        self.rng = random.Random(seed)
        self.ws_share = ws_share
        self.faults = faults
        self.ledger = Ledger()
        self.r = Report(conns=conns)
        self.req_id: dict[Any, str] = {}
        self.req_method: dict[Any, str] = {}
        self.stage: dict[Any, str] = {}
        self.inflight: collections.Counter[Any] = collections.Counter()
        self.mrefs: dict[Any, Any] = {}
        self.kind: dict[Any, str] = {}
        self.up: set[Any] = set()
        self.next_id = 0
        self.issuing = True
        # Websocket: conn -> stream ref (None while not upgraded); one message in flight.
        self.ws_ref: dict[Any, Any] = {}
        self.ws_pending: dict[Any, tuple[Any, bytes]] = {}  # conn -> (ws ref, payload)

    # -- connections --------------------------------------------------------------
    def open(self, kind: str) -> None:
        opts = {"retry": 1000, "retry_timeout": 100, "http_opts": {"closing_timeout": 5000}}
        ok, conn = gunpy.open("127.0.0.1", self.port, opts)
        assert ok == "ok", conn
        self.mrefs[conn] = gunpy.monitor(conn)
        self.kind[conn] = kind
        if kind == "ws":
            self.ws_ref[conn] = None

    # -- HTTP ---------------------------------------------------------------------
    def issue(self, conn: Any) -> None:
        while self.issuing and self.inflight[conn] < self.depth:
            method, path, body = self.rng.choice(PATHS)
            self.next_id += 1
            rid = str(self.next_id)
            headers = [("x-req", rid)]
            if method == "POST":
                ref = gunpy.post(conn, path, headers, body)
            elif method == "HEAD":
                ref = gunpy.head(conn, path, headers)
            else:
                ref = gunpy.get(conn, path, headers)
            self.ledger.start(conn, ref)
            self.req_id[ref] = rid
            self.req_method[ref] = method
            self.stage[ref] = "new"
            self.inflight[conn] += 1
            self.r.requests += 1

    def on_stream(self, m: tuple[Any, ...]) -> None:
        ref = m[2]
        if ref not in self.stage:
            self.ledger.on_message(m)  # an ended request: late, or a second answer
            return
        tag = m[0]
        stage = self.stage[ref]
        ok = True
        if tag == "gun_inform":
            ok = stage == "new"
        elif tag == "gun_response":
            ok = stage == "new"
            rid = dict(m[5]).get("x-req")
            if rid != self.req_id[ref]:
                self.r.mismatched.append((self.req_id[ref], rid))
            self.stage[ref] = "done" if m[3] == "fin" else "body"
        elif tag == "gun_data":
            ok = stage == "body"
            if m[3] == "fin":
                self.stage[ref] = "done"
        elif tag == "gun_trailers":
            ok = stage == "body"
            self.stage[ref] = "done"
        elif tag == "gun_error":
            ok = stage in ("new", "body")
            self.stage[ref] = "done"
            self.r.errors[_reason_class(m[3])] += 1
        if not ok:
            self.r.out_of_order.append((self.req_id[ref], stage, m[0], m[3] if len(m) > 3 else None))
        ended = self.ledger.on_message(m)
        if ended is not None:
            if tag != "gun_error":
                self.r.completed += 1
            self.forget(ended)
            self.finished(m[1], [ended])

    def forget(self, ref: Any) -> None:
        self.req_id.pop(ref, None)
        self.req_method.pop(ref, None)
        self.stage.pop(ref, None)

    def finished(self, conn: Any, refs: list[Any]) -> None:
        self.inflight[conn] -= len(refs)
        # The next requests go at once, even while reconnecting: gunpy queues them.
        if self.kind.get(conn) == "http" and conn.is_alive():
            self.issue(conn)

    # -- Websocket -----------------------------------------------------------------
    def ws_start(self, conn: Any) -> None:
        if self.issuing and self.ws_ref.get(conn) is None:
            self.ws_ref[conn] = gunpy.ws_upgrade(conn, "/ws")
            self.r.ws_sessions += 1

    def ws_send(self, conn: Any) -> None:
        ref = self.ws_ref.get(conn)
        if not self.issuing or ref is None or conn in self.ws_pending:
            return
        self.next_id += 1
        payload = b"m%d" % self.next_id + b"." * self.rng.randrange(0, 2000)
        self.ws_pending[conn] = (ref, payload)
        gunpy.ws_send(conn, ref, ("binary", payload))
        self.r.ws_messages += 1

    def ws_end(self, conn: Any, ref: Any) -> None:
        """The Websocket ``ref`` of ``conn`` ended: its message in flight ends with it."""
        pending = self.ws_pending.get(conn)
        if pending is not None and pending[0] is ref:
            del self.ws_pending[conn]
            self.r.ws_ended += 1
        if self.ws_ref.get(conn) is ref:
            self.ws_ref[conn] = None

    def on_ws(self, m: tuple[Any, ...]) -> None:
        conn, ref, frame = m[1], m[2], m[3]
        if type(frame) is tuple and frame[0] == "binary":
            pending = self.ws_pending.get(conn)
            if pending is None or pending[0] is not ref or pending[1] != frame[1]:
                self.r.ws_bad.append(("unexpected echo", frame[1][:16]))
                return
            del self.ws_pending[conn]
            self.r.ws_echoed += 1
            self.ws_send(conn)
        elif frame == "close" or (type(frame) is tuple and frame[0] == "close"):
            self.ws_end(conn, ref)

    # -- the loop -----------------------------------------------------------------------
    def dispatch(self, m: Any) -> None:
        tag = m[0]
        if tag == "gun_up":
            conn = m[1]
            self.r.ups += 1
            self.up.add(conn)
            if self.kind[conn] == "http":
                self.issue(conn)
            else:
                self.ws_start(conn)
        elif tag == "gun_down":
            conn = m[1]
            self.up.discard(conn)
            self.r.downs[_reason_class(m[3])] += 1
            if self.kind[conn] == "http":
                ended = self.ledger.on_message(m)
                if ended:
                    self.r.ended_by_down += len(ended)
                    for ref in ended:
                        self.forget(ref)
                    self.finished(conn, ended)
            else:
                for ref in m[4]:
                    self.ws_end(conn, ref)
                if m[2] == "ws" and not m[4]:
                    self.r.ws_bad.append(("gun_down ws without its ref", m))
        elif tag == "gun_upgrade":
            conn, ref = m[1], m[2]
            if self.ws_ref.get(conn) is ref:
                self.ws_send(conn)
        elif tag == "gun_ws":
            self.on_ws(m)
        elif tag == "DOWN":
            self.on_exit(m)
        elif tag in ("gun_response", "gun_data", "gun_trailers", "gun_inform") or (
            tag == "gun_error" and len(m) == 4
        ):
            conn = m[1]
            if self.kind.get(conn) == "ws":
                # A refused or failed upgrade (or an error on the upgrade stream).
                ref = m[2]
                if self.ws_ref.get(conn) is ref and (
                    tag == "gun_error" or (tag in ("gun_response", "gun_data") and m[3] == "fin")
                ):
                    self.ws_ref[conn] = None
                    if conn in self.up:
                        self.ws_start(conn)
                return
            self.on_stream(m)
        elif tag == "gun_error":
            # Connection-wide: the stream's own gun_error / gun_down follows.  A
            # ws_send that reached the connection after it reconnected as HTTP is
            # refused this way: its message ended with the Websocket's gun_down.
            pass

    def on_exit(self, m: tuple[Any, ...]) -> None:
        conn = m[3]
        if conn not in self.mrefs or self.mrefs[conn] is not m[1]:
            return
        del self.mrefs[conn]
        self.up.discard(conn)
        self.r.exits[_reason_class(m[4])] += 1
        if self.kind[conn] == "http":
            ended = self.ledger.on_exit(conn, m[4])
            self.r.ended_by_down += len(ended)
            for ref in ended:
                self.forget(ref)
            self.inflight.pop(conn, None)
        else:
            ref = self.ws_ref.get(conn)
            if ref is not None:
                self.ws_end(conn, ref)
            self.ws_pending.pop(conn, None)
        kind = self.kind.pop(conn)
        if self.issuing:
            self.r.reopened += 1
            self.open(kind)

    def run(self, seconds: float, drain: float = 60.0) -> Report:
        base = settle(Resources.snapshot())
        self.r.rss_start = self.r.rss_peak = rss()
        t0 = time.monotonic()
        for i in range(self.n):
            self.open("ws" if i < self.n * self.ws_share else "http")
        deadline = t0 + seconds
        next_sample = t0
        next_rotate = t0 + 30
        while time.monotonic() < deadline:
            m = gunpy.receive(after=200)
            if m is not TIMEOUT:
                self.dispatch(m)
            now = time.monotonic()
            if now >= next_sample:
                self.r.rss_peak = max(self.r.rss_peak, rss())
                next_sample += 5
            if now >= next_rotate:
                self.ledger.rotate()
                next_rotate += 30
        self.r.seconds = time.monotonic() - t0
        # Drain: no new requests; wait for every open one to end.
        self.issuing = False
        end = time.monotonic() + drain
        while (self.ledger.open or self.ws_pending) and time.monotonic() < end:
            m = gunpy.receive(after=200)
            if m is not TIMEOUT:
                self.dispatch(m)
        # Close everything; what is still open now is lost.
        self.r.lost = [(self.req_id.get(r), self.stage.get(r)) for r in self.ledger.open]
        self.r.ws_lost = [(p[1][:12],) for p in self.ws_pending.values()]
        for conn in list(self.mrefs):
            gunpy.close(conn)
        while self.mrefs:
            m = gunpy.receive(after=10000)
            if m is TIMEOUT:
                self.r.leaks.append(f"{len(self.mrefs)} connections did not exit")
                break
            if m[0] == "DOWN":
                self.on_exit(m)
        gunpy.flush(lambda m: True)
        self.r.twice = {repr(r): (a, b) for r, a, b in self.ledger.twice}
        self.r.late = self.ledger.late
        self.r.killed_completed = self.ledger.killed_completed
        self.r.rss_end = rss()
        self.r.leaks += leaks(base, settle(base))
        return self.r


def run_against_server(seconds: float, conns: int, faults: float, seed: int, ws_share: float, depth: int) -> Report:
    log = Path(tempfile.mkdtemp(prefix="gunpy-soak-")) / "fault_server.log"
    args = ["0", "--faults", str(faults), "--seed", str(seed)]
    with Peer(fault_server_argv(*args), name="soak-server", log_path=log) as peer:
        report = Soak(peer.port, conns, ws_share=ws_share, depth=depth, seed=seed, faults=faults).run(seconds)
        with contextlib.suppress(ProcessLookupError):
            os.kill(peer.proc.pid, signal.SIGUSR1)  # the server prints its fault counts
        deadline = time.monotonic() + 5
        lines: list[str] = []
        while not lines and time.monotonic() < deadline:
            lines = [ln for ln in log.read_text().splitlines() if ln.startswith("FAULTS ")]
            if not lines:
                time.sleep(0.05)  # not a test: waiting for another process's output
    report.server_faults = lines[-1][7:] if lines else ""
    return report


def main() -> int:
    seconds = float(os.environ.get("GUNPY_SOAK_SECONDS", "600"))
    conns = int(os.environ.get("GUNPY_SOAK_CONNS", "500"))
    faults = float(os.environ.get("GUNPY_SOAK_FAULTS", "0.05"))
    ws_share = float(os.environ.get("GUNPY_SOAK_WS", "0.1"))
    depth = int(os.environ.get("GUNPY_SOAK_DEPTH", "2"))
    seed = int(os.environ.get("GUNPY_SOAK_SEED", "1"))
    threading.stack_size(256 * 1024)  # ARCHITECTURE 7: 500 connection threads
    print(
        f"soak: {conns} connections, {seconds:.0f} s, faults {faults}, Websocket share "
        f"{ws_share}, depth {depth}, seed {seed}",
        flush=True,
    )
    report = run_against_server(seconds, conns, faults, seed, ws_share, depth)
    print(report.text(), flush=True)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
