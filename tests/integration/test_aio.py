"""``gunpy.aio``: coroutines awaiting gunpy messages, with ``asyncio.run``.

The first tests fabricate messages (sent to the loop's own process, from the loop
or from other threads) to pin down the bridge: waking, selective receive,
timeouts, cancellation.  The rest run against hypercorn, the websockets echo
server and a pool.  Nothing sleeps: ``await asyncio.sleep(0)`` only lets the
tasks already scheduled run, in order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

import gunpy
import gunpy.aio as aio
import gunpy.pool as pool
from gunpy import ANY, TIMEOUT
from gunpy.process import Mailbox, Pid
from gunpy.testing import GunMailbox
from tests.peers import Peer

HOST = "127.0.0.1"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, then check that the mailbox got its plain class back."""
    result = asyncio.run(coro)
    assert type(gunpy.self().mailbox) is Mailbox
    return result


def in_thread(fn: Any, *args: Any) -> None:
    threading.Thread(target=fn, args=args, daemon=True).start()


# --------------------------------------------------------------------------- the bridge


def test_self_is_the_threads_process(gun_mailbox: GunMailbox) -> None:
    outside = gunpy.self()

    async def main() -> Pid:
        me = aio.self()
        assert me is gunpy.self()
        return me

    assert run(main()) is outside


def test_receive_wakes_on_messages_from_other_threads(gun_mailbox: GunMailbox) -> None:
    async def main() -> list[Any]:
        me = aio.self()
        in_thread(lambda: [me.send(("n", i)) for i in range(100)])
        return [await aio.receive(("n", i), after=5000) for i in range(100)]

    assert run(main()) == [("n", i) for i in range(100)]


def test_receive_is_selective_and_times_out(gun_mailbox: GunMailbox) -> None:
    async def main() -> None:
        me = aio.self()
        me.send(("other", 1))
        me.send(("wanted", 2))
        assert await aio.receive(("wanted", ANY), after=1000) == ("wanted", 2)
        assert await aio.receive(("wanted", ANY), after=20) is TIMEOUT
        assert await aio.receive(("wanted", ANY), after=0) is TIMEOUT
        # Predicates and unkeyed templates are woken by any message.
        in_thread(me.send, ("later", 3))
        assert await aio.receive(lambda m: m[0] == "later", after=5000) == ("later", 3)
        assert await aio.receive(after=0) == ("other", 1)  # no pattern: the oldest

    run(main())


def test_waiting_does_not_block_the_loop(gun_mailbox: GunMailbox) -> None:
    async def main() -> list[str]:
        me = aio.self()
        order: list[str] = []

        async def slow() -> None:
            assert await aio.receive(("go",), after=5000) == ("go",)
            order.append("slow")

        async def fast() -> None:
            order.append("fast")
            me.send(("go",))

        await asyncio.gather(slow(), fast())
        return order

    assert run(main()) == ["fast", "slow"]


def test_many_waiters_each_get_their_own(gun_mailbox: GunMailbox) -> None:
    """1000 coroutines, each waiting for its own key; the messages come from another
    thread in reverse order."""

    async def main() -> None:
        me = aio.self()
        conn = Pid(None, name="fake conn")
        refs = [gunpy.make_ref() for _ in range(1000)]

        async def one(ref: gunpy.Ref) -> Any:
            return await aio.receive(("gun_data", conn, ref, ANY, ANY), after=10_000)

        tasks = [asyncio.create_task(one(r)) for r in refs]
        await asyncio.sleep(0)  # every task is waiting now
        in_thread(
            lambda: [me.send(("gun_data", conn, r, "fin", str(r).encode())) for r in refs[::-1]]
        )
        got = await asyncio.gather(*tasks)
        assert [m[2] for m in got] == refs

    run(main())


def test_cancelled_waiter_leaves_the_message(gun_mailbox: GunMailbox) -> None:
    """A task cancelled while it waits takes nothing, even when the message had
    already arrived and woken it."""

    async def main() -> None:
        me = aio.self()
        task = asyncio.create_task(aio.receive(("m", ANY), after=5000))
        await asyncio.sleep(0)  # the task waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        me.send(("m", 1))

        task = asyncio.create_task(aio.receive(("m", ANY), after=5000))
        await asyncio.sleep(0)  # the task waits (the message is there: it takes it)
        assert task.done() and task.result() == ("m", 1)

        task = asyncio.create_task(aio.receive(("m", ANY), after=5000))
        await asyncio.sleep(0)  # the task waits
        me.send(("m", 2))  # schedules the wake-up...
        await asyncio.sleep(0)  # ...which runs: the task is due to resume
        task.cancel()  # but is cancelled first
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gunpy.receive(after=0) == ("m", 2)

    run(main())


