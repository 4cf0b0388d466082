"""ExUnit-style mailbox assertions and pattern helpers for Gun's messages.

The assertions work on the *calling* process's mailbox (``gunpy.self()``): a test
function's thread, or an ``OwnerActor`` when called inside one.  Patterns are the
ones ``gunpy.receive`` takes (see ``gunpy.process.match``); the helpers here only
build tuple templates, so a template whose conn and ref are concrete values stays on
the mailbox's indexed fast path.

Timeouts are milliseconds, multiplied by the timeout factor (environment variable
``GUNPY_TIMEOUT_FACTOR``, default 1) so a slow machine can stretch every wait
without editing tests.
"""

from __future__ import annotations

import math
import os
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

from pykka._envelope import Envelope

from .._process import ANY, TIMEOUT, Pid, Ref, match
from .._process import receive as _receive
from .._process import self as _self

__all__ = [
    "TIMEOUT_FACTOR_ENV",
    "assert_mailbox_empty",
    "assert_receive",
    "down",
    "format_mailbox",
    "gun_conn_error",
    "gun_data",
    "gun_down",
    "gun_error",
    "gun_inform",
    "gun_response",
    "gun_trailers",
    "gun_up",
    "gun_upgrade",
    "gun_ws",
    "has_headers",
    "refute_receive",
    "scaled",
    "timeout_factor",
]

#: The environment variable that stretches every timeout of ``gunpy.testing``.
TIMEOUT_FACTOR_ENV = "GUNPY_TIMEOUT_FACTOR"

#: How many queued messages a failure message shows (the closest ones).
MAX_SHOWN = 20

Timeout = int | float | str | None


# ---------------------------------------------------------------------------
# The timeout factor


def timeout_factor() -> float:
    """The factor every ``gunpy.testing`` timeout is multiplied by.

    Read from ``GUNPY_TIMEOUT_FACTOR`` at each call (a positive number; default 1),
    so ``monkeypatch.setenv`` works.  A value that is not a positive number raises
    ``ValueError`` rather than being ignored.
    """
    raw = os.environ.get(TIMEOUT_FACTOR_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_FACTOR_ENV} must be a positive number, not {raw!r}") from None
    if not factor > 0 or factor == float("inf"):
        raise ValueError(f"{TIMEOUT_FACTOR_ENV} must be a positive number, not {raw!r}")
    return factor


def scaled(after: Timeout) -> Timeout:
    """``after`` milliseconds times the timeout factor (``None``/``"infinity"`` unchanged).

    Use it for the timeouts you pass to gunpy itself in a test, e.g.
    ``gunpy.await_(conn, ref, scaled(1000))``.  Integers stay integers (rounded up).
    """
    if after is None or after == "infinity":
        return after
    if isinstance(after, bool) or not isinstance(after, (int, float)) or after < 0:
        raise ValueError(f"timeout must be milliseconds >= 0 or 'infinity', not {after!r}")
    factor = timeout_factor()
    if factor == 1.0:
        return after
    value = after * factor
    if isinstance(after, int):
        return math.ceil(value)
    return value


# ---------------------------------------------------------------------------
# Pattern helpers: tuple templates that read like the messages they match


def gun_up(conn: Any, protocol: Any = ANY) -> tuple[Any, ...]:
    """``("gun_up", conn, protocol)``."""
    return ("gun_up", conn, protocol)


def gun_down(
    conn: Any, protocol: Any = ANY, reason: Any = ANY, killed: Any = ANY
) -> tuple[Any, ...]:
    """``("gun_down", conn, protocol, reason, killed_streams)``."""
    return ("gun_down", conn, protocol, reason, killed)


def gun_inform(conn: Any, ref: Any, status: Any = ANY, headers: Any = ANY) -> tuple[Any, ...]:
    """``("gun_inform", conn, ref, status, headers)``."""
    return ("gun_inform", conn, ref, status, headers)


def gun_response(
    conn: Any, ref: Any, fin: Any = ANY, status: Any = ANY, headers: Any = ANY
) -> tuple[Any, ...]:
    """``("gun_response", conn, ref, is_fin, status, headers)``."""
    return ("gun_response", conn, ref, fin, status, headers)


def gun_data(conn: Any, ref: Any, fin: Any = ANY, data: Any = ANY) -> tuple[Any, ...]:
    """``("gun_data", conn, ref, is_fin, data)``."""
    return ("gun_data", conn, ref, fin, data)


def gun_trailers(conn: Any, ref: Any, headers: Any = ANY) -> tuple[Any, ...]:
    """``("gun_trailers", conn, ref, headers)``."""
    return ("gun_trailers", conn, ref, headers)


