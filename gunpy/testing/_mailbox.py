"""A fresh mailbox for a test, checked for leftover Gun messages at the end."""

from __future__ import annotations

import threading
from typing import Any

from pykka._envelope import Envelope

from .._process import Mailbox, Pid, match
from .._process import self as _self
from ._assertions import format_mailbox

__all__ = ["GunMailbox", "is_gun_message"]


def is_gun_message(msg: Any) -> bool:
    """Whether ``msg`` is one of Gun's messages: a tuple tagged ``"gun_..."``."""
    return (
        isinstance(msg, tuple)
        and len(msg) >= 2
        and isinstance(msg[0], str)
        and msg[0].startswith("gun_")
    )


class GunMailbox:
    """The calling thread's mailbox, emptied on entry and checked on exit.

    ``with GunMailbox() as box:`` flushes every queued message; at the end of the
    block (when it raised nothing) ``check()`` fails with an ``AssertionError``
    listing the Gun messages (``("gun_...", ...)``) still queued that no
    ``allow()`` pattern covers, then everything left is flushed.  Other messages
    (``DOWN``, your own) are flushed silently: leftover *Gun* messages are the ones
    that mean a test did not look at something the connection said.

    It is the ``gun_mailbox`` fixture's value.  Create and use it in the thread
    whose mailbox it guards (pytest runs tests in the main thread).
    """

    def __init__(self) -> None:
        self.pid: Pid = _self()
        self._thread = threading.current_thread()
        self._allowed: list[Any] = []

    def __repr__(self) -> str:
        return f"<GunMailbox of {self.pid!r}: {len(self.messages())} queued>"

    @property
    def _box(self) -> Mailbox:
        box = self.pid.mailbox
        assert box is not None
        return box

    def messages(self) -> list[Any]:
        """The queued messages, oldest first (a snapshot; nothing is removed)."""
        return [m for m in self._box.messages() if type(m) is not Envelope]

    def allow(self, *patterns: Any) -> None:
        """Let Gun messages matching one of ``patterns`` be left over."""
        self._allowed.extend(patterns)

    def leftovers(self) -> list[Any]:
        """The queued Gun messages that no ``allow()`` pattern covers."""
        return [
            m
            for m in self.messages()
            if is_gun_message(m) and not any(match(p, m) for p in self._allowed)
        ]

    def flush(self) -> int:
        """Remove every queued message; how many there were."""
        if threading.current_thread() is not self._thread:
            raise RuntimeError("GunMailbox.flush: call it from the thread whose mailbox it is")
        return self._box.flush(())

    def check(self) -> None:
        """Fail (``AssertionError``) if Gun messages are left over."""
        __tracebackhide__ = True
        left = self.leftovers()
        if left:
            raise AssertionError(
                f"{len(left)} Gun message{'s' if len(left) != 1 else ''} left over in the "
                "test's mailbox (receive them, gunpy.flush(conn), or gun_mailbox.allow(pattern)):\n"
                + format_mailbox(left)
            )

    def __enter__(self) -> GunMailbox:
        self.flush()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.check()
        finally:
            self.flush()
