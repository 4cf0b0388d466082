"""gunpy, used the way its README shows: ``open``, ``await_up``, ``ws_upgrade``,
``ws_send`` + ``receive(("gun_ws", conn, ref, ANY), after=...)``, ``get`` +
``await_`` + ``await_body``; on HTTP/2, ``get`` + ``receive`` of ``gun_response`` /
``gun_data`` for any stream.  Default options, except ``retry: 0`` (and
``protocols: ["http2"]`` for h2c prior knowledge).  ``http2_concurrent_h1`` is the
``gunpy-h1-pipelined`` client (``gunpy_h1``)."""

from __future__ import annotations

import resource
import threading
from collections import deque
from typing import Any

import gunpy
from gunpy import ANY, TIMEOUT

from ._common import (
    BLOB_1M,
    MIB,
    PING_16,
    STREAM_64,
    Meter,
    check,
    latency_loop,
    perf_counter,
    perf_counter_ns,
    rss_kib,
    thread_count,
    warm,
)

TIMEOUT_MS = 10000
OPTS = {"retry": 0}


def _open(host: str, port: int) -> Any:
    ok, conn = gunpy.open(host, port, OPTS)
    check(ok == "ok", f"open: {conn!r}")
    up = gunpy.await_up(conn, TIMEOUT_MS)
    check(up == ("ok", "http"), f"await_up: {up!r}")
    return conn


def _ws(cfg: dict[str, Any]) -> tuple[Any, Any]:
    conn = _open(cfg["host"], cfg["ws_port"])
    ref = gunpy.ws_upgrade(conn, "/")
    up = gunpy.receive(("gun_upgrade", conn, ref, ANY, ANY), after=TIMEOUT_MS)
    check(up is not TIMEOUT, "ws_upgrade timed out")
    return conn, ref


