"""Erlang processes for Python threads and pykka actors.

Theory of operation
-------------------
pykka gives threads, FIFO inboxes and ``tell``/``ask``.  Gun's users expect more:
a mailbox per process with *selective receive* and ``after`` timeouts, monitors
that deliver ``'DOWN'`` messages, timers, and ``!`` that never fails.  This module
brings exactly those, and nothing else:

* ``Mailbox``: an insertion-ordered ``dict`` of messages keyed by a sequence
  number, plus a secondary index from a message's *key* (``(conn, ref)`` for
  stream messages, ``("DOWN", mref)``, ``(tag, conn)`` for connection messages) to
  the sequence numbers of the messages with that key.  Any thread may ``put``; only
  the owning thread removes.  Receives whose patterns name a key (``await_``,
  ``await_body``, ``flush(ref)``, a template with a concrete conn and ref) look at
  those messages only, so a backlog of 10,000 unrelated messages costs nothing
  (a plain scan costs 50-80 ns per skipped message).
* ``Pid``: an address.  ``pid.send(msg)`` never raises; a message to a dead process
  is dropped, as with Erlang's ``!``.  A Pid dies once, with a reason, and its
  monitors get ``("DOWN", mref, "process", pid, reason)``.
* ``self()``: the calling thread's Pid (made on first use), or an ``OwnerActor``'s.
  A plain thread's death is seen through a sentinel object held only by the
  thread's ``threading.local`` storage, which CPython drops when the thread ends.
  The main thread never drops it, so the timer thread also polls the main thread
  (and plain pykka actors used as owners) every 50 ms: without it a script whose
  main thread returned while a connection actor (a non-daemon thread) lived would
  hang forever.
* One timer thread for the whole process (a heap of deadlines), never a
  ``threading.Timer`` per timer.
* ``OwnerActor``: a pykka ``ThreadingActor`` whose inbox *is* a ``Mailbox``.

pykka internals relied on (pinned ``pykka>=4.4,<5``; ``tests/unit/test_pykka_hooks.py``
fails if they change): ``Actor._create_actor_inbox`` (called from ``__init__``),
``Actor._actor_loop`` (the thread's target), ``Actor._handle_failure``, ``Envelope``,
and the inbox protocol ``put(envelope)`` / ``get() -> Envelope`` / ``empty()``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Final

import pykka
from pykka._envelope import Envelope

from .exceptions import Exit

__all__ = [
    "ANY",
    "TIMEOUT",
    "Mailbox",
    "OwnerActor",
    "Pid",
    "Ref",
    "cancel_timer",
    "demonitor",
    "flush_messages",
    "is_alive",
    "make_ref",
    "monitor",
    "receive",
    "select",
    "self",
    "send_after",
]

log = logging.getLogger("gunpy")


# ---------------------------------------------------------------------------
# Sentinels and references


class _Any:
    """The wildcard of tuple templates: ``("gun_ws", conn, ref, ANY)``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


class _Timeout:
    __slots__ = ()

    def __repr__(self) -> str:
        return "TIMEOUT"

    def __bool__(self) -> bool:
        return False


ANY: Final = _Any()
#: What ``receive`` returns when ``after`` ran out (it is falsy).
TIMEOUT: Final = _Timeout()

_ref_counter = itertools.count(1)


class Ref:
    """A unique, hashable reference (Erlang's ``make_ref()``).

    Stream refs, monitor refs and timer refs are all ``Ref``s.  Equality is
    identity, so hashing is as cheap as it gets.
    """

    __slots__ = ("_n", "_target")

    def __init__(self) -> None:
        self._n = next(_ref_counter)
        self._target: Pid | None = None  # for monitor refs: the monitored Pid

    def __repr__(self) -> str:
        return f"#Ref<{self._n}>"

    def __lt__(self, other: Ref) -> bool:  # Erlang terms are ordered; refs sort by creation
        return self._n < other._n


def make_ref() -> Ref:
    """A new unique reference."""
    return Ref()


