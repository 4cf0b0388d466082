"""ws_opts ``reupgrade``: a gunpy addition for Gun issues #42 and #231.

Gun reconnects a lost Websocket connection as plain HTTP and never upgrades it
again; users must watch gun_down/gun_up and redo it.  With ``reupgrade: True`` the
connection actor sends the same upgrade again after the reconnect, under the same
stream ref, so the reply_to gets a second ``gun_upgrade`` and ``ws_send`` works
again.  Off by default: Gun's behaviour stays the default.
"""

from __future__ import annotations

import base64
import hashlib

from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

import gunpy
from gunpy import ANY, TIMEOUT
from tests.origin import Origin, OriginConn

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_upgrade(server: OriginConn) -> bytes:
    """Read the upgrade request and answer 101 (RFC 6455 section 4.2.2)."""
    head = server.recv_request()
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    server.send(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n"
        b"upgrade: websocket\r\nsec-websocket-accept: " + accept + b"\r\n\r\n"
    )
    return head


def test_reupgrade_after_the_connection_is_lost() -> None:
    with Origin() as origin:
        ok, conn = gunpy.open("127.0.0.1", origin.port, {"retry": 1})
        assert gunpy.await_up(conn) == ("ok", "http")
        ref = gunpy.ws_upgrade(conn, "/chat", [("x-token", "t")], {"reupgrade": True})
        first = origin.accept()
        head1 = accept_upgrade(first)
        assert gunpy.receive(("gun_upgrade", conn, ref, ["websocket"], ANY), after=2000)
        first.close()  # the connection is lost without a close frame
        assert gunpy.receive(("gun_down", conn, "ws", ANY, ANY), after=2000) == (
            "gun_down", conn, "ws", "closed", [ref]
        )
        assert gunpy.await_up(conn) == ("ok", "http")
        second = origin.accept()
        head2 = accept_upgrade(second)
        # The same request again (same path and user headers), a fresh key.
        assert head2.split(b"\r\n")[0] == head1.split(b"\r\n")[0] == b"GET /chat HTTP/1.1"
        assert b"x-token: t" in head2
        assert gunpy.receive(("gun_upgrade", conn, ref, ["websocket"], ANY), after=2000)
        gunpy.ws_send(conn, ref, ("text", "again"))
        server_ws = Connection(ConnectionType.SERVER)
        got = []
        while not got:
            server_ws.receive_data(second.sock.recv(65536))
            got = [e for e in server_ws.events() if isinstance(e, TextMessage)]
        assert got[0].data == "again"
        gunpy.close(conn)


def test_no_reupgrade_by_default_as_gun() -> None:
    with Origin() as origin:
        ok, conn = gunpy.open("127.0.0.1", origin.port, {"retry": 1})
        ref = gunpy.ws_upgrade(conn, "/chat")
        first = origin.accept()
        accept_upgrade(first)
        assert gunpy.receive(("gun_upgrade", conn, ref, ANY, ANY), after=2000)
        first.close()
        assert gunpy.receive(("gun_down", conn, "ws", ANY, ANY), after=2000)
        assert gunpy.await_up(conn) == ("ok", "http")
        second = origin.accept()
        second.sock.settimeout(0.3)
        try:
            data = second.sock.recv(100)
        except TimeoutError:
            data = b""
        assert data == b""  # nothing sent: the owner must upgrade again itself
        gunpy.close(conn)


def test_no_reupgrade_after_the_user_closed() -> None:
    """A close the user sent is a deliberate end: not undone by reupgrade."""
    with Origin() as origin:
        ok, conn = gunpy.open("127.0.0.1", origin.port, {"retry": 1})
        ref = gunpy.ws_upgrade(conn, "/chat", [], {"reupgrade": True})
        first = origin.accept()
        accept_upgrade(first)
        assert gunpy.receive(("gun_upgrade", conn, ref, ANY, ANY), after=2000)
        gunpy.ws_send(conn, ref, "close")
        first.close()
        assert gunpy.receive(("gun_down", conn, "ws", ANY, ANY), after=2000)
        assert gunpy.await_up(conn) == ("ok", "http")
        origin.accept()
        assert gunpy.receive(("gun_upgrade", conn, ref, ANY, ANY), after=300) is TIMEOUT
        gunpy.close(conn)
