"""The pykka internals gunpy's process layer relies on (``gunpy/_process.py``).

``OwnerActor`` replaces pykka's inbox with a ``Mailbox`` and wraps the actor loop, and
``ActorRefPid`` talks to plain actors; both depend on pykka behaviour that is not
public API.  gunpy pins ``pykka>=4.4,<5``; these tests fail when an upgrade changes
any of it:

* ``Actor._create_actor_inbox`` (a staticmethod) is called by ``Actor.__init__`` and
  its result becomes ``actor_inbox`` (also ``ActorRef.actor_inbox``);
* ``Actor._actor_loop`` is the actor thread's target and runs
  ``_actor_loop_setup`` / ``_actor_loop_running`` / ``_actor_loop_teardown``;
* the inbox protocol: ``ActorRef.tell`` puts ``Envelope(message)`` (``reply_to`` None),
  ``ask`` an ``Envelope`` whose ``reply_to`` is a future; the loop calls ``get()``
  with no arguments and reads ``envelope.message`` / ``envelope.reply_to`` only (so an
  envelope made by the inbox itself is fine); the teardown drains with ``empty()``
  then ``get()``;
* ``Actor._handle_failure(type, value, tb)`` is called for an exception in
  ``on_receive`` (not for ``ask``) and in ``on_start``, and the loop stops once it has
  set ``actor_stopped``; ``on_failure`` follows;
* ``Actor._stop`` is how ``ActorRef.stop()`` stops the actor;
* ``ActorRef._actor_weakref()`` is the actor (``as_pid`` finds an OwnerActor's Pid
  through it);
* ``ActorRef.is_alive()`` turns false when the actor stops and ``tell`` to a dead
  actor raises ``ActorDeadError``.

Behavioural checks throughout: a ThreadingActor subclass with a recording inbox.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from pykka._envelope import Envelope


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


class RecordingInbox:
    """A FIFO inbox that records every call pykka makes on it."""

    def __init__(self) -> None:
        self._q: queue.Queue[Any] = queue.Queue()
        self.calls: list[tuple[Any, ...]] = []

    def put(self, envelope: Any, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("put", envelope, args, kwargs))
        self._q.put(envelope)

    def put_raw(self, message: Any) -> None:
        """Queue a bare message, as gunpy's Mailbox does for ``Pid.send``."""
        self._q.put(("raw", message))

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("get", args, kwargs))
        item = self._q.get(timeout=10)
        if type(item) is tuple and item[0] == "raw":
            return Envelope(item[1])  # an envelope made by the inbox, as Mailbox.get does
        return item

    def empty(self) -> bool:
        self.calls.append(("empty",))
        return self._q.empty()


class Hooked(pykka.ThreadingActor):
    """Records the hooks gunpy overrides, in the order pykka calls them."""

    def __init__(self, release: threading.Event | None = None) -> None:
        super().__init__()
        self.events: list[Any] = []
        self.release = release
        self.done = threading.Event()
        self.received: list[Any] = []

    @staticmethod
    def _create_actor_inbox() -> Any:
        return RecordingInbox()

    def _actor_loop(self) -> None:
        self.events.append(("_actor_loop", threading.current_thread()))
        try:
            super()._actor_loop()
        finally:
            self.events.append("_actor_loop end")
            self.done.set()

    def _actor_loop_setup(self) -> None:
        self.events.append("setup")
        super()._actor_loop_setup()

    def _actor_loop_running(self) -> None:
        self.events.append("running")
        super()._actor_loop_running()

    def _actor_loop_teardown(self) -> None:
        self.events.append("teardown")
        super()._actor_loop_teardown()

    def _stop(self) -> None:
        self.events.append("_stop")
        super()._stop()

    def on_stop(self) -> None:
        self.events.append("on_stop")

    def on_receive(self, message: Any) -> Any:
        if message == "block":
            assert self.release is not None
            assert self.release.wait(10)
        self.received.append(message)
        return ("reply", message)


class FailureHooked(pykka.ThreadingActor):
    """Overrides ``_handle_failure`` the way OwnerActor does for Exit: no log, stop."""

    def __init__(self, fail_on_start: bool = False) -> None:
        super().__init__()
        self.fail_on_start = fail_on_start
        self.failures: list[tuple[Any, Any, Any]] = []
        self.on_failure_calls: list[Any] = []
        self.loop_done = threading.Event()

    def _actor_loop(self) -> None:
        try:
            super()._actor_loop()
        finally:
            self.loop_done.set()

    def on_start(self) -> None:
        if self.fail_on_start:
            raise KeyError("on_start failed")

    def _handle_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.failures.append((exception_type, exception_value, traceback))
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.on_failure_calls.append(exception_value)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, BaseException):
            raise message
        return message


