"""The harness: servers, one process per client, alternating runs, medians, ratios.

For each workload the harness starts one worker process per client
(``benchmarks.worker``), then runs *rounds*: in each round every client runs once,
back to back, in an order rotated by one each round.  Every run opens its own
connection, warms up, measures for ``duration`` seconds and closes.  The server's
CPU time is sampled when the measured window starts and ends, so every run also
says how busy the server was (a server near 100 % of a core would be the
bottleneck, not the client).

Numbers reported, per client: the median over the runs of each metric, and the
*ratio to gunpy*: the median over rounds of (client's run / gunpy's run in the same
round).  Pairing the runs of one round cancels most of the drift of these shared
VMs (ARCHITECTURE 8: the loopback switches between a ~8 us and a ~65 us regime, even
mid-run); the tcp-floor row of the latency tables shows which regime a run saw.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .servers import Server, system_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Target:
    """gunpy's median ÷ the other client's must be ≥ ``ratio`` (same run)."""

    versus: str
    ratio: float
    text: str


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    clients: tuple[str, ...]
    unit: str  # what the main metric counts
    server: str  # "ws", "http" (nginx) or "hypercorn"; tcp-floor always uses the TCP echo
    latency: bool = False  # p50/p99 columns
    per_op_bytes: bool = False  # main metric is MiB/s rather than ops/s
    targets: tuple[Target, ...] = ()
    note: str = ""


WS_CLIENTS = ("gunpy", "websocket-client", "websockets-sync", "websockets-async", "aiohttp")
HTTP_CLIENTS = ("gunpy", "aiohttp", "urllib3", "httpx")

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "ws_pingpong", "WS ping-pong, 16 B text message",
            (*WS_CLIENTS, "wsproto-floor", "tcp-floor"), "round trips/s", "ws", latency=True,
            targets=(Target("websocket-client", 1.0, "≥ 1.0× websocket-client"),
                     Target("wsproto-floor", 1.2, "≥ 1.2× raw wsproto on a blocking socket")),
            note="One message in flight: send, wait for the echo, repeat. tcp-floor is a 16 B "
                 "round trip on a plain TCP socket (Go echo), the loopback's own latency.",
        ),
        Workload(
            "ws_stream", "WS streaming, 64 B text messages, 100 in flight",
            (*WS_CLIENTS, "wsproto-floor"), "msg/s", "ws",
            targets=(Target("websockets-sync", 1.0, "≥ 1.0× websockets sync client"),),
            note="100 messages sent up front; every echo received is answered by one more "
                 "message (wsproto-floor answers all the echoes of one recv with one sendall).",
        ),
        Workload(
            "ws_1mib", "WS 1 MiB binary messages", (*WS_CLIENTS, "wsproto-floor"),
            "MiB/s", "ws", latency=True, per_op_bytes=True,
            targets=(Target("websockets-sync", 1.0, "≥ 1.0× websockets sync client"),),
            note="One 1 MiB message in flight; MiB/s counts the echoed payload (each MiB "
                 "crosses the loopback twice).",
        ),
        Workload(
            "http_get", "HTTP/1.1 GET of 100 B, one keep-alive connection",
            (*HTTP_CLIENTS, "h11-floor", "tcp-floor"), "req/s", "http", latency=True,
            targets=(Target("aiohttp", 1.0, "≥ 1.0× aiohttp client"),
                     Target("h11-floor", 0.93, "≈ 0.93× raw h11 (guide)")),
            note="nginx static file, sequential requests. tcp-floor: 16 B round trips on "
                 "a plain TCP socket (Go echo).",
        ),
        Workload(
            "http_pipelined", "HTTP/1.1 GET of 100 B pipelined, 100 in flight",
            ("gunpy", "h11-floor"), "req/s", "http",
            targets=(Target("h11-floor", 0.9, "≥ 0.9× raw h11 pipelined"),),
            note="No other peer pipelines. 100 requests written up front, each response "
                 "read tops the window up.",
        ),
        Workload(
            "http2_concurrent", "HTTP/2 GET of 100 B, 100 streams in flight on one connection (hypercorn)",
            ("gunpy", "gunpy-h1-pipelined", "httpx", "h2-floor"), "req/s", "hypercorn",
            latency=True,
            note="hypercorn (one worker, asyncio) serving a tiny ASGI app, 100 B per response. "
                 "gunpy, httpx and h2-floor: h2c with prior knowledge, 100 streams in flight, "
                 "each completion (in any order) opens one more; gunpy-h1-pipelined: gunpy over "
                 "HTTP/1.1, 100 requests pipelined. httpx: `AsyncClient(http1=False, http2=True)`, "
                 "100 tasks. Latency: request sent → response complete, with 100 in flight. "
                 "Server CPU near 100 % means hypercorn, not the client, sets the rate.",
        ),
        Workload(
            "http_1mib", "HTTP/1.1 GET of 1 MiB, one keep-alive connection",
            (*HTTP_CLIENTS, "h11-floor"), "MiB/s", "http", latency=True, per_op_bytes=True,
            targets=(Target("urllib3", 1.0, "≥ 1.0× urllib3"),),
            note="nginx static file (sendfile off), sequential requests.",
        ),
    )
}  # fmt: skip

SCALE_CLIENTS = ("gunpy", "websockets-async", "aiohttp")
SCALE_TARGET_N = 10000
SCALE_TARGET_KIB = 40.0


# --------------------------------------------------------------------------- workers


class WorkerError(RuntimeError):
    pass


class Worker:
    """One client's process for one workload (see ``benchmarks.worker``)."""

    def __init__(self, client: str, workload: str, cfg: dict[str, Any]) -> None:
        self.client = client
        spec = json.dumps({"client": client, "workload": workload, "cfg": cfg})
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("PYTHONASYNCIODEBUG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", spec],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, cwd=ROOT, env=env,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            del self.stderr[:-40]

    def _line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(f"{self.client}: no answer within {timeout:.0f}s") from None
        if line is None:
            raise WorkerError(f"{self.client} exited:\n{''.join(self.stderr[-15:])}")
        return line

    def wait_ready(self, timeout: float = 60) -> None:
        while self._line(timeout) != "READY":
            pass

    def command(
        self, cmd: str, timeout: float, on_mark: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        while True:
            line = self._line(timeout)
            if line == "MARK":
                if on_mark is not None:
                    on_mark()
            elif line.startswith("RESULT "):
                res: dict[str, Any] = json.loads(line[7:])
                return res

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write("EXIT\n")
                self.proc.stdin.flush()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- statistics


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _metric(w: Workload, run: dict[str, Any]) -> float:
    if w.per_op_bytes:
        return float(run["bytes"]) / run["elapsed"] / (1 << 20)
    return float(run["ops"]) / run["elapsed"]


@dataclass
class ClientSummary:
    client: str
    runs: list[dict[str, Any]] = field(default_factory=list)  # per round; {} = failed
    value: float | None = None
    ratio: float | None = None  # median over rounds of client / gunpy
    ratio_iqr: tuple[float, float] | None = None  # quartiles of those per-round ratios
    p50_us: float | None = None
    p99_us: float | None = None
    cpu: float | None = None  # client CPU time / wall time (all threads; 1.0 = one core)
    server_cpu: float | None = None
    other_cpu: float | None = None  # other processes' CPU during the window (cores)
    cpu_per_op: float | None = None  # client CPU µs per op (per MiB: ms), all threads
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "client": self.client, "value": self.value, "ratio_to_gunpy": self.ratio,
            "ratio_quartiles": self.ratio_iqr,
            "p50_us": self.p50_us, "p99_us": self.p99_us, "client_cpu": self.cpu,
            "server_cpu": self.server_cpu, "other_cpu": self.other_cpu,
            "cpu_per_op": self.cpu_per_op, "runs": self.runs, "errors": self.errors,
        }  # fmt: skip


