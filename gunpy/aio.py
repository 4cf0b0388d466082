"""asyncio bridge: coroutines await gunpy messages without blocking the event loop.

Theory of operation
-------------------
The loop's process *is* the process of the thread that runs the loop: the
``gunpy.self()`` of that thread.  So ``gunpy.open`` called from a coroutine makes
the loop's process the owner, requests reply to it by default, and connections
opened in that thread before the loop started are seen too.  What the bridge adds
is a way for a put into that mailbox, from any thread, to wake the loop:

* On the first ``gunpy.aio`` call in a loop, the thread's ``Mailbox`` is switched
  to a subclass (same layout, ``__class__`` assignment) whose ``put`` and
  ``put_many`` also record the message's index key and schedule one *dispatch* on
  the loop with ``loop.call_soon_threadsafe``; further puts before that dispatch
  runs only add their keys (one wake-up per burst, not per message).
* A waiting coroutine registers a *waiter*: the index keys its patterns name
  (``await_(conn, ref)`` waits on ``(conn, ref)``, the connection's ``gun_error``
  and ``gun_notify``, its monitor's ``DOWN``), or none when a pattern names no
  key.  The dispatch wakes the waiters of the keys that got messages, and the
  key-less waiters on any message: with many coroutines each awaiting its own
  stream, a message wakes one of them.
* A woken coroutine takes its message itself, with a non-blocking selective
  receive, in its own step.  Nothing is taken on its behalf, so a coroutine
  cancelled while it waits leaves every message where it was.
* No thread per wait and no polling: timeouts are ``loop.call_later`` handles.
* When the loop shuts down (``asyncio.run`` and ``asyncio.Runner`` close the
  loop's async generators, which closes a sentinel generator the bridge started),
  the mailbox gets its class back.  The thread's process lives on: it is the
  thread's, not the loop's.

The synchronous functions keep working on the same mailbox (they block the loop
while they wait).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Hashable
from typing import Any, Final

from . import await_ as _gun_await
from . import await_up as _gun_await_up
from ._process import _ms_to_seconds, _template_key, message_key
from .process import ANY, TIMEOUT, Mailbox, Pid, Ref, demonitor, monitor
from .process import self as _self

__all__ = ["await_", "await_body", "await_up", "receive", "self"]


class _Nothing:
    __slots__ = ()


_NOTHING: Final = _Nothing()

# Installed loops, by id() of the thread's mailbox (the state holds the mailbox).
_states: dict[int, _LoopState] = {}
_states_lock = threading.Lock()


class _LoopMailbox(Mailbox):
    """A thread's mailbox while an event loop runs in that thread: puts wake the loop."""

    __slots__ = ()

    def put(self, msg: Any, block: bool = True, timeout: float | None = None) -> None:
        Mailbox.put(self, msg)
        st = _states.get(id(self))
        if st is not None:
            st.signal((message_key(msg),))

    def put_many(self, msgs: list[Any]) -> None:
        Mailbox.put_many(self, msgs)
        st = _states.get(id(self))
        if st is not None:
            st.signal([message_key(m) for m in msgs])


def _set_class(box: Mailbox, cls: type[Mailbox]) -> None:
    """Switch a mailbox between ``Mailbox`` and ``_LoopMailbox`` (same layout)."""
    box.__class__ = cls


class _Waiter:
    __slots__ = ("fut", "timed_out")

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut
        self.timed_out = False

    def wake(self) -> None:
        if not self.fut.done():
            self.fut.set_result(None)

    def expire(self) -> None:
        self.timed_out = True
        self.wake()


