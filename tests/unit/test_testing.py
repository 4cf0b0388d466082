"""gunpy.testing: the mailbox assertions, the pattern helpers, GunMailbox, the timeout
factor, and the pytest plugin (loaded through its ``pytest11`` entry point).

The scripted origin, the echo server and the TLS pair are tested in
``tests/testing/``.  Tests here run in pytest's main thread, whose mailbox lives for
the whole session: each one starts and ends with it empty (``_empty_mailbox``).
Synchronisation is by messages and ``send_after`` only; timing assertions are
generous bounds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

import gunpy
import gunpy.process
import gunpy.testing
import gunpy.testing.plugin
from gunpy import ANY, TIMEOUT, OwnerActor
from gunpy._process import _template_key
from gunpy.testing import (
    GunMailbox,
    assert_mailbox_empty,
    assert_receive,
    down,
    format_mailbox,
    gun_conn_error,
    gun_data,
    gun_down,
    gun_error,
    gun_inform,
    gun_response,
    gun_trailers,
    gun_up,
    gun_upgrade,
    gun_ws,
    has_headers,
    is_gun_message,
    refute_receive,
    scaled,
    timeout_factor,
)

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _empty_mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("GUNPY_TIMEOUT_FACTOR", raising=False)
    gunpy.process.flush()
    yield
    gunpy.process.flush()


def send(*msgs: Any) -> None:
    me = gunpy.self()
    for m in msgs:
        me.send(m)


def queued() -> list[Any]:
    box = gunpy.self().mailbox
    assert box is not None
    return box.messages()


CONN = gunpy.Pid(gunpy.Mailbox(), name="conn")  # a connection's address, for messages
REF = gunpy.make_ref()
HEADERS = [("content-type", "text/plain"), ("content-length", "2")]


# --------------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (gun_up(CONN, "http"), ("gun_up", CONN, "http")),
        (gun_down(CONN, "http", "closed", [REF]), ("gun_down", CONN, "http", "closed", [REF])),
        (gun_inform(CONN, REF, 103, HEADERS), ("gun_inform", CONN, REF, 103, HEADERS)),
        (
            gun_response(CONN, REF, "nofin", 200, HEADERS),
            ("gun_response", CONN, REF, "nofin", 200, HEADERS),
        ),
        (gun_data(CONN, REF, "fin", b"hi"), ("gun_data", CONN, REF, "fin", b"hi")),
        (gun_trailers(CONN, REF, HEADERS), ("gun_trailers", CONN, REF, HEADERS)),
        (gun_error(CONN, REF, "closed"), ("gun_error", CONN, REF, "closed")),
        (gun_conn_error(CONN, "closed"), ("gun_error", CONN, "closed")),
        (
            gun_upgrade(CONN, REF, ["websocket"], HEADERS),
            ("gun_upgrade", CONN, REF, ["websocket"], HEADERS),
        ),
        (gun_ws(CONN, REF, ("text", "hi")), ("gun_ws", CONN, REF, ("text", "hi"))),
        (down(REF, "normal", CONN), ("DOWN", REF, "process", CONN, "normal")),
    ],
)
def test_pattern_helpers_are_the_tuples_they_match(pattern: Any, message: Any) -> None:
    """With every argument given, a helper returns exactly the message's tuple."""
    assert type(pattern) is tuple
    assert pattern == message
    assert gunpy.process.match(pattern, message)


def test_pattern_helpers_default_to_any() -> None:
    assert gun_up(CONN) == ("gun_up", CONN, ANY)
    assert gun_down(CONN) == ("gun_down", CONN, ANY, ANY, ANY)
    assert gun_response(CONN, REF, status=404)[1:] == (CONN, REF, ANY, 404, ANY)
    assert gun_response(CONN, REF, status=404)[4] == 404
    assert gun_data(CONN, REF)[3:] == (ANY, ANY)
    assert gun_ws(CONN, REF)[3] is ANY
    assert gun_error(CONN, REF)[3] is ANY
    assert gun_conn_error(CONN)[2] is ANY
    assert down(REF)[3:] == (ANY, ANY)
    assert down(REF)[:3] == ("DOWN", REF, "process")
    # ANY for conn/ref: matches any connection (off the fast path, still correct)
    assert gunpy.process.match(gun_up(ANY), ("gun_up", CONN, "raw"))


