"""What every client module shares: the run configuration, payloads and the meter.

A client module defines ``WORKLOADS = {name: function}``.  A throughput/latency
workload function is ``fn(cfg, meter, warmup) -> dict``: it connects, runs the
workload for ``warmup`` seconds unmeasured, calls ``meter.start()``, runs until
``meter.expired()`` (or the latency helper's deadline), and returns
``meter.stop(ops, nbytes, lat_ns)``.  Connecting and closing are outside the
measured window.  A scale workload function is ``fn(cfg, n) -> dict``.

``cfg`` keys: ``host``; ``ws_port`` (Go echo, Websocket); ``tcp_port`` (Go echo,
plain TCP); ``http_port`` (nginx); ``hypercorn_port`` (hypercorn: HTTP/1.1 and
h2c, every path answers 100 B); ``window`` (messages/requests in flight);
``small_path`` / ``big_path`` (nginx's 100 B and 1 MiB files).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

PING_16 = "0123456789abcdef"  # the 16 B text message of the ping-pong workload
STREAM_64 = "s" * 63 + "\n"  # the 64 B text message of the streaming workload
MIB = 1 << 20
BLOB_1M = os.urandom(MIB)  # the 1 MiB binary message

perf_counter = time.perf_counter
perf_counter_ns = time.perf_counter_ns
process_time = time.process_time


def ws_url(cfg: dict[str, Any], path: str = "/") -> str:
    return f"ws://{cfg['host']}:{cfg['ws_port']}{path}"


def http_url(cfg: dict[str, Any], path: str) -> str:
    return f"http://{cfg['host']}:{cfg['http_port']}{path}"


def mark() -> None:
    """Tell the harness the measured window starts now (it samples the server's CPU)."""
    sys.stdout.write("MARK\n")
    sys.stdout.flush()


class Meter:
    """Wall time and this process's CPU time (all threads) over the measured window."""

    __slots__ = ("c0", "deadline", "duration", "t0")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.t0 = self.c0 = self.deadline = 0.0

    def start(self) -> None:
        mark()
        self.c0 = process_time()
        self.t0 = perf_counter()
        self.deadline = self.t0 + self.duration

    def expired(self) -> bool:
        return perf_counter() >= self.deadline

    def stop(self, ops: int, nbytes: int = 0, lat_ns: list[int] | None = None) -> dict[str, Any]:
        elapsed = perf_counter() - self.t0
        cpu = process_time() - self.c0
        res: dict[str, Any] = {"ops": ops, "bytes": nbytes, "elapsed": elapsed, "cpu": cpu}
        if lat_ns:
            s = sorted(lat_ns)
            res["p50_us"] = s[len(s) // 2] / 1000
            res["p99_us"] = s[min(len(s) - 1, int(len(s) * 0.99))] / 1000
        return res


def warm(step: Callable[[], Any], warmup: float) -> None:
    end = perf_counter() + warmup
    step()
    while perf_counter() < end:
        step()


def latency_loop(
    step: Callable[[], Any], meter: Meter, warmup: float, nbytes_per_op: int = 0
) -> dict[str, Any]:
    """Run ``step`` (one round trip) back to back; every call is one latency sample."""
    warm(step, warmup)
    lat: list[int] = []
    append = lat.append
    now = perf_counter_ns
    meter.start()
    t = now()
    deadline = t + int(meter.duration * 1e9)
    while t < deadline:
        step()
        t2 = now()
        append(t2 - t)
        t = t2
    return meter.stop(len(lat), len(lat) * nbytes_per_op, lat)


async def alatency_loop(
    step: Callable[[], Awaitable[Any]], meter: Meter, warmup: float, nbytes_per_op: int = 0
) -> dict[str, Any]:
    """``latency_loop`` for asyncio clients."""
    end = perf_counter() + warmup
    await step()
    while perf_counter() < end:
        await step()
    lat: list[int] = []
    append = lat.append
    now = perf_counter_ns
    meter.start()
    t = now()
    deadline = t + int(meter.duration * 1e9)
    while t < deadline:
        await step()
        t2 = now()
        append(t2 - t)
        t = t2
    return meter.stop(len(lat), len(lat) * nbytes_per_op, lat)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def rss_kib(field: str = "VmRSS") -> int:
    """This process's resident set size (``VmRSS``), or another ``/proc/self/status``
    field in KiB (``VmSize``: the address space)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def thread_count() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0
