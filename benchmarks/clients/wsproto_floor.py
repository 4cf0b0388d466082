"""Floor: a blocking socket driving wsproto directly (its ``WSConnection``, handshake
included), one thread.  Streaming handles every event of one ``recv`` in one pass
and answers them with one ``sendall``."""

from __future__ import annotations

import socket
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from ._common import BLOB_1M, MIB, PING_16, STREAM_64, Meter, latency_loop, warm


def _connect(cfg: dict[str, Any]) -> tuple[socket.socket, WSConnection]:
    sock = socket.create_connection((cfg["host"], cfg["ws_port"]), 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host=f"{cfg['host']}:{cfg['ws_port']}", target="/")))
    while True:
        ws.receive_data(sock.recv(65536))
        for ev in ws.events():
            if isinstance(ev, AcceptConnection):
                return sock, ws
            raise AssertionError(f"handshake: {ev!r}")


def ws_pingpong(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    sock, ws = _connect(cfg)
    msg = TextMessage(data=PING_16)
    recv, sendall = sock.recv, sock.sendall

    def step() -> None:
        sendall(ws.send(msg))
        while True:
            ws.receive_data(recv(65536))
            for ev in ws.events():
                if type(ev) is TextMessage and ev.message_finished:
                    if ev.data != PING_16:
                        raise AssertionError("bad echo")
                    return

    try:
        return latency_loop(step, meter, warmup)
    finally:
        sock.close()


def ws_stream(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    sock, ws = _connect(cfg)
    msg = TextMessage(data=STREAM_64)
    recv, sendall = sock.recv, sock.sendall
    sendall(b"".join(ws.send(msg) for _ in range(cfg["window"])))

    def batch() -> int:  # one recv: every message it completes is answered by one more
        ws.receive_data(recv(65536))
        k = 0
        for ev in ws.events():
            if type(ev) is TextMessage and ev.message_finished:
                k += 1
        if k:
            sendall(b"".join([ws.send(msg) for _ in range(k)]))
        return k

    try:
        warm(batch, warmup)
        n = 0
        meter.start()
        while not meter.expired():
            n += batch()
        return meter.stop(n, n * len(STREAM_64))
    finally:
        sock.close()


def ws_1mib(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    sock, ws = _connect(cfg)
    msg = BytesMessage(data=BLOB_1M)
    recv, sendall = sock.recv, sock.sendall

    def step() -> None:
        sendall(ws.send(msg))
        parts: list[bytes] = []
        while True:
            ws.receive_data(recv(65536))
            for ev in ws.events():
                if type(ev) is BytesMessage:
                    parts.append(ev.data)
                    if ev.message_finished:
                        if len(b"".join(parts)) != MIB:
                            raise AssertionError("bad echo")
                        return

    try:
        return latency_loop(step, meter, warmup, MIB)
    finally:
        sock.close()


WORKLOADS = {"ws_pingpong": ws_pingpong, "ws_stream": ws_stream, "ws_1mib": ws_1mib}