class _LoopState:
    """The bridge between one thread's mailbox and the event loop running in it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pid: Pid, box: Mailbox) -> None:
        self.loop = loop
        self.pid = pid
        self.box = box
        self.orig_class: type[Mailbox] = type(box)
        self.lock = threading.Lock()
        self.new_keys: list[Hashable | None] = []
        self.scheduled = False
        self.keyed: dict[Hashable, dict[_Waiter, None]] = {}
        self.unkeyed: dict[_Waiter, None] = {}
        self.sentinel: AsyncGenerator[None, None] | None = None

    # -- any thread ----------------------------------------------------------------
    def signal(self, keys: Any) -> None:
        with self.lock:
            if not self.keyed and not self.unkeyed:
                return  # nobody waits: a waiter tries to take before it sleeps
            self.new_keys.extend(keys)
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.dispatch)
        except RuntimeError:  # the loop is closed: nothing can wait any more
            self.uninstall()

    # -- the loop's thread -------------------------------------------------------------
    def dispatch(self) -> None:
        with self.lock:
            keys, self.new_keys = self.new_keys, []
            self.scheduled = False
            woken = list(self.unkeyed)
            seen: set[Any] = set()
            for k in keys:
                if k is None:
                    continue
                try:
                    if k in seen:
                        continue
                    seen.add(k)
                    ws = self.keyed.get(k)
                except TypeError:  # an unhashable part in a user's message
                    continue
                if ws:
                    woken.extend(ws)
        for w in woken:
            w.wake()

    def register(self, w: _Waiter, keys: tuple[Hashable, ...] | None) -> None:
        with self.lock:
            if keys is None:
                self.unkeyed[w] = None
            else:
                for k in keys:
                    self.keyed.setdefault(k, {})[w] = None

    def unregister(self, w: _Waiter, keys: tuple[Hashable, ...] | None) -> None:
        with self.lock:
            if keys is None:
                self.unkeyed.pop(w, None)
            else:
                for k in keys:
                    ws = self.keyed.get(k)
                    if ws is not None:
                        ws.pop(w, None)
                        if not ws:
                            del self.keyed[k]

    def uninstall(self) -> None:
        """Give the mailbox its class back, if this is still its installation (the
        sentinel of a loop replaced by a later one may be closed long after)."""
        with _states_lock:
            current = _states.get(id(self.box)) is self
            if current:
                del _states[id(self.box)]
        if current and type(self.box) is _LoopMailbox:
            _set_class(self.box, self.orig_class)
        self.sentinel = None


async def _sentinel(st: _LoopState) -> AsyncGenerator[None, None]:
    """Closed by the loop's ``shutdown_asyncgens``: the loop is ending."""
    try:
        yield
    finally:
        st.uninstall()


def _install() -> _LoopState:
    loop = asyncio.get_running_loop()
    pid = _self()
    box = pid.mailbox
    if box is None or type(box) not in (Mailbox, _LoopMailbox):
        raise RuntimeError(f"gunpy.aio: {pid!r} has no plain mailbox for the event loop")
    with _states_lock:
        st = _states.get(id(box))
        if st is not None and st.loop is loop:
            return st
    if st is not None:
        st.uninstall()  # a loop that ran in this thread before and is gone
    st = _LoopState(loop, pid, box)
    with _states_lock:
        _states[id(box)] = st
    if type(box) is Mailbox:
        _set_class(box, _LoopMailbox)
    else:
        st.orig_class = Mailbox
    agen = _sentinel(st)
    st.sentinel = agen  # the loop only keeps a weak reference
    step = agen.__anext__()  # registers agen with the loop (its firstiter hook)
    try:
        step.send(None)
    except StopIteration:
        pass
    return st


def self() -> Pid:
    """The Pid of the process of the running loop (its thread's ``gunpy.self()``),
    with the loop's wake-ups installed.  Call from the loop's thread."""
    return _install().pid


def _keys(patterns: tuple[Any, ...]) -> tuple[Hashable, ...] | None:
    """The index keys every message matching ``patterns`` has, or None."""
    if not patterns:
        return None
    keys = []
    for p in patterns:
        k = _template_key(p)
        if k is None:
            return None
        keys.append(k)
    return tuple(keys)


async def _wait(
    st: _LoopState,
    keys: tuple[Hashable, ...] | None,
    attempt: Callable[[], Any],
    timeout: float | None,
) -> Any:
    """Call ``attempt`` (a non-blocking take) until it gives something, or ``TIMEOUT``.

    The waiter is registered before the first attempt, so a message put after an
    attempt always wakes it.
    """
    loop = st.loop
    w = _Waiter(loop.create_future())
    st.register(w, keys)
    handle = None
    try:
        while True:
            got = attempt()
            if got is not _NOTHING:
                return got
            if w.timed_out or timeout == 0:
                return TIMEOUT
            if timeout is not None and handle is None:
                handle = loop.call_later(timeout, w.expire)
            await w.fut
            w.fut = loop.create_future()
    finally:
        st.unregister(w, keys)
        if handle is not None:
            handle.cancel()


async def receive(*patterns: Any, after: int | float | str | None = None) -> Any:
    """``gunpy.receive`` for coroutines: the oldest message matching one of
    ``patterns`` (any message when none), or ``TIMEOUT`` after ``after`` ms.

    Cancelling the awaiting task leaves the mailbox as it was.
    """
    st = _install()
    secs = _ms_to_seconds(after)
    box = st.box

    def attempt() -> Any:
        m = box.receive(patterns, 0)
        return _NOTHING if m is TIMEOUT else m

    return await _wait(st, _keys(patterns), attempt, secs)


