"""Unit tests of gunpy's process layer (``gunpy.process`` / ``gunpy._process``).

Each test names the Erlang behaviour it checks.  The tests run in pytest's main
thread, whose Pid (``process.self()``) and mailbox live for the whole session, so
an autouse fixture empties that mailbox before and after every test and stops any
actor a test left running.

Synchronisation is by ``receive(..., after=...)``, ``threading.Event``, queues and
joins only; the sole timing assertions are generous upper bounds.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gunpy import _process, process
from gunpy.process import ANY, TIMEOUT, Exit, Pid

REPO = Path(__file__).resolve().parents[2]

# Unhandled exceptions in plain threads are the point of some tests; pytest reports
# them as warnings, which this project turns into errors.
thread_exceptions_expected = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning"
)


@pytest.fixture(autouse=True)
def _clean_process() -> Iterator[None]:
    """Each test starts and ends with an empty main-thread mailbox and no actors."""
    process.flush()
    yield
    pykka.ActorRegistry.stop_all(timeout=10)
    process.flush()


def queued() -> list[Any]:
    """The calling thread's queued messages, oldest first."""
    box = process.self().mailbox
    assert box is not None
    return box.messages()


def send_all(*msgs: Any) -> None:
    me = process.self()
    for m in msgs:
        me.send(m)


def a_pid(name: str = "conn") -> Pid:
    """A Pid value to put in messages (a connection's address, say)."""
    return Pid(process.Mailbox(), name=name)


def spawn(body: Callable[[], Any] = lambda: None) -> tuple[threading.Thread, Pid, threading.Event]:
    """A plain thread that makes its Pid, hands it over, waits for ``go``, then runs ``body``."""
    handoff: queue.Queue[Pid] = queue.Queue()
    go = threading.Event()

    def run() -> None:
        handoff.put(process.self())
        assert go.wait(10)
        body()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, handoff.get(timeout=5), go


def wait_down(mref: process.Ref, pid: Pid, after: int = 2000) -> Any:
    """The reason of the DOWN for ``mref`` (fails the test when none comes in time)."""
    msg = process.receive(("DOWN", mref, "process", pid, ANY), after=after)
    assert msg is not TIMEOUT, f"no DOWN for {pid!r} within {after} ms"
    return msg[4]


# ---------------------------------------------------------------------------
# receive