def summarise(w: Workload, per_client: dict[str, ClientSummary]) -> None:
    gun = per_client.get("gunpy")
    for s in per_client.values():
        ok = [r for r in s.runs if r and "error" not in r]
        for r in ok:
            r["value"] = _metric(w, r)
        s.value = median([r["value"] for r in ok])
        s.p50_us = median([r["p50_us"] for r in ok if "p50_us" in r])
        s.p99_us = median([r["p99_us"] for r in ok if "p99_us" in r])
        s.cpu = median([r["cpu"] / r["elapsed"] for r in ok])
        s.server_cpu = median([r["server_cpu"] for r in ok if r.get("server_cpu") is not None])
        s.other_cpu = median([r["other_cpu"] for r in ok if r.get("other_cpu") is not None])
        if w.per_op_bytes:  # ms of CPU per MiB
            s.cpu_per_op = median([r["cpu"] * 1e3 / (r["bytes"] / (1 << 20)) for r in ok if r["bytes"]])
        else:  # µs of CPU per op
            s.cpu_per_op = median([r["cpu"] * 1e6 / r["ops"] for r in ok if r["ops"]])
        if gun is not None:
            pairs = [
                c["value"] / g["value"]
                for c, g in zip(s.runs, gun.runs, strict=False)
                if c.get("value") and g.get("value")
            ]
            s.ratio = median(pairs)
            if len(pairs) >= 4:
                q = statistics.quantiles(pairs, n=4)
                s.ratio_iqr = (q[0], q[2])


# --------------------------------------------------------------------------- running


@dataclass
class Settings:
    runs: int
    duration: float
    warmup: float
    scale_n: int
    scale_runs: int
    scale_batch: int
    stack_size: int
    window: int = 100
    verbose: bool = False