def _ms_to_seconds(after: int | float | str | None) -> float | None:
    """Gun's timeouts are integer milliseconds or ``"infinity"``."""
    if after is None or after == "infinity":
        return None
    if isinstance(after, bool) or not isinstance(after, (int, float)) or after < 0:
        raise ValueError(f"timeout must be milliseconds >= 0 or 'infinity', not {after!r}")
    return after / 1000.0


# ---------------------------------------------------------------------------
# Message keys: the secondary index.

# Tags whose messages are indexed by (conn, ref): Gun's stream messages.
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
        "gun_tunnel_up",
        "gun_error",
    }
)
# Tags indexed by (tag, conn): connection messages.
_CONN_TAGS = frozenset({"gun_up", "gun_down", "gun_notify", "$reply"})


def message_key(msg: Any) -> Hashable | None:
    """The index key of a message, or None when it is not indexed."""
    t = type(msg)
    if (t is tuple or (t is not Envelope and isinstance(msg, tuple))) and len(msg) >= 2:
        tag = msg[0]
        if tag in _STREAM_TAGS:
            if tag == "gun_error" and len(msg) == 3:
                return ("gun_error", msg[1])  # connection-wide error
            if len(msg) >= 3:
                return (msg[1], msg[2])
            return None
        if tag == "DOWN":
            return ("DOWN", msg[1])
        if tag in _CONN_TAGS:
            return (tag, msg[1])
    return None


def _is_template(p: Any) -> bool:
    return type(p) is tuple


def _template_key(p: Any) -> Hashable | None:
    """The index key every message matching template ``p`` must have, or None."""
    if type(p) is not tuple or len(p) < 2 or p[0] is ANY:
        return None
    tag = p[0]
    if tag in _STREAM_TAGS:
        if tag == "gun_error" and len(p) == 3:
            parts: tuple[Any, ...] = ("gun_error", p[1])
        elif len(p) >= 3:
            parts = (p[1], p[2])
        else:
            return None
    elif tag == "DOWN":
        parts = ("DOWN", p[1])
    elif tag in _CONN_TAGS:
        parts = (tag, p[1])
    else:
        return None
    for part in parts:
        if part is ANY or (callable(part) and not isinstance(part, (Pid, Ref))):
            return None
    try:
        hash(parts)
    except TypeError:
        return None
    return parts


def match(pattern: Any, msg: Any) -> bool:
    """Whether ``msg`` matches ``pattern``.

    A pattern is ``ANY``, a predicate (any callable that is not a Pid), a tuple
    template matched element by element (recursively; ``ANY`` matches anything),
    a list template matched the same way, or a value compared with ``==``.
    """
    if pattern is ANY:
        return True
    tp = type(pattern)
    if tp is tuple or tp is list:
        if type(msg) is not tp and not (tp is tuple and isinstance(msg, tuple)):
            return False
        if len(msg) != len(pattern):
            return False
        for p, m in zip(pattern, msg, strict=True):
            if p is ANY:
                continue
            tpp = type(p)
            if tpp is tuple or tpp is list:
                if not match(p, m):
                    return False
            elif callable(p) and not isinstance(p, (Pid, Ref, type)):
                if not p(m):
                    return False
            elif not (p is m or p == m):
                return False
        return True
    if callable(pattern) and not isinstance(pattern, (Pid, Ref, type)):
        return bool(pattern(msg))
    return bool(pattern is msg or pattern == msg)


def _matcher(patterns: tuple[Any, ...]) -> Callable[[Any], bool]:
    if not patterns:
        return lambda m: True
    if len(patterns) == 1:
        p = patterns[0]
        return lambda m: match(p, m)
    return lambda m: any(match(p, m) for p in patterns)


# ---------------------------------------------------------------------------
# Mailbox