def test_receive_is_selective_and_leaves_the_rest_in_order() -> None:
    """Erlang selective receive: the first matching message is taken, the others stay
    queued in their arrival order."""
    send_all(("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5))
    assert process.receive(("b", ANY), after=0) == ("b", 2)
    assert queued() == [("a", 1), ("a", 3), ("c", 4), ("b", 5)]
    assert process.receive(("c", ANY), after=0) == ("c", 4)
    assert queued() == [("a", 1), ("a", 3), ("b", 5)]


def test_receive_after_0_returns_at_once() -> None:
    """``receive ... after 0``: scan what is queued, never wait."""
    send_all(*[("other", i) for i in range(100)])
    t0 = time.monotonic()
    assert process.receive(("wanted",), after=0) is TIMEOUT
    assert time.monotonic() - t0 < 1.0
    send_all(("wanted",))
    assert process.receive(("wanted",), after=0) == ("wanted",)
    assert len(queued()) == 100


def test_timeout_is_returned_and_is_falsy() -> None:
    """The ``after`` clause: ``receive`` returns the TIMEOUT sentinel, which is falsy."""
    result = process.receive(("never",), after=20)
    assert result is TIMEOUT
    assert not result
    assert bool(TIMEOUT) is False
    assert repr(TIMEOUT) == "TIMEOUT"


def test_after_is_in_milliseconds() -> None:
    """Erlang's ``after`` counts milliseconds: a message due in 50 ms is caught by after=1000."""
    process.send_after(50, process.self(), ("late",))
    assert process.receive(("late",), after=1000) == ("late",)


@pytest.mark.parametrize("bad", [-1, True, "soon", [5]])
def test_after_rejects_what_is_not_a_timeout(bad: Any) -> None:
    """Gun's timeouts are ``timeout()``: non-negative integers or ``infinity``."""
    with pytest.raises(ValueError):
        process.receive(after=bad)


def test_no_pattern_receives_any_message_oldest_first() -> None:
    """``receive Msg -> ... end``: with no pattern every message matches, oldest first."""
    send_all("x", 2, ("y",), ["z"])
    assert [process.receive(after=0) for _ in range(4)] == ["x", 2, ("y",), ["z"]]
    assert process.receive(after=0) is TIMEOUT


def test_tuple_templates_with_any_wildcard() -> None:
    """``{tag, _, X}`` patterns: tuple templates match element by element, ANY is ``_``,
    the arity must be equal and other values compare with ``==``."""
    send_all(("tag", 1), ("tag", 1, 2, 3), ("tag", 2, "x"), ("tag", 1, "y"))
    assert process.receive(("tag", ANY, "y"), after=0) == ("tag", 1, "y")
    assert process.receive(("tag", ANY, ANY), after=0) == ("tag", 2, "x")
    assert process.receive(("tag", ANY, ANY), after=0) is TIMEOUT  # arity 2 and 4 remain
    assert queued() == [("tag", 1), ("tag", 1, 2, 3)]


def test_nested_tuple_and_list_templates() -> None:
    """Nested patterns: ``{gun_upgrade, _, _, [<<"websocket">>], _}`` and ``{a, {b, _}}``;
    a list template matches lists only, a tuple template tuples only."""
    send_all(
        ("gun_upgrade", "c", "r", ("websocket",), []),  # a tuple where the list is expected
        ("gun_upgrade", "c", "r", ["websocket"], [("k", "v")]),
        ("a", ("b", 1, 2)),
        ("a", ["b", 1]),
        ("a", ("b", 1)),
        ["l", ("t", 9)],
    )
    assert process.receive(("gun_upgrade", ANY, ANY, ["websocket"], ANY), after=0) == (
        "gun_upgrade",
        "c",
        "r",
        ["websocket"],
        [("k", "v")],
    )
    assert process.receive(("a", ("b", ANY)), after=0) == ("a", ("b", 1))
    assert process.receive(["l", ("t", ANY)], after=0) == ["l", ("t", 9)]
    assert process.receive(("a", ["b", ANY]), after=0) == ("a", ["b", 1])
    assert queued() == [("gun_upgrade", "c", "r", ("websocket",), []), ("a", ("b", 1, 2))]


def test_predicates_as_patterns_and_inside_templates() -> None:
    """Guards (``when``): a callable is a predicate, on its own or as a template element."""
    send_all(("n", 1), ("n", 20), ("n", 3), 7, 40)
    assert process.receive(("n", lambda x: x > 10), after=0) == ("n", 20)
    assert process.receive(lambda m: isinstance(m, int) and m > 10, after=0) == 40
    assert process.receive(lambda m: False, after=0) is TIMEOUT
    assert queued() == [("n", 1), ("n", 3), 7]


def test_several_patterns_oldest_matching_message_wins() -> None:
    """A receive with several clauses takes the oldest message that matches any clause,
    not the first clause's oldest match."""
    send_all(("c", 0), ("b", 1), ("a", 2), ("b", 3))
    assert process.receive(("a", ANY), ("b", ANY), after=0) == ("b", 1)
    assert process.receive(("a", ANY), ("b", ANY), after=0) == ("a", 2)
    assert process.receive(("a", ANY), ("b", ANY), after=0) == ("b", 3)
    assert queued() == [("c", 0)]


@pytest.mark.parametrize("after", ["infinity", None])
def test_receive_waits_forever_for_a_message_from_another_thread(after: Any) -> None:
    """``after infinity`` (or no after clause): block until a matching message arrives,
    here sent by another thread, which wakes the receiver."""
    me = process.self()
    send_all(("noise",))
    started = threading.Event()

    def sender() -> None:
        assert started.wait(5)
        me.send(("unrelated",))
        me.send(("hello", threading.current_thread().name))

    t = threading.Thread(target=sender, name="sender-thread", daemon=True)
    t.start()
    started.set()
    assert process.receive(("hello", ANY), after=after) == ("hello", "sender-thread")
    t.join(5)
    assert queued() == [("noise",), ("unrelated",)]


# -- the indexed path (templates naming a concrete conn and ref) ----------------------


def test_indexed_receive_returns_oldest_match_across_templates() -> None:
    """Erlang's receive over several stream clauses (as ``gun:await`` does) takes the
    oldest message matching any of them, also when the templates use the (conn, ref)
    index."""
    conn, other = a_pid("conn"), a_pid("other")
    r1, r2 = process.make_ref(), process.make_ref()
    templates = (
        ("gun_data", conn, r1, ANY, ANY),
        ("gun_data", conn, r2, ANY, ANY),
        ("gun_response", conn, r1, ANY, ANY, ANY),
    )
    assert all(_process._template_key(t) is not None for t in templates)  # indexed path
    msgs = [
        ("gun_data", other, r1, "nofin", b"other conn"),
        ("gun_response", conn, r1, "nofin", 200, []),
        ("unrelated",),
        ("gun_data", conn, r2, "nofin", b"r2-1"),
        ("gun_inform", conn, r1, 100, []),
        ("gun_data", conn, r1, "nofin", b"r1-1"),
        ("gun_data", conn, r2, "fin", b"r2-2"),
        ("gun_data", conn, r1, "fin", b"r1-2"),
    ]
    send_all(*msgs)
    got = [process.receive(*templates, after=0) for _ in range(5)]
    assert got == [msgs[1], msgs[3], msgs[5], msgs[6], msgs[7]]
    assert process.receive(*templates, after=0) is TIMEOUT
    assert queued() == [msgs[0], msgs[2], msgs[4]]
    # The same with the templates in the reverse order: still arrival order.
    send_all(*msgs)
    got = [process.receive(*reversed(templates), after=0) for _ in range(5)]
    assert got == [msgs[1], msgs[3], msgs[5], msgs[6], msgs[7]]


def test_indexed_receive_of_down_and_connection_messages() -> None:
    """``{'DOWN', MRef, ...}`` and ``{gun_up, ConnPid, _}`` clauses with concrete refs/pids
    (indexed by ``("DOWN", mref)`` and ``(tag, conn)``) select only their own messages."""
    c1, c2, watched = a_pid("c1"), a_pid("c2"), a_pid("watched")
    m1, m2 = process.make_ref(), process.make_ref()
    send_all(
        ("gun_up", c2, "http"),
        ("DOWN", m2, "process", watched, "normal"),
        ("gun_up", c1, "http2"),
        ("DOWN", m1, "process", watched, "killed"),
    )
    for t in (("gun_up", c1, ANY), ("DOWN", m1, "process", watched, ANY)):
        assert _process._template_key(t) is not None
    assert process.receive(("DOWN", m1, "process", watched, ANY), after=0)[4] == "killed"
    assert process.receive(("gun_up", c1, ANY), after=0) == ("gun_up", c1, "http2")
    assert process.receive(("gun_up", c1, ANY), after=0) is TIMEOUT
    assert queued() == [("gun_up", c2, "http"), ("DOWN", m2, "process", watched, "normal")]


def test_index_stays_consistent_when_mixing_generic_and_indexed_receives() -> None:
    """Whatever path took a message (generic scan, index, flush or select), it is gone
    for every other path, and the index still sees the rest in order."""
    conn, ref = a_pid(), process.make_ref()
    indexed = ("gun_data", conn, ref, ANY, ANY)
    d = [("gun_data", conn, ref, "nofin", str(i).encode()) for i in range(6)]
    send_all(d[0], ("x",), d[1], d[2], d[3], d[4], d[5])

    # Taken by a generic (predicate) receive: the indexed receive must not return it.
    assert process.receive(lambda m: m == d[0], after=0) == d[0]
    assert process.receive(indexed, after=0) == d[1]
    # Taken by an indexed receive: a generic template does not see it again.
    assert process.receive(("gun_data", ANY, ANY, ANY, ANY), after=0) == d[2]
    # Taken by a generic flush.
    assert process.flush(("gun_data", ANY, ANY, ANY, b"3")) == 1
    assert process.receive(indexed, after=0) == d[4]
    # Taken by select.
    for msg in process.select(after=0):
        if msg == d[5]:
            break
    assert process.receive(indexed, after=0) is TIMEOUT
    assert process.receive(("gun_data", ANY, ANY, ANY, ANY), after=0) is TIMEOUT
    assert queued() == [("x",)]
    # And the index still works for new messages after all that.
    send_all(d[0], ("y",), d[1])
    assert process.receive(indexed, after=0) == d[0]
    assert process.receive(indexed, after=0) == d[1]
    assert queued() == [("x",), ("y",)]


def test_indexed_and_generic_receive_agree_on_tuple_subclasses() -> None:
    """A tuple template matches tuple subclasses (``match`` says so); the answer must not
    depend on whether the template names a concrete conn and ref (indexed path)."""
    gun_data = collections.namedtuple("gun_data", "tag conn ref fin data")
    conn, ref = a_pid(), process.make_ref()
    msg = gun_data("gun_data", conn, ref, "fin", b"x")
    template = ("gun_data", conn, ref, ANY, ANY)
    assert process.match(template, msg)
    assert process.match(("gun_data", ANY, ref, ANY, ANY), msg)  # generic path: matches
    send_all(msg)
    assert process.receive(template, after=0) == msg


# -- the index's cost property ---------------------------------------------------------


class CountingEq:
    """An unrelated connection's address that counts how often anything is compared
    with it."""

    calls = 0

    def __eq__(self, other: object) -> bool:
        type(self).calls += 1
        return False

    __hash__ = object.__hash__


def test_indexed_receive_never_evaluates_unrelated_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The point of the (conn, ref) index: with 10,000 unrelated messages queued, an
    ``await``-style receive (concrete conn and ref) runs the pattern matcher on its own
    stream's messages only, while a generic receive has to look at every queued
    message."""
    CountingEq.calls = 0
    matched: list[Any] = []
    real_match = _process.match

    def counting_match(pattern: Any, msg: Any) -> bool:
        matched.append(msg)
        return real_match(pattern, msg)

    monkeypatch.setattr(_process, "match", counting_match)

    conn, ref = a_pid(), process.make_ref()
    other_refs = [process.make_ref() for _ in range(10)]
    unrelated: list[Any] = []
    for i in range(5_000):
        # other connections' streams: their conn is compared with ours on a scan
        unrelated.append(("gun_data", CountingEq(), other_refs[i % 10], "fin", b""))
        unrelated.append(("note", i))
    send_all(*unrelated)
    t1 = ("gun_data", conn, ref, "fin", b"one")
    t2 = ("gun_data", conn, ref, "fin", b"two")
    t3 = ("gun_data", conn, ref, "fin", b"three")
    send_all(t1, t2, t3)

    seen: list[Any] = []

    def data_pred(data: Any) -> bool:
        seen.append(data)
        return True

    # Indexed: the matcher and the predicate see the first message of this stream only.
    indexed = ("gun_data", conn, ref, "fin", data_pred)
    assert _process._template_key(indexed) is not None
    assert process.receive(indexed, after=0) == t1
    assert matched == [t1]
    assert seen == [b"one"]
    assert CountingEq.calls == 0
    # An indexed flush: likewise.
    matched.clear()
    assert process.flush(("gun_data", conn, ref, "fin", b"two")) == 1
    assert t2 in matched
    assert all(m[1] is conn for m in matched)
    assert CountingEq.calls == 0

    # Generic (conn as a wildcard, ref concrete): every queued message goes through the
    # matcher before t3 is reached.
    matched.clear()
    assert process.receive(("gun_data", ANY, ref, ANY, ANY), after=0) == t3
    assert matched == [*unrelated, t3]
    # Generic with our conn: every other connection's conn is compared with it.
    send_all(t1)
    assert process.receive(("gun_data", conn, ANY, "fin", ANY), after=0) == t1
    assert CountingEq.calls == 5_000

    # A generic predicate receive is called on every queued message.
    calls = 0

    def pred(m: Any) -> bool:
        nonlocal calls
        calls += 1
        return False

    assert process.receive(pred, after=0) is TIMEOUT
    assert calls == 10_000
    assert queued() == unrelated


# -- the index against a model ----------------------------------------------------------

_CONNS = [Pid(None, name=f"c{i}") for i in range(2)]
_REFS = [process.make_ref() for _ in range(2)]
_TAGS = ["gun_data", "gun_response", "gun_up", "DOWN", "other"]


def _message(tag: str, c: int, r: int, n: int) -> tuple[Any, ...]:
    if tag in ("gun_up", "DOWN"):
        first = _REFS[r] if tag == "DOWN" else _CONNS[c]
        return (tag, first, n)
    return (tag, _CONNS[c], _REFS[r], n)


_msg_st = st.builds(
    _message,
    st.sampled_from(_TAGS),
    st.integers(0, 1),
    st.integers(0, 1),
    st.integers(0, 3),
)


@st.composite
def _template(draw: st.DrawFn) -> tuple[Any, ...]:
    tag = draw(st.sampled_from([*_TAGS, ANY]))
    c = draw(st.sampled_from([*_CONNS, ANY]))
    r = draw(st.sampled_from([*_REFS, ANY]))
    n = draw(st.sampled_from([0, 1, 2, 3, ANY]))
    if tag in ("gun_up", "DOWN"):
        return (tag, r if tag == "DOWN" else c, n)
    return (tag, c, r, n)


def _model_match(t: tuple[Any, ...], m: tuple[Any, ...]) -> bool:
    return len(t) == len(m) and all(p is ANY or p is x or p == x for p, x in zip(t, m, strict=True))


_op_st = st.one_of(
    st.tuples(st.just("put"), _msg_st),
    st.tuples(st.just("receive"), st.lists(_template(), min_size=1, max_size=3)),
    st.tuples(st.just("flush"), st.lists(_template(), min_size=1, max_size=2)),
)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=st.lists(_op_st, max_size=60))
def test_mailbox_agrees_with_a_list_model(ops: list[tuple[str, Any]]) -> None:
    """Selective receive and flush, indexed or not, behave like Erlang's mailbox: a list
    scanned in arrival order, taking the first message that matches any pattern."""
    box = process.Mailbox()
    model: list[tuple[Any, ...]] = []
    for op, arg in ops:
        if op == "put":
            box.put(arg)
            model.append(arg)
        elif op == "receive":
            expected = next((m for m in model if any(_model_match(t, m) for t in arg)), None)
            got = box.receive(tuple(arg), 0)
            if expected is None:
                assert got is TIMEOUT
            else:
                assert got is expected
                model.remove(expected)
        else:
            kept = [m for m in model if not any(_model_match(t, m) for t in arg)]
            assert box.flush(tuple(arg)) == len(model) - len(kept)
            model = kept
        assert box.messages() == model


# ---------------------------------------------------------------------------
# select


def test_select_break_consumes_that_message_only() -> None:
    """``receive`` clause taken (``break``): that message is consumed; messages offered
    before it and passed over stay in place, in order."""
    send_all(("a", 1), ("b", 2), ("c", 3), ("b", 4))
    seen = []
    for msg in process.select(after=0):
        seen.append(msg)
        if msg[0] == "b":
            break
    else:
        pytest.fail("the else branch ran although a clause was taken")
    assert seen == [("a", 1), ("b", 2)]
    assert queued() == [("a", 1), ("c", 3), ("b", 4)]


def test_select_return_in_a_function_consumes_the_message() -> None:
    """Leaving the receive by ``return`` from inside a clause also consumes the message."""

    def take_c() -> Any:
        for msg in process.select(after=0):
            if msg[0] == "c":
                return msg
        return None

    send_all(("a",), ("c",), ("d",))
    assert take_c() == ("c",)
    assert queued() == [("a",), ("d",)]


def test_select_else_branch_runs_on_timeout_and_leaves_everything() -> None:
    """``after T -> ...``: no clause taken within T ms runs the ``for ... else`` block;
    every message passed over is still queued, in order."""
    send_all(("a",), ("b",))
    seen = []
    t0 = time.monotonic()
    for msg in process.select(after=100):
        seen.append(msg)
    else:
        timed_out = True
    assert timed_out
    assert time.monotonic() - t0 < 5.0
    assert seen == [("a",), ("b",)]
    assert queued() == [("a",), ("b",)]


def test_select_exception_in_body_consumes_the_message() -> None:
    """A clause body that crashes has still taken its message (as in Erlang, where the
    message was removed when the clause matched)."""
    send_all(("a",), ("boom",), ("c",))
    with pytest.raises(RuntimeError, match="clause body failed"):
        for msg in process.select(after=0):
            if msg == ("boom",):
                raise RuntimeError("clause body failed")
    assert queued() == [("a",), ("c",)]


def test_select_offers_messages_that_arrive_while_iterating() -> None:
    """A receive that has passed over every queued message waits for new ones, sent by
    another thread, and offers them in arrival order."""
    me = process.self()
    send_all(("first",))
    passed_over = threading.Event()

    def sender() -> None:
        assert passed_over.wait(5)
        me.send(("late", 1))
        me.send(("late", 2))

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    seen = []
    for msg in process.select(after=5000):
        seen.append(msg)
        if msg == ("first",):
            passed_over.set()
        elif msg == ("late", 2):
            break
    else:
        pytest.fail("the messages sent by another thread were not offered")
    t.join(5)
    assert seen == [("first",), ("late", 1), ("late", 2)]
    assert queued() == [("first",), ("late", 1)]


# ---------------------------------------------------------------------------
# flush, make_ref


def test_flush_removes_every_match_and_returns_the_count() -> None:
    """``flush`` of a pattern (Gun's ``flush/1`` idea, with patterns): every matching
    message goes, the count is returned, the others stay in order."""
    send_all(("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3), 5, 50)
    assert process.flush(("a", ANY)) == 3
    assert queued() == [("b", 1), ("c", 1), 5, 50]
    assert process.flush(("b", ANY), lambda m: isinstance(m, int) and m > 10) == 2
    assert queued() == [("c", 1), 5]
    assert process.flush(("zzz",)) == 0
    assert queued() == [("c", 1), 5]


def test_flush_with_an_indexed_template() -> None:
    """``flush(ref)``-style: a template with concrete conn and ref flushes that stream
    only."""
    conn, r1, r2 = a_pid(), process.make_ref(), process.make_ref()
    msgs = [("gun_data", conn, r, "nofin", b"") for r in (r1, r2, r1, r2)]
    send_all(*msgs)
    assert process.flush(("gun_data", conn, r1, ANY, ANY)) == 2
    assert queued() == [msgs[1], msgs[3]]


def test_make_ref_is_unique_hashable_and_ordered_by_creation() -> None:
    """``make_ref()``: unique references, usable as map keys, ordered (refs are ordered
    terms in Erlang; here by creation)."""
    refs = [process.make_ref() for _ in range(1000)]
    assert len(set(refs)) == 1000
    assert len({r: i for i, r in enumerate(refs)}) == 1000
    a, b = refs[0], refs[1]
    assert a == a and a != b
    assert a < b and not b < a
    shuffled = refs[:]
    random.Random(4).shuffle(shuffled)
    assert sorted(shuffled) == refs


# ---------------------------------------------------------------------------
# monitor / demonitor


def test_monitor_thread_that_returns_gets_down_normal() -> None:
    """``monitor(process, Pid)``: a process that finishes gives ``{'DOWN', MRef, process,
    Pid, normal}``."""
    t, pid, go = spawn()
    mref = process.monitor(pid)
    assert isinstance(mref, process.Ref)
    assert pid.is_alive()
    go.set()
    assert wait_down(mref, pid) == "normal"
    t.join(5)
    assert not pid.is_alive()
    assert not process.is_alive(pid)
    assert pid.exit_reason == "normal"


@thread_exceptions_expected
def test_monitor_thread_that_crashes_gets_exception_reason() -> None:
    """A process that crashes: the DOWN's reason carries the error (here
    ``("exception", exc)``, the Python analogue of ``{Class, Reason, Stack}``)."""
    boom = ValueError("boom")

    def body() -> None:
        raise boom

    t, pid, go = spawn(body)
    mref = process.monitor(pid)
    go.set()
    reason = wait_down(mref, pid)
    assert reason == ("exception", boom)
    assert reason[1] is boom
    t.join(5)


@thread_exceptions_expected
def test_monitor_thread_that_raises_exit_gets_its_reason() -> None:
    """``exit(Reason)`` in a process: monitors see ``Reason`` itself (recorded by the
    ``threading.excepthook`` gunpy installs)."""
    assert threading.excepthook is _process._excepthook

    def body() -> None:
        raise Exit(("shutdown", "bye"))

    t, pid, go = spawn(body)
    mref = process.monitor(pid)
    go.set()
    assert wait_down(mref, pid) == ("shutdown", "bye")
    t.join(5)


def test_monitor_of_a_dead_process_gives_down_at_once() -> None:
    """Monitoring a process that no longer exists delivers its DOWN immediately.  Erlang
    says ``noproc``; gunpy (as documented in ``monitor``) says the reason the process
    ended with when it knows it, and ``noproc`` only when it does not."""
    t, pid, go = spawn()
    m1 = process.monitor(pid)
    go.set()
    assert wait_down(m1, pid) == "normal"
    t.join(5)
    m2 = process.monitor(pid)
    assert m2 != m1
    assert process.receive(("DOWN", m2, "process", pid, ANY), after=0) == (
        "DOWN",
        m2,
        "process",
        pid,
        "normal",
    )
    # A process that is gone without a known reason: noproc.
    unknown = Pid(None, name="unknown")
    unknown._exit(None)
    m3 = process.monitor(unknown)
    assert process.receive(("DOWN", m3, "process", unknown, ANY), after=0) == (
        "DOWN",
        m3,
        "process",
        unknown,
        "noproc",
    )


@thread_exceptions_expected
def test_monitor_of_a_crashed_process_gives_its_crash_reason_at_once() -> None:
    """A late monitor of a crashed process reports the crash, at once (gunpy's documented
    refinement of Erlang's ``noproc``)."""
    boom = OSError("econnrefused")

    def body() -> None:
        raise boom

    t, pid, go = spawn(body)
    m1 = process.monitor(pid)
    go.set()
    assert wait_down(m1, pid) == ("exception", boom)
    t.join(5)
    m2 = process.monitor(pid)
    assert process.receive(("DOWN", m2, "process", pid, ANY), after=0)[4] == ("exception", boom)


def test_demonitor_stops_delivery() -> None:
    """``demonitor(MRef)``: no DOWN for that monitor after it, while another monitor on
    the same process still fires."""
    t, pid, go = spawn()
    gone = process.monitor(pid)
    kept = process.monitor(pid)
    assert process.demonitor(gone) is True
    go.set()
    assert wait_down(kept, pid) == "normal"  # the process is dead now
    t.join(5)
    assert process.receive(("DOWN", gone, ANY, ANY, ANY), after=0) is TIMEOUT
    assert not any(m[0] == "DOWN" for m in queued())


def test_demonitor_flush_removes_a_queued_down() -> None:
    """``demonitor(MRef, [flush])`` removes the DOWN already in the mailbox; without
    ``flush`` it stays (Erlang's ``demonitor/1``)."""
    t, pid, go = spawn()
    flushed = process.monitor(pid)
    plain = process.monitor(pid)
    last = process.monitor(pid)
    go.set()
    # DOWNs are sent in monitor order: once the last one is here, all are queued.
    assert wait_down(last, pid) == "normal"
    t.join(5)
    assert [m[1] for m in queued()] == [flushed, plain]
    process.demonitor(flushed, flush=True)
    process.demonitor(plain)
    assert queued() == [("DOWN", plain, "process", pid, "normal")]


def test_main_thread_death_is_seen_by_a_watcher_thread() -> None:
    """The main thread is a process too: when it returns, a thread monitoring it gets
    ``DOWN ... normal`` (through the watchdog) and the script ends, instead of hanging."""
    script = textwrap.dedent(
        """
        import threading
        from gunpy import process

        main_pid = process.self()
        monitoring = threading.Event()

        def watcher():
            mref = process.monitor(main_pid)
            monitoring.set()
            msg = process.receive(("DOWN", mref, "process", main_pid, process.ANY), after=8000)
            if msg is process.TIMEOUT:
                print("TIMEOUT", flush=True)
            else:
                print("DOWN", msg[3] is main_pid, msg[4], flush=True)

        threading.Thread(target=watcher, name="watcher").start()  # not a daemon
        assert monitoring.wait(5)
        print("main returns", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        cwd=REPO,
    )
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main returns", "DOWN True normal"]


# ---------------------------------------------------------------------------
# send_after / cancel_timer


def test_send_after_delivers_the_message() -> None:
    """``erlang:send_after(Time, Pid, Msg)``: the message arrives after about Time ms."""
    tref = process.send_after(30, process.self(), ("tick", 1))
    assert isinstance(tref, process.Ref)
    assert process.receive(("tick", ANY), after=5000) == ("tick", 1)


def test_cancelled_timer_never_arrives() -> None:
    """``erlang:cancel_timer(TRef)`` before it fires: the message is never sent, and the
    milliseconds that were left are returned."""
    tref = process.send_after(300, process.self(), ("cancelled",))
    left = process.cancel_timer(tref)
    assert type(left) is int
    assert 0 < left <= 300
    assert process.receive(("cancelled",), after=600) is TIMEOUT


def test_cancel_timer_returns_remaining_ms() -> None:
    """``cancel_timer`` returns the time left in ms (an integer)."""
    tref = process.send_after(60_000, process.self(), ("far",))
    left = process.cancel_timer(tref)
    assert type(left) is int
    assert 50_000 < left <= 60_000


def test_cancel_timer_after_it_fired_returns_false() -> None:
    """``cancel_timer`` of a timer that already fired (or was cancelled) returns false."""
    tref = process.send_after(0, process.self(), ("fired",))
    assert process.receive(("fired",), after=5000) == ("fired",)
    assert process.cancel_timer(tref) is False
    tref2 = process.send_after(60_000, process.self(), ("x",))
    assert process.cancel_timer(tref2) is not False
    assert process.cancel_timer(tref2) is False


def test_many_timers_fire_in_deadline_order() -> None:
    """Timers fire in deadline order, whatever order they were started in (one heap of
    deadlines, not a thread per timer)."""
    me = process.self()
    delays = [5 * i for i in range(40)]
    random.Random(7).shuffle(delays)
    # A timer's deadline lies in [before + ms, after + ms] of its send_after call.
    window: dict[int, tuple[float, float]] = {}
    for ms in delays:
        lo = time.monotonic()
        process.send_after(ms, me, ("timer", ms))
        hi = time.monotonic()
        window[ms] = (lo + ms / 1000, hi + ms / 1000)
    got = []
    for _ in delays:
        msg = process.receive(("timer", ANY), after=5000)
        assert msg is not TIMEOUT
        got.append(msg[1])
    assert sorted(got) == sorted(delays)
    # No timer was delivered before one whose deadline was certainly earlier.
    for i, earlier in enumerate(got):
        for later in got[i + 1 :]:
            assert not window[later][1] < window[earlier][0], (earlier, later, got)
    if max(hi - lo for lo, hi in window.values()) < 0.001:  # the usual case: exact order
        assert got == sorted(delays)


def test_send_after_to_a_function() -> None:
    """``send_after`` takes any reply_to-like destination: a function is called with
    the message."""
    me = process.self()
    process.send_after(10, lambda m: me.send(("via fun", m)), "payload")
    assert process.receive(("via fun", ANY), after=5000) == ("via fun", "payload")


# ---------------------------------------------------------------------------
# Pid.send and as_pid


def test_send_to_a_dead_process_is_silently_dropped() -> None:
    """``Pid ! Msg`` never fails, even when the process is gone; the message is dropped."""
    t, pid, go = spawn()
    mref = process.monitor(pid)
    go.set()
    assert wait_down(mref, pid) == "normal"
    t.join(5)
    box = pid.mailbox
    assert box is not None
    before = box.messages()
    pid.send(("hello", "ghost"))
    pid.send_many([1, 2, 3])
    assert box.messages() == before


def test_as_pid_keeps_pids_and_rejects_non_processes() -> None:
    """A Pid is its own address; something that is neither a process nor a function is
    refused (Gun's ``reply_to`` must be a pid or a fun)."""
    pid = a_pid()
    assert process.as_pid(pid) is pid
    with pytest.raises(TypeError):
        process.as_pid(42)
    with pytest.raises(TypeError):
        process.as_pid(("not callable", []))


def test_as_pid_of_a_function_calls_it_with_the_message() -> None:
    """Gun 2.2+ ``reply_to => fun/1``: sending to it calls the function with the
    message."""
    got: list[Any] = []
    pid = process.as_pid(got.append)
    assert isinstance(pid, process.FunPid)
    pid.send(("gun_up", "c", "http"))
    pid.send_many([1, 2])
    assert got == [("gun_up", "c", "http"), 1, 2]


def test_as_pid_of_fun_and_args_appends_the_args() -> None:
    """Gun's ``reply_to => {Fun, Args}``: the function is called as
    ``Fun(Msg, Args...)``."""
    got: list[Any] = []

    def fun(msg: Any, a: Any, b: Any) -> None:
        got.append((msg, a, b))

    pid = process.as_pid((fun, ["x", 2]))
    pid.send("m")
    assert got == [("m", "x", 2)]
    assert process.as_pid((fun, ["x", 2])) == pid


def test_failing_reply_to_function_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A send never fails, not even to a ``reply_to`` function that raises: the error is
    logged and swallowed."""

    def bad(msg: Any) -> None:
        raise KeyError("reply_to broke")

    pid = process.as_pid(bad)
    with caplog.at_level(logging.ERROR, logger="gunpy"):
        pid.send(("gun_data", "c", "r", "fin", b""))
    records = [r for r in caplog.records if r.name == "gunpy" and r.levelno == logging.ERROR]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], KeyError)


# ---------------------------------------------------------------------------
# OwnerActor


class Recorder(process.OwnerActor):
    """Records what reaches on_receive; ``("go",)`` blocks in a selective receive."""

    def __init__(self, blocking: threading.Event | None = None) -> None:
        super().__init__()
        self.log: list[Any] = []
        self.blocking = blocking
        self.pid_in_on_start: Pid | None = None

    def on_start(self) -> None:
        self.pid_in_on_start = process.self()

    def on_receive(self, message: Any) -> Any:
        if message == ("go",):
            if self.blocking is not None:
                self.blocking.set()
            got = self.receive(("wanted", ANY), after=5000)
            self.log.append(("received in handler", got))
            return None
        if message == "ping":
            return "pong"
        if message == "whoami":
            return process.self()
        self.log.append(("on_receive", message))
        return None

    def get_log(self) -> list[Any]:
        return list(self.log)

    def whoami(self) -> Pid:
        return process.self()


class Quitter(process.OwnerActor):
    def on_receive(self, message: Any) -> Any:
        if message[0] == "exit":
            raise Exit(message[1])
        if message[0] == "crash":
            raise message[1]
        return None


def test_self_inside_an_owner_actor_is_its_pid() -> None:
    """Inside the actor, ``self()`` is the actor's own Pid (in on_start, in on_receive
    and in proxied methods alike)."""
    ref = Recorder.start()
    proxy = ref.proxy()
    pid = proxy.pid.get(timeout=5)
    assert isinstance(pid, Pid)
    assert proxy.whoami().get(timeout=5) is pid
    assert ref.ask("whoami", timeout=5) is pid
    assert proxy.pid_in_on_start.get(timeout=5) is pid
    assert process.as_pid(ref.proxy().pid.get(timeout=5)) is pid


def test_messages_sent_to_the_actor_pid_reach_on_receive() -> None:
    """``Pid ! Msg`` to an OwnerActor lands in on_receive (gen_server ``handle_info``),
    in order."""
    ref = Recorder.start()
    pid = ref.proxy().pid.get(timeout=5)
    pid.send(("gun_up", "conn", "http"))
    pid.send_many([("a",), ("b",)])
    log = ref.proxy().get_log().get(timeout=5)
    assert log == [
        ("on_receive", ("gun_up", "conn", "http")),
        ("on_receive", ("a",)),
        ("on_receive", ("b",)),
    ]


def test_handler_blocks_in_selective_receive_and_others_are_handled_after() -> None:
    """Inline style: a handler blocked in ``receive`` gets the matching message that
    arrives later; the messages it skipped still reach on_receive afterwards, in order."""
    blocking = threading.Event()
    ref = Recorder.start(blocking)
    pid = ref.proxy().pid.get(timeout=5)
    pid.send(("early", 1))
    pid.send(("go",))
    pid.send(("early", 2))
    assert blocking.wait(5)
    pid.send(("early", 3))
    pid.send(("wanted", 42))
    pid.send(("early", 4))
    log = ref.proxy().get_log().get(timeout=10)
    assert log == [
        ("on_receive", ("early", 1)),
        ("received in handler", ("wanted", 42)),
        ("on_receive", ("early", 2)),
        ("on_receive", ("early", 3)),
        ("on_receive", ("early", 4)),
    ]


class Scanner(process.OwnerActor):
    """On ``("scan",)``: a select loop, then receives with no pattern, inside the handler."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == ("scan",):
            offered = []
            for msg in process.select(after=5000):
                offered.append(msg)
                if msg == ("stop scan",):
                    break
            self.log.append(("offered", offered))
            self.log.append(("received", self.receive(after=0)))
            self.log.append(("received", self.receive(after=0)))
            return None
        self.log.append(("on_receive", message))
        return None

    def get_log(self) -> list[Any]:
        return list(self.log)


def test_selective_receive_in_an_actor_skips_pykka_messages() -> None:
    """pykka's own messages (``tell``/``ask`` envelopes) are not Erlang messages of the
    process: ``select`` and ``receive`` inside a handler never offer or take them, and
    they reach on_receive afterwards."""
    ref = Scanner.start()
    pid = ref.proxy().pid.get(timeout=5)
    pid.send(("scan",))
    ref.tell(("told", 1))
    pid.send(("sent", 2))
    pid.send(("stop scan",))
    assert ref.proxy().get_log().get(timeout=10) == [
        ("offered", [("sent", 2), ("stop scan",)]),
        ("received", ("sent", 2)),
        ("received", TIMEOUT),
        ("on_receive", ("told", 1)),
    ]


def test_pykka_tell_ask_and_proxy_still_work_on_an_owner_actor() -> None:
    """An OwnerActor is still a pykka actor: tell, ask and proxies work, and mix in
    order with messages sent to its Pid."""
    ref = Recorder.start()
    pid = ref.proxy().pid.get(timeout=5)
    ref.tell(("told", 1))
    pid.send(("sent", 2))
    ref.tell(("told", 3))
    assert ref.ask("ping", timeout=5) == "pong"
    assert ref.proxy().get_log().get(timeout=5) == [
        ("on_receive", ("told", 1)),
        ("on_receive", ("sent", 2)),
        ("on_receive", ("told", 3)),
    ]


def test_exit_in_on_receive_stops_the_actor_with_that_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``exit(bye)`` in a gen_server callback: the process stops and its monitors get
    ``{'DOWN', _, process, Pid, bye}``; an Exit is not logged as a crash."""
    ref = Quitter.start()
    pid = ref.proxy().pid.get(timeout=5)
    mref = process.monitor(pid)
    with caplog.at_level(logging.DEBUG):
        pid.send(("exit", "bye"))
        assert wait_down(mref, pid) == "bye"
    assert not ref.is_alive()
    assert not pid.is_alive()
    assert pid.exit_reason == "bye"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    pid.send(("after death",))  # never raises


def test_exception_in_on_receive_gives_exception_reason() -> None:
    """A crash in the actor: monitors get ``("exception", exc)``."""
    ref = Quitter.start()
    pid = ref.proxy().pid.get(timeout=5)
    mref = process.monitor(pid)
    boom = LookupError("crashed")
    ref.tell(("crash", boom))
    reason = wait_down(mref, pid)
    assert reason == ("exception", boom)
    assert reason[1] is boom
    assert not ref.is_alive()


def test_stopping_an_owner_actor_gives_normal() -> None:
    """A normal stop (``actor_ref.stop()``, gen_server's ``{stop, normal, _}``): DOWN
    ``normal``."""
    ref = Quitter.start()
    pid = ref.proxy().pid.get(timeout=5)
    mref = process.monitor(pid)
    assert ref.stop(timeout=5) is True
    assert wait_down(mref, pid) == "normal"


def test_as_pid_of_an_owner_actor_ref_is_its_pid() -> None:
    """An OwnerActor's ActorRef is that process's address (``as_pid`` documents "Pid,
    OwnerActor or its ref"): the same Pid, so messages reach its Mailbox directly and
    monitors see its real exit reason."""
    ref = Quitter.start()
    pid = ref.proxy().pid.get(timeout=5)
    assert process.as_pid(ref) is pid
    mref = process.monitor(ref)
    process.as_pid(ref).send(("exit", ("shutdown", "owner")))
    assert wait_down(mref, pid) == ("shutdown", "owner")


# ---------------------------------------------------------------------------
# A plain pykka actor as a process


class Plain(pykka.ThreadingActor):
    def __init__(self, sink: Pid) -> None:
        super().__init__()
        self.sink = sink

    def on_receive(self, message: Any) -> Any:
        self.sink.send(("plain got", message))
        return None


def test_plain_pykka_actor_as_pid_receives_through_on_receive() -> None:
    """A plain pykka actor can be a process address: ``Pid ! Msg`` becomes a ``tell``."""
    ref = Plain.start(process.self())
    pid = process.as_pid(ref)
    assert isinstance(pid, process.ActorRefPid)
    pid.send(("hello", 1))
    pid.send_many([("hello", 2)])
    assert process.receive(("plain got", ANY), after=2000) == ("plain got", ("hello", 1))
    assert process.receive(("plain got", ANY), after=2000) == ("plain got", ("hello", 2))


def test_monitoring_a_plain_pykka_actor_gives_down_when_it_stops() -> None:
    """Monitoring a plain pykka actor: its stop is noticed (by the watchdog's polling)
    and reported as ``DOWN ... normal``; sends to it afterwards are dropped silently."""
    ref = Plain.start(process.self())
    pid = process.as_pid(ref)
    mref = process.monitor(pid)
    ref.stop(timeout=5)
    assert wait_down(mref, pid, after=2000) == "normal"
    assert not pid.is_alive()
    pid.send(("after death",))  # pykka's tell would raise ActorDeadError


def test_send_to_a_stopped_plain_actor_before_the_watchdog_notices_never_raises() -> None:
    """``!`` never fails: even in the window where the Pid has not yet been marked dead,
    pykka's ActorDeadError is swallowed."""
    ref = Plain.start(process.self())
    pid = process.as_pid(ref)  # not monitored: nothing polls it
    ref.stop(timeout=5)
    assert pid.is_alive()  # not known dead yet
    pid.send(("too late",))
    assert process.receive(("plain got", ANY), after=100) is TIMEOUT