def run_workload(
    w: Workload, clients: list[str], cfg: dict[str, Any], servers: dict[str, Server],
    st: Settings, log: Callable[[str], None],
) -> dict[str, ClientSummary]:  # fmt: skip
    per_client = {c: ClientSummary(c) for c in clients}
    workers: dict[str, Worker] = {}
    for srv in servers.values():
        srv.refresh_pids()
    try:
        for c in clients:
            workers[c] = Worker(c, w.name, cfg)
        for c in clients:
            try:
                workers[c].wait_ready()
            except WorkerError as e:
                per_client[c].errors.append(str(e))
        live = [c for c in clients if not per_client[c].errors]
        timeout = st.duration + st.warmup + 60
        for rnd in range(st.runs):
            k = rnd % len(live) if live else 0
            order = live[k:] + live[:k]
            for c in order:
                srv = servers["tcp" if c == "tcp-floor" else w.server]
                marks: dict[str, float] = {}

                def on_mark(srv: Server = srv, marks: dict[str, float] = marks) -> None:
                    marks["cpu"] = srv.cpu_seconds()
                    marks["busy"], marks["steal"] = system_cpu_seconds()
                    marks["t"] = time.perf_counter()

                t_run = time.perf_counter()
                try:
                    res = workers[c].command(f"RUN {st.duration} {st.warmup}", timeout, on_mark)
                except WorkerError as e:
                    res = {"error": str(e)}
                res["run_s"] = time.perf_counter() - t_run
                if "error" in res:
                    per_client[c].errors.append(res["error"])
                    log(f"    {w.name} {c}: FAILED\n{res['error']}")
                    per_client[c].runs.append({})
                    continue
                if marks:
                    busy, steal = system_cpu_seconds()
                    wall = time.perf_counter() - marks["t"]
                    server_cpu = srv.cpu_seconds() - marks["cpu"]
                    res["server_cpu"] = server_cpu / wall
                    # what other processes took meanwhile (cores; the harness's own is tiny)
                    res["other_cpu"] = max(0.0, (busy - marks["busy"] - server_cpu - res["cpu"]) / wall)
                    res["steal"] = (steal - marks["steal"]) / wall
                per_client[c].runs.append(res)
                if st.verbose:
                    v = _metric(w, res)
                    lat = f" p50 {res['p50_us']:.0f}us" if "p50_us" in res else ""
                    log(f"    round {rnd + 1} {c:18s} {v:12,.1f} {w.unit}{lat}"
                        f" cpu {res['cpu'] / res['elapsed']:.0%} server {res.get('server_cpu') or 0:.0%}"
                        f" other {res.get('other_cpu') or 0:.0%} ({res['run_s']:.2f} s)")  # fmt: skip
    finally:
        for wk in workers.values():
            wk.close()
    summarise(w, per_client)
    return per_client


@dataclass
class ScaleSummary:
    client: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    med: dict[str, float | None] = field(default_factory=dict)
    ratio_open_rate: float | None = None
    ratio_rss: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "client": self.client, "median": self.med, "runs": self.runs, "errors": self.errors,
            "ratio_open_rate_to_gunpy": self.ratio_open_rate,
            "ratio_rss_per_conn_to_gunpy": self.ratio_rss,
        }  # fmt: skip


def run_scale(
    clients: list[str], cfg: dict[str, Any], server: Server, st: Settings,
    log: Callable[[str], None],
) -> dict[str, ScaleSummary]:  # fmt: skip
    out = {c: ScaleSummary(c) for c in clients}
    timeout = 120 + st.scale_n * 0.05
    for rnd in range(st.scale_runs):
        k = rnd % len(clients)
        for c in clients[k:] + clients[:k]:
            wk = Worker(c, "scale", cfg)
            try:
                wk.wait_ready()
                cpu0, t0 = server.cpu_seconds(), time.perf_counter()
                res = wk.command(f"SCALE {st.scale_n}", timeout)
                res["server_cpu"] = (server.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
            except WorkerError as e:
                res = {"error": str(e)}
            finally:
                wk.close()
            if "error" in res:
                out[c].errors.append(res["error"])
                log(f"    scale {c}: FAILED\n{res['error']}")
                out[c].runs.append({})
                continue
            res["open_rate"] = res["opened"] / res["open_s"] if res["open_s"] else 0.0
            out[c].runs.append(res)
            if res.get("failure"):
                log(f"    scale {c}: opened {res['opened']:,} of {res['n']:,}: {res['failure']}")
            if st.verbose:
                log(f"    round {rnd + 1} {c:18s} opened {res['opened']:,} in {res['open_s']:.2f}s"
                    f" rss/conn {res['rss_per_conn_kib']:.1f} KiB echoed {res['echoed']:,}")  # fmt: skip
    gun = out.get("gunpy")
    for s in out.values():
        ok = [r for r in s.runs if r]
        for key in ("opened", "open_s", "open_rate", "echo_s", "rss_per_conn_kib", "echoed",
                    "threads", "rss_base_kib", "rss_kib", "nofile", "vm_per_conn_kib"):  # fmt: skip
            s.med[key] = median([float(r[key]) for r in ok])
        if gun is not None:
            s.ratio_open_rate = median([
                c["open_rate"] / g["open_rate"] for c, g in zip(s.runs, gun.runs, strict=False)
                if c and g
            ])  # fmt: skip
            s.ratio_rss = median([
                c["rss_per_conn_kib"] / g["rss_per_conn_kib"]
                for c, g in zip(s.runs, gun.runs, strict=False)
                if c and g and g["rss_per_conn_kib"] > 0
            ])  # fmt: skip
    return out