class Mailbox:
    """A process's mailbox: append from any thread, selective removal by its owner.

    It also implements pykka's inbox protocol (``put``/``get``/``empty``) so it can
    be an actor's inbox: ``get`` hands pykka the oldest message, wrapping a plain
    message in an ``Envelope``.
    """

    __slots__ = ("_cond", "_hidden", "_index", "_msgs", "_seq", "_waitlock", "_wakeup", "__weakref__")

    # A connection's inbox runs some casts on the sender's thread (ConnInbox).
    _inline: Callable[[tuple[Any, ...]], bool] | None = None

    def __init__(self) -> None:
        # A plain lock, not a Condition: only the owner ever waits, so one parked
        # lock (``_wakeup``) replaces Condition's waiter list and its Python-level
        # notify/wait (10% of a ping-pong round trip in the profile).
        self._cond = threading.Lock()
        self._waitlock = threading.Lock()
        self._wakeup: Any = None
        self._msgs: dict[int, Any] = {}
        self._index: dict[Hashable, deque[int]] = {}
        self._seq = 0
        # Messages a ``select`` body is looking at: invisible to every other
        # receive until the body passes them over (then they are back in place).
        self._hidden: set[int] = set()

    # -- any thread ---------------------------------------------------------
    def put(self, msg: Any, block: bool = True, timeout: float | None = None) -> None:
        """Append ``msg`` (pykka calls this with Envelopes; ``Pid.send`` with tuples)."""
        key = message_key(msg)
        with self._cond:
            seq = self._seq = self._seq + 1
            self._msgs[seq] = msg
            if key is not None:
                self._index_add(key, seq)
            self._notify()
            # Under the lock: ConnInbox's eventfd cannot be closed meanwhile.
            self._wake()

    def put_many(self, msgs: list[Any]) -> None:
        """Append several messages under one lock acquisition (the actor's batches)."""
        with self._cond:
            for msg in msgs:
                seq = self._seq = self._seq + 1
                self._msgs[seq] = msg
                key = message_key(msg)
                if key is not None:
                    self._index_add(key, seq)
            self._notify()
            self._wake()

    def _index_add(self, key: Hashable, seq: int) -> None:
        try:
            dq = self._index.get(key)
        except TypeError:  # an unhashable element in a user's own message: not indexed
            return
        if dq is None:
            self._index[key] = deque((seq,))
        else:
            dq.append(seq)

    def _notify(self) -> None:
        """Wake the owner if it waits (lock held)."""
        w = self._wakeup
        if w is not None:
            self._wakeup = None
            w.release()

    def _wait(self, timeout: float | None) -> None:
        """Wait (lock held, released meanwhile) until a put or ``timeout`` seconds."""
        w = self._waitlock
        w.acquire()
        self._wakeup = w
        self._cond.release()
        got = False
        try:
            got = w.acquire(True, -1 if timeout is None else timeout)
        finally:
            self._cond.acquire()
        if self._wakeup is w:  # not woken: timed out
            self._wakeup = None
            w.release()
        elif got:  # woken, and our second acquire took the lock back
            w.release()
        # else: woken just as the wait timed out; put() released it already

    def _wake(self) -> None:
        """Hook for inboxes that also wait on something else (the connection's socket)."""

    def __len__(self) -> int:
        return len(self._msgs)

    def empty(self) -> bool:
        return len(self._msgs) <= len(self._hidden)

    def messages(self) -> list[Any]:
        """A snapshot of the queued messages, oldest first (for debugging and tests)."""
        with self._cond:
            return list(self._msgs.values())

    # -- owner thread only ----------------------------------------------------
    def _take(self, seq: int) -> Any:
        """Remove message ``seq`` (lock held)."""
        msg = self._msgs.pop(seq)
        key = message_key(msg)
        if key is not None:
            try:
                dq = self._index.get(key)
            except TypeError:
                dq = None
            if dq is not None:
                if dq[0] == seq:
                    dq.popleft()
                else:
                    dq.remove(seq)
                if not dq:
                    del self._index[key]
        return msg

    def _find(self, patterns: tuple[Any, ...], after_seq: int = 0) -> int | None:
        """The seq of the first message (seq > after_seq) matching one of ``patterns``."""
        msgs = self._msgs
        if not msgs:
            return None
        keys: list[Hashable] | None = None
        if patterns:
            keys = []
            for p in patterns:
                k = _template_key(p)
                if k is None:
                    keys = None
                    break
                keys.append(k)
        hidden = self._hidden
        if keys is not None:
            # Every pattern names a key: only those messages can match (O(matching)).
            index = self._index
            best: int | None = None
            for k, p in zip(keys, patterns, strict=True):
                dq = index.get(k)
                if not dq:
                    continue
                for seq in dq:
                    if best is not None and seq >= best:
                        break
                    if seq > after_seq and seq not in hidden and match(p, msgs[seq]):
                        best = seq
                        break
            return best
        m = _matcher(patterns)
        for seq, msg in msgs.items():
            if seq > after_seq and type(msg) is not Envelope and seq not in hidden and m(msg):
                return seq
        return None

    def receive(self, patterns: tuple[Any, ...], timeout: float | None) -> Any:
        """Selective receive: see the module-level ``receive``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                seq = self._find(patterns)
                if seq is not None:
                    return self._take(seq)
                if deadline is None:
                    self._wait(None)
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return TIMEOUT
                    self._wait(left)

    def receive_keyed(
        self,
        keys: tuple[Hashable, ...],
        timeout: float | None,
        tags: frozenset[str] | None = None,
    ) -> Any:
        """Take the oldest message whose key is one of ``keys`` (and, with ``tags``,
        whose tag is one of them: ``await_body`` leaves a ``gun_response`` queued)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        index = self._index
        hidden = self._hidden
        msgs = self._msgs
        with self._cond:
            while True:
                best: int | None = None
                for k in keys:
                    dq = index.get(k)
                    if not dq:
                        continue
                    head = dq[0]
                    if (hidden and head in hidden) or (tags is not None and msgs[head][0] not in tags):
                        head = next(
                            (
                                q
                                for q in dq
                                if q not in hidden and (tags is None or msgs[q][0] in tags)
                            ),
                            -1,
                        )
                        if head < 0:
                            continue
                    if best is None or head < best:
                        best = head
                if best is not None:
                    return self._take(best)
                if deadline is None:
                    self._wait(None)
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return TIMEOUT
                    self._wait(left)

    def flush(self, patterns: tuple[Any, ...]) -> int:
        """Remove every queued message matching one of ``patterns``; return how many."""
        n = 0
        with self._cond:
            while True:
                seq = self._find(patterns)
                if seq is None:
                    return n
                self._take(seq)
                n += 1

    def flush_keys(self, keys: tuple[Hashable, ...], pred: Callable[[Any], bool] | None = None) -> int:
        """Remove every queued message with one of ``keys`` (and satisfying ``pred``)."""
        n = 0
        with self._cond:
            for k in keys:
                dq = self._index.get(k)
                if not dq:
                    continue
                for seq in list(dq):
                    if seq in self._hidden:
                        continue
                    if pred is None or pred(self._msgs[seq]):
                        self._take(seq)
                        n += 1
        return n

    def _next_after(self, after_seq: int, deadline: float | None) -> tuple[int, Any] | None:
        """The first message with seq > after_seq, waiting until ``deadline``; not removed."""
        with self._cond:
            while True:
                hidden = self._hidden
                for seq, msg in self._msgs.items():
                    if seq > after_seq and type(msg) is not Envelope and seq not in hidden:
                        return seq, msg
                if deadline is None:
                    self._wait(None)
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._wait(left)

    def _remove(self, seq: int) -> None:
        with self._cond:
            self._hidden.discard(seq)
            if seq in self._msgs:
                self._take(seq)

    def _hide(self, seq: int) -> None:
        with self._cond:
            self._hidden.add(seq)

    def _unhide(self, seq: int) -> None:
        with self._cond:
            self._hidden.discard(seq)

    # -- pykka inbox protocol ------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The oldest message, as pykka wants it (an ``Envelope``)."""
        with self._cond:
            while len(self._msgs) <= len(self._hidden):
                if not block:
                    raise queue.Empty
                self._wait(timeout)
                if timeout is not None and len(self._msgs) <= len(self._hidden):
                    raise queue.Empty
            hidden = self._hidden
            seq = next(q for q in self._msgs if q not in hidden)
            msg = self._take(seq)
        if type(msg) is Envelope:
            return msg
        return Envelope(msg)


