"""aiohttp's client on the stock asyncio event loop: ``ClientSession.ws_connect``
(``send_str``/``send_bytes``, ``receive``) and ``ClientSession.get`` on one
keep-alive connection (``TCPConnector(limit=1)``).  Default options otherwise."""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import aiohttp

from ._common import (
    BLOB_1M,
    MIB,
    PING_16,
    STREAM_64,
    Meter,
    alatency_loop,
    http_url,
    perf_counter,
    rss_kib,
    thread_count,
    ws_url,
)

TEXT = aiohttp.WSMsgType.TEXT
BINARY = aiohttp.WSMsgType.BINARY


async def _pingpong(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url(cfg)) as ws:
        send, receive = ws.send_str, ws.receive

        async def step() -> None:
            await send(PING_16)
            m = await receive()
            if m.type is not TEXT or m.data != PING_16:
                raise AssertionError(f"bad echo {m!r}")

        return await alatency_loop(step, meter, warmup)


async def _stream(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url(cfg)) as ws:
        send, receive = ws.send_str, ws.receive
        for _ in range(cfg["window"]):
            await send(STREAM_64)

        async def batch() -> None:
            for _ in range(32):
                m = await receive()
                if m.type is not TEXT:
                    raise AssertionError(f"bad echo {m!r}")
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
            await receive()
        return res


async def _1mib(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url(cfg)) as ws:

        async def step() -> None:
            await ws.send_bytes(BLOB_1M)
            m = await ws.receive()
            if m.type is not BINARY or len(m.data) != MIB:
                raise AssertionError(f"bad echo {m!r:.80}")

        return await alatency_loop(step, meter, warmup, MIB)


async def _get(cfg: dict[str, Any], meter: Meter, warmup: float, path: str, size: int) -> dict[str, Any]:
    url = http_url(cfg, path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:

        async def step() -> None:
            async with s.get(url) as r:
                body = await r.read()
                if r.status != 200 or len(body) != size:
                    raise AssertionError(f"bad response {r.status}")

        return await alatency_loop(step, meter, warmup, size)


async def _scale(cfg: dict[str, Any], n: int) -> dict[str, Any]:
    url = ws_url(cfg)
    batch = cfg.get("scale_batch", 500)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.ws_connect(url) as ws:  # warm before the RSS baseline
            await ws.send_str(PING_16)
            await ws.receive()
        rss0, vm0 = rss_kib(), rss_kib("VmSize")
        conns: list[Any] = []
        failure = None
        t0 = perf_counter()
        for start in range(0, n, batch):
            k = min(batch, n - start)
            got = await asyncio.gather(*(s.ws_connect(url) for _ in range(k)),
                                       return_exceptions=True)
            conns += [g for g in got if not isinstance(g, BaseException)]
            errs = [g for g in got if isinstance(g, BaseException)]
            if errs:
                failure = f"connect #{len(conns) + 1}: {errs[0]!r}"
                break
        t_open = perf_counter() - t0
        rss_open = rss_kib()
        t1 = perf_counter()
        await asyncio.gather(*(c.send_str(PING_16) for c in conns))
        got = await asyncio.gather(*(c.receive(60) for c in conns))
        echoed = sum(1 for g in got if g.type is TEXT and g.data == PING_16)
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
    "http_get": lambda cfg, meter, warmup: asyncio.run(
        _get(cfg, meter, warmup, cfg["small_path"], 100)
    ),
    "http_1mib": lambda cfg, meter, warmup: asyncio.run(
        _get(cfg, meter, warmup, cfg["big_path"], MIB)
    ),
    "scale": lambda cfg, n: asyncio.run(_scale(cfg, n)),
}
