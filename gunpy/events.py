"""Event handlers: Gun's ``gun_event`` callbacks, in Python.

Theory of operation
-------------------
The connection option ``event_handler`` is ``(handler, state)``, Gun's
``{Module, State}``.  ``handler`` is any object (a module, a class, an instance)
with some of the callbacks named in ``EVENTS``; each is called as
``handler.name(event, state)`` and returns the new state, which the next callback
gets.  ``event`` is a ``dict`` with Gun's keys (``"stream_ref"``, ``"reply_to"``,
``"status"``, ...; see the "Events" guide chapter and the manual page per
callback).

The callbacks run synchronously in the connection's actor thread, in the order
things happen, so they see the connection exactly as Gun's process does: keep them
short (they are on the connection's path) and never block in one.  A callback a
handler does not define is skipped (Gun requires all of them; ``EventHandler``
below defines them all as no-ops, Gun's ``gun_default_event_h``).

Better than Gun: a callback that raises does not crash the connection.  The
exception is logged (logger ``gunpy.events``, with its traceback) and the state
stays what it was before that call.

Ready-made handlers
    ``EventHandler``           every callback, doing nothing: subclass it.
    ``LoggingEventHandler``    one ``logging`` record per event.
    ``TimingEventHandler``     records ``(ms, name, event)`` in a ``Timeline`` (the
                               state): a timing view of the connection; the
                               ``gunpy --trace`` command line option prints it live.
    ``ForwardEventHandler``    sends ``("gun_event", conn, name, event)`` to a
                               process (the state): events in a mailbox, read with
                               ``receive`` (Gun's test suite does this).

When no ``event_handler`` is given nothing is built or called: the protocol
handlers only make event maps when a handler is set, so events cost nothing on
the hot path of a connection that does not ask for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "EVENTS",
    "EventHandler",
    "ForwardEventHandler",
    "LoggingEventHandler",
    "Timeline",
    "TimingEventHandler",
    "format_event",
]

log = logging.getLogger("gunpy.events")

#: Every callback name, in the order Gun's ``gun_event`` declares them.
EVENTS: tuple[str, ...] = (
    "init",
    "domain_lookup_start",
    "domain_lookup_end",
    "connect_start",
    "connect_end",
    "tls_handshake_start",
    "tls_handshake_end",
    "request_start",
    "request_headers",
    "request_end",
    "push_promise_start",
    "push_promise_end",
    "response_start",
    "response_inform",
    "response_headers",
    "response_trailers",
    "response_end",
    "ws_upgrade",
    "ws_recv_frame_start",
    "ws_recv_frame_header",
    "ws_recv_frame_end",
    "ws_send_frame_start",
    "ws_send_frame_end",
    "protocol_changed",
    "origin_changed",
    "cancel",
    "disconnect",
    "terminate",
)


def _noop(self: Any, event: dict[str, Any], state: Any) -> Any:
    return state


class EventHandler:
    """Every Gun callback, returning the state unchanged (``gun_default_event_h``).

    Subclass it and override the callbacks you need; an instance is the
    ``handler`` of ``event_handler: (handler, state)``.
    """


for _name in EVENTS:
    setattr(EventHandler, _name, _noop)
del _name


class _EveryEvent(EventHandler):
    """A handler that treats every callback alike: ``handler.name(event, state)``
    is ``handler.on_event(name, event, state)``."""

    def on_event(self, name: str, event: dict[str, Any], state: Any) -> Any:
        raise NotImplementedError

    def __getattribute__(self, name: str) -> Any:
        if name in _EVENT_SET:
            on_event = object.__getattribute__(self, "on_event")
            return lambda event, state: on_event(name, event, state)
        return object.__getattribute__(self, name)


class LoggingEventHandler(_EveryEvent):
    """Logs every event through ``logging`` (default: logger ``gunpy.events``, DEBUG).

    The state is passed through untouched, so ``(LoggingEventHandler(), None)``
    is a complete ``event_handler`` value.
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.DEBUG) -> None:
        self.logger = logger or log
        self.level = level

    def on_event(self, name: str, event: dict[str, Any], state: Any) -> Any:
        if self.logger.isEnabledFor(self.level):
            self.logger.log(self.level, "gun event %s %s", name, format_event(event))
        return state