# ---------------------------------------------------------------------------
# Pids, monitors and process exit


_pid_counter = itertools.count(1)


class Pid:
    """The address of a process: a thread with a mailbox, an actor, or a wrapper.

    ``send`` never raises.  A Pid ends once (``_exit``) with a reason; monitors then
    receive ``("DOWN", mref, "process", pid, reason)``.
    """

    __slots__ = ("__weakref__", "_alive", "_box", "_lock", "_monitors", "_n", "_reason", "name")

    def __init__(self, box: Mailbox | None, name: str = "") -> None:
        self._box = box
        self._alive = True
        self._reason: Any = None
        self._lock = threading.Lock()
        self._monitors: dict[Ref, Pid] = {}
        self._n = next(_pid_counter)
        self.name = name

    def __repr__(self) -> str:
        return f"<Pid {self._n}{' ' + self.name if self.name else ''}>"

    def __lt__(self, other: Pid) -> bool:
        return self._n < other._n

    def send(self, msg: Any) -> None:
        """Erlang's ``pid ! msg``: never raises, dropped if the process is gone."""
        if self._alive and self._box is not None:
            self._box.put(msg)

    def send_many(self, msgs: list[Any]) -> None:
        if self._alive and self._box is not None:
            self._box.put_many(msgs)

    def is_alive(self) -> bool:
        return self._alive

    @property
    def exit_reason(self) -> Any:
        """The reason the process ended with (None while it runs)."""
        return self._reason

    @property
    def mailbox(self) -> Mailbox | None:
        return self._box

    def _add_monitor(self, mref: Ref, watcher: Pid) -> bool:
        with self._lock:
            if not self._alive:
                return False
            self._monitors[mref] = watcher
            return True

    def _remove_monitor(self, mref: Ref) -> None:
        with self._lock:
            self._monitors.pop(mref, None)

    def _exit(self, reason: Any) -> None:
        """End this process with ``reason``: fire the monitors (once)."""
        with self._lock:
            if not self._alive:
                return
            self._alive = False
            self._reason = reason
            monitors, self._monitors = self._monitors, {}
        _watchdog_forget(self)
        for mref, watcher in monitors.items():
            watcher.send(("DOWN", mref, "process", self, reason))

    def _poll_dead(self) -> Any:
        """Watchdog hook: a reason if this process is found dead, else None."""
        return None


