"""Profile one client on one workload: ``python -m benchmarks.profile WORKLOAD``.

    python -m benchmarks.profile ws_pingpong                 # gunpy, py-spy, 8 s
    python -m benchmarks.profile ws_stream --client websockets-sync
    python -m benchmarks.profile http_get --tool pyinstrument  # the caller's thread only
    python -m benchmarks.profile ws_pingpong --idle          # also samples not holding the GIL
    python -m benchmarks.profile --summarise RAW.txt 'Condition.notify' '<lambda>'  # callers

Starts the workload's server, runs the client in a child process under py-spy
(``record --format raw --threads --gil``: every thread, only samples holding the
GIL, i.e. Python code running; py-spy's own idle detection does not see a thread
blocked in ``poll()`` or on a lock as idle on these VMs) and prints
where the CPU went: samples per thread, the top functions by *self* time (the
frame on top of the stack, with its hottest line) and by *inclusive* time (on the
stack at all).  The raw collapsed stacks are kept (``--out``) for a flame graph.
pyinstrument profiles only the thread that runs the workload (the owner's), not
the connection actor's; py-spy sees both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .clients import CLIENTS
from .harness import WORKLOADS
from .servers import make_workdir, start_echo, start_hypercorn, start_nginx

ROOT = Path(__file__).resolve().parent.parent
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _target(workload: str, client: str, cfg_json: str, duration: float) -> None:
    """In the child: run the workload once for ``duration`` seconds."""
    import importlib

    from .clients._common import Meter

    mod = importlib.import_module(f"benchmarks.clients.{CLIENTS[client]}")
    cfg = json.loads(cfg_json)
    fn = mod.WORKLOADS[workload]
    tool = os.environ.get("BENCH_PROFILE_TOOL")
    if workload == "scale":  # duration is N here
        from .servers import raise_nofile

        raise_nofile()
        res = fn(cfg, int(duration))
        print(f"RATE opened {res['opened']:,} in {res['open_s']:.2f} s "
              f"({res['opened'] / res['open_s']:,.0f}/s), {res['rss_per_conn_kib']:.1f} KiB/conn",
              file=sys.stderr)  # fmt: skip
        sys.stderr.flush()
        os._exit(0)
    if tool == "pyinstrument":
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0005)
        prof.start()
        res = fn(cfg, Meter(duration), 0.5)
        prof.stop()
        print(prof.output_text(unicode=True, color=False, show_all=False), file=sys.stderr)
    else:
        res = fn(cfg, Meter(duration), 0.5)
    w = WORKLOADS[workload]
    rate = res["bytes"] / res["elapsed"] / (1 << 20) if w.per_op_bytes else res["ops"] / res["elapsed"]
    print(f"RATE {rate:,.1f} {w.unit}  cpu {res['cpu'] / res['elapsed']:.0%}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(0)


def _parse_frame(text: str) -> tuple[str, str, str]:
    m = _FRAME.match(text)
    if not m:
        return text, "", ""
    return m["func"], m["file"], m["line"] or ""


def summarise(raw: Path, top: int = 25) -> str:
    threads: Counter[str] = Counter()
    self_fn: Counter[tuple[str, str]] = Counter()
    self_line: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    incl: Counter[tuple[str, str]] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = stack.split(";")
        if any("_find_and_load" in f for f in frames):
            continue  # imports at start-up
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        thread = re.sub(r"-\d+$", "-N", thread)
        frames = frames[1:] if frames[0].startswith("thread") else frames
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        total += n
        threads[thread] += n
        func, file, ln = _parse_frame(frames[-1])
        self_fn[(func, file)] += n
        self_line[(func, file)][ln] += n
        seen = set()
        for f in frames:
            fn, fl, _ = _parse_frame(f)
            if (fn, fl) not in seen:
                seen.add((fn, fl))
                incl[(fn, fl)] += n
    if not total:
        return "no samples"
    out = [f"{total} samples (non-idle)", "", "by thread:"]
    for t, n in threads.most_common():
        out.append(f"  {n / total:6.1%}  {t}")
    out += ["", f"top {top} by self time (function, file, hottest line):"]
    for (fn, fl), n in self_fn.most_common(top):
        ln, lc = self_line[(fn, fl)].most_common(1)[0]
        out.append(f"  {n / total:6.1%}  {fn:45s} {fl}:{ln} ({lc / n:.0%} of it)")
    out += ["", f"top {top} by inclusive time:"]
    for (fn, fl), n in incl.most_common(top + 15):
        if fn in ("<module>", "_run_module_as_main", "_run_code", "main", "_target", "run",
                  "_bootstrap", "_bootstrap_inner") and "gunpy" not in fl:  # fmt: skip
            continue
        out.append(f"  {n / total:6.1%}  {fn:45s} {fl}")
    return "\n".join(out[: 8 + len(threads) + 2 * top + 4])


def callers(raw: Path, func: str, top: int = 10) -> str:
    """Who calls ``func`` (a substring of the frame text), weighted by samples."""
    total = 0
    by: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        total += n
        frames = stack.split(";")
        for i, f in enumerate(frames):
            if func in f and i > 0:
                by[frames[i - 1]] += n
                break
    lines = [f"callers of {func!r}:"]
    for f, n in by.most_common(top):
        lines.append(f"  {n / max(total, 1):6.1%}  {f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--target"]:
        _target(argv[1], argv[2], argv[3], float(argv[4]))
        return 0
    if argv[:1] == ["--summarise"]:  # --summarise RAW [FUNC...]: re-read kept stacks
        print(summarise(Path(argv[1])))
        for func in argv[2:]:
            print("\n" + callers(Path(argv[1]), func))
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("workload", choices=[*WORKLOADS, "scale"])
    ap.add_argument("--client", default="gunpy", choices=list(CLIENTS))
    ap.add_argument("--tool", choices=("py-spy", "pyinstrument"), default="py-spy")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds (scale: N connections)")
    ap.add_argument("--rate", type=int, default=499, help="py-spy samples per second")
    ap.add_argument("--idle", action="store_true",
                    help="py-spy: all samples, not only those holding the GIL (its idle detection "
                         "misses poll() and lock waits on these VMs, so waits look like work)")
    ap.add_argument("--nonblocking", action="store_true",
                    help="py-spy: sample without pausing the process (less overhead, less exact)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--ws-server", choices=("fast", "gorilla"), default="fast")
    ap.add_argument("--out", type=Path, help="keep the raw collapsed stacks here")
    a = ap.parse_args(argv)

    w = WORKLOADS.get(a.workload, WORKLOADS["ws_pingpong"])  # scale: the ws server
    workdir = make_workdir()
    servers = {"tcp": start_echo("tcp", workdir)}
    try:
        if w.server == "ws":
            servers["ws"] = start_echo(a.ws_server, workdir)
        elif w.server == "hypercorn":
            servers["hypercorn"] = start_hypercorn(workdir)
        else:
            servers["http"] = start_nginx(workdir)
        cfg: dict[str, Any] = {
            "host": "127.0.0.1", "window": 100, "small_path": "/small.txt",
            "big_path": "/big.bin", "tcp_port": servers["tcp"].port,
            "ws_port": servers["ws"].port if "ws" in servers else 0,
            "http_port": servers["http"].port if "http" in servers else 0,
            "hypercorn_port": servers["hypercorn"].port if "hypercorn" in servers else 0,
            "scale_batch": 500, "stack_size": 256 * 1024,
        }  # fmt: skip
        target = [sys.executable, "-m", "benchmarks.profile", "--target", a.workload, a.client,
                  json.dumps(cfg), str(a.duration)]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_PROFILE_TOOL=a.tool)
        if a.tool == "pyinstrument":
            r = subprocess.run(target, cwd=ROOT, env=env, capture_output=True, text=True)
            print(r.stderr)
            return r.returncode
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        raw = a.out or Path(tempfile.mkstemp(prefix=f"pyspy-{a.workload}-", suffix=".txt")[1])
        cmd = [spy, "record", "--format", "raw", "--threads", "-r", str(a.rate), "-o", str(raw)]
        if not a.idle:
            cmd.append("--gil")
        if a.nonblocking:
            cmd.append("--nonblocking")
        r = subprocess.run([*cmd, "--", *target], cwd=ROOT, env=env, capture_output=True, text=True)
        rate = [ln for ln in r.stderr.splitlines() if ln.startswith("RATE")]
        print(f"{a.client} on {a.workload} under py-spy ({a.rate} Hz): "
              f"{rate[0][5:] if rate else 'no result'}")  # fmt: skip
        if r.returncode != 0 and not rate:
            print(r.stderr[-3000:])
            return 1
        print(summarise(raw, a.top))
        print(f"\nraw stacks: {raw}")
        return 0
    finally:
        for s in servers.values():
            s.stop()


if __name__ == "__main__":
    raise SystemExit(main())
