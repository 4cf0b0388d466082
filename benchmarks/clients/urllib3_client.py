"""urllib3: ``HTTPConnectionPool(maxsize=1).request("GET", path)`` (body preloaded),
one keep-alive connection.  Default options otherwise."""

from __future__ import annotations

from typing import Any

import urllib3

from ._common import MIB, Meter, latency_loop


def _get(cfg: dict[str, Any], meter: Meter, warmup: float, path: str, size: int) -> dict[str, Any]:
    pool = urllib3.HTTPConnectionPool(cfg["host"], cfg["http_port"], maxsize=1, block=True)
    request = pool.request

    def step() -> None:
        r = request("GET", path)
        if r.status != 200 or len(r.data) != size:
            raise AssertionError(f"bad response {r.status}")

    try:
        return latency_loop(step, meter, warmup, size)
    finally:
        pool.close()


WORKLOADS = {
    "http_get": lambda cfg, meter, warmup: _get(cfg, meter, warmup, cfg["small_path"], 100),
    "http_1mib": lambda cfg, meter, warmup: _get(cfg, meter, warmup, cfg["big_path"], MIB),
}