class _MainThreadPid(Pid):
    __slots__ = ()

    def _poll_dead(self) -> Any:
        return None if threading.main_thread().is_alive() else "normal"


class ActorRefPid(Pid):
    """A Pid for a plain pykka actor: messages arrive through ``tell`` (on_receive style)."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        super().__init__(None, name=str(ref))
        self.ref = ref

    def send(self, msg: Any) -> None:
        if self._alive:
            try:
                self.ref.tell(msg)
            except pykka.ActorDeadError:
                pass  # Erlang's ! to a dead process is silent; pykka's tell is not.

    def send_many(self, msgs: list[Any]) -> None:
        for m in msgs:
            self.send(m)

    def _poll_dead(self) -> Any:
        return None if self.ref.is_alive() else "normal"


class FunPid(Pid):
    """A ``reply_to`` function: called with the message (plus args) in the sender's thread.

    Gun 2.2+ accepts ``fun/1``, ``{Fun, Args}`` and ``{M, F, A}`` as reply_to and calls
    them inside the connection process; gunpy calls them in the connection actor.
    An exception in the function is logged and swallowed, like a send that fails.
    """

    __slots__ = ("args", "fun")

    def __init__(self, fun: Callable[..., Any], args: tuple[Any, ...] = ()) -> None:
        super().__init__(None, name=getattr(fun, "__name__", "fun"))
        self.fun = fun
        self.args = args

    def send(self, msg: Any) -> None:
        try:
            self.fun(msg, *self.args)
        except Exception:
            log.exception("reply_to function %r failed on %r", self.fun, msg)

    def send_many(self, msgs: list[Any]) -> None:
        for m in msgs:
            self.send(m)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, FunPid) and other.fun == self.fun and other.args == self.args
        )

    def __hash__(self) -> int:
        return hash((self.fun, self.args))


_actor_pids: dict[str, ActorRefPid] = {}
_actor_pids_lock = threading.Lock()


def as_pid(x: Any) -> Pid:
    """Turn a ``reply_to``/owner value into a Pid (Pid, OwnerActor or its ref, pykka ref,
    callable, or ``(callable, args)``)."""
    if isinstance(x, Pid):
        return x
    if isinstance(x, OwnerActor):
        return x.pid
    if isinstance(x, pykka.ActorRef):
        wref = getattr(x, "_actor_weakref", None)  # pykka 4 internal; see test_pykka_hooks
        actor = wref() if wref is not None else None
        if isinstance(actor, OwnerActor):
            return actor.pid
        # One Pid per actor, so the pid in a DOWN equals the one the caller holds.
        with _actor_pids_lock:
            pid = _actor_pids.get(x.actor_urn)
            if pid is None or not pid.is_alive():
                pid = _actor_pids[x.actor_urn] = ActorRefPid(x)
                if len(_actor_pids) > 1024:
                    for urn in [u for u, p in _actor_pids.items() if not p.is_alive()]:
                        del _actor_pids[urn]
            return pid
    if callable(x):
        return FunPid(x)
    if (
        isinstance(x, tuple)
        and len(x) == 2
        and callable(x[0])
        and isinstance(x[1], (list, tuple))
    ):
        return FunPid(x[0], tuple(x[1]))
    raise TypeError(f"not a process or a function: {x!r}")


# -- the calling thread's process -------------------------------------------------------

_local = threading.local()


class _ThreadSentinel:
    """Held only by a thread's ``threading.local`` storage: dropped when the thread ends."""

    __slots__ = ("pid", "reason")

    def __init__(self, pid: Pid) -> None:
        self.pid = pid
        self.reason: Any = "normal"

    def __del__(self) -> None:
        self.pid._exit(self.reason)