def test_await_functions_on_fabricated_messages(gun_mailbox: GunMailbox) -> None:
    """await_, await_body and await_up in Gun's shapes; a cancelled await_body puts
    the parts it took back, in order with the stream's later messages."""

    async def main() -> None:
        me = aio.self()
        conn = Pid(None, name="fake conn")
        ref = gunpy.make_ref()
        me.send(("gun_up", conn, "http"))
        assert await aio.await_up(conn) == ("ok", "http")
        assert await aio.await_up(conn, 10) == ("error", "timeout")
        me.send(("gun_response", conn, ref, "nofin", 200, []))
        assert await aio.await_(conn, ref) == ("response", "nofin", 200, [])
        assert await aio.await_(conn, ref, 10) == ("error", "timeout")
        me.send(("gun_data", conn, ref, "nofin", b"a"))
        body = asyncio.create_task(aio.await_body(conn, ref))
        await asyncio.sleep(0)  # takes "a", then waits
        me.send(("gun_data", conn, ref, "nofin", b"b"))
        body.cancel()
        with pytest.raises(asyncio.CancelledError):
            await body
        me.send(("gun_trailers", conn, ref, [("x", "1")]))
        assert await aio.await_body(conn, ref) == ("ok", b"ab", [("x", "1")])
        me.send(("gun_error", conn, ref, "boom"))
        assert await aio.await_body(conn, ref) == ("error", ("stream_error", "boom"))
        me.send(("gun_error", conn, "down"))
        assert await aio.await_(conn, ref) == ("error", ("connection_error", "down"))
        assert await aio.await_body(conn, ref, 10) == ("error", "timeout")

    run(main())


def test_loop_in_another_thread(gun_mailbox: GunMailbox) -> None:
    """Each thread's loop is its own process; replies cross threads."""
    parent = gunpy.self()

    def thread_main() -> None:
        async def main() -> None:
            parent.send(("hello from", aio.self()))
            msg = await aio.receive(("reply", ANY), after=5000)
            parent.send(("got", msg[1]))

        asyncio.run(main())

    in_thread(thread_main)
    _, other = gunpy.receive(("hello from", ANY), after=5000)
    other.send(("reply", 42))
    assert gunpy.receive(("got", ANY), after=5000) == ("got", 42)


def test_two_loops_in_one_thread(gun_mailbox: GunMailbox) -> None:
    """A loop replaced by another in the same thread (without being closed first):
    the old loop's end does not undo the new loop's wake-ups."""
    import gc

    l1, l2 = asyncio.new_event_loop(), asyncio.new_event_loop()

    async def echo(tag: str) -> Any:
        aio.self().send((tag,))
        return await aio.receive((tag,), after=1000)

    async def from_thread(tag: str) -> Any:
        me, go = aio.self(), threading.Event()
        in_thread(lambda: go.wait() and me.send((tag,)))
        task = asyncio.create_task(aio.receive((tag,), after=5000))
        await asyncio.sleep(0)  # the task waits: only a wake-up can end it early
        go.set()
        return await task

    try:
        assert l1.run_until_complete(echo("a")) == ("a",)
        assert l2.run_until_complete(echo("b")) == ("b",)
        gc.collect()  # loop 1's sentinel generator is finalized...
        l1.run_until_complete(asyncio.sleep(0))  # ...and closed by loop 1
        assert type(gunpy.self().mailbox) is not Mailbox  # loop 2's wake-ups are in place
        assert l2.run_until_complete(from_thread("c")) == ("c",)
    finally:
        for loop in (l1, l2):
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    assert type(gunpy.self().mailbox) is Mailbox


# --------------------------------------------------------------------------- real servers


