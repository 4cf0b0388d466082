"""httpx: the synchronous ``Client().get(url)`` on one keep-alive connection for the
HTTP/1.1 workloads; for ``http2_concurrent``, HTTP/2 the way its documentation
shows concurrent requests: ``httpx.AsyncClient(http2=True)`` on the stock asyncio
loop, ``window`` tasks each looping ``await client.get(url)``.  ``http1=False``
makes it h2c with prior knowledge on ``http://`` (httpcore supports that), and
``max_connections=1`` holds it to one connection (it multiplexes on one anyway).
Default options otherwise."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ._common import MIB, Meter, http_url, latency_loop, perf_counter_ns


def _get(cfg: dict[str, Any], meter: Meter, warmup: float, path: str, size: int) -> dict[str, Any]:
    url = http_url(cfg, path)
    with httpx.Client() as client:
        get = client.get

        def step() -> None:
            r = get(url)
            if r.status_code != 200 or len(r.content) != size:
                raise AssertionError(f"bad response {r.status_code}")

        return latency_loop(step, meter, warmup, size)


async def _http2(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    url = f"http://{cfg['host']}:{cfg['hypercorn_port']}{cfg['small_path']}"
    window = cfg["window"]
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(http1=False, http2=True, limits=limits) as client:
        get, now = client.get, perf_counter_ns
        lat: list[int] = []
        state = {"measuring": False, "stop": False, "done": 0}
        warmed = asyncio.Event()  # the first `window` responses are in: steady state

        async def loop() -> None:
            while not state["stop"]:
                t = now()
                r = await get(url)
                if r.status_code != 200 or len(r.content) != 100 or r.http_version != "HTTP/2":
                    raise AssertionError(f"bad response {r.http_version} {r.status_code}")
                if state["measuring"]:
                    lat.append(now() - t)
                else:
                    state["done"] += 1
                    if state["done"] >= window:
                        warmed.set()

        tasks = [asyncio.create_task(loop()) for _ in range(window)]
        try:
            await asyncio.sleep(warmup)
            while not warmed.is_set():
                failed = [t for t in tasks if t.done()]
                if failed:
                    failed[0].result()  # raises the task's error
                await asyncio.sleep(0.005)
            meter.start()
            state["measuring"] = True
            await asyncio.sleep(meter.duration)
            res = meter.stop(len(lat), len(lat) * 100, lat)
            state["stop"] = True
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        # how many connections httpcore opened (a check that it multiplexed on one)
        pool = getattr(client._transport, "_pool", None)
        res["connections"] = len(getattr(pool, "connections", ()))
        return res


WORKLOADS = {
    "http_get": lambda cfg, meter, warmup: _get(cfg, meter, warmup, cfg["small_path"], 100),
    "http_1mib": lambda cfg, meter, warmup: _get(cfg, meter, warmup, cfg["big_path"], MIB),
    "http2_concurrent": lambda cfg, meter, warmup: asyncio.run(_http2(cfg, meter, warmup)),
}