def self() -> Pid:
    """The calling process's Pid (Erlang's ``self()``); a plain thread gets one on first use."""
    try:
        pid: Pid = _local.pid
        return pid
    except AttributeError:
        pass
    if threading.current_thread() is threading.main_thread():
        pid = _MainThreadPid(Mailbox(), name="main")
    else:
        pid = Pid(Mailbox(), name=threading.current_thread().name)
        _local.sentinel = _ThreadSentinel(pid)
    _local.pid = pid
    return pid


def _backlog() -> int:
    """How many messages wait in the calling process's mailbox (0 without one)."""
    pid = _local.__dict__.get("pid")
    box = pid._box if pid is not None else None
    return len(box._msgs) if box is not None else 0


def _set_self(pid: Pid) -> None:
    _local.pid = pid


def _mailbox() -> Mailbox:
    box = self()._box
    assert box is not None
    return box


_prev_excepthook = threading.excepthook


def _excepthook(args: threading.ExceptHookArgs) -> None:
    """Record a thread's uncaught exception as its exit reason (its monitors see it)."""
    exc = args.exc_value
    sentinel = getattr(_local, "sentinel", None)
    if sentinel is not None:
        sentinel.reason = exc.reason if isinstance(exc, Exit) else ("exception", exc)
    if isinstance(exc, Exit):
        return  # exit(Reason) is how a process chooses to end, not a crash to print
    _prev_excepthook(args)


threading.excepthook = _excepthook


