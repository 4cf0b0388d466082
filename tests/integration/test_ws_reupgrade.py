"""ws_opts ``reupgrade``: a gunpy addition for Gun issues #42 and #231.

Gun reconnects a lost Websocket connection as plain HTTP and never upgrades it
again; users must watch gun_down/gun_up and redo it.  With ``reupgrade: True`` the
connection actor sends the same upgrade again after the reconnect, under the same
stream ref, so the reply_to gets a second ``gun_upgrade`` and ``ws_send`` works
again.  Off by default: Gun's behaviour stays the default.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import gunpy
from gunpy.testing import (
    GunMailbox,
    OriginFactory,
    assert_receive,
    gun_down,
    gun_up,
    gun_upgrade,
    refute_receive,
)


@pytest.fixture(autouse=True)
def _fresh_mailbox(gun_mailbox: GunMailbox) -> Iterator[None]:
    """An empty mailbox for each test; a Gun message left unread fails it."""
    yield


def test_reupgrade_after_the_connection_is_lost(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin()
    conn = origin.open({"retry": 1})
    assert gunpy.await_up(conn) == ("ok", "http")
    ref = gunpy.ws_upgrade(conn, "/chat", [("x-token", "t")], {"reupgrade": True})
    first = origin.accept()
    req1 = first.accept_ws()
    assert_receive(gun_upgrade(conn, ref, ["websocket"]), after=2000)
    first.close()  # the connection is lost without a close frame
    assert_receive(gun_down(conn, "ws", "closed", [ref]), after=2000)
    assert gunpy.await_up(conn) == ("ok", "http")
    second = origin.accept()
    req2 = second.accept_ws()
    # The same request again (same path and user headers), a fresh key.
    assert req2.raw.split(b"\r\n")[0] == req1.raw.split(b"\r\n")[0] == b"GET /chat HTTP/1.1"
    assert b"x-token: t" in req2.raw
    assert req2.header("sec-websocket-key") != req1.header("sec-websocket-key")
    assert_receive(gun_upgrade(conn, ref, ["websocket"]), after=2000)
    gunpy.ws_send(conn, ref, ("text", "again"))
    assert second.ws_recv() == ("text", "again")
    gunpy.close(conn)


def test_no_reupgrade_by_default_as_gun(scripted_origin: OriginFactory) -> None:
    origin = scripted_origin()
    conn = origin.open({"retry": 1})
    ref = gunpy.ws_upgrade(conn, "/chat")
    first = origin.accept()
    first.accept_ws()
    assert_receive(gun_upgrade(conn, ref), after=2000)
    first.close()
    assert_receive(gun_down(conn, "ws"), after=2000)
    assert gunpy.await_up(conn) == ("ok", "http")
    second = origin.accept()
    with pytest.raises(TimeoutError):  # nothing sent: the owner must upgrade again itself
        second.recv(timeout=300)
    assert second.received == b""
    assert_receive(gun_up(conn, "http"))  # two connections, two gun_up: await_up took one
    gunpy.close(conn)


def test_no_reupgrade_after_the_user_closed(scripted_origin: OriginFactory) -> None:
    """A close the user sent is a deliberate end: not undone by reupgrade."""
    origin = scripted_origin()
    conn = origin.open({"retry": 1})
    ref = gunpy.ws_upgrade(conn, "/chat", [], {"reupgrade": True})
    first = origin.accept()
    first.accept_ws()
    assert_receive(gun_upgrade(conn, ref), after=2000)
    gunpy.ws_send(conn, ref, "close")
    first.close()
    assert_receive(gun_down(conn, "ws"), after=2000)
    assert gunpy.await_up(conn) == ("ok", "http")
    origin.accept()
    refute_receive(gun_upgrade(conn, ref), after=300)
    assert_receive(gun_up(conn, "http"))  # two connections, two gun_up: await_up took one
    gunpy.close(conn)