def actor_of(ref: pykka.ActorRef[Any]) -> Any:
    actor = ref._actor_weakref()
    assert actor is not None
    return actor


def test_pykka_version_is_in_the_pinned_range() -> None:
    """gunpy pins pykka>=4.4,<5: these hooks are checked against that range only."""
    major, minor = (int(x) for x in importlib.metadata.version("pykka").split(".")[:2])
    assert (major, minor) >= (4, 4)
    assert major < 5


def test_create_actor_inbox_is_a_staticmethod_called_by_init() -> None:
    """``_create_actor_inbox`` is an overridable staticmethod; ``Actor.__init__`` calls it
    and stores the result as ``actor_inbox`` before a subclass's ``__init__`` goes on
    (OwnerActor reads ``self.actor_inbox`` right after ``super().__init__()``)."""
    assert isinstance(inspect.getattr_static(pykka.Actor, "_create_actor_inbox"), staticmethod)
    assert isinstance(
        inspect.getattr_static(pykka.ThreadingActor, "_create_actor_inbox"), staticmethod
    )
    seen: list[Any] = []

    class Probe(Hooked):
        def __init__(self) -> None:
            super().__init__()
            seen.append(self.actor_inbox)

    actor = Probe()  # not started
    assert isinstance(actor.actor_inbox, RecordingInbox)
    assert seen == [actor.actor_inbox]
    assert actor.actor_ref.actor_inbox is actor.actor_inbox


def test_actor_loop_is_the_thread_target_and_runs_setup_running_teardown() -> None:
    """``_actor_loop`` (looked up on the instance, so a subclass override applies) runs in
    the actor's own thread and calls setup, running and teardown in that order."""
    ref = Hooked.start()
    actor = actor_of(ref)
    ref.stop(timeout=5)
    assert actor.done.wait(5)
    first, *rest = actor.events
    assert first[0] == "_actor_loop"
    assert first[1] is not threading.current_thread()
    assert rest == ["setup", "running", "_stop", "on_stop", "teardown", "_actor_loop end"]


def test_tell_puts_an_envelope_with_the_message_and_no_reply_to() -> None:
    """``ActorRef.tell(msg)`` calls ``actor_inbox.put(Envelope(msg))`` (one positional
    argument) and the loop hands ``envelope.message`` to on_receive."""
    ref = Hooked.start()
    actor = actor_of(ref)
    inbox = actor.actor_inbox
    ref.tell(("hello", 1))
    assert ref.ask("sync", timeout=5) == ("reply", "sync")
    puts = [c for c in inbox.calls if c[0] == "put"]
    assert type(puts[0][1]) is Envelope
    assert puts[0][1].message == ("hello", 1)
    assert puts[0][1].reply_to is None
    assert puts[0][2:] == ((), {})
    assert actor.received == [("hello", 1), "sync"]


def test_ask_puts_an_envelope_whose_reply_to_is_a_future() -> None:
    """``ask`` puts an ``Envelope`` with a ``reply_to`` future that the loop sets with
    on_receive's return value."""
    ref = Hooked.start()
    inbox = actor_of(ref).actor_inbox
    assert ref.ask("q", timeout=5) == ("reply", "q")
    env = next(c[1] for c in inbox.calls if c[0] == "put")
    assert type(env) is Envelope
    assert env.message == "q"
    assert isinstance(env.reply_to, pykka.Future)


def test_envelope_has_message_and_reply_to() -> None:
    """``pykka._envelope.Envelope(message, reply_to=None)`` with those two attributes (the
    Mailbox wraps bare messages in it and skips it in selective receives)."""
    env = Envelope(("m",))
    assert env.message == ("m",)
    assert env.reply_to is None
    future = pykka.ThreadingFuture()
    env2 = Envelope("x", future)
    assert (env2.message, env2.reply_to) == ("x", future)
    assert set(Envelope.__slots__) == {"message", "reply_to"}


def test_loop_calls_get_without_arguments_and_accepts_inbox_made_envelopes() -> None:
    """The running loop calls ``actor_inbox.get()`` with no arguments (Mailbox.get's
    defaults block forever), and needs only ``.message``/``.reply_to`` from what it gets:
    an Envelope the inbox made itself around a bare message works."""
    ref = Hooked.start()
    actor = actor_of(ref)
    inbox = actor.actor_inbox
    inbox.put_raw(("bare", 1))
    assert ref.ask("sync", timeout=5) == ("reply", "sync")
    assert actor.received == [("bare", 1), "sync"]
    ref.stop(timeout=5)
    assert actor.done.wait(5)
    gets = [c for c in inbox.calls if c[0] == "get"]
    assert gets
    assert all(c[1:] == ((), {}) for c in gets)