def gun_error(conn: Any, ref: Any, reason: Any = ANY) -> tuple[Any, ...]:
    """A stream error: ``("gun_error", conn, ref, reason)``.

    The connection-wide form (no ref) is :func:`gun_conn_error`.
    """
    return ("gun_error", conn, ref, reason)


def gun_conn_error(conn: Any, reason: Any = ANY) -> tuple[Any, ...]:
    """A connection-wide error: ``("gun_error", conn, reason)``."""
    return ("gun_error", conn, reason)


def gun_upgrade(conn: Any, ref: Any, protocols: Any = ANY, headers: Any = ANY) -> tuple[Any, ...]:
    """``("gun_upgrade", conn, ref, protocols, headers)``."""
    return ("gun_upgrade", conn, ref, protocols, headers)


def gun_ws(conn: Any, ref: Any, frame: Any = ANY) -> tuple[Any, ...]:
    """``("gun_ws", conn, ref, frame)``."""
    return ("gun_ws", conn, ref, frame)


def down(mref: Any, reason: Any = ANY, pid: Any = ANY) -> tuple[Any, ...]:
    """A monitor's ``("DOWN", mref, "process", pid, reason)``."""
    return ("DOWN", mref, "process", pid, reason)


class has_headers:
    """A predicate for a headers list: every given ``(name, value)`` is among them.

    Names compare case-insensitively, values exactly; extra headers are allowed::

        gun_response(conn, ref, status=200, headers=has_headers({"content-type": "text/plain"}))

    A value of ``ANY`` only asks for the header to be present.
    """

    __slots__ = ("expected",)

    def __init__(
        self, expected: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), **more: Any
    ) -> None:
        pairs = list(expected.items()) if isinstance(expected, Mapping) else list(expected)
        pairs += [(k.replace("_", "-"), v) for k, v in more.items()]
        self.expected: tuple[tuple[str, Any], ...] = tuple((k.lower(), v) for k, v in pairs)

    def __call__(self, headers: Any) -> bool:
        if not isinstance(headers, (list, tuple)):
            return False
        have: list[tuple[str, Any]] = []
        for h in headers:
            if isinstance(h, (list, tuple)) and len(h) == 2 and isinstance(h[0], (str, bytes)):
                name = h[0].decode("latin-1") if isinstance(h[0], bytes) else h[0]
                have.append((name.lower(), h[1]))
        return all(any(n == name and match(v, hv) for n, hv in have) for name, v in self.expected)

    def __repr__(self) -> str:
        return f"has_headers({dict(self.expected)!r})"


# ---------------------------------------------------------------------------
# Showing a mailbox


_repr = reprlib.Repr()
_repr.maxlevel = 5
_repr.maxtuple = 12
_repr.maxlist = 12
_repr.maxdict = 12
_repr.maxstring = 160
_repr.maxother = 160
_repr.maxlong = 60


def _show(x: Any) -> str:
    return _repr.repr(x)


def _is_seq_template(p: Any) -> bool:
    return type(p) is tuple or type(p) is list


def _closeness(pattern: Any, msg: Any) -> int:
    """How close ``msg`` is to matching ``pattern`` (bigger is closer)."""
    if match(pattern, msg):
        return 1_000_000
    if not _is_seq_template(pattern):
        return 0
    if not isinstance(msg, (tuple, list)):
        return 0
    score = 1
    if pattern and msg and pattern[0] is not ANY and match(pattern[0], msg[0]):
        score += 1000  # same tag: the most telling resemblance
    if len(pattern) == len(msg):
        score += 100
        score += 10 * sum(1 for p, m in zip(pattern, msg, strict=True) if match(p, m))
    return score


def _why(pattern: Any, msg: Any, path: str = "") -> str:
    """Why ``msg`` does not match ``pattern``, at the first place it differs."""
    where = f"at {path}: " if path else ""
    if _is_seq_template(pattern):
        kind = "tuple" if type(pattern) is tuple else "list"
        if not isinstance(msg, tuple if kind == "tuple" else list):
            return f"{where}expected a {kind} of {len(pattern)}, got {_show(msg)}"
        if pattern and msg and not match(pattern[0], msg[0]):
            return _why(pattern[0], msg[0], f"{path}[0]")  # another tag: say that first
        if len(msg) != len(pattern):
            return f"{where}expected a {kind} of {len(pattern)}, got one of {len(msg)}"
        for i, (p, m) in enumerate(zip(pattern, msg, strict=True)):
            if not match(p, m):
                return _why(p, m, f"{path}[{i}]")
        return f"{where}matches"  # pragma: no cover - only called on mismatches
    if callable(pattern) and not isinstance(pattern, (Pid, Ref, type)):
        return f"{where}{_show(pattern)} is false for {_show(msg)}"
    return f"{where}expected {_show(pattern)}, got {_show(msg)}"


