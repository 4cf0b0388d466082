"""websockets' threading client (``websockets.sync.client.connect``): ``send``, ``recv``.
Default options but ``max_size=None`` (its 1 MiB default is the 1 MiB message's size)."""

from __future__ import annotations

from typing import Any

from websockets.sync.client import connect

from ._common import BLOB_1M, MIB, PING_16, STREAM_64, Meter, latency_loop, warm, ws_url


def _connect(cfg: dict[str, Any]) -> Any:
    return connect(ws_url(cfg), open_timeout=10, max_size=None)


def ws_pingpong(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    with _connect(cfg) as ws:
        send, recv = ws.send, ws.recv

        def step() -> None:
            send(PING_16)
            if recv(10) != PING_16:
                raise AssertionError("bad echo")

        return latency_loop(step, meter, warmup)


def ws_stream(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    with _connect(cfg) as ws:
        send, recv = ws.send, ws.recv
        for _ in range(cfg["window"]):
            send(STREAM_64)

        def batch() -> None:
            for _ in range(32):
                recv(10)
                send(STREAM_64)

        warm(batch, warmup)
        n = 0
        meter.start()
        while not meter.expired():
            batch()
            n += 32
        res = meter.stop(n, n * len(STREAM_64))
        for _ in range(cfg["window"]):  # drain, so the closing handshake is not stuck behind
            recv(10)
        return res


def ws_1mib(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    with _connect(cfg) as ws:

        def step() -> None:
            ws.send(BLOB_1M)
            if len(ws.recv(10)) != MIB:
                raise AssertionError("bad echo")

        return latency_loop(step, meter, warmup, MIB)


WORKLOADS = {"ws_pingpong": ws_pingpong, "ws_stream": ws_stream, "ws_1mib": ws_1mib}
