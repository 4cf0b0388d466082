"""Autobahn|Testsuite, sections 1-10 (301 cases), against gunpy's Websocket client.

The quick half of ``make conformance``: the fuzzingserver (Python 2.7, installed by
``tests/autobahn/install_autobahn.sh`` under ``.peers/autobahn/``) on loopback, the
client ``tests/autobahn/client.py`` (Gun's ``ws_autobahn_SUITE``: ``retry: 0``,
``compress: True``, echo every frame) in a child process, then
``tests/autobahn/compare.py``'s rules against Erlang Gun 2.4.1's verdicts: the test
fails on any FAILED case, any case worse than Gun's, and (strict) any behaviorClose
other than OK or INFORMATIONAL.  Sections 12 and 13 (permessage-deflate, 216 cases)
take 10-15 minutes on the server side: ``make conformance`` runs them.

No Python 2.7, or an install that fails (no PyPI), skips the test on a developer's
machine and fails it under CI (``GUNPY_REQUIRE_PEERS=1``), as ``tests.peers.need``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.autobahn import compare as ab_compare
from tests.autobahn import run_autobahn
from tests.peers import REQUIRE_PEERS_ENV, Peer, require_peers

AUTOBAHN = Path(run_autobahn.__file__).resolve().parent
CASES = ["*"]
EXCLUDE = ["12.*", "13.*"]
INSTALL_TIMEOUT = 300.0
CLIENT_TIMEOUT = 300.0  # the whole run; ~20 s on the 2-core CI machine

pytestmark = [pytest.mark.slow, pytest.mark.peers, pytest.mark.timeout(INSTALL_TIMEOUT + 420)]


def _missing(what: str) -> None:
    # tests.peers.need()'s rule: skip on a developer's machine, fail under CI.
    if require_peers():
        pytest.fail(f"{what} ({REQUIRE_PEERS_ENV} is set: peers are required)", pytrace=False)
    pytest.skip(what)


def _install() -> Path:
    """Install (or find) the fuzzingserver; returns its Python 2.7."""
    try:
        proc = subprocess.run(
            ["bash", str(AUTOBAHN / "install_autobahn.sh")],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        _missing(f"installing Autobahn|Testsuite took over {INSTALL_TIMEOUT:.0f}s")
        raise AssertionError("unreachable") from None  # pragma: no cover
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode == 3:
        _missing(f"no Python 2.7 for Autobahn|Testsuite: {out}")
    elif proc.returncode != 0:
        _missing(f"Autobahn|Testsuite did not install (exit {proc.returncode}):\n{out[-3000:]}")
    return run_autobahn.DEFAULT_PY2


def test_autobahn_sections_1_to_10(tmp_path: Path) -> None:
    py2 = _install()
    outdir = tmp_path / "autobahn"
    outdir.mkdir()

    def build(port: int) -> list[str]:
        run_autobahn.write_spec(outdir, port, CASES, EXCLUDE)
        return [
            str(py2),
            str(AUTOBAHN / "wstest_loopback.py"),
            "-m",
            "fuzzingserver",
            "-s",
            "fuzzingserver.json",
        ]

    with Peer.on_free_port(
        build,
        name="fuzzingserver",
        cwd=outdir,
        log_path=outdir / "fuzzingserver.log",
        startup_timeout=30.0,
    ) as server:
        client = subprocess.run(
            [sys.executable, str(AUTOBAHN / "client.py"), "--url", server.ws_url(""), "-q"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
        )
    client_out = (client.stdout + client.stderr).strip()
    index = outdir / "reports" / "clients" / "index.json"
    assert index.exists(), f"no report (client exit {client.returncode}):\n{client_out[-3000:]}"

    agent, ours = ab_compare.load_report(index, "gunpy")
    gun = json.loads(ab_compare.REFERENCE.read_text())["cases"]
    cmp = ab_compare.compare(ours, gun, CASES, EXCLUDE, strict=True, agent=agent)
    table = ab_compare.text_table(cmp)
    print(client_out, table, *ab_compare.problems_text(cmp), sep="\n")
    assert len(cmp.cases) == 301
    assert cmp.ok, (
        f"Autobahn sections 1-10: {len(cmp.problems)} problem(s) (report {index.parent}):\n"
        + "\n".join(ab_compare.problems_text(cmp))
        + f"\n{table}\nclient:\n{client_out[-3000:]}"
    )
    assert client.returncode == 0, f"a case did not run to its end:\n{client_out[-3000:]}"