def test_pattern_helpers_do_not_match_other_shapes() -> None:
    match = gunpy.process.match
    assert not match(gun_error(CONN, REF), ("gun_error", CONN, "closed"))  # stream vs conn-wide
    assert not match(gun_conn_error(CONN), ("gun_error", CONN, REF, "closed"))
    assert not match(
        gun_response(CONN, REF, status=200), ("gun_response", CONN, REF, "fin", 204, [])
    )
    assert not match(gun_data(CONN, REF), ("gun_data", CONN, gunpy.make_ref(), "fin", b""))
    assert not match(gun_up(CONN), ("gun_up", gunpy.Pid(None), "http"))


@pytest.mark.parametrize(
    ("pattern", "key"),
    [
        (gun_up(CONN), ("gun_up", CONN)),
        (gun_down(CONN), ("gun_down", CONN)),
        (gun_response(CONN, REF, status=200), (CONN, REF)),
        (gun_data(CONN, REF), (CONN, REF)),
        (gun_inform(CONN, REF), (CONN, REF)),
        (gun_trailers(CONN, REF), (CONN, REF)),
        (gun_error(CONN, REF), (CONN, REF)),
        (gun_conn_error(CONN), ("gun_error", CONN)),
        (gun_upgrade(CONN, REF), (CONN, REF)),
        (gun_ws(CONN, REF), (CONN, REF)),
        (down(REF), ("DOWN", REF)),
    ],
)
def test_patterns_with_concrete_conn_and_ref_are_indexed(pattern: Any, key: Any) -> None:
    """The mailbox's fast path: a template naming its conn/ref looks at that key only."""
    assert _template_key(pattern) == key
    assert _template_key(gun_response(ANY, REF)) is None


