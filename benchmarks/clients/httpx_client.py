"""httpx's synchronous ``Client().get(url)`` on one keep-alive connection.  Default
options otherwise."""

from __future__ import annotations

from typing import Any

import httpx

from ._common import MIB, Meter, http_url, latency_loop


def _get(cfg: dict[str, Any], meter: Meter, warmup: float, path: str, size: int) -> dict[str, Any]:
    url = http_url(cfg, path)
    with httpx.Client() as client:
        get = client.get

        def step() -> None:
            r = get(url)
            if r.status_code != 200 or len(r.content) != size:
                raise AssertionError(f"bad response {r.status_code}")

        return latency_loop(step, meter, warmup, size)


WORKLOADS = {
    "http_get": lambda cfg, meter, warmup: _get(cfg, meter, warmup, cfg["small_path"], 100),
    "http_1mib": lambda cfg, meter, warmup: _get(cfg, meter, warmup, cfg["big_path"], MIB),
}
