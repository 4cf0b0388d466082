"""Results: machine and versions, the markdown tables and the JSON file."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata as md
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .clients import DISTRIBUTIONS
from .harness import (
    SCALE_TARGET_KIB,
    SCALE_TARGET_N,
    WORKLOADS,
    ClientSummary,
    ScaleSummary,
    Settings,
)
from .servers import go_version, hypercorn_version, nginx_version

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    distro = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": distro,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def versions() -> dict[str, str]:
    names = sorted({d for ds in DISTRIBUTIONS.values() for d in ds})
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = "not installed"
    out["go"] = go_version()
    out["nginx"] = nginx_version()
    out["hypercorn"] = hypercorn_version()
    return out


def git_state() -> str:
    """HEAD, and a hash of gunpy/'s sources when they differ from it (tracked or not)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gunpy"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    except OSError:
        return "?"
    if not dirty:
        return rev
    h = hashlib.sha1()
    for path in sorted((ROOT / "gunpy").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return f"{rev} + uncommitted gunpy/ changes (sources sha1 {h.hexdigest()[:10]})"


# --------------------------------------------------------------------------- formatting


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    if unit == "MiB/s":
        return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"
    return f"{v:,.0f}"


def _ratio(v: float | None, iqr: tuple[float, float] | None = None) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}×" + ("" if iqr is None else f" <sub>{iqr[0]:.2f}–{iqr[1]:.2f}</sub>")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.0%}"