def test_indexed_receive_is_not_slowed_by_a_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 unrelated messages queued: assert_receive of a keyed pattern looks at
    the messages with its key only (counted: calls to the matcher)."""
    import gunpy._process

    me = gunpy.self()
    other = gunpy.Pid(None)
    for i in range(10_000):
        me.send(("gun_data", other, REF, "nofin", i))
    me.send(("gun_data", CONN, REF, "fin", b"last"))
    calls = 0
    real_match = gunpy._process.match

    def counting_match(p: Any, m: Any) -> bool:
        nonlocal calls
        calls += 1
        return real_match(p, m)

    monkeypatch.setattr(gunpy._process, "match", counting_match)
    for _ in range(100):
        me.send(("gun_ws", CONN, REF, ("text", "x")))
        assert_receive(gun_ws(CONN, REF), after=0)
    assert assert_receive(gun_data(CONN, REF), after=0)[4] == b"last"
    assert calls <= 300  # a scan would be 100 x 10,000
    assert len(queued()) == 10_000
    assert_receive(gun_data(ANY, REF, data=9_999), after=0)  # unindexed: still found
    assert calls > 10_000


def test_has_headers() -> None:
    hs = [("Content-Type", "text/plain"), ("x-a", "1"), ("x-a", "2"), (b"x-b", b"raw")]
    assert has_headers({"content-type": "text/plain"})(hs)
    assert has_headers([("x-a", "2")])(hs)  # any of repeated headers
    assert has_headers(x_a="1", content_type=ANY)(hs)  # keyword names: _ is -
    assert has_headers({"x-b": b"raw"})(hs)  # bytes names
    assert has_headers()(hs)
    assert not has_headers({"x-a": "3"})(hs)
    assert not has_headers({"x-missing": ANY})(hs)
    assert not has_headers({"x-a": "1"})("not headers")
    assert repr(has_headers({"X-A": "1"})) == "has_headers({'x-a': '1'})"
    send(("gun_response", CONN, REF, "nofin", 200, hs))
    pattern = gun_response(
        CONN, REF, status=200, headers=has_headers({"content-type": "text/plain"})
    )
    assert assert_receive(pattern, after=0)[4] == 200
    assert _template_key(pattern) == (CONN, REF)  # a predicate in the headers slot keeps the key


def test_is_gun_message() -> None:
    assert is_gun_message(("gun_up", CONN, "http"))
    assert is_gun_message(("gun_whatever", 1))
    assert not is_gun_message(("DOWN", REF, "process", CONN, "normal"))
    assert not is_gun_message("gun_up")
    assert not is_gun_message(("gun_up",))


# --------------------------------------------------------------------------- assert_receive


def test_assert_receive_returns_the_oldest_match_and_keeps_the_rest_in_order() -> None:
    send(("gun_up", CONN, "http"), ("noise", 1), ("gun_data", CONN, REF, "nofin", b"a"),
         ("gun_data", CONN, REF, "fin", b"b"))  # fmt: skip
    assert assert_receive(gun_data(CONN, REF)) == ("gun_data", CONN, REF, "nofin", b"a")
    assert queued() == [
        ("gun_up", CONN, "http"),
        ("noise", 1),
        ("gun_data", CONN, REF, "fin", b"b"),
    ]


def test_assert_receive_waits_for_a_message_sent_later() -> None:
    gunpy.send_after(30, gunpy.self(), ("gun_ws", CONN, REF, "close"))
    assert assert_receive(gun_ws(CONN, REF, "close"), after=5000)[3] == "close"


def test_assert_receive_takes_several_patterns_and_none() -> None:
    send(("b", 2), ("a", 1))
    assert assert_receive(("a", ANY), ("b", ANY), after=0) == ("b", 2)
    assert assert_receive(after=0) == ("a", 1)  # no pattern: any message


def test_assert_receive_after_0_looks_at_queued_messages_only() -> None:
    gunpy.send_after(20, gunpy.self(), ("late",))
    with pytest.raises(AssertionError, match=r"within 0 ms"):
        assert_receive(("late",), after=0)
    assert assert_receive(("late",), after=5000) == ("late",)


def test_assert_receive_failure_shows_the_pattern_and_the_closest_messages_first() -> None:
    other = gunpy.make_ref()
    send(
        ("gun_up", CONN, "http"),
        ("tick", 1),
        ("gun_response", CONN, other, "nofin", 200, "not headers"),
        ("gun_response", CONN, REF, "nofin", 404, []),
    )
    with pytest.raises(AssertionError) as e:
        assert_receive(gun_response(CONN, REF, status=200, headers=has_headers()), after=10)
    text = str(e.value)
    lines = text.splitlines()
    assert lines[0] == "no message matched within 10 ms"
    assert lines[1] == f"pattern: ('gun_response', {CONN!r}, {REF!r}, ANY, 200, has_headers({{}}))"
    assert lines[2] == "mailbox: 4 messages, closest to the pattern first:"
    # one element off, then two off, then another tag, then not even the same size
    assert lines[3] == f"  #4 ('gun_response', {CONN!r}, {REF!r}, 'nofin', 404, [])"
    assert lines[4] == "      at [4]: expected 200, got 404"
    assert lines[5].startswith("  #3 ('gun_response'") and "'not headers')" in lines[5]
    assert lines[6] == f"      at [2]: expected {REF!r}, got {other!r}"
    assert lines[7] == f"  #1 ('gun_up', {CONN!r}, 'http')"
    assert lines[8] == "      at [0]: expected 'gun_response', got 'gun_up'"
    assert lines[9] == "  #2 ('tick', 1)"
    assert lines[10] == "      at [0]: expected 'gun_response', got 'tick'"
    assert len(lines) == 11
    assert len(queued()) == 4  # nothing was removed
    send(("gun_response", CONN, REF, "nofin", 200, "not headers"))
    with pytest.raises(AssertionError) as e:
        assert_receive(gun_response(CONN, REF, status=200, headers=has_headers()), after=0)
    assert "      at [5]: has_headers({}) is false for 'not headers'" in str(e.value)


def test_assert_receive_failure_with_an_empty_mailbox_and_a_message() -> None:
    with pytest.raises(AssertionError) as e:
        assert_receive(gun_up(CONN), after=0, message="the connection never came up")
    assert str(e.value).splitlines() == [
        "the connection never came up",
        "no message matched within 0 ms",
        f"pattern: ('gun_up', {CONN!r}, ANY)",
        "mailbox: empty",
    ]


def test_assert_receive_failure_lists_every_pattern_and_truncates_long_mailboxes() -> None:
    for i in range(30):
        send(("n", i))
    with pytest.raises(AssertionError) as e:
        assert_receive(("x",), ("y", ANY), after=0)
    text = str(e.value)
    assert "patterns:\n  ('x',)\n  ('y', ANY)\n" in text
    assert "mailbox: 30 messages" in text
    assert "  ... and 10 more" in text
    assert text.count("  #") == 20
    assert "expected a tuple of 2, got one of 1" not in text  # ('n', i) is closest to ('y', ANY)
    assert "at [0]: expected 'y', got 'n'" in text


def test_assert_receive_failure_shows_nested_and_long_values_readably() -> None:
    send(("gun_ws", CONN, REF, ("close", 1001, "")), ("gun_data", CONN, REF, "fin", b"x" * 10_000))
    with pytest.raises(AssertionError) as e:
        assert_receive(gun_ws(CONN, REF, ("close", 1000, ANY)), after=0)
    text = str(e.value)
    assert "at [3][1]: expected 1000, got 1001" in text
    assert len(text) < 2000  # the 10 kB body is abbreviated
    assert "..." in text


def test_assert_receive_hides_its_own_frame_from_pytest_tracebacks() -> None:
    import gunpy.testing._assertions as a

    for f in (a.assert_receive, a.refute_receive, a.assert_mailbox_empty):
        assert "__tracebackhide__" in f.__code__.co_varnames


def test_assert_receive_in_an_owner_actor_uses_the_actors_mailbox() -> None:
    """Inside an OwnerActor, self() is the actor: its mailbox is the one asserted on."""

    class Waiter(OwnerActor):
        def wait_for(self, pattern: Any) -> Any:
            return assert_receive(pattern, after=5000)

        def wait_in_vain(self) -> str:
            try:
                assert_receive(("never",), after=10)
            except AssertionError as e:
                return str(e)
            return "no error"

    ref = Waiter.start()
    try:
        proxy = ref.proxy()
        pid = proxy.pid.get(timeout=10)
        future = proxy.wait_for(("hello", ANY))
        pid.send(("hello", 1))
        assert future.get(timeout=10) == ("hello", 1)
        assert "mailbox: empty" in proxy.wait_in_vain().get(timeout=10)
    finally:
        ref.stop()
    assert queued() == []  # the test thread's mailbox was not involved


# --------------------------------------------------------------------------- refute / empty


def test_refute_receive_passes_when_nothing_matches_in_time() -> None:
    send(("other", 1))
    t0 = time.monotonic()
    refute_receive(("gun_data", ANY, ANY, ANY, ANY), after=50)
    assert time.monotonic() - t0 >= 0.045  # it waited the whole time
    assert queued() == [("other", 1)]


def test_refute_receive_fails_on_a_match_and_consumes_it() -> None:
    gunpy.send_after(10, gunpy.self(), ("gun_down", CONN, "http", "closed", []))
    send(("other", 1))
    with pytest.raises(AssertionError) as e:
        refute_receive(gun_down(CONN), after=5000)
    text = str(e.value)
    assert text.startswith("unexpected message (refute_receive, after 5000 ms):\n")
    assert f"  ('gun_down', {CONN!r}, 'http', 'closed', [])" in text
    assert f"pattern: ('gun_down', {CONN!r}, ANY, ANY, ANY)" in text
    assert "also queued: mailbox: 1 message, oldest first:\n  #1 ('other', 1)" in text
    assert queued() == [("other", 1)]


def test_refute_receive_after_0_checks_queued_messages() -> None:
    send(("x",))
    with pytest.raises(AssertionError, match="custom"):
        refute_receive(("x",), after=0, message="custom")
    refute_receive(("x",), after=0)


def test_assert_mailbox_empty() -> None:
    assert_mailbox_empty()
    send(("gun_up", CONN, "http"), ("mine",))
    with pytest.raises(AssertionError) as e:
        assert_mailbox_empty("leftovers")
    assert str(e.value).splitlines() == [
        "leftovers",
        "the mailbox is not empty",
        "mailbox: 2 messages, oldest first:",
        f"  #1 ('gun_up', {CONN!r}, 'http')",
        "  #2 ('mine',)",
    ]
    assert len(queued()) == 2  # nothing removed


def test_format_mailbox() -> None:
    assert format_mailbox([]) == "mailbox: empty"
    assert format_mailbox([1, 2, 3], limit=2) == (
        "mailbox: 3 messages, oldest first:\n  #1 1\n  #2 2\n  ... and 1 more"
    )
    assert format_mailbox([("a", 1), ("b", 2)], (("b", 3),)) == (
        "mailbox: 2 messages, closest to the pattern first:\n"
        "  #2 ('b', 2)\n      at [1]: expected 3, got 2\n"
        "  #1 ('a', 1)\n      at [0]: expected 'b', got 'a'"
    )
    assert "expected a list of 1, got ('x',)" in format_mailbox([("x",)], (["x"],))
    assert "expected 5, got 'x'" in format_mailbox(["x"], (5,))
    assert "<lambda>" in format_mailbox([0], (lambda m: m > 0,))


# --------------------------------------------------------------------------- timeout factor


@pytest.mark.parametrize(
    ("env", "factor"), [(None, 1.0), ("", 1.0), ("2", 2.0), (" 0.5 ", 0.5), ("10", 10.0)]
)
def test_timeout_factor_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: str | None, factor: float
) -> None:
    if env is not None:
        monkeypatch.setenv("GUNPY_TIMEOUT_FACTOR", env)
    assert timeout_factor() == factor


@pytest.mark.parametrize("env", ["0", "-1", "slow", "inf", "nan"])
def test_a_bad_timeout_factor_is_an_error(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv("GUNPY_TIMEOUT_FACTOR", env)
    with pytest.raises(ValueError, match="GUNPY_TIMEOUT_FACTOR must be a positive number"):
        timeout_factor()


def test_scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    assert scaled(100) == 100
    monkeypatch.setenv("GUNPY_TIMEOUT_FACTOR", "2.5")
    assert scaled(100) == 250
    assert scaled(3) == 8  # integers round up
    assert isinstance(scaled(3), int)
    assert scaled(1.0) == 2.5
    assert scaled(0) == 0
    assert scaled(None) is None
    assert scaled("infinity") == "infinity"
    for bad in (-1, "soon", True):
        with pytest.raises(ValueError):
            scaled(bad)


def test_assert_receive_and_refute_receive_multiply_after_by_the_factor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GUNPY_TIMEOUT_FACTOR", "20")
    gunpy.send_after(60, gunpy.self(), ("late",))
    assert assert_receive(("late",), after=10) == ("late",)  # waits up to 200 ms
    t0 = time.monotonic()
    refute_receive(("never",), after=5)  # waits 100 ms
    assert time.monotonic() - t0 >= 0.095
    with pytest.raises(AssertionError) as e:
        assert_receive(("never",), after=1)
    assert "within 20 ms (1 ms x GUNPY_TIMEOUT_FACTOR=20)" in str(e.value)


def test_timeout_factor_fixture(timeout_factor: float) -> None:
    assert timeout_factor == gunpy.testing.timeout_factor()


# --------------------------------------------------------------------------- GunMailbox


def test_gun_mailbox_flushes_on_entry_and_checks_on_exit() -> None:
    send(("gun_up", CONN, "http"), ("old",))
    with GunMailbox() as box:
        assert box.messages() == []
        assert box.pid is gunpy.self()
        send(("gun_data", CONN, REF, "fin", b""), ("DOWN", REF, "process", CONN, "normal"))
        box.pid.send(("mine",))
        assert box.leftovers() == [("gun_data", CONN, REF, "fin", b"")]
        assert_receive(gun_data(CONN, REF))
    assert queued() == []  # the non-Gun leftovers were flushed silently


def test_gun_mailbox_fails_on_leftover_gun_messages() -> None:
    with pytest.raises(AssertionError) as e, GunMailbox():
        send(("gun_up", CONN, "http"), ("gun_down", CONN, "http", "closed", []), ("mine",))
    text = str(e.value)
    assert text.startswith("2 Gun messages left over in the test's mailbox")
    assert "gun_mailbox.allow(pattern)" in text
    assert f"  #1 ('gun_up', {CONN!r}, 'http')" in text
    assert "('mine',)" not in text
    assert queued() == []  # flushed anyway


def test_gun_mailbox_allow() -> None:
    with GunMailbox() as box:
        box.allow(gun_up(CONN), gun_down(ANY))
        send(("gun_up", CONN, "http"), ("gun_down", CONN, "http", "closed", []))
        assert box.leftovers() == []
    send(("gun_up", CONN, "http"))
    with pytest.raises(AssertionError, match="1 Gun message left over"), GunMailbox() as box:
        send(("gun_ws", CONN, REF, "close"))
        box.allow(gun_up(CONN))  # allow is per-box


def test_gun_mailbox_does_not_check_when_the_block_raised() -> None:
    with pytest.raises(KeyError), GunMailbox():
        send(("gun_up", CONN, "http"))
        raise KeyError("the test's own failure")
    assert queued() == []


def test_gun_mailbox_flush_from_another_thread_is_refused() -> None:
    box = GunMailbox()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.flush()
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert len(errors) == 1
    assert "GunMailbox" in repr(box)


def test_gun_mailbox_fixture_starts_empty(gun_mailbox: GunMailbox) -> None:
    assert gun_mailbox.messages() == []
    gun_mailbox.pid.send(("gun_up", CONN, "http"))
    assert_receive(gun_up(CONN))


def test_gun_mailbox_fixture_with_real_connections(
    gun_mailbox: GunMailbox, gun_http_echo_server: gunpy.testing.EchoServer
) -> None:
    conn = gun_http_echo_server.open()
    assert_receive(gun_up(conn, "http"))
    ref = gunpy.get(conn, "/hello")
    assert_receive(gun_response(conn, ref, "nofin", 200))
    assert assert_receive(gun_data(conn, ref, "fin"))[4] == b"Hello world!\n"
    gunpy.close(conn)
    assert gun_mailbox.leftovers() == []


# --------------------------------------------------------------------------- the plugin


def test_the_plugin_is_registered_by_the_entry_point(pytestconfig: pytest.Config) -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="pytest11") if e.name == "gunpy"]
    assert ep.value == "gunpy.testing.plugin"
    assert pytestconfig.pluginmanager.get_plugin("gunpy") is gunpy.testing.plugin


def test_the_entry_point_loads_the_plugin_in_a_fresh_pytest(pytester: pytest.Pytester) -> None:
    """A new pytest process, with nothing but gunpy installed, has the fixtures."""
    pytester.makepyfile(
        """
        import gunpy
        from gunpy.testing import assert_receive, gun_response, gun_data, gun_up

        def test_fixtures(gun_mailbox, gun_http_echo_server, scripted_origin, timeout_factor):
            conn = gun_http_echo_server.open()
            assert_receive(gun_up(conn))
            ref = gunpy.get(conn, "/hello")
            assert_receive(gun_response(conn, ref, status=200))
            assert_receive(gun_data(conn, ref, "fin", b"Hello world!\\n"))
            assert timeout_factor == 1.0
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:gunpy")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'gun_mailbox' not found*"])


