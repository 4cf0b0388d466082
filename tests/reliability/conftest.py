"""Fixtures of the reliability tests.

``no_leaks`` (autouse) snapshots the threads, pykka actors and open fds before each
test; after it (and after every other fixture's teardown: origins are stopped
first) it closes what the test left open, waits for each tracked connection's
``DOWN``, joins the connection threads, and fails the test if anything is left.
``track`` is the ``Tracker`` tests open their connections with; ``origin`` a
``gunpy.testing.ScriptedOrigin`` (from the ``scripted_origin`` fixture) the test
drives itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import gunpy
from gunpy import TIMEOUT
from gunpy.testing import OriginFactory, ScriptedOrigin
from tests.peers import Peer
from tests.reliability._support import (
    Resources,
    Tracker,
    fault_server_argv,
    leaks,
    settle,
)

_tracker = Tracker()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    before = Resources.snapshot()
    yield
    problems = _tracker.finish()
    while gunpy.receive(after=0) is not TIMEOUT:  # the test thread's mailbox
        pass
    after = settle(before)
    problems += leaks(before, after)
    if problems:
        pytest.fail("resources left behind: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def track() -> Tracker:
    return _tracker


@pytest.fixture
def origin(scripted_origin: OriginFactory) -> ScriptedOrigin:
    return scripted_origin()


@pytest.fixture(scope="session")
def healthy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """A well-behaved keep-alive HTTP/1.1 + Websocket server in its own process
    (tests/reliability/fault_server.py, no faults): the "other connection" that
    must keep working while a hostile server misbehaves."""
    log = tmp_path_factory.mktemp("healthy") / "healthy.log"
    with Peer(fault_server_argv("0"), name="healthy", log_path=log) as peer:
        yield peer


@pytest.fixture
def fault_server(tmp_path: Path) -> Iterator[Peer]:
    """The fault server with random faults on (used by the soak's smoke test)."""
    with Peer(
        fault_server_argv("0", "--faults", "0.3", "--seed", "7"),
        name="faults",
        log_path=tmp_path / "faults.log",
    ) as peer:
        yield peer
