"""gunpy's exceptions, one root.

Most failures in gunpy are *messages*, as in Gun: ``gun_error``, ``gun_down``,
``DOWN``, or ``("error", Reason)`` return values.  Exceptions are for programming
errors found at the call site, and for ``Exit``, Erlang's ``exit/1``::

    GunpyError
     ├── OptionsError            an unknown or ill-typed option (``open``, ``ws_upgrade``...)
     ├── InvalidRequestHeader    a header name/value refused before anything is sent
     │                           (Gun 2.4's ``{invalid_request_header, Name, Msg}``)
     ├── NoProc                  a synchronous call (``info``...) to a process that is gone
     │                           (Erlang's ``noproc`` exit)
     └── Exit                    ``raise Exit(reason)``: end the current process with a
                                 reason, as ``exit(Reason)`` does

All of them subclass ``Exception`` only, never ``BaseException``: a ``BaseException``
raised in any pykka actor stops every actor in the process.
"""

from __future__ import annotations

from typing import Any


class GunpyError(Exception):
    """Root of every exception gunpy raises."""


class OptionsError(GunpyError, ValueError):
    """An option is unknown or has the wrong type; ``reason`` is Gun's ``{options, ...}`` term."""

    def __init__(self, reason: Any, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or f"invalid option: {reason!r}")


class InvalidRequestHeader(GunpyError, ValueError):
    """A request header was refused in the caller; ``name`` is the header's name."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


class NoProc(GunpyError):
    """A synchronous call was made to a process that does not exist (any more)."""


class Exit(GunpyError):
    """Erlang's ``exit(Reason)``: raise it to end the current process with ``reason``.

    Raised in an ``OwnerActor`` it stops that actor, and its monitors see
    ``("DOWN", mref, "process", pid, reason)``.
    """

    def __init__(self, reason: Any) -> None:
        self.reason = reason
        super().__init__(reason)
