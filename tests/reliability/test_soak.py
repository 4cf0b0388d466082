"""A few seconds of the soak (tests/reliability/soak.py) in the default run, so the
soak's machinery (fault server, ledger, report) cannot rot between ``make soak``
runs.  High fault rate, few connections: every kind of fault happens."""

from __future__ import annotations

from tests.peers import Peer
from tests.reliability.soak import Soak


def test_soak_smoke(fault_server: Peer) -> None:
    report = Soak(fault_server.port, 30, ws_share=0.2, depth=3, seed=7).run(3.0, drain=20.0)
    print("\n" + report.text())
    assert report.requests > 100
    assert report.completed > 0 and sum(report.errors.values()) > 0
    assert sum(report.downs.values()) > 0 and report.ws_echoed > 0
    assert report.violations == []
