"""gunpy's pytest plugin: fixtures for mailbox-driven tests.

Registered through the ``pytest11`` entry point, so installing gunpy is enough
(``-p no:gunpy`` turns it off).  None of the fixtures is autouse by default: the
plugin is active in every project that has gunpy installed, and must not change
tests that do not ask for it.

=========================  ========  ============================================================
fixture                    scope     value
=========================  ========  ============================================================
``gun_mailbox``            function  ``GunMailbox``: the test thread's mailbox, flushed before the
                                     test; leftover Gun messages fail the test at teardown
``scripted_origin``        function  ``OriginFactory``: ``scripted_origin(script, tls=..., unix=...)``
                                     starts a ``ScriptedOrigin``; all stopped (and their scripts
                                     checked) at teardown
``gun_http_echo_server``   function  ``EchoServer``: HTTP/1.1 echo (and Websocket) on 127.0.0.1
``gun_ws_echo_server``     function  ``EchoServer``: Websocket echo (and HTTP) on 127.0.0.1
``tls_pair``               session   ``TLSPair``: a trustme CA, a server certificate for
                                     127.0.0.1/localhost/::1, client ``tls_opts``; skips the test
                                     when trustme is not installed
``timeout_factor``         session   ``float``: ``GUNPY_TIMEOUT_FACTOR`` (default 1)
=========================  ========  ============================================================

ini option ``gunpy_mailbox_autouse = true`` gives every test ``gun_mailbox``.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from ._assertions import timeout_factor as _timeout_factor
from ._echo import EchoServer
from ._mailbox import GunMailbox
from ._origin import OriginFactory
from ._tls import TLSPair, TrustmeMissing, make_tls_pair

__all__ = [
    "gun_http_echo_server",
    "gun_mailbox",
    "gun_ws_echo_server",
    "scripted_origin",
    "timeout_factor",
    "tls_pair",
]

_CALL_FAILED = pytest.StashKey[bool]()
_ORIGINS = pytest.StashKey[OriginFactory]()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Keep gunpy's ``threading.excepthook`` outermost.

    gunpy chains its hook (which records a crashed thread's exception as that
    process's exit reason, seen in ``DOWN``) in front of whatever hook was there
    when gunpy was imported.  Loaded as a plugin, gunpy is imported *before*
    pytest installs its own hook (``threadexception``, in ``pytest_configure``),
    which does not chain: put gunpy's back in front of it, as it is when gunpy is
    first imported by a test module, and undo that at the end of the session.
    """
    from .. import _process

    saved_prev, saved_hook = _process._prev_excepthook, threading.excepthook
    if saved_hook is _process._excepthook:
        return  # nothing replaced it
    _process._prev_excepthook = saved_hook
    threading.excepthook = _process._excepthook

    def restore() -> None:
        _process._prev_excepthook = saved_prev
        threading.excepthook = saved_hook

    config.add_cleanup(restore)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "gunpy_mailbox_autouse",
        type="bool",
        default=False,
        help="gunpy: use the gun_mailbox fixture in every test (fail on leftover Gun messages)",
    )


@pytest.hookimpl(hookwrapper=True)  # old-style: works with pytest 7 to 9
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    if rep.when == "call":
        item.stash[_CALL_FAILED] = rep.failed
        origins = item.stash.get(_ORIGINS, None)
        if rep.failed and origins is not None:
            # The test failed: its teardown will not pile script errors on top, so show
            # them here, next to the failure they probably explain.
            errors = origins.errors()
            late = [c for o in origins.origins for c in o.unfinished()]
            lines = [str(e) for e in errors]
            lines += [
                f"{c.origin.name} connection #{c.index}: script at step {c.step} "
                f"{c._step_repr()} when the test failed"
                for c in late
            ]
            lines += [m for o in origins.origins if (m := o._missing_conns()) is not None]
            if lines:
                rep.sections.append(("gunpy scripted origin", "\n".join(lines)))


def _call_failed(request: pytest.FixtureRequest) -> bool:
    failed: bool = request.node.stash.get(_CALL_FAILED, False)
    return failed


@pytest.fixture(scope="session")
def timeout_factor() -> float:
    """``GUNPY_TIMEOUT_FACTOR`` (default 1): what ``gunpy.testing`` multiplies timeouts by."""
    return _timeout_factor()


@pytest.fixture
def gun_mailbox(request: pytest.FixtureRequest) -> Iterator[GunMailbox]:
    """The test thread's mailbox, flushed before the test; Gun messages left over
    after it fail the test (reported at teardown).  Not checked when the test
    itself failed."""
    box = GunMailbox()
    box.flush()
    yield box
    try:
        if not _call_failed(request):
            box.check()
    finally:
        box.flush()


@pytest.fixture(autouse=True)
def _gunpy_mailbox_autouse(request: pytest.FixtureRequest) -> None:
    if request.config.getini("gunpy_mailbox_autouse"):
        request.getfixturevalue("gun_mailbox")


@pytest.fixture
def scripted_origin(request: pytest.FixtureRequest) -> Iterator[OriginFactory]:
    """A factory of ``ScriptedOrigin``s: ``scripted_origin(script, tls=..., unix=...)``.

    Every origin is stopped after the test; a failed step or an unfinished script
    fails the test at teardown (when the test passed; otherwise they are shown in
    the failure report).
    """
    factory = OriginFactory()
    request.node.stash[_ORIGINS] = factory
    yield factory
    factory.stop_all(check=not _call_failed(request))


@pytest.fixture
def gun_http_echo_server() -> Iterator[EchoServer]:
    """An in-process HTTP/1.1 echo server on 127.0.0.1 (see ``EchoServer``)."""
    with EchoServer(name="gun-http-echo") as server:
        yield server


@pytest.fixture
def gun_ws_echo_server() -> Iterator[EchoServer]:
    """An in-process Websocket echo server on 127.0.0.1, permessage-deflate on."""
    with EchoServer(name="gun-ws-echo") as server:
        yield server


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> TLSPair:
    """A trustme CA and a server certificate for 127.0.0.1, localhost and ::1."""
    try:
        return make_tls_pair(tmp_path_factory.mktemp("gunpy-tls"))
    except TrustmeMissing as exc:
        pytest.skip(str(exc))