def test_http2_streams_from_coroutines(hypercorn_server: Peer, gun_mailbox: GunMailbox) -> None:
    """100 coroutines over one HTTP/2 connection (hypercorn's stream limit), each
    awaiting its own stream; the connection opened in the loop is owned by it."""

    async def main() -> None:
        ok, conn = gunpy.open(HOST, hypercorn_server.port, {"protocols": ["http2"]})
        assert gunpy.info(conn)["owner"] is aio.self()
        assert await aio.await_up(conn) == ("ok", "http2")

        async def one(i: int) -> bytes:
            ref = gunpy.get(conn, f"/c{i}")
            assert (await aio.await_(conn, ref))[:3] == ("response", "nofin", 200)
            ok, body = await aio.await_body(conn, ref)
            assert ok == "ok"
            body_bytes: bytes = body
            return body_bytes

        bodies = await asyncio.gather(*(one(i) for i in range(100)))
        assert bodies == [f"HTTP/2 /c{i}\n".encode() for i in range(100)]
        gunpy.close(conn)

    run(main())


def test_connection_opened_before_the_loop(
    hypercorn_server: Peer, gun_mailbox: GunMailbox
) -> None:
    """Messages queued in the thread's mailbox before the loop started are seen."""
    ok, conn = gunpy.open(HOST, hypercorn_server.port)
    ref = gunpy.get(conn, "/early")
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)  # sync: it is all in

    async def main() -> Any:
        return await aio.await_body(conn, ref)

    assert run(main()) == ("ok", b"HTTP/1.1 /early\n")
    gunpy.close(conn)
    gunpy.flush(conn)  # its gun_up


def test_timeout_and_cancel_on_a_real_stream(
    hypercorn_server: Peer, gun_mailbox: GunMailbox
) -> None:
    """A response held by the server (the request body is not finished): awaiting it
    times out; a cancelled wait takes nothing; the response arrives later intact."""

    async def main() -> None:
        ok, conn = gunpy.open(HOST, hypercorn_server.port)
        assert await aio.await_up(conn) == ("ok", "http")
        ref = gunpy.post(conn, "/echo", [("content-type", "text/plain")])
        assert await aio.await_(conn, ref, 50) == ("error", "timeout")
        waiting = asyncio.create_task(aio.await_(conn, ref, 5000))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gunpy.data(conn, ref, "fin", b"held")
        assert (await aio.await_(conn, ref))[:3] == ("response", "nofin", 200)
        assert await aio.await_body(conn, ref) == ("ok", b"held")
        gunpy.close(conn)

    run(main())


def test_websocket(ws_echo_server: Peer, gun_mailbox: GunMailbox) -> None:
    async def main() -> None:
        ok, conn = gunpy.open(HOST, ws_echo_server.port)
        assert await aio.await_up(conn) == ("ok", "http")
        ref = gunpy.ws_upgrade(conn, "/echo")
        assert (await aio.await_(conn, ref))[:2] == ("upgrade", ["websocket"])
        for i in range(10):
            gunpy.ws_send(conn, ref, ("text", f"m{i}"))
        got = [await aio.await_(conn, ref) for _ in range(10)]
        assert got == [("ws", ("text", f"m{i}")) for i in range(10)]
        gunpy.ws_send(conn, ref, "close")
        closed = await aio.await_(conn, ref)
        assert closed[0] == "ws" and (closed[1] == "close" or closed[1][0] == "close")
        down = await aio.receive(("gun_down", conn, "ws", ANY, ANY), after=5000)
        assert down is not TIMEOUT
        gunpy.close(conn)
        gunpy.flush(conn)

    run(main())


def test_pool_from_coroutines(hypercorn_server: Peer, gun_mailbox: GunMailbox) -> None:
    """800 coroutines over a pool of 8 HTTP/2 connections (pool_SUITE hello_pool_h2)."""
    port = hypercorn_server.port
    ok, mgr = pool.start_pool(HOST, port, {"conn_opts": {"protocols": ["http2"]}, "scope": "aio"})
    assert ok == "ok"
    try:

        async def main() -> None:
            assert pool.await_up(mgr) == "ok"

            async def one(i: int) -> Any:
                r = pool.get(f"/p{i}", {"host": f"{HOST}:{port}"}, {"scope": "aio"})
                assert r[0] == "async"
                assert (await aio.await_(*r[1]))[:3] == ("response", "nofin", 200)
                return await aio.await_body(*r[1])

            bodies = await asyncio.gather(*(one(i) for i in range(800)))
            assert bodies == [("ok", f"HTTP/2 /p{i}\n".encode()) for i in range(800)]

        run(main())
    finally:
        assert pool.stop_pool(mgr) == "ok"
