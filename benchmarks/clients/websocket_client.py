"""websocket-client (``import websocket``): blocking ``create_connection``, ``send``, ``recv``.
Default options (``create_connection`` sets TCP_NODELAY)."""

from __future__ import annotations

from typing import Any

import websocket

from ._common import BLOB_1M, MIB, PING_16, STREAM_64, Meter, latency_loop, warm, ws_url


def _connect(cfg: dict[str, Any]) -> Any:
    return websocket.create_connection(ws_url(cfg), timeout=10)


def ws_pingpong(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    ws = _connect(cfg)
    send, recv = ws.send, ws.recv

    def step() -> None:
        send(PING_16)
        if recv() != PING_16:
            raise AssertionError("bad echo")

    try:
        return latency_loop(step, meter, warmup)
    finally:
        ws.close()


def ws_stream(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    ws = _connect(cfg)
    send, recv = ws.send, ws.recv
    for _ in range(cfg["window"]):
        send(STREAM_64)

    def batch() -> None:
        for _ in range(32):
            recv()
            send(STREAM_64)

    try:
        warm(batch, warmup)
        n = 0
        meter.start()
        while not meter.expired():
            batch()
            n += 32
        res = meter.stop(n, n * len(STREAM_64))
        for _ in range(cfg["window"]):  # drain, so the closing handshake is not stuck behind
            recv()
        return res
    finally:
        ws.close()


def ws_1mib(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    ws = _connect(cfg)

    def step() -> None:
        ws.send_binary(BLOB_1M)
        if len(ws.recv()) != MIB:
            raise AssertionError("bad echo")

    try:
        return latency_loop(step, meter, warmup, MIB)
    finally:
        ws.close()


WORKLOADS = {"ws_pingpong": ws_pingpong, "ws_stream": ws_stream, "ws_1mib": ws_1mib}
