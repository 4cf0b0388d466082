"""Floor for the latency workloads: 16 B round trips over a blocking TCP socket to
the Go server's plain TCP echo.  It measures the loopback itself, so it shows which
latency regime the VM was in during the run (ARCHITECTURE 8: ~8 us or ~65 us)."""

from __future__ import annotations

import socket
from typing import Any

from ._common import Meter, latency_loop

PAYLOAD = b"0123456789abcdef"


def pingpong(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    sock = socket.create_connection((cfg["host"], cfg["tcp_port"]), 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv, sendall = sock.recv, sock.sendall
    n = len(PAYLOAD)

    def step() -> None:
        sendall(PAYLOAD)
        got = recv(n)
        while len(got) < n:
            got += recv(n - len(got))

    try:
        return latency_loop(step, meter, warmup)
    finally:
        sock.close()


WORKLOADS = {"ws_pingpong": pingpong, "http_get": pingpong}
