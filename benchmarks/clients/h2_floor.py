"""Floor: a blocking socket driving ``h2.connection.H2Connection`` directly, one
thread, no library around it.  h2c with prior knowledge: the preface, then
``window`` GET streams opened up front (``send_headers(..., end_stream=True)``);
every ``recv`` is fed to h2 and its events handled — ``DataReceived`` acknowledged
(so h2 sends WINDOW_UPDATEs), each ``StreamEnded`` opens one more stream — and all
the bytes h2 then has to send go out in one ``sendall``.  h2's default settings."""

from __future__ import annotations

import socket
from typing import Any

import h2.config
import h2.connection
import h2.events

from ._common import Meter, perf_counter, perf_counter_ns

ResponseReceived, DataReceived = h2.events.ResponseReceived, h2.events.DataReceived
StreamEnded = h2.events.StreamEnded
IGNORED = (
    h2.events.RemoteSettingsChanged, h2.events.SettingsAcknowledged, h2.events.WindowUpdated,
    h2.events.PingReceived, h2.events.PingAckReceived, h2.events.PriorityUpdated,
)  # fmt: skip


def http2_concurrent(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    sock = socket.create_connection((cfg["host"], cfg["hypercorn_port"]), 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [
        (":method", "GET"), (":scheme", "http"),
        (":authority", f"{cfg['host']}:{cfg['hypercorn_port']}"), (":path", cfg["small_path"]),
    ]  # fmt: skip
    recv, sendall, now = sock.recv, sock.sendall, perf_counter_ns
    get_id, send_headers = conn.get_next_available_stream_id, conn.send_headers
    receive_data, ack, data_to_send = (
        conn.receive_data,
        conn.acknowledge_received_data,
        conn.data_to_send,
    )
    sent: dict[int, int] = {}
    got: dict[int, int] = {}
    lat: list[int] = []

    def request() -> None:
        sid = get_id()
        send_headers(sid, headers, end_stream=True)
        sent[sid] = now()

    for _ in range(cfg["window"]):
        request()
    sendall(data_to_send())

    def batch() -> None:  # at least 32 responses, each opening one more stream
        done = 0
        while done < 32:
            data = recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            for ev in receive_data(data):
                t = type(ev)
                if t is DataReceived:
                    got[ev.stream_id] += len(ev.data)
                    ack(ev.flow_controlled_length, ev.stream_id)
                elif t is ResponseReceived:
                    if ev.headers[0] != (b":status", b"200"):
                        raise AssertionError(f"response {ev.headers!r}")
                    got[ev.stream_id] = 0
                elif t is StreamEnded:
                    sid = ev.stream_id
                    lat.append(now() - sent.pop(sid))
                    if got.pop(sid) != 100:
                        raise AssertionError("bad body")
                    request()
                    done += 1
                elif t not in IGNORED:
                    raise AssertionError(f"unexpected {ev!r}")
            out = data_to_send()
            if out:
                sendall(out)

    try:
        end = perf_counter() + warmup  # at least `window` completions, as gunpy's
        while len(lat) < cfg["window"] or perf_counter() < end:
            batch()
        lat.clear()
        n = 0
        meter.start()
        while not meter.expired():
            c0 = len(lat)
            batch()
            n += len(lat) - c0
        return meter.stop(n, n * 100, lat)
    finally:
        sock.close()


WORKLOADS = {"http2_concurrent": http2_concurrent}
