#!/usr/bin/env python3
"""Run the Autobahn|Testsuite fuzzingserver, bound to 127.0.0.1, against a Websocket client.

    run_autobahn.py [--cases '1.*' '2.*'] [--exclude '12.*'] [--strict] [--outdir DIR] \\
        -- CLIENT_CMD ...

* writes the spec (``fuzzingserver.json`` beside this file, with ``url`` set to a free
  loopback port and ``cases``/``exclude-cases`` from the options) into ``--outdir``,
* starts ``wstest -m fuzzingserver`` from the Python 2.7 virtualenv that
  ``install_autobahn.sh`` made (``$AUTOBAHN_PY2``, default ``.peers/autobahn/venv-py2``),
  through ``wstest_loopback.py`` (stock wstest binds 0.0.0.0),
* runs the client command with ``AUTOBAHN_URL=ws://127.0.0.1:PORT`` in its environment
  (the client walks ``/getCaseCount``, ``/runCase?case=N&agent=A`` and
  ``/updateReports?agent=A`` itself; see ``client.py``), killed after ``--timeout`` s,
* stops the server by its own handle, reads ``OUTDIR/reports/clients/index.json`` and
  prints the failing cases and a last line ``N passed, N failed, N skipped``.

Exit status: 0 every case passed, 1 a case failed or the client failed, 2 the
server or the report is missing.

Verdicts (as the HTML report colours them):
  behavior      OK, NON-STRICT, INFORMATIONAL pass; FAILED / NO_CLOSE fail;
                UNIMPLEMENTED (permessage-deflate not negotiated, 12.*/13.*) is skipped.
  behaviorClose OK / INFORMATIONAL clean; WRONG CODE / FAILED BY CLIENT are "almost"
                (pass unless --strict); UNCLEAN / FAILED fail.
The comparison with Erlang Gun 2.4.1 case by case is ``compare.py``'s job.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_PY2 = ROOT / ".peers" / "autobahn" / "venv-py2" / "bin" / "python"
PASS = ("OK", "NON-STRICT", "INFORMATIONAL")
CLOSE_CLEAN = ("OK", "INFORMATIONAL")
CLOSE_ALMOST = ("WRONG CODE", "FAILED BY CLIENT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, wait, SIGKILL; then SIGKILL what is left of its process group (ours alone)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def case_key(case_id: str) -> list[int]:
    return [int(x) for x in case_id.split(".")]


def write_spec(outdir: Path, port: int, cases: list[str], exclude: list[str]) -> None:
    spec = json.loads((HERE / "fuzzingserver.json").read_text())
    spec["url"] = f"ws://127.0.0.1:{port}"
    spec["outdir"] = "./reports/clients"
    spec["cases"] = cases
    spec["exclude-cases"] = exclude
    (outdir / "fuzzingserver.json").write_text(json.dumps(spec, indent=2) + "\n")


def summarize(index: Path, strict: bool) -> int:
    data = json.loads(index.read_text())
    passed = failed = skipped = 0
    close_ok = CLOSE_CLEAN if strict else CLOSE_CLEAN + CLOSE_ALMOST
    for agent, cases in sorted(data.items()):
        for cid in sorted(cases, key=case_key):
            r = cases[cid]
            b, bc = r["behavior"], r["behaviorClose"]
            if b == "UNIMPLEMENTED":
                skipped += 1
            elif b in PASS and bc in close_ok:
                passed += 1
            else:
                failed += 1
                print(
                    f"FAIL {agent} {cid}: behavior={b} behaviorClose={bc} "
                    f"see {index.parent / r['reportfile']}"
                )
    print(f"report: {index} (HTML: {index.parent / 'index.html'})")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=["*"], help="case patterns ('*', '1.*', '9.1.1')")
    ap.add_argument("--exclude", nargs="*", default=[], help="case patterns to leave out")
    ap.add_argument("--outdir", type=Path, default=ROOT / ".peers" / "autobahn" / "run")
    ap.add_argument("--timeout", type=float, default=3600.0, help="kill the client after S seconds")
    ap.add_argument(
        "--strict", action="store_true", help="behaviorClose WRONG CODE / FAILED BY CLIENT fail too"
    )
    ap.add_argument("client", nargs=argparse.REMAINDER, help="-- client command")
    a = ap.parse_args(argv)
    client = a.client[1:] if a.client[:1] == ["--"] else a.client
    if not client:
        ap.error("give a client command after --")
    py2 = Path(os.environ.get("AUTOBAHN_PY2", DEFAULT_PY2))
    if not os.access(py2, os.X_OK):
        print(f"no Autobahn|Testsuite at {py2}: run tests/autobahn/install_autobahn.sh")
        return 2
    outdir: Path = a.outdir.resolve()
    reports = outdir / "reports" / "clients"
    # A report left by an earlier run must not be mistaken for this run's.
    if reports.is_dir():
        for f in reports.iterdir():
            f.unlink()
    outdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    write_spec(outdir, port, a.cases, a.exclude)
    log_path = outdir / "fuzzingserver.log"
    with open(log_path, "wb") as log:
        srv = subprocess.Popen(
            [
                str(py2),
                str(HERE / "wstest_loopback.py"),
                "-m",
                "fuzzingserver",
                "-s",
                "fuzzingserver.json",
            ],
            cwd=outdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    rc = 0
    try:
        if not wait_port(port, srv):
            print(f"fuzzingserver did not start; see {log_path}:")
            print(log_path.read_text(errors="replace")[-2000:])
            return 2
        env = dict(os.environ, AUTOBAHN_URL=f"ws://127.0.0.1:{port}")
        t0 = time.monotonic()
        cli = subprocess.Popen(client, env=env, start_new_session=True)
        try:
            rc = cli.wait(a.timeout)
        except subprocess.TimeoutExpired:
            print(f"client still running after {a.timeout:.0f}s: killed")
            rc = -1
        except KeyboardInterrupt:
            rc = -2
            raise
        finally:
            stop(cli, grace=5.0)
        print(f"client exited {rc} after {time.monotonic() - t0:.1f}s")
    finally:
        stop(srv)
    index = reports / "index.json"
    if not index.exists():
        print(f"no report at {index} (did the client call /updateReports?)")
        return 2
    result = summarize(index, a.strict)
    return result or (1 if rc else 0)


if __name__ == "__main__":
    sys.exit(main())