def _us(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def workload_table(name: str, per_client: dict[str, ClientSummary]) -> list[str]:
    w = WORKLOADS[name]
    head = ["client", w.unit, "× gunpy"]
    if w.latency:
        head += ["p50 µs", "p99 µs"]
    head += ["client CPU", "CPU ms/MiB" if w.per_op_bytes else "CPU µs/op",
             "server CPU", "other CPU", "runs"]  # fmt: skip
    lines = [f"### {w.title}", "", w.note, "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]  # fmt: skip
    for s in per_client.values():
        ok = sum(1 for r in s.runs if r and "error" not in r)
        row = [f"**{s.client}**" if s.client == "gunpy" else s.client, _num(s.value, w.unit),
               "1.00×" if s.client == "gunpy" and s.value else _ratio(s.ratio, s.ratio_iqr)]  # fmt: skip
        if w.latency:
            row += [_us(s.p50_us), _us(s.p99_us)]
        row += [_pct(s.cpu), "–" if s.cpu_per_op is None else f"{s.cpu_per_op:.1f}",
                _pct(s.server_cpu), _pct(s.other_cpu), f"{ok}/{len(s.runs)}" + (" ⚠" if s.errors else "")]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def scale_table(n: int, per_client: dict[str, ScaleSummary]) -> list[str]:
    lines = [
        f"### Scale: {n:,} concurrent Websocket connections in one process",
        "",
        "Connections opened in batches of 500 (open + upgrade), then one 16 B echo on every "
        "connection. RSS per connection = (RSS once all are open and have echoed − RSS "
        "before) / N; VM/conn is the same for the address space (VmSize). gunpy: one "
        "thread per connection, `threading.stack_size(256 KiB)` (`--stack-size`).",
        "",
        "| client | opened | open time s | conn/s | × gunpy | RSS/conn KiB | × gunpy "
        "| echo all s | echoed | threads | VM/conn KiB | server CPU | runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in per_client.values():
        m = s.med
        ok = sum(1 for r in s.runs if r)
        srv = [r["server_cpu"] for r in s.runs if r and "server_cpu" in r]
        srv_med = sorted(srv)[len(srv) // 2] if srv else None
        name = f"**{s.client}**" if s.client == "gunpy" else s.client
        gun = s.client == "gunpy" and m.get("open_s") is not None

        def f(k: str, fmt: str, m: dict[str, float | None] = m) -> str:
            v = m.get(k)
            return "–" if v is None else format(v, fmt)

        lines.append(
            f"| {name} | {f('opened', ',.0f')} | {f('open_s', '.2f')} | {f('open_rate', ',.0f')} | "
            f"{'1.00×' if gun else _ratio(s.ratio_open_rate)} | {f('rss_per_conn_kib', '.1f')} | "
            f"{'1.00×' if gun else _ratio(s.ratio_rss)} | {f('echo_s', '.3f')} | "
            f"{f('echoed', ',.0f')} | {f('threads', ',.0f')} | {f('vm_per_conn_kib', ',.0f')} | {_pct(srv_med)} | "
            f"{ok}/{len(s.runs)}{' ⚠' if s.errors else ''} |"
        )
    fails = [(s.client, r) for s in per_client.values() for r in s.runs if r and r.get("failure")]
    for client, r in fails[:6]:
        lines.append(f"- {client}: opened {r['opened']:,} of {r['n']:,} "
                     f"(RLIMIT_NOFILE {r.get('nofile', '?')}): {r['failure']}")  # fmt: skip
    lines.append("")
    return lines


def targets(
    results: dict[str, dict[str, ClientSummary]], scale: dict[str, ScaleSummary] | None, n: int
) -> list[dict[str, Any]]:
    out = []
    for name, per_client in results.items():
        w = WORKLOADS[name]
        for t in w.targets:
            s = per_client.get(t.versus)
            got = None if s is None or not s.ratio else 1 / s.ratio
            out.append({
                "workload": name, "title": w.title, "target": t.text, "need": t.ratio,
                "gunpy_over_peer": got, "met": None if got is None else got >= t.ratio,
                "guide": "guide" in t.text,
            })  # fmt: skip
    if scale is not None and "gunpy" in scale:
        m = scale["gunpy"].med
        rss, echoed, opened = m.get("rss_per_conn_kib"), m.get("echoed"), m.get("opened")
        met = None
        if rss is not None and echoed is not None and opened is not None:
            met = n >= SCALE_TARGET_N and rss <= SCALE_TARGET_KIB and echoed >= n and opened >= n
        out.append({
            "workload": "scale", "title": f"{n:,} concurrent WS connections",
            "target": f"{SCALE_TARGET_N:,} connections, ≤ {SCALE_TARGET_KIB:.0f} KiB RSS each, all echo",
            "need": SCALE_TARGET_KIB, "gunpy_over_peer": None, "rss_per_conn_kib": rss,
            "echoed": echoed, "opened": opened, "n": n, "met": met, "guide": False,
        })  # fmt: skip
    return out


def target_lines(ts: list[dict[str, Any]]) -> list[str]:
    lines = ["### Targets (gunpy ÷ peer, same run)", "",
             "| workload | target | measured | verdict |", "|---|---|---:|---|"]  # fmt: skip
    for t in ts:
        if t["workload"] == "scale":
            meas = "–" if t["rss_per_conn_kib"] is None else (
                f"N={t['n']:,}: {t['opened']:,.0f} opened, {t['rss_per_conn_kib']:.1f} KiB/conn, "
                f"{t['echoed']:,.0f} echoed")  # fmt: skip
            verdict = "met" if t["met"] else ("not met" if t["n"] >= SCALE_TARGET_N
                                              else "not measured at N=10,000 (--scale-full)")  # fmt: skip
            if t["met"] is None:
                verdict = "no result"
        else:
            meas = _ratio(t["gunpy_over_peer"])
            verdict = {True: "met", False: "not met", None: "no result"}[t["met"]]
            if t["guide"]:
                verdict = "reference only (≈ expected)"
        lines.append(f"| {t['title']} | {t['target']} | {meas} | **{verdict}** |")
    lines.append("")
    return lines


def write(
    out_dir: Path, mode: str, st: Settings, results: dict[str, dict[str, ClientSummary]],
    scale: dict[str, ScaleSummary] | None, meta: dict[str, Any], elapsed: float,
) -> tuple[Path, Path, str]:  # fmt: skip
    now = dt.datetime.now().astimezone()
    info = {
        "date": now.isoformat(timespec="seconds"),
        "mode": mode,
        "elapsed_s": round(elapsed, 1),
        "gunpy_git": git_state(),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "runs": st.runs, "duration_s": st.duration, "warmup_s": st.warmup,
            "window": st.window, "scale_n": st.scale_n, "scale_runs": st.scale_runs,
            "scale_batch": st.scale_batch, "stack_size": st.stack_size,
        },
        **meta,
    }
    ts = targets(results, scale, st.scale_n)
    doc = {
        **info,
        "workloads": {n: {"title": WORKLOADS[n].title, "unit": WORKLOADS[n].unit,
                          "clients": [s.as_json() for s in pc.values()]}
                      for n, pc in results.items()},
        "scale": None if scale is None else [s.as_json() for s in scale.values()],
        "targets": ts,
    }
    m = info["machine"]
    v = info["versions"]
    lines = [
        f"# gunpy benchmarks — {mode} run, {now:%Y-%m-%d %H:%M %Z}",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, "
        f"Linux {m['kernel']}, {m['python_implementation']} {m['python']}",
        f"- gunpy {v.get('gunpy')} (git {info['gunpy_git']}), pykka {v.get('pykka')}, "
        f"h11 {v.get('h11')}, wsproto {v.get('wsproto')}, h2 {v.get('h2')}",
        "- peers: " + ", ".join(f"{k} {v[k]}" for k in ("websocket-client", "websockets",
                                "aiohttp", "urllib3", "httpx", "httpcore") if k in v),
        f"- servers: Go echo `{meta.get('ws_server')}` mode (GOMAXPROCS={meta.get('gomaxprocs')}, "
        f"{v['go']}); nginx {v['nginx']} (1 worker); hypercorn {v['hypercorn']} (1 worker, asyncio)",
        f"- {st.runs} alternating rounds × {st.duration:g} s measured (+{st.warmup:g} s warm-up) "
        f"per client; total {elapsed:.0f} s",
        f"- load average (1 min) at start {meta['loadavg_start'][0]:.2f}, at end "
        f"{meta['loadavg_end'][0]:.2f}",
        "",
        "Values are medians over the rounds. **× gunpy** = the client's result ÷ gunpy's "
        "in the same round, median over rounds (above 1.00× the client is faster; for RSS, "
        "it uses more memory), with the quartiles of the per-round ratios in small type: a "
        "wide spread means a noisy machine. The verdicts use the median. CPU columns: CPU time ÷ wall time over the measured window "
        "(100 % = one core); client CPU counts all of the client's threads, and *CPU µs/op* "
        "(ms/MiB) is that CPU time per operation — the least load-sensitive number here, "
        "what an optimisation should move; *other CPU* is "
        "what the rest of the machine (other processes) used meanwhile — when it is high, "
        "the client was competing for the 2 cores and its numbers are pessimistic.",
        "",
    ]
    lines += target_lines(ts)
    for n, pc in results.items():
        lines += workload_table(n, pc)
    if scale is not None:
        lines += scale_table(st.scale_n, scale)
    md_text = "\n".join(lines)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "quick" if mode == "quick" else f"bench-{now:%Y%m%d-%H%M%S}"
    md_path, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md_path.write_text(md_text)
    json_path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return md_path, json_path, md_text