_TIMEOUT_RESULT: Final = ("error", "timeout")


async def await_(
    conn: Pid, ref: Any, timeout: Any = 5000, mref: Ref | None = None
) -> tuple[Any, ...]:
    """``gunpy.await_`` for coroutines: the stream's next message in Gun's shapes."""
    if isinstance(timeout, Ref) and mref is None:
        timeout, mref = 5000, timeout
    st = _install()
    secs = _ms_to_seconds(timeout)
    own = mref is None
    m = monitor(conn) if mref is None else mref
    keys = ((conn, ref), ("gun_error", conn), ("gun_notify", conn), ("DOWN", m))

    def attempt() -> Any:
        r = _gun_await(conn, ref, 0, m)
        return _NOTHING if r == _TIMEOUT_RESULT else r

    try:
        got = await _wait(st, keys, attempt, secs)
    finally:
        if own:
            demonitor(m, flush=True)
    return _TIMEOUT_RESULT if got is TIMEOUT else got


async def await_up(conn: Pid, timeout: Any = 5000, mref: Ref | None = None) -> tuple[str, Any]:
    """``gunpy.await_up`` for coroutines: ``("ok", protocol)`` or an error."""
    if isinstance(timeout, Ref) and mref is None:
        timeout, mref = 5000, timeout
    st = _install()
    secs = _ms_to_seconds(timeout)
    own = mref is None
    m = monitor(conn) if mref is None else mref

    def attempt() -> Any:
        r = _gun_await_up(conn, 0, m)
        return _NOTHING if r == _TIMEOUT_RESULT else r

    try:
        got = await _wait(st, (("gun_up", conn), ("DOWN", m)), attempt, secs)
    finally:
        if own:
            demonitor(m, flush=True)
    if got is TIMEOUT:
        return ("error", "timeout")
    result: tuple[str, Any] = got
    return result


_STREAM_TAGS = frozenset(
    {
        "gun_inform",
        "gun_response",
        "gun_data",
        "gun_trailers",
        "gun_push",
        "gun_upgrade",
        "gun_ws",
        "gun_sse",
        "gun_error",
    }
)


async def await_body(
    conn: Pid, ref: Any, timeout: Any = 5000, mref: Ref | None = None
) -> tuple[Any, ...]:
    """``gunpy.await_body`` for coroutines: ``("ok", body)``, ``("ok", body, trailers)``
    or an error; the timeout applies to each message.

    Cancelled while it waits, it puts the body parts it already took back in the
    mailbox, in order with the stream's later messages.
    """
    if isinstance(timeout, Ref) and mref is None:
        timeout, mref = 5000, timeout
    st = _install()
    secs = _ms_to_seconds(timeout)
    own = mref is None
    m = monitor(conn) if mref is None else mref
    box = st.box
    patterns = (
        ("gun_data", conn, ref, ANY, ANY),
        ("gun_trailers", conn, ref, ANY),
        ("gun_error", conn, ref, ANY),
        ("gun_error", conn, ANY),
        ("DOWN", m, ANY, ANY, ANY),
    )
    keys = ((conn, ref), ("gun_error", conn), ("DOWN", m))

    def attempt() -> Any:
        msg = box.receive(patterns, 0)
        return _NOTHING if msg is TIMEOUT else msg

    taken: list[Any] = []
    try:
        while True:
            msg = await _wait(st, keys, attempt, secs)
            if msg is TIMEOUT:
                return ("error", "timeout")
            tag = msg[0]
            if tag == "gun_data":
                taken.append(msg)
                if msg[3] == "fin":
                    return ("ok", b"".join(t[4] for t in taken))
            elif tag == "gun_trailers":
                return ("ok", b"".join(t[4] for t in taken), msg[3])
            elif tag == "gun_error":
                if len(msg) == 4:
                    return ("error", ("stream_error", msg[3]))
                return ("error", ("connection_error", msg[2]))
            else:
                return ("error", ("down", msg[4]))
    except asyncio.CancelledError:
        if taken:
            # Put the parts back, followed by the stream's messages that came after
            # them, so the stream reads the same as before.
            def later(x: Any) -> bool:
                return (
                    type(x) is tuple
                    and len(x) >= 4
                    and x[0] in _STREAM_TAGS
                    and x[1] is conn
                    and x[2] is ref
                )

            rest = []
            while (x := box.receive((later,), 0)) is not TIMEOUT:
                rest.append(x)
            st.pid.send_many(taken + rest)
        raise
    finally:
        if own:
            demonitor(m, flush=True)