def is_alive(pid: Pid) -> bool:
    return pid.is_alive()


def monitor(pid: Any) -> Ref:
    """Monitor ``pid``: its death sends ``("DOWN", mref, "process", pid, reason)`` to the
    caller.  Monitoring a process that is already gone sends the DOWN at once, with
    the reason it ended with (``"noproc"`` if unknown; Erlang always says noproc)."""
    target = as_pid(pid)
    me = self()
    mref = Ref()
    mref._target = target
    if not target._add_monitor(mref, me):
        # Erlang says noproc here.  gunpy remembers how a Pid ended, so it says
        # that instead: a connection that failed before its owner could monitor it
        # (await_up right after open) still reports ("shutdown", econnrefused).
        reason = target._reason if target._reason is not None else "noproc"
        me.send(("DOWN", mref, "process", target, reason))
    elif type(target)._poll_dead is not Pid._poll_dead:
        # Deaths that nothing reports (the main thread, a plain pykka actor) are
        # polled by the watchdog, only while someone monitors them.
        _watchdog_add(target)
    return mref


def demonitor(mref: Ref, flush: bool = False) -> bool:
    """Stop monitoring; with ``flush`` also drop a DOWN already received (Erlang's
    ``demonitor(Ref, [flush])``)."""
    target = mref._target
    if target is not None:
        target._remove_monitor(mref)
    if flush:
        _mailbox().flush_keys((("DOWN", mref),))
    return True


def receive(*patterns: Any, after: int | float | str | None = None) -> Any:
    """Selective receive on the calling process's mailbox.

    Returns the oldest message matching one of ``patterns`` (all messages when none
    is given) and leaves the others queued in order; returns ``TIMEOUT`` when
    ``after`` milliseconds pass first (``None``/``"infinity"``: wait forever).
    """
    return _mailbox().receive(patterns, _ms_to_seconds(after))


def select(after: int | float | str | None = None) -> Iterator[Any]:
    """Erlang's ``receive ... after ... end``, clause for clause::

        for msg in select(after=1000):
            match msg:
                case ("gun_ws", c, r, frame) if c == conn:
                    break            # clause taken: the message is consumed
        else:
            ...                      # after 1000

    Messages are offered oldest first.  One that the loop body passes over (no
    ``break``) stays in the mailbox in its place; the message the body leaves the
    loop on (``break``, ``return`` or an exception) is consumed; while the body runs,
    that message is invisible to any other receive, so the body may call ``receive``
    (or recurse into another ``select``) freely.  The ``else`` block
    runs when ``after`` ms pass with no clause taken.  Use it directly in the ``for``
    statement: consumption happens when the loop drops the generator.
    """
    box = _mailbox()
    timeout = _ms_to_seconds(after)
    deadline = None if timeout is None else time.monotonic() + timeout
    pos = 0
    while True:
        found = box._next_after(pos, deadline)
        if found is None:
            return
        seq, msg = found
        # While the body runs, the message is out of sight of every other receive
        # (a receive or select inside the body must not see it again), yet keeps
        # its place in case the body passes it over.
        box._hide(seq)
        consumed = True
        try:
            yield msg
            consumed = False  # resumed: the body passed this message over
        finally:
            if consumed:
                box._remove(seq)
            else:
                box._unhide(seq)
        pos = seq


def flush_messages(*patterns: Any) -> int:
    """Remove every queued message matching one of ``patterns``; return how many."""
    return _mailbox().flush(patterns)


# ---------------------------------------------------------------------------
# The timer thread: send_after, cancel_timer, and the 50 ms watchdog.