def test_gunpy_excepthook_stays_in_front_of_pytests(pytester: pytest.Pytester) -> None:
    """Loaded as a plugin, gunpy is imported before pytest installs its thread
    exception hook; the plugin puts gunpy's back in front (a crashed thread's DOWN
    carries its exception) and pytest's still sees the crash."""
    pytester.makepyfile(
        """
        import queue
        import threading
        import gunpy
        from gunpy.testing import assert_receive, down

        def test_crash_reason():
            pids = queue.Queue()
            go = threading.Event()

            def body():
                pids.put(gunpy.self())
                go.wait(10)
                raise ValueError("boom")

            t = threading.Thread(target=body)
            t.start()
            mref = gunpy.monitor(pids.get(timeout=10))
            go.set()
            t.join()
            msg = assert_receive(down(mref), after=5000)
            assert msg[4][0] == "exception" and str(msg[4][1]) == "boom"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "default")
    result.assert_outcomes(passed=1)  # warnings vary: an in-process pytester may add rewrite ones
    result.stdout.fnmatch_lines(["*PytestUnhandledThreadExceptionWarning*"])
    assert threading.excepthook is gunpy._process._excepthook


def test_gun_mailbox_leftovers_fail_the_test_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import gunpy
        from gunpy import ANY

        def test_leaves_a_message(gun_mailbox):
            gunpy.self().send(("gun_up", "conn", "http"))

        def test_allows_it(gun_mailbox):
            gun_mailbox.allow(("gun_up", ANY, ANY))
            gunpy.self().send(("gun_up", "conn", "http"))

        def test_leaves_only_its_own_messages(gun_mailbox):
            gunpy.self().send(("mine", 1))

        def test_fails_itself(gun_mailbox):
            gunpy.self().send(("gun_up", "conn", "http"))
            assert False, "the test's own failure"

        def test_next_one_starts_empty(gun_mailbox):
            assert gun_mailbox.messages() == []

        def test_without_the_fixture_nothing_is_checked():
            gunpy.self().send(("gun_up", "conn", "http"))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_a_message*",
            "*1 Gun message left over in the test's mailbox*",
            "*#1 ('gun_up', 'conn', 'http')*",
        ]
    )
    assert "ERROR at teardown of test_fails_itself" not in result.stdout.str()
    gunpy.process.flush()


def test_gunpy_mailbox_autouse_ini_option(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngunpy_mailbox_autouse = true\n")
    pytester.makepyfile(
        """
        import gunpy

        def test_leaves_a_message():
            gunpy.self().send(("gun_data", "conn", "ref", "fin", b""))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*1 Gun message left over*"])
    gunpy.process.flush()


def test_scripted_origin_fixture_reports_script_problems(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import gunpy
        from gunpy.testing import ExpectRequest, Respond, assert_receive, gun_response

        def test_wrong_request(scripted_origin):
            origin = scripted_origin([ExpectRequest("GET", "/expected"), Respond(200)])
            conn = origin.open()
            gunpy.get(conn, "/other")
            origin.accept().wait_received(b"\\r\\n\\r\\n")  # the request is at the origin

        def test_unfinished(scripted_origin):
            origin = scripted_origin([ExpectRequest("GET", "/")], step_timeout=60000)
            origin.open()
            origin.accept()

        def test_no_connection(scripted_origin):
            scripted_origin(scripts=[[ExpectRequest()], [ExpectRequest()]])

        def test_failing_test_shows_the_script_error(scripted_origin):
            origin = scripted_origin([ExpectRequest("POST", "/"), Respond(200)])
            conn = origin.open()
            ref = gunpy.get(conn, "/")
            assert_receive(gun_response(conn, ref), after=300)

        def test_good(scripted_origin):
            origin = scripted_origin([ExpectRequest("GET", "/"), Respond(204)])
            conn = origin.open()
            ref = gunpy.get(conn, "/")
            assert_receive(gun_response(conn, ref, "fin", 204))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1, errors=3)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_wrong_request*",
            "*ScriptError: origin1 connection #1, step 1 ExpectRequest(method='GET', target='/expected'*"
            "AssertionError: target '/other', expected '/expected'*",
        ]
    )
    assert "ERROR at teardown of test_unfinished" in out
    assert "the script did not finish; stopped at step 1 ExpectRequest(" in out
    assert "ERROR at teardown of test_no_connection" in out
    assert "origin1: 0 connections came, the scripts expected 2" in out
    assert "ERROR at teardown of test_failing_test_shows_the_script_error" not in out
    result.stdout.fnmatch_lines(
        [
            "*gunpy scripted origin*",
            "*step 1 ExpectRequest(method='POST'*method 'GET', expected 'POST'*",
        ]
    )
    gunpy.process.flush()


def test_tls_pair_skips_without_trustme(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        def test_tls(tls_pair):
            pass
        """
    )
    monkeypatch.setitem(sys.modules, "trustme", None)  # import trustme -> ImportError
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*gunpy.testing TLS helpers need trustme: pip install trustme*"])


def test_make_tls_pair_without_trustme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)
    with pytest.raises(gunpy.testing.TrustmeMissing) as e:
        gunpy.testing.make_tls_pair()
    assert isinstance(e.value, ImportError)


def test_public_names() -> None:
    for name in gunpy.testing.__all__:
        assert getattr(gunpy.testing, name) is not None, name
    assert "pytest" not in {m.split(".")[0] for m in _imported_by("gunpy.testing")}


def _imported_by(module: str) -> set[str]:
    """The top-level modules ``module`` imports, in a fresh interpreter."""
    import subprocess

    code = (
        "import sys; before = set(sys.modules); import " + module + "; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_actors_left_by_this_module() -> None:
    assert not [a for a in pykka.ActorRegistry.get_all() if a.is_alive() and "Waiter" in str(a)]
    assert gunpy.receive(after=0) is TIMEOUT