def format_mailbox(
    messages: list[Any], patterns: tuple[Any, ...] = (), limit: int = MAX_SHOWN
) -> str:
    """A readable dump of ``messages`` (oldest is #1).

    With ``patterns``, the messages closest to one of them come first, each with
    where it differs from that pattern; without, they are listed oldest first.
    """
    if not messages:
        return "mailbox: empty"
    n = len(messages)
    numbered = list(enumerate(messages, 1))
    header = f"mailbox: {n} message{'s' if n != 1 else ''}"
    if patterns:
        scored = []
        for i, m in numbered:
            best = max(patterns, key=lambda p: _closeness(p, m))
            scored.append((-_closeness(best, m), i, m, best))
        scored.sort(key=lambda t: (t[0], t[1]))
        header += ", closest to the pattern first:"
        lines = [header]
        for _, i, m, best in scored[:limit]:
            lines.append(f"  #{i} {_show(m)}")
            lines.append(f"      {_why(best, m)}")
    else:
        header += ", oldest first:"
        lines = [header]
        lines += [f"  #{i} {_show(m)}" for i, m in numbered[:limit]]
    if n > limit:
        lines.append(f"  ... and {n - limit} more")
    return "\n".join(lines)


def _queued() -> list[Any]:
    box = _self().mailbox
    if box is None:  # pragma: no cover - self() always has a mailbox
        return []
    # An OwnerActor's inbox also holds pykka's envelopes (calls): not messages.
    return [m for m in box.messages() if type(m) is not Envelope]


def _show_patterns(patterns: tuple[Any, ...]) -> str:
    if not patterns:
        return "pattern: any message"
    if len(patterns) == 1:
        return f"pattern: {_show(patterns[0])}"
    return "patterns:\n" + "\n".join(f"  {_show(p)}" for p in patterns)


def _show_after(after: Timeout, waited: Timeout) -> str:
    if waited is None or waited == "infinity":
        return "ever"
    if waited == after:
        return f"{waited} ms"
    return f"{waited} ms ({after} ms x {TIMEOUT_FACTOR_ENV}={timeout_factor():g})"


# ---------------------------------------------------------------------------
# The assertions


def assert_receive(*patterns: Any, after: Timeout = 1000, message: str | None = None) -> Any:
    """Receive the oldest message matching one of ``patterns`` within ``after`` ms.

    Returns the message (removed from the mailbox; the others stay queued).  When
    nothing matches in time, raises ``AssertionError`` showing the pattern and what
    the mailbox holds, closest messages first.  ``after`` is multiplied by the
    timeout factor; ``after=0`` only looks at messages already queued.  With no
    pattern, any message.
    """
    __tracebackhide__ = True
    waited = scaled(after)
    msg = _receive(*patterns, after=waited)
    if msg is not TIMEOUT:
        return msg
    lines = [message] if message else []
    lines.append(f"no message matched within {_show_after(after, waited)}")
    lines.append(_show_patterns(patterns))
    lines.append(format_mailbox(_queued(), patterns))
    raise AssertionError("\n".join(lines))


def refute_receive(*patterns: Any, after: Timeout = 100, message: str | None = None) -> None:
    """Assert that no message matching one of ``patterns`` arrives within ``after`` ms.

    Waits the whole ``after`` (times the timeout factor) unless a matching message
    comes; that message is consumed and reported in the ``AssertionError``.
    ``after=0`` checks the messages already queued only.
    """
    __tracebackhide__ = True
    waited = scaled(after)
    msg = _receive(*patterns, after=waited)
    if msg is TIMEOUT:
        return
    lines = [message] if message else []
    lines.append(f"unexpected message (refute_receive, after {_show_after(after, waited)}):")
    lines.append(f"  {_show(msg)}")
    lines.append(_show_patterns(patterns))
    rest = _queued()
    if rest:
        lines.append("also queued: " + format_mailbox(rest))
    raise AssertionError("\n".join(lines))


def assert_mailbox_empty(message: str | None = None) -> None:
    """Assert that the calling process's mailbox holds no message right now.

    Does not wait and removes nothing; the ``AssertionError`` lists what is queued.
    """
    __tracebackhide__ = True
    queued = _queued()
    if not queued:
        return
    lines = [message] if message else []
    lines.append("the mailbox is not empty")
    lines.append(format_mailbox(queued))
    raise AssertionError("\n".join(lines))