class _Timers:
    WATCH_INTERVAL = 0.05

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Ref]] = []
        self._live: dict[Ref, tuple[float, Pid, Any]] = {}
        self._watched: dict[int, Pid] = {}
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gunpy-timers", daemon=True)
            self._thread.start()

    def send_after(self, ms: int | float, pid: Pid, msg: Any) -> Ref:
        tref = Ref()
        deadline = time.monotonic() + ms / 1000.0
        with self._cond:
            self._live[tref] = (deadline, pid, msg)
            heapq.heappush(self._heap, (deadline, next(self._seq), tref))
            self._ensure_thread()
            self._cond.notify()
        return tref

    def cancel(self, tref: Ref) -> int | bool:
        with self._cond:
            entry = self._live.pop(tref, None)
        if entry is None:
            return False
        return max(0, round((entry[0] - time.monotonic()) * 1000))

    def watch(self, pid: Pid) -> None:
        with self._cond:
            self._watched[id(pid)] = pid
            self._ensure_thread()
            self._cond.notify()

    def forget(self, pid: Pid) -> None:
        if self._watched:
            with self._cond:
                self._watched.pop(id(pid), None)

    def _run(self) -> None:
        while True:
            due: list[tuple[Pid, Any]] = []
            with self._cond:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, tref = heapq.heappop(self._heap)
                    entry = self._live.pop(tref, None)
                    if entry is not None:
                        due.append((entry[1], entry[2]))
                if not due:
                    wait: float | None = None
                    if self._heap:
                        wait = self._heap[0][0] - now
                    if self._watched:
                        wait = self.WATCH_INTERVAL if wait is None else min(wait, self.WATCH_INTERVAL)
                    self._cond.wait(wait)
                watched = list(self._watched.values())
            for pid, msg in due:
                pid.send(msg)
            for pid in watched:
                try:
                    reason = pid._poll_dead()
                except Exception:  # pragma: no cover - defensive: never kill the timer thread
                    log.exception("watchdog poll failed for %r", pid)
                    continue
                if reason is not None:
                    pid._exit(reason)


_timers = _Timers()


def _watchdog_add(pid: Pid) -> None:
    _timers.watch(pid)


def _watchdog_forget(pid: Pid) -> None:
    _timers.forget(pid)


def send_after(ms: int | float, pid: Any, msg: Any) -> Ref:
    """Send ``msg`` to ``pid`` after ``ms`` milliseconds; returns a timer ref
    (Erlang's ``erlang:send_after/3``)."""
    return _timers.send_after(ms, as_pid(pid), msg)


def cancel_timer(tref: Ref) -> int | bool:
    """Cancel a timer: the milliseconds that were left, or False if it already fired."""
    return _timers.cancel(tref)


# ---------------------------------------------------------------------------
# OwnerActor


class OwnerActor(pykka.ThreadingActor):
    """A pykka actor that can own gunpy connections.

    Its pykka inbox is a ``Mailbox`` and ``self()`` inside it is ``self.pid``, so
    Gun messages reach ``on_receive`` (gen_server ``handle_info`` style), and a
    handler may also block in ``self.receive(...)``, ``gunpy.select`` or
    ``gunpy.await_`` (inline style).  Raising ``Exit(reason)`` stops the actor with
    that reason; its monitors (e.g. the connections it owns) see it in ``DOWN``.
    """

    pid: Pid

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        box = self.actor_inbox
        assert isinstance(box, Mailbox)
        self.pid = Pid(box, name=type(self).__name__)
        self._exit_reason: Any = "normal"

    @staticmethod
    def _create_actor_inbox() -> Any:
        return Mailbox()

    def _actor_loop(self) -> None:
        _set_self(self.pid)
        try:
            super()._actor_loop()
        finally:
            self.pid._exit(self._exit_reason)

    def _handle_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        if isinstance(exception_value, Exit):
            self._exit_reason = exception_value.reason
            # An Exit is a decision, not a crash: stop without logging a traceback.
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            return
        self._exit_reason = ("exception", exception_value)
        super()._handle_failure(exception_type, exception_value, traceback)

    def receive(self, *patterns: Any, after: int | float | str | None = None) -> Any:
        """Selective receive on this actor's mailbox (call it from the actor's thread)."""
        box = self.actor_inbox
        assert isinstance(box, Mailbox)
        return box.receive(patterns, _ms_to_seconds(after))


