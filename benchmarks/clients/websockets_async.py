"""websockets' asyncio client (``websockets.asyncio.client.connect``) on the stock
asyncio event loop.  Default options but ``max_size=None`` (its 1 MiB default is
the 1 MiB message's size)."""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from websockets.asyncio.client import connect

from ._common import (
    BLOB_1M,
    MIB,
    PING_16,
    STREAM_64,
    Meter,
    alatency_loop,
    perf_counter,
    rss_kib,
    thread_count,
    ws_url,
)


def _connect(cfg: dict[str, Any]) -> Any:
    return connect(ws_url(cfg), open_timeout=60, max_size=None)


async def _pingpong(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    async with _connect(cfg) as ws:
        send, recv = ws.send, ws.recv

        async def step() -> None:
            await send(PING_16)
            if await recv() != PING_16:
                raise AssertionError("bad echo")

        return await alatency_loop(step, meter, warmup)


async def _stream(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    async with _connect(cfg) as ws:
        send, recv = ws.send, ws.recv
        for _ in range(cfg["window"]):
            await send(STREAM_64)

        async def batch() -> None:
            for _ in range(32):
                await recv()
                await send(STREAM_64)

        end = perf_counter() + warmup
        await batch()
        while perf_counter() < end:
            await batch()
        n = 0
        meter.start()
        while not meter.expired():
            await batch()
            n += 32
        res = meter.stop(n, n * len(STREAM_64))
        for _ in range(cfg["window"]):  # drain, so the closing handshake is not stuck behind
            await recv()
        return res


async def _1mib(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    async with _connect(cfg) as ws:

        async def step() -> None:
            await ws.send(BLOB_1M)
            if len(await ws.recv()) != MIB:
                raise AssertionError("bad echo")

        return await alatency_loop(step, meter, warmup, MIB)


async def _scale(cfg: dict[str, Any], n: int) -> dict[str, Any]:
    url = ws_url(cfg)
    batch = cfg.get("scale_batch", 500)
    async with _connect(cfg) as ws:  # warm: load everything before the RSS baseline
        await ws.send(PING_16)
        await ws.recv()
    rss0, vm0 = rss_kib(), rss_kib("VmSize")
    conns: list[Any] = []
    failure = None
    t0 = perf_counter()
    for start in range(0, n, batch):
        k = min(batch, n - start)
        got = await asyncio.gather(
            *(connect(url, open_timeout=60, max_size=None) for _ in range(k)),
            return_exceptions=True,
        )
        conns += [g for g in got if not isinstance(g, BaseException)]
        errs = [g for g in got if isinstance(g, BaseException)]
        if errs:
            failure = f"connect #{len(conns) + 1}: {errs[0]!r}"
            break
    t_open = perf_counter() - t0
    rss_open = rss_kib()
    t1 = perf_counter()
    await asyncio.gather(*(c.send(PING_16) for c in conns))
    got = await asyncio.gather(*(asyncio.wait_for(c.recv(), 60) for c in conns))
    echoed = sum(1 for g in got if g == PING_16)
    t_echo = perf_counter() - t1
    rss_echo = rss_kib()
    vm_per_conn = (rss_kib("VmSize") - vm0) / max(1, len(conns))
    threads = thread_count()
    for start in range(0, n, batch):
        await asyncio.gather(*(c.close() for c in conns[start : start + batch]))
    return {
        "n": n, "opened": len(conns), "failure": failure, "open_s": t_open, "echo_s": t_echo,
        "echoed": echoed, "rss_base_kib": rss0, "rss_kib": rss_echo,
        "rss_per_conn_kib": (max(rss_open, rss_echo) - rss0) / max(1, len(conns)),
        "threads": threads,
        "vm_per_conn_kib": vm_per_conn, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }  # fmt: skip


WORKLOADS = {
    "ws_pingpong": lambda cfg, meter, warmup: asyncio.run(_pingpong(cfg, meter, warmup)),
    "ws_stream": lambda cfg, meter, warmup: asyncio.run(_stream(cfg, meter, warmup)),
    "ws_1mib": lambda cfg, meter, warmup: asyncio.run(_1mib(cfg, meter, warmup)),
    "scale": lambda cfg, n: asyncio.run(_scale(cfg, n)),
}
