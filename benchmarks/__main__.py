"""``python -m benchmarks`` (``make bench``): gunpy against the clients a Python user
would pick instead, in one run, as ratios.

    python -m benchmarks                  # full run (~5 min): 7 rounds × 1 s per client
    python -m benchmarks --quick          # sanity run, under a minute
    python -m benchmarks --scale-full     # the scale workload at 10,000 connections
    python -m benchmarks -w ws_pingpong,http_get -c gunpy,aiohttp -v

Results go to ``benchmarks/results/`` (``quick.{md,json}`` for ``--quick``,
``bench-<date>.{md,json}`` otherwise).  ``python -m benchmarks.profile`` profiles
gunpy on one workload.  See ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .clients import CLIENTS
from .harness import SCALE_CLIENTS, WORKLOADS, Settings, run_scale, run_workload
from .report import scale_table, target_lines, targets, workload_table, write
from .servers import ServerError, build_echo, make_workdir, start_echo, start_hypercorn, start_nginx

ALL = [*WORKLOADS, "scale"]


def _list(text: str, allowed: list[str], what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="3 rounds × 0.2 s, scale N=1000 once")
    ap.add_argument("--runs", type=int, help="rounds per workload (default 7; quick 3)")
    ap.add_argument("--duration", type=float, help="measured seconds per run (default 1.0; quick 0.2)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per run (default 0.25; quick 0.05)")
    ap.add_argument("-w", "--workloads", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    ap.add_argument("-c", "--clients", default=",".join(CLIENTS), help="comma list of clients")
    ap.add_argument("--scale-n", type=int, default=1000, help="connections for the scale workload")
    ap.add_argument("--scale-full", action="store_true", help="scale workload at N=10,000")
    ap.add_argument("--scale-runs", type=int, help="scale rounds (default 5; quick 1)")
    ap.add_argument("--scale-batch", type=int, default=500, help="connections opened per batch")
    ap.add_argument("--stack-size", type=int, default=256 * 1024,
                    help="threading.stack_size for gunpy's scale workload (default 256 KiB)")  # fmt: skip
    ap.add_argument("--ws-server", choices=("fast", "gorilla"), default="fast",
                    help="Go echo mode: corked hand-rolled (default) or gorilla/websocket")  # fmt: skip
    ap.add_argument("--gomaxprocs", type=int, default=1, help="GOMAXPROCS of the Go echo server")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--no-save", action="store_true", help="print only, write no result files")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    a = ap.parse_args(argv)

    quick = a.quick
    st = Settings(
        runs=a.runs or (3 if quick else 7),
        duration=a.duration or (0.2 if quick else 1.0),
        warmup=a.warmup if a.warmup is not None else (0.05 if quick else 0.25),
        scale_n=10000 if a.scale_full else a.scale_n,
        scale_runs=a.scale_runs or (1 if quick else (3 if a.scale_full else 5)),
        scale_batch=a.scale_batch,
        stack_size=a.stack_size,
        verbose=a.verbose,
    )
    workloads = _list(a.workloads, ALL, "workload")
    clients = _list(a.clients, list(CLIENTS), "client")

    def log(msg: str) -> None:
        print(msg, flush=True)

    t_start = time.monotonic()
    load_start = _loadavg()
    if load_start[0] > 0.5 * (os.cpu_count() or 1):
        log(f"benchmarks: warning: load average {load_start[0]:.1f} on {os.cpu_count()} cores: "
            "other processes are busy; the 'other CPU' column shows how much per run")  # fmt: skip
    workdir = make_workdir()
    servers = {}
    try:
        build_echo(log)
        servers["ws"] = start_echo(a.ws_server, workdir, a.gomaxprocs)
        servers["tcp"] = start_echo("tcp", workdir, a.gomaxprocs)
        if any(WORKLOADS[w].server == "http" for w in workloads if w in WORKLOADS):
            servers["http"] = start_nginx(workdir)
        if any(WORKLOADS[w].server == "hypercorn" for w in workloads if w in WORKLOADS):
            servers["hypercorn"] = start_hypercorn(workdir)
    except ServerError as e:
        for s in servers.values():
            s.stop()
        print(f"benchmarks: {e}", file=sys.stderr)
        return 2
    cfg = {
        "host": "127.0.0.1",
        "ws_port": servers["ws"].port,
        "tcp_port": servers["tcp"].port,
        "http_port": servers["http"].port if "http" in servers else 0,
        "hypercorn_port": servers["hypercorn"].port if "hypercorn" in servers else 0,
        "window": st.window,
        "small_path": "/small.txt",
        "big_path": "/big.bin",
        "scale_batch": st.scale_batch,
        "stack_size": st.stack_size,
    }
    mode = "quick" if quick else "full"
    log(f"benchmarks ({mode}): {st.runs} rounds × {st.duration:g} s per client; "
        f"Go echo {a.ws_server} on {cfg['ws_port']}, nginx on {cfg['http_port']}"
        + (f", hypercorn on {cfg['hypercorn_port']}" if "hypercorn" in servers else ""))  # fmt: skip
    results = {}
    scale = None
    try:
        for name in workloads:
            if name == "scale":
                continue
            w = WORKLOADS[name]
            cs = [c for c in w.clients if c in clients]
            if not cs:
                continue
            t0 = time.monotonic()
            log(f"== {w.title} ({', '.join(cs)})")
            results[name] = run_workload(w, cs, cfg, servers, st, log)
            print("\n".join(workload_table(name, results[name])[4:]))
            log(f"   ({time.monotonic() - t0:.1f} s)")
        if "scale" in workloads:
            cs = [c for c in SCALE_CLIENTS if c in clients]
            if cs:
                t0 = time.monotonic()
                log(f"== scale: {st.scale_n:,} Websocket connections ({', '.join(cs)}), "
                    f"{st.scale_runs} round(s)")  # fmt: skip
                scale = run_scale(cs, cfg, servers["ws"], st, log)
                print("\n".join(scale_table(st.scale_n, scale)[4:]))
                log(f"   ({time.monotonic() - t0:.1f} s)")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for s in servers.values():
            s.stop()
    elapsed = time.monotonic() - t_start
    print("\n".join(target_lines(targets(results, scale, st.scale_n))))
    meta = {"ws_server": a.ws_server, "gomaxprocs": a.gomaxprocs,
            "loadavg_start": load_start, "loadavg_end": _loadavg(),
            "workloads_run": workloads, "clients_run": clients}  # fmt: skip
    if not a.no_save:
        md_path, json_path, _ = write(a.out, mode, st, results, scale, meta, elapsed)
        log(f"results: {md_path} {json_path}")
    log(f"benchmarks: done in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