def ws_pingpong(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    conn, ref = _ws(cfg)
    pattern = ("gun_ws", conn, ref, ANY)
    frame = ("text", PING_16)
    ws_send, receive = gunpy.ws_send, gunpy.receive

    def step() -> None:
        ws_send(conn, ref, frame)
        if receive(pattern, after=TIMEOUT_MS) is TIMEOUT:
            raise TimeoutError("no echo")

    try:
        return latency_loop(step, meter, warmup)
    finally:
        gunpy.close(conn)


def ws_stream(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    conn, ref = _ws(cfg)
    pattern = ("gun_ws", conn, ref, ANY)
    frame = ("text", STREAM_64)
    ws_send, receive = gunpy.ws_send, gunpy.receive
    for _ in range(cfg["window"]):
        ws_send(conn, ref, frame)

    def batch() -> None:  # 32 messages: receive one echo, send one more
        for _ in range(32):
            if receive(pattern, after=TIMEOUT_MS) is TIMEOUT:
                raise TimeoutError("no echo")
            ws_send(conn, ref, frame)

    try:
        warm(batch, warmup)
        n = 0
        meter.start()
        while not meter.expired():
            batch()
            n += 32
        return meter.stop(n, n * len(STREAM_64))
    finally:
        gunpy.close(conn)


def ws_1mib(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    conn, ref = _ws(cfg)
    pattern = ("gun_ws", conn, ref, ANY)
    frame = ("binary", BLOB_1M)
    ws_send, receive = gunpy.ws_send, gunpy.receive

    def step() -> None:
        ws_send(conn, ref, frame)
        m = receive(pattern, after=TIMEOUT_MS)
        if m is TIMEOUT or len(m[3][1]) != MIB:
            raise AssertionError(f"bad echo {m!r:.80}")

    try:
        return latency_loop(step, meter, warmup, MIB)
    finally:
        gunpy.close(conn)


def _get_step(conn: Any, path: str, size: int) -> Any:
    get, await_, await_body = gunpy.get, gunpy.await_, gunpy.await_body

    def step() -> None:
        ref = get(conn, path)
        r = await_(conn, ref, TIMEOUT_MS)
        if r[0] != "response" or r[2] != 200:
            raise AssertionError(f"response {r!r}")
        b = await_body(conn, ref, TIMEOUT_MS)
        if b[0] != "ok" or len(b[1]) != size:
            raise AssertionError(f"body {b!r:.80}")

    return step


def http_get(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    conn = _open(cfg["host"], cfg["http_port"])
    try:
        return latency_loop(_get_step(conn, cfg["small_path"], 100), meter, warmup, 100)
    finally:
        gunpy.close(conn)


def http_1mib(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    conn = _open(cfg["host"], cfg["http_port"])
    try:
        return latency_loop(_get_step(conn, cfg["big_path"], MIB), meter, warmup, MIB)
    finally:
        gunpy.close(conn)


def http_pipelined(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    """``window`` GETs in flight on one connection: each response read tops it up."""
    conn = _open(cfg["host"], cfg["http_port"])
    path = cfg["small_path"]
    get, await_, await_body = gunpy.get, gunpy.await_, gunpy.await_body
    refs = deque(get(conn, path) for _ in range(cfg["window"]))

    def batch() -> None:
        for _ in range(32):
            ref = refs.popleft()
            r = await_(conn, ref, TIMEOUT_MS)
            if r[0] != "response" or r[2] != 200:
                raise AssertionError(f"response {r!r}")
            b = await_body(conn, ref, TIMEOUT_MS)
            if b[0] != "ok" or len(b[1]) != 100:
                raise AssertionError(f"body {b!r:.80}")
            refs.append(get(conn, path))

    try:
        warm(batch, warmup)
        n = 0
        meter.start()
        while not meter.expired():
            batch()
            n += 32
        return meter.stop(n, n * 100)
    finally:
        gunpy.close(conn)


def _windowed(
    batch: Any, window: int, meter: Meter, warmup: float, lat: list[int]
) -> dict[str, Any]:
    """Warm up (``warmup`` seconds and at least ``window`` completions: the first
    window's latencies are the start-up's), then run ``batch`` (32 completions) until
    the meter expires; ``lat`` collects the latency samples."""
    end = perf_counter() + warmup
    for _ in range(0, window, 32):
        batch()
    while perf_counter() < end:
        batch()
    lat.clear()
    n = 0
    meter.start()
    while not meter.expired():
        batch()
        n += 32
    return meter.stop(n, n * 100, lat)


def http2_concurrent(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    """HTTP/2 (h2c prior knowledge): ``window`` GETs in flight on one connection, each
    completion (in whatever order the streams end) starting one more.  Hypercorn
    answers each with HEADERS, DATA (100 B) and an empty DATA with END_STREAM, so a
    request is three messages: ``gun_response`` nofin, ``gun_data`` nofin, ``gun_data``
    fin.  Latency: from ``get`` to the fin message taken by ``receive``."""
    ok, conn = gunpy.open(cfg["host"], cfg["hypercorn_port"], {"protocols": ["http2"], "retry": 0})
    check(ok == "ok", f"open: {conn!r}")
    up = gunpy.await_up(conn, TIMEOUT_MS)
    check(up == ("ok", "http2"), f"await_up: {up!r}")
    path = cfg["small_path"]
    get, receive, now = gunpy.get, gunpy.receive, perf_counter_ns
    pats = (("gun_response", conn, ANY, ANY, ANY, ANY), ("gun_data", conn, ANY, ANY, ANY),
            ("gun_error", conn, ANY, ANY), ("gun_error", conn, ANY))  # fmt: skip
    sent: dict[Any, int] = {}
    got: dict[Any, int] = {}
    lat: list[int] = []
    for _ in range(cfg["window"]):
        sent[get(conn, path)] = now()

    def batch() -> None:
        done = 0
        while done < 32:
            m = receive(*pats, after=TIMEOUT_MS)
            tag = m[0] if type(m) is tuple else m
            if tag == "gun_data":
                ref = m[2]
                got[ref] += len(m[4])
                if m[3] == "nofin":
                    continue
            elif tag == "gun_response":
                ref = m[2]
                if m[4] != 200:
                    raise AssertionError(f"response {m!r}")
                got[ref] = 0
                if m[3] == "nofin":
                    continue
            else:
                raise AssertionError(f"unexpected {m!r}")
            t = now()
            lat.append(t - sent.pop(ref))
            if got.pop(ref) != 100:
                raise AssertionError("bad body")
            sent[get(conn, path)] = now()
            done += 1

    try:
        return _windowed(batch, cfg["window"], meter, warmup, lat)
    finally:
        gunpy.close(conn)
        # the replies still in flight: left queued, they would sit in front of the next
        # run's messages, and every receive above (any stream: no index key) scans them
        gunpy.flush(conn)


def http2_concurrent_h1(cfg: dict[str, Any], meter: Meter, warmup: float) -> dict[str, Any]:
    """The same ``window`` GETs in flight, over HTTP/1.1 pipelining (``http_pipelined``
    against hypercorn): responses come in order, each read tops the window up."""
    conn = _open(cfg["host"], cfg["hypercorn_port"])
    path = cfg["small_path"]
    get, await_, await_body, now = gunpy.get, gunpy.await_, gunpy.await_body, perf_counter_ns
    refs = deque((get(conn, path), now()) for _ in range(cfg["window"]))
    lat: list[int] = []

    def batch() -> None:
        for _ in range(32):
            ref, t0 = refs.popleft()
            r = await_(conn, ref, TIMEOUT_MS)
            if r[0] != "response" or r[2] != 200:
                raise AssertionError(f"response {r!r}")
            b = await_body(conn, ref, TIMEOUT_MS)
            if b[0] != "ok" or len(b[1]) != 100:
                raise AssertionError(f"body {b!r:.80}")
            lat.append(now() - t0)
            refs.append((get(conn, path), now()))

    try:
        return _windowed(batch, cfg["window"], meter, warmup, lat)
    finally:
        gunpy.close(conn)
        gunpy.flush(conn)  # the replies still in flight (see http2_concurrent)


def scale(cfg: dict[str, Any], n: int) -> dict[str, Any]:
    """``n`` Websocket connections open at once, each echoing one message.

    Each connection is a pykka actor, i.e. a thread: ``threading.stack_size`` (set in
    ``cfg["stack_size"]``, default 256 KiB) bounds the address space each thread
    reserves; the resident cost is what the thread touches.
    """
    threading.stack_size(cfg.get("stack_size", 256 * 1024))
    batch = cfg.get("scale_batch", 500)
    # Load and warm everything once, so the RSS baseline holds the modules.
    conn, ref = _ws(cfg)
    gunpy.ws_send(conn, ref, ("text", PING_16))
    check(gunpy.receive(("gun_ws", conn, ref, ANY), after=TIMEOUT_MS) is not TIMEOUT, "warm echo")
    gunpy.close(conn)
    rss0, vm0 = rss_kib(), rss_kib("VmSize")
    host, port = cfg["host"], cfg["ws_port"]
    conns: list[tuple[Any, Any]] = []
    failure = None
    t0 = perf_counter()
    for start in range(0, n, batch):
        opened = []
        try:
            for _ in range(min(batch, n - start)):
                ok, c = gunpy.open(host, port, OPTS)
                check(ok == "ok", f"open: {c!r}")
                opened.append(c)
        except OSError as e:  # EMFILE: each connection holds a socket and an eventfd
            failure = f"open #{len(conns) + len(opened) + 1}: {e}"
        ups = []
        for c in opened:
            up = gunpy.await_up(c, 60000)
            if up == ("ok", "http"):
                ups.append(c)
            else:
                failure = failure or f"await_up #{len(conns) + len(ups) + 1}: {up!r}"
                gunpy.close(c)
        refs = [gunpy.ws_upgrade(c, "/") for c in ups]
        for c, r in zip(ups, refs, strict=True):
            m = gunpy.receive(("gun_upgrade", c, r, ANY, ANY), after=60000)
            check(m is not TIMEOUT, "ws_upgrade timed out")
            conns.append((c, r))
        if failure:
            break
    t_open = perf_counter() - t0
    rss_open = rss_kib()
    threads = thread_count()
    t1 = perf_counter()
    frame = ("text", PING_16)
    for c, r in conns:
        gunpy.ws_send(c, r, frame)
    echoed = 0
    for c, r in conns:
        m = gunpy.receive(("gun_ws", c, r, ANY), after=60000)
        if m is not TIMEOUT and m[3] == frame:
            echoed += 1
    t_echo = perf_counter() - t1
    rss_echo = rss_kib()
    vm_per_conn = (rss_kib("VmSize") - vm0) / max(1, len(conns))
    for c, _ in conns:
        gunpy.close(c)
    k = max(1, len(conns))
    return {
        "n": n, "opened": len(conns), "failure": failure, "open_s": t_open, "echo_s": t_echo,
        "echoed": echoed, "rss_base_kib": rss0, "rss_kib": rss_echo,
        "rss_per_conn_kib": (max(rss_open, rss_echo) - rss0) / k, "threads": threads,
        "vm_per_conn_kib": vm_per_conn,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }  # fmt: skip


WORKLOADS = {
    "ws_pingpong": ws_pingpong,
    "ws_stream": ws_stream,
    "ws_1mib": ws_1mib,
    "http_get": http_get,
    "http_pipelined": http_pipelined,
    "http_1mib": http_1mib,
    "http2_concurrent": http2_concurrent,
    "scale": scale,
}