def test_teardown_drains_the_inbox_with_empty_then_get() -> None:
    """After stopping, the loop's teardown calls ``empty()`` and ``get()`` to fail what is
    left (an ``ask`` after the stop gets ActorDeadError)."""
    release = threading.Event()
    ref = Hooked.start(release)
    actor = actor_of(ref)
    inbox = actor.actor_inbox
    ref.tell("block")
    stop_future = ref.stop(block=False)
    late = ref.ask("late", block=False)
    n_before = len(inbox.calls)
    release.set()
    assert stop_future.get(timeout=5) is True
    with pytest.raises(pykka.ActorDeadError):
        late.get(timeout=5)
    assert actor.done.wait(5)
    after = [c[0] for c in inbox.calls[n_before:]]
    # the stop is taken by the running loop; teardown: empty() -> get() of "late" ->
    # empty() -> True.
    assert after[-3:] == ["empty", "get", "empty"]
    assert actor.received == ["block"]


def test_handle_failure_is_called_for_an_exception_in_on_receive() -> None:
    """An exception in on_receive for a ``tell`` calls ``_handle_failure(type, value, tb)``
    then ``on_failure``; a ``_handle_failure`` that sets ``actor_stopped`` (and unregisters)
    ends the loop, the thread exits and the ref is no longer alive."""
    ref = FailureHooked.start()
    actor = actor_of(ref)
    boom = RuntimeError("boom")
    ref.tell(boom)
    assert actor.loop_done.wait(5)
    assert len(actor.failures) == 1
    exc_type, exc_value, tb = actor.failures[0]
    assert exc_type is RuntimeError
    assert exc_value is boom
    assert tb is not None
    assert actor.on_failure_calls == [boom]
    assert not ref.is_alive()
    assert pykka.ActorRegistry.get_by_urn(ref.actor_urn) is None
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("after death")


def test_handle_failure_is_not_called_for_ask_and_is_called_for_on_start() -> None:
    """An exception while handling an ``ask`` goes back to the caller (no
    ``_handle_failure``, the actor lives); one in ``on_start`` goes to
    ``_handle_failure`` and stops the actor before it runs."""
    ref = FailureHooked.start()
    actor = actor_of(ref)
    with pytest.raises(ValueError, match="to the caller"):
        ref.ask(ValueError("to the caller"), timeout=5)
    assert actor.failures == []
    assert ref.is_alive()
    ref.stop(timeout=5)

    ref2 = FailureHooked.start(fail_on_start=True)
    actor2 = actor_of(ref2)
    assert actor2.loop_done.wait(5)
    assert [type(f[1]) for f in actor2.failures] == [KeyError]
    assert not ref2.is_alive()


def test_stop_goes_through__stop() -> None:
    """``ActorRef.stop()`` is handled by ``Actor._stop`` (which runs on_stop) in the
    actor's thread, and the ref then reports the actor dead."""
    ref = Hooked.start()
    actor = actor_of(ref)
    assert ref.stop(timeout=5) is True
    assert actor.done.wait(5)
    assert actor.events.count("_stop") == 1
    assert actor.events.index("_stop") < actor.events.index("on_stop")
    assert not ref.is_alive()
    assert actor.actor_stopped.is_set()


def test_actor_ref_holds_a_weakref_to_its_actor() -> None:
    """``ActorRef._actor_weakref()`` returns the actor itself: ``as_pid(actor_ref)`` uses it
    to map an OwnerActor's ref to that actor's Pid."""
    actor = Hooked()  # not started
    ref = actor.actor_ref
    assert ref._actor_weakref() is actor
    started = Hooked.start()
    assert isinstance(started._actor_weakref(), Hooked)
    assert started._actor_weakref().actor_ref.actor_urn == started.actor_urn


def test_tell_to_a_dead_actor_raises_actor_dead_error() -> None:
    """Plain actors as Pids (``ActorRefPid``) poll ``ActorRef.is_alive()`` and swallow
    the ``ActorDeadError`` that ``tell`` raises once the actor is gone."""
    ref = Hooked.start()
    assert ref.is_alive()
    ref.stop(timeout=5)
    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("x")


def test_handle_failure_signature() -> None:
    """``_handle_failure(exception_type, exception_value, traceback)`` and ``_stop()``,
    as OwnerActor overrides/calls them."""
    params = list(inspect.signature(pykka.Actor._handle_failure).parameters)
    assert params == ["self", "exception_type", "exception_value", "traceback"]
    assert list(inspect.signature(pykka.Actor._stop).parameters) == ["self"]
    for name in ("_actor_loop", "_actor_loop_setup", "_actor_loop_running", "_actor_loop_teardown"):
        assert list(inspect.signature(getattr(pykka.Actor, name)).parameters) == ["self"]