class Timeline:
    """What ``TimingEventHandler`` records: ``entries`` of ``(ms, name, event)``.

    ``ms`` counts from the ``init`` event (the connection's start), as a float.
    ``lines()`` renders the trace view: one line per event with the time, the
    time since the previous event and the event's main keys.  A ``Timeline`` may
    be shared by several connections; it is thread-safe.
    """

    def __init__(self, on_event: Callable[[str], None] | None = None) -> None:
        self.entries: list[tuple[float, str, dict[str, Any]]] = []
        self.on_event = on_event
        self._t0: float | None = None
        self._last = 0.0
        self._lock = threading.Lock()

    def record(self, name: str, event: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            if self._t0 is None:
                self._t0 = now
            ms = (now - self._t0) * 1000.0
            delta = ms - self._last
            self._last = ms
            self.entries.append((ms, name, event))
        if self.on_event is not None:
            self.on_event(_line(ms, delta, name, event))

    def names(self) -> list[str]:
        """The event names, in order (what the event-order tests compare)."""
        with self._lock:
            return [e[1] for e in self.entries]

    def lines(self) -> list[str]:
        with self._lock:
            entries = list(self.entries)
        out = []
        last = 0.0
        for ms, name, event in entries:
            out.append(_line(ms, ms - last, name, event))
            last = ms
        return out


def _line(ms: float, delta: float, name: str, event: dict[str, Any]) -> str:
    return f"{ms:10.3f} ms {delta:+9.3f}  {name:<22} {format_event(event)}"


class TimingEventHandler(_EveryEvent):
    """Records every event with its time in the state, a ``Timeline``.

    ``event_handler: (TimingEventHandler(), Timeline())``; read
    ``timeline.entries`` or ``timeline.lines()`` afterwards, or give
    ``Timeline(on_event=print)`` to see each line as it happens.
    """

    def on_event(self, name: str, event: dict[str, Any], state: Timeline) -> Timeline:
        state.record(name, event)
        return state


class ForwardEventHandler(_EveryEvent):
    """Sends ``("gun_event", conn, name, event)`` to the process in the state.

    ``event_handler: (ForwardEventHandler(), gunpy.self())`` puts the events in the
    caller's mailbox, in order with the connection's messages, so a test reads
    them with ``receive`` (Gun's ``gun_test_event_h`` does the same).  ``conn`` is
    the connection the event comes from.
    """

    def on_event(self, name: str, event: dict[str, Any], state: Any) -> Any:
        from ._process import self as current

        state.send(("gun_event", current(), name, event))
        return state


_EVENT_SET = frozenset(EVENTS)

# Keys shown by format_event, in this order, when present.
_SHOWN = (
    "stream_ref",
    "function",
    "method",
    "authority",
    "path",
    "status",
    "protocol",
    "type",
    "len",
    "frame",
    "close_code",
    "endpoint",
    "host",
    "port",
    "origin_host",
    "origin_port",
    "promised_stream_ref",
    "uri",
    "state",
    "reason",
    "error",
)


def format_event(event: dict[str, Any]) -> str:
    """A one-line summary of an event map (its main keys, short reprs)."""
    parts = []
    for k in _SHOWN:
        if k in event:
            v = event[k]
            r = repr(v)
            if len(r) > 80:
                r = r[:77] + "..."
            parts.append(f"{k}={r}")
    return " ".join(parts)


# -- used by the connection actor ------------------------------------------------------


def _check_event_handler(v: Any) -> bool:
    """Is ``v`` an ``event_handler`` option value: ``(handler, state)``?"""
    if not isinstance(v, tuple) or len(v) != 2:
        return False
    h = v[0]
    return any(callable(getattr(h, n, None)) for n in EVENTS)


class _Dispatcher:
    """The connection's side: calls ``handler.name(event, state)`` and keeps the state."""

    __slots__ = ("handler", "state", "_cache")

    def __init__(self, handler: Any, state: Any) -> None:
        self.handler = handler
        self.state = state
        self._cache: dict[str, Any] = {}

    def emit(self, name: str, event: dict[str, Any]) -> None:
        cache = self._cache
        fn = cache.get(name, _MISSING)
        if fn is _MISSING:
            fn = getattr(self.handler, name, None)
            if not callable(fn):
                fn = None
            cache[name] = fn
        if fn is None:
            return
        try:
            self.state = fn(event, self.state)
        except Exception:
            # Gun's process would crash; we keep the connection and the state.
            log.exception("gunpy event handler %r failed in %s", self.handler, name)


_MISSING = object()
