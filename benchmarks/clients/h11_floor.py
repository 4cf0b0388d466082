"""Floor: a blocking socket driving h11 directly, one thread, no library around it.

Sequential GETs are the textbook h11 client loop.  Pipelined: h11's client cannot
have two requests outstanding, so one ``h11.Connection`` parses the responses and
is primed for each response cycle with ``send(Request)`` + ``send(EndOfMessage)``;
the bytes that priming produces are the request that tops the window up.  Every
request is so encoded once by h11 and every response parsed once by h11."""

from __future__ import annotations

import socket
from typing import Any

import h11

from ._common import MIB, Meter, latency_loop, warm

NEED_DATA = h11.NEED_DATA
Response, Data, EndOfMessage = h11.Response, h11.Data, h11.EndOfMessage


def _sock(cfg: dict[str, Any]) -> socket.socket:
    s = socket.create_connection((cfg["host"], cfg["http_port"]), 10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _request(cfg: dict[str, Any], path: str) -> h11.Request:
    return h11.Request(method="GET", target=path, headers=[("host", f"{cfg['host']}:{cfg['http_port']}")])


def _get(cfg: dict[str, Any], meter: Meter, warmup: float, path: str, size: int) -> dict[str, Any]:
    sock = _sock(cfg)
    conn = h11.Connection(h11.CLIENT)
    req, eom = _request(cfg, path), h11.EndOfMessage()
    recv, sendall = sock.recv, sock.sendall

    def step() -> None:
        sendall(conn.send(req) + conn.send(eom))
        body = []
        status = 0
        while True:
            ev = conn.next_event()
            if ev is NEED_DATA:
                conn.receive_data(recv(65536))
                continue
            t = type(ev)
            if t is Data:
                body.append(ev.data)
            elif t is Response:
                status = ev.status_code
            elif t is EndOfMessage:
                break
            else:
                raise AssertionError(f"unexpected {ev!r}")
        conn.start_next_cycle()
        if status != 200 or len(b"".join(body)) != size:
            raise AssertionError(f"bad response {status}")

    try:
        return latency_loop(step, meter, warmup, size)
    finally:
        sock.close()


def http_pipelined(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    sock = _sock(cfg)
    conn = h11.Connection(h11.CLIENT)
    req, eom = _request(cfg, cfg["small_path"]), h11.EndOfMessage()
    recv, sendall = sock.recv, sock.sendall
    first = conn.send(req) + conn.send(eom)  # primes the first cycle
    sendall(first * cfg["window"])
    out: list[bytes] = []
    body: list[bytes] = []

    def batch() -> None:  # 32 responses, each topping the window up
        done = 0
        while done < 32:
            ev = conn.next_event()
            if ev is NEED_DATA:
                if out:
                    sendall(b"".join(out))
                    out.clear()
                conn.receive_data(recv(65536))
                continue
            t = type(ev)
            if t is Data:
                body.append(ev.data)
            elif t is Response:
                if ev.status_code != 200:
                    raise AssertionError(f"status {ev.status_code}")
            elif t is EndOfMessage:
                if len(b"".join(body)) != 100:
                    raise AssertionError("bad body")
                body.clear()
                done += 1
                conn.start_next_cycle()
                out.append(conn.send(req) + conn.send(eom))
            else:
                raise AssertionError(f"unexpected {ev!r}")

    try:
        warm(batch, warmup)
        n = 0
        meter.start()
        while not meter.expired():
            batch()
            n += 32
        return meter.stop(n, n * 100)
    finally:
        sock.close()


WORKLOADS = {
    "http_get": lambda cfg, meter, warmup: _get(cfg, meter, warmup, cfg["small_path"], 100),
    "http_1mib": lambda cfg, meter, warmup: _get(cfg, meter, warmup, cfg["big_path"], MIB),
    "http_pipelined": http_pipelined,
}
