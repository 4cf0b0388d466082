"""Websocket over HTTP/1.1: Gun's ``ws_SUITE`` (``http`` group), the closing paths of
``shutdown_SUITE`` and gun-reference 4.7, against a scripted origin.

The origin (``gunpy.testing``'s ``scripted_origin``) answers the upgrade
(``accept_ws``, or by hand where the bytes of the 101 matter) and then speaks
Websocket through wsproto's frame layer in the *server* role (``Peer`` below): every
frame gunpy sends is parsed by an independent implementation, which also checks
that it is masked (RFC 6455 section 5.1), and every frame the origin sends can be
built byte by byte.  Tests that only need an echo use the ``gun_ws_echo_server``
fixture, as ws_SUITE uses Cowboy's ``ws_echo_h``.

Nothing sleeps: each step waits for the message or the bytes it needs.  "No more
messages" is checked after a synchronous call to the connection (``gunpy.info``),
which the connection answers only after it has delivered what it had read.  Every
test starts with an empty mailbox and must leave no Gun message unread
(``gun_mailbox``); the connections ``open()`` made are closed after the test.
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import re
import struct
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

import gunpy
from gunpy import ANY, TIMEOUT
from gunpy.protocols.ws import WsDefaultProtocol
from gunpy.testing import (
    EchoServer,
    GunMailbox,
    OriginConn,
    OriginFactory,
    ScriptedOrigin,
    assert_receive,
    down,
    gun_conn_error,
    gun_down,
    gun_error,
    gun_response,
    gun_up,
    gun_upgrade,
    gun_ws,
    refute_receive,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_ONLY = ("badstate", "This connection only accepts Websocket frames.")
# gun_http:ws_send (Gun 2.4): ws_send on HTTP, e.g. after an automatic reconnect.
NOT_UPGRADED = (
    "badstate",
    "This connection does not currently accept Websocket frames. "
    "The Websocket upgrade was not performed. "
    "This may happen as a result of automatic reconnect.",
)
DEFLATE_OFFER = b"permessage-deflate; client_max_window_bits; server_max_window_bits=15"


# ---------------------------------------------------------------------------
# The scripted Websocket server


def accept_value(key: bytes) -> bytes:
    """RFC 6455 section 4.2.2: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def request_key(req: bytes) -> bytes:
    m = re.search(rb"\r\nsec-websocket-key: ([^\r]*)\r\n", req)
    assert m is not None, req
    return m.group(1)


def request_headers(req: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) pairs of a request head, as sent (names not lower-cased here)."""
    lines = req.split(b"\r\n")[1:]
    out = []
    for line in lines:
        if not line:
            continue
        name, _, value = line.partition(b":")
        out.append((name, value.strip()))
    return out


def switching(req: bytes, extra: bytes = b"", accept: bytes | None = None) -> bytes:
    """A 101 answering the upgrade request ``req``; ``extra``: more header lines."""
    if accept is None:
        accept = accept_value(request_key(req))
    return (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"connection: Upgrade\r\n"
        b"upgrade: websocket\r\n"
        b"sec-websocket-accept: " + accept + b"\r\n" + extra + b"\r\n"
    )


def raw_frame(
    opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False, mask: bytes | None = None
) -> bytes:
    """A frame built by hand (RFC 6455 section 5.2), unmasked unless ``mask``."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def deflate_frame(data: bytes, opcode: int = 0x2) -> bytes:
    """One permessage-deflate frame (RFC 7692 section 7.2.1): RSV1, tail removed."""
    z = zlib.compressobj(wbits=-15)
    body = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(b"\x00\x00\xff\xff")
    return raw_frame(opcode, body[:-4], rsv1=True)


class Peer:
    """The server side of one scripted Websocket connection (wsproto, SERVER role)."""

    def __init__(self, server: OriginConn, extensions: list[Any] | None = None) -> None:
        self.server = server
        self.ws = Connection(ConnectionType.SERVER, extensions=extensions or [])
        self.pending: list[Event] = []

    def frames(self, *events: Event) -> bytes:
        return b"".join(self.ws.send(e) for e in events)

    def send(self, *events: Event) -> None:
        self.server.send(self.frames(*events))

    def next_event(self, timeout: float = 5000) -> Event:
        """The next event parsed from what the client sent (EOFError at EOF);
        ``timeout`` in ms (TimeoutError)."""
        while not self.pending:
            data = self.server.recv(timeout)  # b"" once the client closed (or reset)
            if not data:
                raise EOFError("the client closed the connection")
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    def next_events(self, n: int) -> list[Event]:
        return [self.next_event() for _ in range(n)]

    def expect_close(self) -> CloseConnection:
        ev = self.next_event()
        assert isinstance(ev, CloseConnection), ev
        return ev

    def rest_until_eof(self) -> list[Event]:
        """Every event until the client closes the TCP connection."""
        got: list[Event] = []
        while True:
            try:
                got.append(self.next_event())
            except EOFError:
                return got


def close_event_of(reply: Any) -> tuple[int, str]:
    return (int(reply.code), reply.reason or "")


# ---------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(autouse=True)
def _fresh_mailbox(gun_mailbox: GunMailbox) -> Iterator[None]:
    """An empty mailbox for each test; a Gun message left unread fails it."""
    yield


@pytest.fixture
def origin(scripted_origin: OriginFactory) -> ScriptedOrigin:
    return scripted_origin()


def open_http(server: ScriptedOrigin | EchoServer, **opts: Any) -> gunpy.Pid:
    """``server.open`` (``retry: 0`` unless given; closed after the test), then gun_up."""
    conn = server.open(opts)
    assert gunpy.await_up(conn) == ("ok", "http")
    return conn


def upgraded(
    origin: ScriptedOrigin,
    ws_opts: dict[str, Any] | None = None,
    extra: list[tuple[str, str]] | None = None,
    server_extensions: list[Any] | None = None,
    **opts: Any,
) -> tuple[gunpy.Pid, gunpy.Ref, Peer, bytes]:
    """Open, upgrade at the scripted origin; (conn, ref, peer, upgrade request).
    ``extra``: more headers for the 101."""
    conn = open_http(origin, **opts)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws", None, ws_opts)
    req = server.accept_ws(headers=extra or [])
    assert gunpy.await_(conn, ref) == ("upgrade", ["websocket"], ANY)
    return conn, ref, Peer(server, server_extensions), req.raw


class XmppHandler:
    """A gun_ws_protocol handler (gun-reference 1, gun_ws_protocol): tags every frame."""

    @staticmethod
    def init(reply_to: Any, ref: Any, headers: Any, opts: dict[str, Any]) -> dict[str, Any]:
        reply_to.send(("xmpp_init", ref, reply_to.conn))
        return {"reply_to": reply_to, "ref": ref}

    @staticmethod
    def handle(frame: Any, state: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
        state["reply_to"].send(("xmpp", state["ref"], frame))
        return ("ok", 1, state)


class _Raising:
    """A subprotocol handler that fails in handle (or in init)."""

    fail_in_init = False

    @classmethod
    def init(cls, reply_to: Any, ref: Any, headers: Any, opts: dict[str, Any]) -> Any:
        if cls.fail_in_init:
            raise RuntimeError("init failed")
        return None

    @staticmethod
    def handle(frame: Any, state: Any) -> Any:
        raise RuntimeError("handle failed")


class _RaisingInInit(_Raising):
    fail_in_init = True


class _FreeHandler:
    """Forwards frames but reports a flow cost of 0 for text frames."""

    @staticmethod
    def init(reply_to: Any, ref: Any, headers: Any, opts: dict[str, Any]) -> Any:
        return (reply_to, ref)

    @staticmethod
    def handle(frame: Any, state: Any) -> Any:
        reply_to, ref = state
        reply_to.send(("gun_ws", reply_to.conn, ref, frame))
        return ("ok", 0 if frame[0] == "text" else 1, state)


def ws_subprotocol_h(req: bytes) -> bytes:
    """Gun's test handler ws_subprotocol_h (Cowboy), scripted: 400 "undefined" when
    no subprotocol is offered, 400 "nomatch" when "echo" is not among them, else a
    101 selecting "echo"."""
    offered = [v for n, v in request_headers(req) if n == b"sec-websocket-protocol"]
    names = [t.strip() for v in offered for t in v.split(b",")]
    if not offered or b"echo" not in names:
        body = b"undefined" if not offered else b"nomatch"
        return b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    return switching(req, b"sec-websocket-protocol: echo\r\n")


def _101(req: bytes, lines: list[bytes]) -> bytes:
    return b"HTTP/1.1 101 Switching Protocols\r\n" + b"".join(lines) + b"\r\n"


def _std(req: bytes) -> list[bytes]:
    return [
        b"connection: Upgrade\r\n",
        b"upgrade: websocket\r\n",
        b"sec-websocket-accept: " + accept_value(request_key(req)) + b"\r\n",
    ]


def _deflate_upgrade(
    origin: ScriptedOrigin, server_ext: PerMessageDeflate
) -> tuple[gunpy.Pid, gunpy.Ref, Peer, str]:
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws", [], {"compress": True})
    req = server.recv_http_request()
    offer = req.header("sec-websocket-extensions")
    assert offer is not None
    answer = server_ext.accept(offer)
    assert isinstance(answer, str)
    server.accept_ws(req, headers=[("sec-websocket-extensions", "permessage-deflate; " + answer)])
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    return conn, ref, Peer(server, [server_ext]), answer


# ---------------------------------------------------------------------------
# The seed: Gun's Websocket guide, line by line


def test_seed_websocket_chapter_walkthrough(gun_ws_echo_server: EchoServer) -> None:
    """The Websocket chapter of Gun's guide, as examples/demo.py runs it: upgrade with
    the receive/after block, send a text frame, send [text, binary, close], receive
    gun_ws; the close ends the connection with gun_down(ws, normal, [ref])."""
    # {ok, ConnPid} = gun:open("127.0.0.1", Port, #{retry => 0}),
    ok, conn = gunpy.open("127.0.0.1", gun_ws_echo_server.port, {"retry": 0})
    assert ok == "ok"
    assert gunpy.await_up(conn) == ("ok", "http")
    mref = gunpy.monitor(conn)

    # StreamRef = gun:ws_upgrade(ConnPid, "/websocket"),
    ref = gunpy.ws_upgrade(conn, "/websocket")
    upgrade_headers = None
    for msg in gunpy.select(after=1000):
        match msg:
            case ("gun_upgrade", c, r, ["websocket"], headers) if (c, r) == (conn, ref):
                upgrade_headers = headers
                break
            case ("gun_response", c, _, _, status, headers) if c == conn:
                raise gunpy.Exit(("ws_upgrade_failed", status, headers))
            case ("gun_error", c, r, reason) if (c, r) == (conn, ref):
                raise gunpy.Exit(("ws_upgrade_failed", reason))
    else:
        raise gunpy.Exit("timeout")
    assert ("upgrade", "websocket") in [(n, v.lower()) for n, v in upgrade_headers]

    # gun:ws_send(ConnPid, StreamRef, {text, "Hello!"}).
    gunpy.ws_send(conn, ref, ("text", "Hello!"))
    # receive {gun_ws, ConnPid, StreamRef, Frame} -> handle_frame(...) end.
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "Hello!")

    # gun:ws_send(ConnPid, StreamRef, [{text, "Hello!"}, {binary, BinaryValue}, close]).
    binary_value = bytes(range(256))
    gunpy.ws_send(conn, ref, [("text", "Hello!"), ("binary", binary_value), "close"])
    # The server may or may not echo frames that arrived together with our close
    # (websockets refuses to send once it has seen a close): whatever it echoes is in
    # order, and its close reply comes last.
    frames = []
    while True:
        frame = assert_receive(gun_ws(conn, ref), after=5000)[3]
        frames.append(frame)
        if frame == "close" or (isinstance(frame, tuple) and frame[0] == "close"):
            break
    echoed, close = frames[:-1], frames[-1]
    assert echoed == [("text", "Hello!"), ("binary", binary_value)][: len(echoed)]
    assert close in ("close", ("close", 1000, ""))
    # "Gun will close the connection cleanly but may attempt to reconnect afterwards
    # depending on the retry configuration": retry 0, so it then exits normal.
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    assert_receive(down(mref, "normal"), after=5000)


def test_seed_upgrade_listings(origin: ScriptedOrigin) -> None:
    """The chapter's other upgrade listings, against a scripted origin that records
    the bytes: "Upgrade to Websocket using HTTP authentication" (the header reaches
    the server) and "Upgrade to Websocket with protocol negotiation" (xmpp offered
    with gun_ws_h, chosen by the server: gun_upgrade, frames through the handler)."""
    conn = open_http(origin)
    server = origin.accept()
    # gun:ws_upgrade(ConnPid, "/websocket", [
    #     {<<"authorization">>, "Basic dXNlcm5hbWU6cGFzc3dvcmQ="}]).
    ref = gunpy.ws_upgrade(
        conn, "/websocket", [(b"authorization", "Basic dXNlcm5hbWU6cGFzc3dvcmQ=")]
    )
    req = server.recv_http_request()
    assert req.raw.startswith(b"GET /websocket HTTP/1.1\r\n")
    assert (b"authorization", b"Basic dXNlcm5hbWU6cGFzc3dvcmQ=") in request_headers(req.raw)
    server.accept_ws(req)
    assert gunpy.await_(conn, ref)[:2] == ("upgrade", ["websocket"])

    conn2 = open_http(origin)
    server2 = origin.accept()
    # StreamRef = gun:ws_upgrade(ConnPid, "/websocket", [],
    #     #{protocols => [{<<"xmpp">>, gun_ws_h}]}).
    ref2 = gunpy.ws_upgrade(conn2, "/websocket", [], {"protocols": [("xmpp", WsDefaultProtocol)]})
    req2 = server2.recv_http_request()
    assert (b"sec-websocket-protocol", b"xmpp") in request_headers(req2.raw)
    server2.accept_ws(req2, protocol="xmpp")
    result = gunpy.await_(conn2, ref2)
    assert result[:2] == ("upgrade", ["websocket"])
    assert ("sec-websocket-protocol", "xmpp") in result[2]
    Peer(server2).send(TextMessage(data="<presence/>"))
    assert assert_receive(gun_ws(conn2, ref2), after=5000)[3] == ("text", "<presence/>")


# ---------------------------------------------------------------------------
# ws_SUITE: the upgrade request


def test_await_returns_upgrade_and_ws_frames(gun_ws_echo_server: EchoServer) -> None:
    """ws_SUITE await: gun:await/2 returns {upgrade, [<<"websocket">>], Headers} and
    {ws, Frame}."""
    conn = open_http(gun_ws_echo_server)
    ref = gunpy.ws_upgrade(conn, "/", [])
    result = gunpy.await_(conn, ref)
    assert result[:2] == ("upgrade", ["websocket"])
    assert isinstance(result[2], list) and all(n == n.lower() for n, _ in result[2])
    gunpy.ws_send(conn, ref, ("text", "Hello!"))
    assert gunpy.await_(conn, ref) == ("ws", ("text", "Hello!"))
    gunpy.ws_send(conn, ref, ("binary", b"\x00\xff"))
    assert gunpy.await_(conn, ref) == ("ws", ("binary", b"\x00\xff"))


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Dict-Header": "value", "Authorization": "Basic dXNlcjpwYXNz"}, id="dict"),
        pytest.param([(b"X-Bytes-Header", b"value")], id="bytes"),
        pytest.param([("X-UPPER-HEADER", "value"), ("x-lower-header", "value")], id="list"),
        pytest.param({b"X-Bytes-Key": "value"}, id="dict-bytes-key"),
    ],
)
def test_headers_normalized_upgrade(origin: ScriptedOrigin, headers: Any) -> None:
    """ws_SUITE headers_normalized_upgrade: headers given to ws_upgrade as a dict, a
    list, str or bytes, any case, reach the server with lower-case names."""
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws", headers)
    req = server.recv_http_request()
    sent = request_headers(req.raw)
    pairs = headers.items() if isinstance(headers, dict) else headers
    for name, value in pairs:
        name_b = name if isinstance(name, bytes) else name.encode()
        value_b = value if isinstance(value, bytes) else value.encode()
        assert (name_b.lower(), value_b) in sent
    assert all(n == n.lower() for n, _ in sent), sent
    server.accept_ws(req)
    assert gunpy.await_(conn, ref)[:2] == ("upgrade", ["websocket"])


@pytest.mark.parametrize("compress", [False, True])
def test_upgrade_request_bytes(origin: ScriptedOrigin, compress: bool) -> None:
    """RFC 6455 section 4.1 / Gun's gun_http:ws_upgrade: a GET with connection:
    upgrade, upgrade: websocket, sec-websocket-version: 13, a fresh 16-byte base64 key,
    no body framing; with compress (gun-reference 3.4) exactly Gun's RFC 7692 offer."""
    conn = open_http(origin)
    server = origin.accept()
    gunpy.ws_upgrade(conn, "/chat?room=1", [], {"compress": compress})
    req = server.recv_request()
    assert req.startswith(b"GET /chat?room=1 HTTP/1.1\r\n")
    sent = request_headers(req)
    names = [n for n, _ in sent]
    assert len(names) == len(set(names)), sent
    d = dict(sent)
    assert d[b"host"] == f"127.0.0.1:{origin.port}".encode()
    assert d[b"connection"] == b"upgrade"
    assert d[b"upgrade"] == b"websocket"
    assert d[b"sec-websocket-version"] == b"13"
    assert len(base64.b64decode(d[b"sec-websocket-key"], validate=True)) == 16
    assert b"content-length" not in d and b"transfer-encoding" not in d
    assert b"sec-websocket-protocol" not in d
    if compress:
        assert d[b"sec-websocket-extensions"] == DEFLATE_OFFER
    else:
        assert b"sec-websocket-extensions" not in d
    # A second upgrade (on another connection) uses another key.
    conn2 = open_http(origin)
    server2 = origin.accept()
    gunpy.ws_upgrade(conn2, "/chat")
    assert request_key(server2.recv_request()) != d[b"sec-websocket-key"]


def test_upgrade_request_offers_subprotocols(origin: ScriptedOrigin) -> None:
    """gun-reference 3.4 protocols: the offer is sec-websocket-protocol, names comma-joined."""
    conn = open_http(origin)
    server = origin.accept()
    h = WsDefaultProtocol
    gunpy.ws_upgrade(conn, "/ws", [], {"protocols": [("xmpp", h), ("mqtt", h)]})
    d = dict(request_headers(server.recv_request()))
    assert d[b"sec-websocket-protocol"] == b"xmpp, mqtt"


@pytest.mark.parametrize(
    "headers",
    [
        [("x-evil", "a\r\nx-injected: 1")],
        {"x-evil": "a\nb"},
        [(b"x-evil", b"a\rb")],
    ],
)
def test_crlf_in_header_value_raises_at_the_call(origin: ScriptedOrigin, headers: Any) -> None:
    """Gun 2.4 invalid_request_headers (gun_SUITE): a CR or LF in a header value raises
    in the caller and nothing is sent; the connection is still usable."""
    conn = open_http(origin)
    server = origin.accept()
    with pytest.raises(gunpy.InvalidRequestHeader) as info:
        gunpy.ws_upgrade(conn, "/ws", headers)
    assert info.value.name == "x-evil"
    ref = gunpy.ws_upgrade(conn, "/ok")
    req = server.recv_http_request()
    assert req.raw.startswith(b"GET /ok ") and b"x-evil" not in req.raw
    server.accept_ws(req)
    assert gunpy.await_(conn, ref)[0] == "upgrade"


@pytest.mark.parametrize(
    ("ws_opts", "bad"),
    [
        ({"compress": "yes"}, ("compress", "yes")),
        ({"bogus": 1}, ("bogus", 1)),
        ({"flow": 0}, ("flow", 0)),
        ({"closing_timeout": -1}, ("closing_timeout", -1)),
        ({"protocols": [("xmpp", object())]}, ("protocols", ANY)),
    ],
)
def test_ws_upgrade_refuses_bad_options(
    origin: ScriptedOrigin, ws_opts: dict[str, Any], bad: Any
) -> None:
    """gun-reference 3.4: ws_upgrade/4 checks its options in the caller
    ({options, {ws, Opt}}) and sends nothing."""
    conn = open_http(origin)
    server = origin.accept()
    with pytest.raises(gunpy.OptionsError) as info:
        gunpy.ws_upgrade(conn, "/ws", [], ws_opts)
    assert info.value.reason == ("options", ("ws", bad))
    gunpy.ws_upgrade(conn, "/fine")
    assert server.recv_request().startswith(b"GET /fine ")


def test_user_host_header_replaces_the_default(origin: ScriptedOrigin) -> None:
    """Gun's request: a host header given by the user replaces the default one."""
    conn = open_http(origin)
    server = origin.accept()
    gunpy.ws_upgrade(conn, "/ws", {"Host": "example.org"})
    sent = request_headers(server.recv_request())
    assert [v for n, v in sent if n == b"host"] == [b"example.org"]


def test_unix_socket_hostname(scripted_origin: OriginFactory) -> None:
    """ws_SUITE unix_socket_hostname: over a Unix socket the upgrade's host header is
    localhost."""
    origin = scripted_origin(unix=True)
    assert origin.path is not None
    conn = open_http(origin)  # gunpy.open_unix(origin.path, {"retry": 0})
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws")
    req = server.recv_http_request()
    assert dict(request_headers(req.raw))[b"host"] == b"localhost"
    server.accept_ws(req)
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    gunpy.close(conn)


def test_ws_upgrade_before_gun_up_is_queued(origin: ScriptedOrigin) -> None:
    """Gun postpones requests made while not connected (gun-reference 4.1): a
    ws_upgrade called right after open is sent once connected."""
    conn = origin.open({"retry": 0})
    ref = gunpy.ws_upgrade(conn, "/early")
    server = origin.accept()
    req = server.recv_http_request()
    assert req.raw.startswith(b"GET /early HTTP/1.1\r\n")
    server.accept_ws(req)
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    assert assert_receive(gun_up(conn), after=5000) == ("gun_up", conn, "http")


def test_http_requests_before_the_upgrade(origin: ScriptedOrigin) -> None:
    """Gun's guide: ws_upgrade "can be called anytime after connection, so you can send
    HTTP requests before upgrading"."""
    conn = open_http(origin)
    server = origin.accept()
    ref1 = gunpy.get(conn, "/first")
    assert server.recv_request().startswith(b"GET /first ")
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
    assert gunpy.await_(conn, ref1) == ("response", "nofin", 200, ANY)
    assert gunpy.await_body(conn, ref1) == ("ok", b"first")
    ref = gunpy.ws_upgrade(conn, "/ws")
    server.accept_ws()
    assert gunpy.await_(conn, ref)[0] == "upgrade"


# ---------------------------------------------------------------------------
# ws_SUITE: what the connection accepts before and after the upgrade


def test_http10_upgrade_error(origin: ScriptedOrigin) -> None:
    """ws_SUITE http10_upgrade_error: ws_upgrade on an HTTP/1.0 connection gets a
    stream gun_error badstate and sends nothing."""
    conn = open_http(origin, http_opts={"version": "HTTP/1.0"})
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws")
    assert assert_receive(gun_error(conn, ref), after=5000) == (
        "gun_error",
        conn,
        ref,
        ("badstate", "Websocket cannot be used over an HTTP/1.0 connection."),
    )
    # The next thing on the wire is the next request: the upgrade was never written.
    gunpy.get(conn, "/next")
    assert server.recv_request().startswith(b"GET /next HTTP/1.0\r\n")


def test_http11_request_error(origin: ScriptedOrigin) -> None:
    """ws_SUITE http11_request_error (gun-reference 4.7): after the upgrade, requests,
    data, cancel and another ws_upgrade get the connection-wide
    {gun_error, Pid, {badstate, "This connection only accepts Websocket frames."}};
    the Websocket keeps working."""
    conn, ref, peer, _ = upgraded(origin)
    ref2 = gunpy.get(conn, "/")
    assert gunpy.await_(conn, ref2) == ("error", ("connection_error", WS_ONLY))
    gunpy.post(conn, "/", [], b"body")
    assert_receive(gun_conn_error(conn, WS_ONLY), after=5000)
    gunpy.data(conn, ref, "fin", b"x")
    assert_receive(gun_conn_error(conn, WS_ONLY), after=5000)
    gunpy.ws_upgrade(conn, "/again")
    assert_receive(gun_conn_error(conn, WS_ONLY), after=5000)
    # Nothing of those reached the server; the Websocket still works.
    gunpy.ws_send(conn, ref, ("text", "still here"))
    assert peer.next_event() == TextMessage(data="still here")
    peer.send(TextMessage(data="yes"))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "yes")
    assert gunpy.info(conn)["state_name"] == "connected_ws_only"
    assert gunpy.info(conn)["protocol"] == "ws"


def test_cancel_on_a_websocket(origin: ScriptedOrigin) -> None:
    """gun-reference 4.7: after the upgrade only ws_send is accepted; cancel gets the
    connection-wide badstate too."""
    conn, ref, peer, _ = upgraded(origin)
    gunpy.cancel(conn, ref)
    assert_receive(gun_conn_error(conn, WS_ONLY), after=5000)
    peer.send(TextMessage(data="still delivered"))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "still delivered")


def test_ws_send_on_an_http_connection(origin: ScriptedOrigin) -> None:
    """gun-reference 1 ws_send: on a connection that is not (yet) a Websocket,
    ws_send gets the connection-wide badstate and sends nothing; a ws_send made
    before the 101 was read is refused the same way."""
    conn = open_http(origin)
    server = origin.accept()
    gunpy.ws_send(conn, gunpy.make_ref(), ("text", "too early"))
    assert_receive(gun_conn_error(conn, NOT_UPGRADED), after=5000)
    ref = gunpy.ws_upgrade(conn, "/ws")
    gunpy.ws_send(conn, ref, ("text", "before the 101"))
    req = server.recv_http_request()
    assert_receive(gun_conn_error(conn, NOT_UPGRADED), after=5000)
    server.accept_ws(req)
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    peer = Peer(server)
    gunpy.ws_send(conn, ref, ("text", "now"))
    assert peer.next_event() == TextMessage(data="now")


def test_requests_pipelined_behind_the_upgrade_get_badstate(origin: ScriptedOrigin) -> None:
    """Gun 4.7/4.9: a request made while the upgrade waits for its answer is never
    written after a 101 (the bytes would be Websocket); its stream gets badstate."""
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws")
    ref2 = gunpy.get(conn, "/after")
    server.accept_ws()
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    assert assert_receive(gun_error(conn, ref2), after=5000) == (
        "gun_error",
        conn,
        ref2,
        WS_ONLY,
    )
    peer = Peer(server)
    gunpy.ws_send(conn, ref, "close")
    assert isinstance(peer.expect_close(), CloseConnection)
    peer.send(CloseConnection(code=1000))
    assert peer.rest_until_eof() == []
    assert b"/after" not in server.received
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("close", 1000, "")
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)


# ---------------------------------------------------------------------------
# ws_SUITE: refusal and subprotocols


def test_reject_upgrade(origin: ScriptedOrigin) -> None:
    """ws_SUITE reject_upgrade (and subprotocol_nomatch / _required_but_missing, where
    Cowboy refuses with 400): a refused upgrade is a normal response, gun_response +
    gun_data; the connection stays HTTP and takes the next request."""
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/reject")
    server.recv_request()
    server.send(
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 16\r\ncontent-type: text/plain\r\n\r\n"
        b"Upgrade rejected"
    )
    assert assert_receive(gun_response(conn, ref), after=5000) == (
        "gun_response",
        conn,
        ref,
        "nofin",
        400,
        [("content-length", "16"), ("content-type", "text/plain")],
    )
    assert gunpy.await_body(conn, ref, 1000) == ("ok", b"Upgrade rejected")
    ref2 = gunpy.get(conn, "/next")
    assert server.recv_request().startswith(b"GET /next HTTP/1.1\r\n")
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert gunpy.await_(conn, ref2) == ("response", "nofin", 200, ANY)
    assert gunpy.await_body(conn, ref2) == ("ok", b"ok")
    assert gunpy.info(conn)["protocol"] == "http"


@pytest.mark.parametrize(
    ("offer", "result"),
    [
        pytest.param(["dummy", "echo", "junk"], "upgrade", id="subprotocol_match"),
        pytest.param(["dummy", "junk"], b"nomatch", id="subprotocol_nomatch"),
        pytest.param([], b"undefined", id="subprotocol_required_but_missing"),
    ],
)
def test_ws_suite_subprotocols(origin: ScriptedOrigin, offer: list[str], result: Any) -> None:
    """ws_SUITE subprotocol_match / subprotocol_nomatch / subprotocol_required_but_missing
    against Cowboy's ws_subprotocol_h (scripted): a match upgrades and echoes through
    gun_ws_h; a server that cannot agree refuses with 400 and a body, which Gun
    reports as {response, nofin, 400, _} and the body."""
    ws_opts = {"protocols": [(name, WsDefaultProtocol) for name in offer]} if offer else {}
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/subprotocol", [], ws_opts)
    server.send(ws_subprotocol_h(server.recv_request()))
    if result == "upgrade":
        assert gunpy.await_(conn, ref)[:2] == ("upgrade", ["websocket"])
        peer = Peer(server)
        gunpy.ws_send(conn, ref, ("text", "Hello!"))
        peer.send(peer.next_event())  # the echo
        assert gunpy.await_(conn, ref) == ("ws", ("text", "Hello!"))
    else:
        assert gunpy.await_(conn, ref) == ("response", "nofin", 400, ANY)
        assert gunpy.await_body(conn, ref) == ("ok", result)


def test_subprotocol_match(origin: ScriptedOrigin) -> None:
    """ws_SUITE subprotocol_match: the server picks one of the offered names; the
    upgrade succeeds and frames go to that name's handler."""
    default = WsDefaultProtocol
    protocols = [("dummy", default), ("xmpp", XmppHandler), ("junk", default)]
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws", [], {"protocols": protocols})
    req = server.recv_http_request()
    assert dict(request_headers(req.raw))[b"sec-websocket-protocol"] == b"dummy, xmpp, junk"
    server.accept_ws(req, protocol="xmpp")
    result = gunpy.await_(conn, ref)
    assert result[:2] == ("upgrade", ["websocket"])
    assert ("sec-websocket-protocol", "xmpp") in result[2]
    assert assert_receive(("xmpp_init", ANY, ANY), after=5000) == ("xmpp_init", ref, conn)
    peer = Peer(server)
    peer.send(TextMessage(data="<stream/>"))
    assert assert_receive(("xmpp", ref, ANY), after=5000) == ("xmpp", ref, ("text", "<stream/>"))
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)


def test_subprotocol_none_chosen_uses_the_default_handler(origin: ScriptedOrigin) -> None:
    """Gun's ws_handshake_protocols: no sec-websocket-protocol in the 101 means
    default_protocol (gun_ws_h unless set)."""
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws", [], {"protocols": [("xmpp", XmppHandler)]})
    server.accept_ws()
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    Peer(server).send(TextMessage(data="plain"))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "plain")


def test_default_protocol_option(origin: ScriptedOrigin) -> None:
    """gun-reference 3.4 default_protocol: the handler used when none is negotiated."""
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws", [], {"default_protocol": XmppHandler})
    server.accept_ws()
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    Peer(server).send(BytesMessage(data=b"\x01"))
    assert assert_receive(("xmpp", ref, ANY), after=5000) == ("xmpp", ref, ("binary", b"\x01"))


@pytest.mark.parametrize("handler", [_Raising, _RaisingInInit], ids=["handle", "init"])
def test_subprotocol_handler_error_closes_1011(origin: ScriptedOrigin, handler: Any) -> None:
    """gunpy (ws.py _dispatch): a failing subprotocol handler does not crash the
    connection (it would crash Gun's); the Websocket is failed with close 1011
    (RFC 6455 7.4.1) and the user gets {gun_ws, _, Ref, {close, 1011, Reason}}."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"default_protocol": handler})
    if handler is _Raising:
        peer.send(TextMessage(data="boom"))
    close = peer.expect_close()
    assert close.code == 1011
    msg = assert_receive(gun_ws(conn, ref), after=5000)[3]
    assert msg[:2] == ("close", 1011) and "failed" in msg[2] and msg[2] == close.reason
    peer.send(close.response())
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)


# ---------------------------------------------------------------------------
# The 101 response (RFC 6455 section 4.1, Gun's ws_handshake)


@pytest.mark.parametrize(
    ("ws_opts", "answer"),
    [
        pytest.param(
            {"protocols": [("xmpp", XmppHandler)]},
            lambda req: _101(req, [*_std(req), b"sec-websocket-protocol: mqtt\r\n"]),
            id="unoffered-subprotocol",
        ),
        pytest.param(
            {},
            lambda req: _101(
                req, [*_std(req)[:2], b"sec-websocket-accept: dGhlIHNhbXBsZSBub25jZQ==\r\n"]
            ),
            id="bad-accept",
        ),
        pytest.param({}, lambda req: _101(req, _std(req)[:2]), id="no-accept"),
        pytest.param(
            {"compress": False},
            lambda req: _101(
                req, [*_std(req), b"sec-websocket-extensions: permessage-deflate\r\n"]
            ),
            id="unrequested-deflate",
        ),
        pytest.param(
            {"compress": True},
            lambda req: _101(
                req, [*_std(req), b"sec-websocket-extensions: x-webkit-deflate-frame\r\n"]
            ),
            id="unknown-extension",
        ),
        pytest.param(
            {"compress": True},
            lambda req: _101(
                req,
                [*_std(req), b"sec-websocket-extensions: permessage-deflate; bogus_param\r\n"],
            ),
            id="bad-deflate-parameter",
        ),
        pytest.param(
            {"compress": True},
            lambda req: _101(
                req,
                [
                    *_std(req),
                    b"sec-websocket-extensions: permessage-deflate; server_max_window_bits=7\r\n",
                ],
            ),
            id="bad-window-bits",
        ),
        pytest.param(
            {}, lambda req: _101(req, [_std(req)[0], _std(req)[2]]), id="no-upgrade-header"
        ),
        pytest.param(
            {},
            lambda req: _101(req, [b"connection: keep-alive\r\n", *_std(req)[1:]]),
            id="no-connection-upgrade",
        ),
        pytest.param(
            {},
            lambda req: _101(req, [_std(req)[0], b"upgrade: h2c\r\n", _std(req)[2]]),
            id="other-protocol",
        ),
    ],
)
def test_bad_101_drops_the_connection(
    origin: ScriptedOrigin, ws_opts: dict[str, Any], answer: Any
) -> None:
    """Gun's ws_handshake returns close: a 101 with a wrong or missing accept key, an
    extension or subprotocol that was not offered, bad deflate parameters (and, beyond
    Gun's "@todo check upgrade, connection", no upgrade: websocket / connection:
    upgrade, RFC 6455 4.1 client rules 2-3) fails the connection: the upgrade stream
    gets {gun_error, _, Ref, {closed, normal}} and the owner gun_down(http, normal,
    [Ref]); with retry 0 the process then exits normal."""
    conn = open_http(origin)
    mref = gunpy.monitor(conn)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws", [], ws_opts)
    req = server.recv_request()
    server.send(answer(req))
    assert assert_receive(gun_error(conn, ref), after=5000) == (
        "gun_error",
        conn,
        ref,
        ("closed", "normal"),
    )
    assert_receive(gun_down(conn, "http", "normal", [ref]), after=5000)
    assert_receive(down(mref, "normal"), after=5000)
    refute_receive(gun_upgrade(conn, ref), after=0)
    assert server.wait_closed() == b""


def test_101_header_names_any_case_and_split_in_pieces(origin: ScriptedOrigin) -> None:
    """RFC 9110 5.1: header names are case-insensitive; the 101 and the first frames
    may arrive cut anywhere.  gun_upgrade lists the headers with lower-case names."""
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws")
    req = server.recv_request()
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Connection: keep-alive, Upgrade\r\n"
        b"Upgrade: WebSocket\r\n"
        b"Sec-WebSocket-Accept: " + accept_value(request_key(req)) + b"\r\n"
        b"X-Extra: 1\r\n\r\n"
    ) + Peer(server).frames(TextMessage(data="cut"), BytesMessage(data=b"up"))
    for i in range(len(answer)):
        server.send(answer[i : i + 1])
    result = gunpy.await_(conn, ref)
    assert result[:2] == ("upgrade", ["websocket"])
    assert [n for n, _ in result[2]] == [
        "connection",
        "upgrade",
        "sec-websocket-accept",
        "x-extra",
    ]
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "cut")
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("binary", b"up")


def test_informational_response_before_the_101(origin: ScriptedOrigin) -> None:
    """gun-reference 2: a 1xx other than 101 is a gun_inform, always before the final
    answer; the 101 that follows completes the upgrade."""
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws")
    req = server.recv_request()
    server.send(b"HTTP/1.1 102 Processing\r\nx-step: 1\r\n\r\n" + switching(req))
    assert gunpy.await_(conn, ref) == ("inform", 102, [("x-step", "1")])
    assert gunpy.await_(conn, ref)[0] == "upgrade"


def test_bytes_after_the_101_in_the_same_packet(origin: ScriptedOrigin) -> None:
    """Gun's ws_handshake_end hands the bytes that followed the 101 to the Websocket
    (wsproto's trailing_data): frames sent with the 101 in one packet are delivered."""
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws")
    req = server.recv_request()
    peer = Peer(server)
    early = peer.frames(TextMessage(data="early"), BytesMessage(data=b"bird"))
    server.send(switching(req) + early)
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "early")
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("binary", b"bird")


def test_close_right_after_the_101(origin: ScriptedOrigin) -> None:
    """A server that accepts and closes at once, 101 and close frame in one packet:
    gun_upgrade, the close frame, then gun_down(ws, normal, [Ref])."""
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws")
    req = server.recv_request()
    peer = Peer(server)
    server.send(switching(req) + peer.frames(CloseConnection(code=1013, reason="try later")))
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("close", 1013, "try later")
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    assert close_event_of(peer.expect_close()) == (1000, "")


# ---------------------------------------------------------------------------
# Pings (ws_SUITE keepalive, silence_pings)


@pytest.mark.parametrize("where", ["connection", "upgrade"])
def test_keepalive_pings_and_pong_shown(origin: ScriptedOrigin, where: str) -> None:
    """ws_SUITE keepalive: with keepalive 100 Gun sends ping frames; with
    silence_pings false the server's pong reaches the user as {ws, pong}.  The
    options work from the connection's ws_opts and from ws_upgrade/4."""
    ws_opts = {"keepalive": 100, "silence_pings": False}
    if where == "connection":
        conn = open_http(origin, ws_opts=ws_opts)
        server = origin.accept()
        ref = gunpy.ws_upgrade(conn, "/ws")
        server.accept_ws()
        assert gunpy.await_(conn, ref)[0] == "upgrade"
        peer = Peer(server)
    else:
        conn, ref, peer, _ = upgraded(origin, ws_opts=ws_opts)
    for _ in range(2):  # keepalive repeats
        ping = peer.next_event()
        assert isinstance(ping, Ping)
        peer.send(ping.response())
        assert gunpy.await_(conn, ref) == ("ws", "pong")


def test_keepalive_default_silence_pings(origin: ScriptedOrigin) -> None:
    """ws_SUITE keepalive_default_silence_pings: pongs to Gun's keepalive pings are not
    forwarded by default.  The server's pong is followed by a text frame: the first
    gun_ws is that text."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"keepalive": 100})
    ping = peer.next_event()
    assert isinstance(ping, Ping)
    peer.send(ping.response(), Pong(payload=b"unsolicited"), TextMessage(data="marker"))
    assert gunpy.await_(conn, ref) == ("ws", ("text", "marker"))


def test_server_pings_answered_and_silenced_by_default(origin: ScriptedOrigin) -> None:
    """gun_ws_h silences pings (gun-reference 3.4 silence_pings default true) but Gun
    always answers them with a pong carrying the same payload (RFC 6455 5.5.2)."""
    conn, ref, peer, _ = upgraded(origin)
    peer.send(Ping(payload=b"hello"), Ping(payload=b""), TextMessage(data="marker"))
    assert peer.next_events(2) == [Pong(payload=b"hello"), Pong(payload=b"")]
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "marker")
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)


def test_server_pings_shown_with_silence_pings_false(origin: ScriptedOrigin) -> None:
    """silence_pings false: ping and pong frames are delivered, {ping, Payload} or
    ping when empty, and the pong is still sent automatically."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"silence_pings": False})
    peer.send(Ping(payload=b"hello"), Ping(payload=b""), Pong(payload=b"p"), Pong(payload=b""))
    assert [assert_receive(gun_ws(conn, ref), after=5000)[3] for _ in range(4)] == [
        ("ping", b"hello"),
        "ping",
        ("pong", b"p"),
        "pong",
    ]
    assert peer.next_events(2) == [Pong(payload=b"hello"), Pong(payload=b"")]


# ---------------------------------------------------------------------------
# reply_to (ws_SUITE reply_to, gun-reference 4.8)


def test_reply_to(gun_ws_echo_server: EchoServer) -> None:
    """ws_SUITE reply_to: with reply_to in ws_opts another process gets gun_upgrade and
    gun_ws; the owner gets neither."""
    inbox: queue.Queue[Any] = queue.Queue()
    start: queue.Queue[Any] = queue.Queue()
    frame = ("text", "Hello!")

    def other() -> None:
        inbox.put(gunpy.self())
        conn, ref = start.get(timeout=5)
        inbox.put(gunpy.await_(conn, ref)[:2])
        inbox.put(gunpy.await_(conn, ref))

    t = threading.Thread(target=other)
    t.start()
    pid = inbox.get(timeout=5)
    conn = open_http(gun_ws_echo_server)
    ref = gunpy.ws_upgrade(conn, "/", [], {"reply_to": pid})
    start.put((conn, ref))
    assert inbox.get(timeout=5) == ("upgrade", ["websocket"])
    gunpy.ws_send(conn, ref, frame)
    assert inbox.get(timeout=5) == ("ws", frame)
    t.join(5)
    refute_receive(gun_upgrade(conn, ANY), after=0)
    refute_receive(gun_ws(conn, ANY), after=0)


def test_reply_to_gets_the_frames_and_the_owner_gun_down(origin: ScriptedOrigin) -> None:
    """gun-reference 2: stream messages go to reply_to (including the server's close),
    gun_down always to the owner."""
    other = gunpy.Mailbox()
    pid = gunpy.Pid(other, "reply_to")
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws", [], {"reply_to": pid})
    server.accept_ws()
    assert other.receive((("gun_upgrade", conn, ref, ["websocket"], ANY),), 5.0) is not TIMEOUT
    peer = Peer(server)
    peer.send(TextMessage(data="for you"), CloseConnection(code=1000, reason="bye"))
    assert other.receive((("gun_ws", conn, ref, ANY),), 5.0)[3] == ("text", "for you")
    assert other.receive((("gun_ws", conn, ref, ANY),), 5.0)[3] == ("close", 1000, "bye")
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    assert other.receive((("gun_down", ANY, ANY, ANY, ANY),), 0) is TIMEOUT
    refute_receive(gun_ws(conn, ANY), after=0)


@pytest.mark.parametrize("form", ["fun", "fun_args"])
def test_reply_to_function(origin: ScriptedOrigin, form: str) -> None:
    """gun-reference 4.8: reply_to may be a fun/1 or {Fun, ExtraArgs}, called (in the
    connection process) with every stream message."""
    got: queue.Queue[Any] = queue.Queue()
    if form == "fun":
        reply_to: Any = got.put
    else:
        reply_to = (lambda msg, tag: got.put((tag, msg)), ["tagged"])
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws", [], {"reply_to": reply_to})
    server.accept_ws()
    Peer(server).send(TextMessage(data="to a fun"))
    msgs = [got.get(timeout=5), got.get(timeout=5)]
    if form == "fun_args":
        assert [m[0] for m in msgs] == ["tagged", "tagged"]
        msgs = [m[1] for m in msgs]
    assert msgs[0][:4] == ("gun_upgrade", conn, ref, ["websocket"])
    assert msgs[1] == ("gun_ws", conn, ref, ("text", "to a fun"))


# ---------------------------------------------------------------------------
# Sending (ws_SUITE send_many, send_many_close)


def test_send_many(gun_ws_echo_server: EchoServer) -> None:
    """ws_SUITE send_many: a list of frames in one ws_send, echoed in order."""
    conn = open_http(gun_ws_echo_server)
    ref = gunpy.ws_upgrade(conn, "/", [])
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    frame1, frame2 = ("text", "Hello!"), ("binary", b"World!")
    gunpy.ws_send(conn, ref, [frame1, frame2])
    assert gunpy.await_(conn, ref) == ("ws", frame1)
    assert gunpy.await_(conn, ref) == ("ws", frame2)


def test_send_many_close(origin: ScriptedOrigin) -> None:
    """ws_SUITE send_many_close: [text, binary, close] in one ws_send reach the server
    in order; the server's close is delivered, then gun_down(ws, normal, [Ref])."""
    conn, ref, peer, _ = upgraded(origin)
    gunpy.ws_send(conn, ref, [("text", "Hello!"), ("binary", b"World!"), "close"])
    got = peer.next_events(3)
    assert got[:2] == [TextMessage(data="Hello!"), BytesMessage(data=b"World!")]
    assert isinstance(got[2], CloseConnection)
    # Echo what a server that answers before closing would send (wsproto refuses to
    # once it has seen a close: by hand), then its close.
    peer.server.send(
        raw_frame(0x1, b"Hello!") + raw_frame(0x2, b"World!") + peer.frames(got[2].response())
    )
    assert gunpy.await_(conn, ref) == ("ws", ("text", "Hello!"))
    assert gunpy.await_(conn, ref) == ("ws", ("binary", b"World!"))
    assert gunpy.await_(conn, ref) == ("ws", "close")
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)


def test_frame_forms(origin: ScriptedOrigin) -> None:
    """gun-reference 1, ws_send frame(): close | ping | pong |
    {text|binary|close|ping|pong, iodata()} | {close, Code, iodata()}; every frame is
    masked (checked by the server-role parser) and arrives as given."""
    conn, ref, peer, _ = upgraded(origin)
    gunpy.ws_send(
        conn,
        ref,
        [
            ("text", "héllo"),
            ("text", b"bytes text"),
            ("text", ["io", [b"da", "ta"]]),
            ("binary", b"\x00\x01"),
            ("binary", [b"a", [b"b", b"c"]]),
            ("binary", b""),
            "ping",
            ("ping", b"x"),
            "pong",
            ("pong", b"y"),
        ],
    )
    gunpy.ws_send(conn, ref, ("text", "single frame, not a list"))
    assert peer.next_events(11) == [
        TextMessage(data="héllo"),
        TextMessage(data="bytes text"),
        TextMessage(data="iodata"),
        BytesMessage(data=b"\x00\x01"),
        BytesMessage(data=b"abc"),
        BytesMessage(data=b""),
        Ping(payload=b""),
        Ping(payload=b"x"),
        Pong(payload=b""),
        Pong(payload=b"y"),
        TextMessage(data="single frame, not a list"),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        ("text", b"\xff\xfe"),
        ("close", 999, "x"),
        ("close", 5000, "x"),
        ("ping", b"p" * 126),
        ("bogus", b"x"),
        ("text", 42),
        ("text", "\ud800"),  # a lone surrogate cannot be UTF-8
        "pang",
    ],
)
def test_ws_send_invalid_frame(origin: ScriptedOrigin, bad: Any) -> None:
    """gunpy (ws.py ws_send): where Gun's connection process would crash or send a
    frame the server must reject (RFC 6455 5.5: control payload <= 125 bytes, 7.4:
    close codes, 5.6: text is UTF-8), the caller gets {gun_error, _, Ref, {badarg,
    Text}}; frames before it in the list are sent, the rest dropped, and the
    Websocket keeps working."""
    conn, ref, peer, _ = upgraded(origin)
    gunpy.ws_send(conn, ref, [("text", "before"), bad, ("text", "dropped")])
    msg = assert_receive(gun_error(conn, ref), after=5000)
    assert msg[3][0] == "badarg" and isinstance(msg[3][1], str)
    gunpy.ws_send(conn, ref, ("text", "after"))
    assert peer.next_events(2) == [TextMessage(data="before"), TextMessage(data="after")]


@pytest.mark.parametrize(
    "bad",
    [("close", 1005, "x"), ("close", 1006, ""), ("close", 1015, ""), ("close", 1000, "r" * 124)],
    ids=["1005", "1006", "1015", "reason-124-bytes"],
)
def test_ws_send_close_frame_that_cannot_be_sent(origin: ScriptedOrigin, bad: Any) -> None:
    """RFC 6455 7.4.1: 1005, 1006 and 1015 "MUST NOT be set as a status code in a Close
    control frame by an endpoint"; 5.5: a control frame's payload is at most 125 bytes
    (code + 123 bytes of reason).  As for a 126-byte ping, the caller gets
    {gun_error, _, Ref, {badarg, Text}} and the frame is not sent (wsproto would
    otherwise send 1000 or cut the reason)."""
    conn, ref, peer, _ = upgraded(origin)
    gunpy.ws_send(conn, ref, bad)
    gunpy.info(conn)  # the ws_send has been handled
    msg = assert_receive(gun_error(conn, ref), after=0)
    assert msg[3][0] == "badarg", msg
    gunpy.ws_send(conn, ref, ("text", "after"))
    assert peer.next_event() == TextMessage(data="after")


# ---------------------------------------------------------------------------
# Closing (gun-reference 4.7, shutdown_SUITE)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("close", (1005, "")),  # no status code: RFC 6455 7.1.5 reports 1005
        (("close", 1000, "bye"), (1000, "bye")),
        (("close", 4000, ["app", b" reason"]), (4000, "app reason")),
        (("close", "bye"), (1000, "bye")),  # cow_ws: {close, Payload} is 1000 + Payload
    ],
)
def test_user_close_waits_for_the_server_close(
    origin: ScriptedOrigin, frame: Any, expected: tuple[int, str]
) -> None:
    """gun-reference 4.7, shutdown_SUITE ws_gun_send_close_frame: a user close is sent
    as given, frames after it in the same list are dropped, Gun waits for the server's
    close, delivers it, then closes: gun_down(ws, normal, [Ref])."""
    conn, ref, peer, _ = upgraded(origin, retry=1)
    gunpy.ws_send(conn, ref, [frame, ("text", "after the close")])
    close = peer.expect_close()
    assert close_event_of(close) == expected
    # Output is closed: a later ws_send sends nothing either.
    gunpy.ws_send(conn, ref, ("text", "later"))
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)
    peer.send(CloseConnection(code=1000, reason="see you"))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("close", 1000, "see you")
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    assert peer.rest_until_eof() == []
    origin.accept()  # retry 1: it reconnects (as HTTP, Gun 4.7)
    assert gunpy.await_up(conn) == ("ok", "http")


@pytest.mark.parametrize(
    ("close", "frame"),
    [
        (CloseConnection(code=1000, reason="bye"), ("close", 1000, "bye")),
        (CloseConnection(code=4001, reason=""), ("close", 4001, "")),
        (raw_frame(0x8, b""), "close"),  # no status code (RFC 6455 7.1.5)
    ],
)
def test_server_close_then_reconnect_as_http(
    origin: ScriptedOrigin, close: Any, frame: Any
) -> None:
    """gun-reference 4.7: the server closes; the user gets the close frame, Gun answers
    close 1000 with no reason and closes the socket, gun_down(ws, normal, [Ref]); with
    retries left it reconnects as plain HTTP (gun_up http), where ws_send gets the
    connection-wide badstate and requests work (Gun #42: no re-upgrade)."""
    conn, ref, peer, _ = upgraded(origin, retry=1)
    peer.server.send(close if isinstance(close, bytes) else peer.frames(close))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == frame
    assert close_event_of(peer.expect_close()) == (1000, "")
    assert peer.rest_until_eof() == []
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)

    server2 = origin.accept()
    assert gunpy.await_up(conn) == ("ok", "http")
    gunpy.ws_send(conn, ref, ("text", "anyone?"))
    assert_receive(gun_conn_error(conn, NOT_UPGRADED), after=5000)
    ref2 = gunpy.get(conn, "/")
    assert server2.recv_request().startswith(b"GET / HTTP/1.1\r\n")
    server2.send(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert gunpy.await_(conn, ref2) == ("response", "fin", 204, [])


def test_server_close_with_retry_0_exits_normal(origin: ScriptedOrigin) -> None:
    """gun-reference 4.7: with retry 0 a server close ends the process with reason
    normal, after gun_down(ws, normal, [Ref])."""
    conn, ref, peer, _ = upgraded(origin)
    mref = gunpy.monitor(conn)
    peer.send(CloseConnection(code=1001, reason="going away"))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("close", 1001, "going away")
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    assert_receive(down(mref, "normal"), after=5000)
    assert close_event_of(peer.expect_close()) == (1000, "")


def test_server_close_after_messages_in_one_packet(origin: ScriptedOrigin) -> None:
    """Frames before the server's close in the same read are all delivered, in order,
    and the close comes last (RFC 6455 section 7.1.1)."""
    conn, ref, peer, _ = upgraded(origin)
    peer.send(TextMessage(data="a"), BytesMessage(data=b"b"), CloseConnection(code=1000))
    assert [assert_receive(gun_ws(conn, ref), after=5000)[3] for _ in range(3)] == [
        ("text", "a"),
        ("binary", b"b"),
        ("close", 1000, ""),
    ]
    assert assert_receive(gun_down(conn), after=5000)[3] == "normal"


def test_await_after_the_connection_ends(origin: ScriptedOrigin) -> None:
    """gun:await/2 ignores gun_down but not the process's exit: after the server's
    close with retry 0, await returns the close frame, then {error, {down, normal}}."""
    conn, ref, peer, _ = upgraded(origin)
    peer.send(CloseConnection(code=1000, reason=""))
    assert gunpy.await_(conn, ref) == ("ws", ("close", 1000, ""))
    assert gunpy.await_(conn, ref) == ("error", ("down", "normal"))
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=0)  # before the exit


def test_closes_crossing(origin: ScriptedOrigin) -> None:
    """RFC 6455 7.1.1: both ends send a close at the same time.  Exactly one close
    leaves gunpy, the server's is delivered, and the connection ends normal."""
    conn, ref, peer, _ = upgraded(origin)
    peer.send(CloseConnection(code=1001, reason="server"))
    gunpy.ws_send(conn, ref, ("close", 4000, "client"))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("close", 1001, "server")
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    got = peer.rest_until_eof()
    assert len(got) == 1 and isinstance(got[0], CloseConnection)
    assert close_event_of(got[0]) in ((1000, ""), (4000, "client"))


def test_server_ping_after_our_close_is_not_answered(origin: ScriptedOrigin) -> None:
    """RFC 6455 5.5.1: after sending a close an endpoint sends no more data; a ping
    that arrives then is not answered, and the close handshake completes."""
    conn, ref, peer, _ = upgraded(origin)
    gunpy.ws_send(conn, ref, "close")
    close = peer.expect_close()
    peer.server.send(raw_frame(0x9, b"late") + peer.frames(close.response()))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == "close"
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    assert peer.rest_until_eof() == []


@pytest.mark.parametrize("how", ["ws_send", "shutdown"])
def test_closing_timeout_when_the_server_never_answers(origin: ScriptedOrigin, how: str) -> None:
    """Gun's closing_timeout (gun-reference 3.4): a server that never answers our close
    cannot hold the connection: after the timeout the connection ends (gun_down normal
    after a user close; exit shutdown after gun:shutdown)."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"closing_timeout": 50})
    mref = gunpy.monitor(conn)
    if how == "ws_send":
        gunpy.ws_send(conn, ref, "close")
        assert isinstance(peer.expect_close(), CloseConnection)
        assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
        assert_receive(down(mref, "normal"), after=5000)
    else:
        gunpy.shutdown(conn)
        assert close_event_of(peer.expect_close())[0] == 1001
        gunpy.info(conn)  # still alive: waiting for the server's close
        assert_receive(down(mref, "shutdown"), after=5000)
    assert peer.rest_until_eof() == []


def test_server_eof_without_close(origin: ScriptedOrigin) -> None:
    """gun-reference 4.2: the server drops TCP without a close frame: gun_down(ws,
    closed, [Ref]), no gun_ws; with retry 0 the process exits {shutdown, closed}."""
    conn, ref, peer, _ = upgraded(origin)
    mref = gunpy.monitor(conn)
    peer.server.close()
    assert_receive(gun_down(conn, "ws", "closed", [ref]), after=5000)
    assert_receive(down(mref, ("shutdown", "closed")), after=5000)
    refute_receive(gun_ws(conn, ref), after=0)


def test_upgrade_again_after_reconnect(origin: ScriptedOrigin) -> None:
    """Gun #42 / #231 (gun-reference 6.1): Gun reconnects as HTTP and never
    re-upgrades; the user watches gun_down/gun_up and calls ws_upgrade again."""
    conn, ref, peer, _ = upgraded(origin, retry=1)
    peer.server.close()
    assert_receive(gun_down(conn, "ws", "closed", [ref]), after=5000)
    server2 = origin.accept()
    assert gunpy.await_up(conn) == ("ok", "http")
    ref2 = gunpy.ws_upgrade(conn, "/ws")
    server2.accept_ws()
    assert gunpy.await_(conn, ref2)[0] == "upgrade"
    peer2 = Peer(server2)
    gunpy.ws_send(conn, ref2, ("text", "again"))
    assert peer2.next_event() == TextMessage(data="again")


# ---------------------------------------------------------------------------
# Shutdown and owner death (shutdown_SUITE ws_*, closing_*)


def test_shutdown_sends_close_1001_and_exits_without_gun_down(origin: ScriptedOrigin) -> None:
    """shutdown_SUITE ws_shutdown (gun-reference 1 shutdown, 4.2, 4.7): close 1001,
    wait for the server's close (delivered like any frame), exit shutdown; no
    gun_down."""
    conn, ref, peer, _ = upgraded(origin)
    mref = gunpy.monitor(conn)
    gunpy.shutdown(conn)
    close = peer.expect_close()
    assert close_event_of(close) == (1001, "")
    gunpy.info(conn)  # still alive: waiting for the server's close
    peer.send(CloseConnection(code=1001, reason="bye"))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("close", 1001, "bye")
    assert_receive(down(mref, "shutdown"), after=5000)
    assert peer.rest_until_eof() == []
    # gun_down would have been sent before the exit: it is not there.
    refute_receive(gun_down(conn), after=0)


def test_shutdown_after_a_user_close(origin: ScriptedOrigin) -> None:
    """shutdown_SUITE ws_shutdown after ws_send close: no second close frame is sent,
    the server's close is still awaited and delivered; exit shutdown, no gun_down."""
    conn, ref, peer, _ = upgraded(origin)
    mref = gunpy.monitor(conn)
    gunpy.ws_send(conn, ref, ("close", 4000, "mine"))
    close = peer.expect_close()
    gunpy.shutdown(conn)
    gunpy.info(conn)  # the shutdown has been handled
    peer.send(close.response())
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("close", 4000, "mine")
    assert_receive(down(mref, "shutdown"), after=5000)
    assert peer.rest_until_eof() == []  # no 1001 after our first close
    refute_receive(gun_down(conn), after=0)


def test_shutdown_while_flow_is_paused(origin: ScriptedOrigin) -> None:
    """shutdown_SUITE ws_shutdown with a spent flow budget: close 1001 goes out and the
    server's close is still read (not stuck behind the budget until closing_timeout)."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"flow": 1})
    mref = gunpy.monitor(conn)
    peer.send(TextMessage(data="0"), TextMessage(data="1"))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "0")
    gunpy.shutdown(conn)
    close = peer.expect_close()
    assert close.code == 1001
    gunpy.info(conn)  # still alive: waiting for the server's close
    peer.send(close.response())
    assert [assert_receive(gun_ws(conn, ref), after=5000)[3] for _ in range(2)] == [
        ("text", "1"),
        ("close", 1001, ""),
    ]
    assert_receive(down(mref, "shutdown"), after=5000)
    assert peer.rest_until_eof() == []


@pytest.mark.parametrize(
    ("how", "reason"),
    [("return", "normal"), ("crash", ("shutdown", ("owner_down", "crashed")))],
)
def test_owner_down_sends_close_1001(
    origin: ScriptedOrigin, monkeypatch: pytest.MonkeyPatch, how: str, reason: Any
) -> None:
    """shutdown_SUITE ws_owner_down (gun-reference 4.3, 7): the owner's death sends close
    1001 at once; the process exits normal when the owner exited normal,
    {shutdown, {owner_down, Reason}} otherwise."""
    import gunpy._process

    monkeypatch.setattr(threading, "excepthook", gunpy._process._excepthook)
    box: queue.Queue[Any] = queue.Queue()

    def owner() -> None:
        ok, conn = gunpy.open("127.0.0.1", origin.port, {"retry": 0})
        box.put(conn)
        assert gunpy.await_up(conn) == ("ok", "http")
        ref = gunpy.ws_upgrade(conn, "/ws")
        assert gunpy.await_(conn, ref)[0] == "upgrade"
        if how == "crash":
            raise gunpy.Exit("crashed")

    t = threading.Thread(target=owner)
    t.start()
    conn = box.get(timeout=5)
    mref = gunpy.monitor(conn)
    server = origin.accept()
    server.accept_ws()
    t.join(5)
    peer = Peer(server)
    close = peer.expect_close()
    assert close_event_of(close) == (1001, "")
    gunpy.info(conn)  # still alive: waiting for the server's close
    peer.send(close.response())
    assert_receive(down(mref, reason), after=5000)
    assert peer.rest_until_eof() == []


@pytest.mark.parametrize(
    ("how", "reason"),
    [("return", "normal"), ("crash", ("shutdown", ("owner_down", "crashed")))],
)
def test_closing_owner_down(
    origin: ScriptedOrigin, monkeypatch: pytest.MonkeyPatch, how: str, reason: Any
) -> None:
    """shutdown_SUITE closing_owner_down / closing_owner_down_error: the owner sends a
    close and dies while Gun waits for the server's close; no second close (1001) is
    sent, Gun keeps waiting for the server's close, then exits with the owner-derived
    reason."""
    import gunpy._process

    monkeypatch.setattr(threading, "excepthook", gunpy._process._excepthook)
    box: queue.Queue[Any] = queue.Queue()

    def owner() -> None:
        ok, conn = gunpy.open("127.0.0.1", origin.port, {"retry": 0})
        box.put(conn)
        assert gunpy.await_up(conn) == ("ok", "http")
        ref = gunpy.ws_upgrade(conn, "/ws")
        assert gunpy.await_(conn, ref)[0] == "upgrade"
        gunpy.ws_send(conn, ref, ("close", 3333, ""))
        if how == "crash":
            raise gunpy.Exit("crashed")

    t = threading.Thread(target=owner)
    t.start()
    conn = box.get(timeout=5)
    mref = gunpy.monitor(conn)
    server = origin.accept()
    server.accept_ws()
    peer = Peer(server)
    close = peer.expect_close()
    assert close_event_of(close) == (3333, "")
    t.join(5)  # the owner is gone: its DOWN is in the connection's mailbox
    gunpy.info(conn)  # still alive: waiting for the server's close
    peer.send(close.response())
    assert_receive(down(mref, reason), after=5000)
    assert peer.rest_until_eof() == []  # one close only


# ---------------------------------------------------------------------------
# Receiving and protocol errors (gun-reference 7: gunpy tells the user)


def test_messages_cut_anywhere_and_many_at_once(origin: ScriptedOrigin) -> None:
    """Reassembly (gun-reference 4.7): a message sent byte by byte, a 10 MB message,
    and a burst of 2000 small frames are each delivered whole and in order."""
    conn, ref, peer, _ = upgraded(origin)
    frame = peer.frames(TextMessage(data="byte by byte"))
    for i in range(len(frame)):
        peer.server.send(frame[i : i + 1])
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "byte by byte")
    big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    peer.send(BytesMessage(data=big))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("binary", big)
    peer.server.send(b"".join(raw_frame(0x1, str(i).encode()) for i in range(2000)))
    assert [assert_receive(gun_ws(conn, ref), after=5000)[3] for _ in range(2000)] == [
        ("text", str(i)) for i in range(2000)
    ]


def test_fragmented_message_reassembled_with_control_frames_between(origin: ScriptedOrigin) -> None:
    """gun-reference 4.7 (gun_ws_h reassembles fragments), RFC 6455 section 5.4: control
    frames may be injected between fragments; one message is delivered."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"silence_pings": False})
    peer.server.send(
        raw_frame(0x2, b"ab", fin=False)
        + raw_frame(0x9, b"in-between")
        + raw_frame(0x0, b"cd", fin=False)
        + raw_frame(0x0, b"ef")
    )
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("ping", b"in-between")
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("binary", b"abcdef")
    assert peer.next_event() == Pong(payload=b"in-between")


def test_valid_utf8_split_across_fragments(origin: ScriptedOrigin) -> None:
    """RFC 6455 section 5.6/8.1: a code point split across fragments is fine (UTF-8 is
    validated over the whole message, not per frame)."""
    conn, ref, peer, _ = upgraded(origin)
    e = "é".encode()
    peer.server.send(raw_frame(0x1, b"caf" + e[:1], fin=False) + raw_frame(0x0, e[1:]))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "café")


def test_close_in_the_middle_of_a_fragmented_message(origin: ScriptedOrigin) -> None:
    """RFC 6455 5.4/5.5.1: a close may come between fragments; the unfinished message
    is dropped and the close delivered."""
    conn, ref, peer, _ = upgraded(origin)
    peer.server.send(
        raw_frame(0x1, b"never ", fin=False) + raw_frame(0x8, struct.pack("!H", 1000) + b"bye")
    )
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("close", 1000, "bye")
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    refute_receive(gun_ws(conn, ref), after=0)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        pytest.param(raw_frame(0x1, b"caf\xc3"), 1007, id="truncated-utf8"),
        pytest.param(raw_frame(0x1, b"\xff\xfe"), 1007, id="invalid-utf8"),
        pytest.param(
            raw_frame(0x1, "é".encode()[:1], fin=False) + raw_frame(0x0, b"\xff"),
            1007,
            id="invalid-utf8-across-fragments",
        ),
        pytest.param(raw_frame(0x3, b"x"), 1002, id="reserved-opcode"),
        pytest.param(raw_frame(0x1, b"hello", mask=b"abcd"), 1002, id="masked-from-server"),
        pytest.param(raw_frame(0x0, b"x"), 1002, id="continuation-without-start"),
        pytest.param(raw_frame(0x9, b"p", fin=False), 1002, id="fragmented-ping"),
        pytest.param(raw_frame(0x9, b"p" * 126), 1002, id="ping-over-125-bytes"),
        pytest.param(raw_frame(0x1, b"x", rsv1=True), 1002, id="rsv1-without-deflate"),
        pytest.param(
            raw_frame(0x1, b"a", fin=False) + raw_frame(0x1, b"b"),
            1002,
            id="new-message-mid-fragments",
        ),
        pytest.param(raw_frame(0x8, b"\x03"), 1002, id="close-with-1-byte-payload"),
        pytest.param(raw_frame(0x8, struct.pack("!H", 999)), 1002, id="close-code-999"),
        pytest.param(raw_frame(0x8, struct.pack("!H", 1005)), 1002, id="close-code-1005-on-wire"),
        pytest.param(
            raw_frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007, id="close-reason-not-utf8"
        ),
    ],
)
def test_protocol_error_sends_close_and_tells_the_user(
    origin: ScriptedOrigin, bad: bytes, code: int
) -> None:
    """RFC 6455 sections 5.1, 5.2, 5.4, 8.1 (ws_SUITE reject_masked_frame_from_server):
    Gun fails the connection with close 1002/1007.  gunpy also delivers
    {gun_ws, _, Ref, {close, Code, Reason}} naming the close it sent, and the server's
    close reply ends the connection at once: gun_down(ws, normal, [Ref])."""
    conn, ref, peer, _ = upgraded(origin)
    mref = gunpy.monitor(conn)
    peer.server.send(bad)
    close = peer.expect_close()
    assert close.code == code
    msg = assert_receive(gun_ws(conn, ref), after=5000)[3]
    assert msg[:2] == ("close", code) and msg[2] == (close.reason or "")
    peer.server.send(raw_frame(0x8, struct.pack("!H", code)))
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    assert peer.rest_until_eof() == []
    assert_receive(down(mref, "normal"), after=5000)
    # The server's close reply was not delivered: the user already knows.
    refute_receive(gun_ws(conn, ref), after=0)


# ---------------------------------------------------------------------------
# max_message_size (gunpy addition, RFC 6455 section 7.4.1 code 1009)


@pytest.mark.parametrize(
    ("ws_opts", "extra", "frames"),
    [
        pytest.param({"max_message_size": 1000}, [], raw_frame(0x2, b"a" * 2000), id="single"),
        pytest.param(
            {"max_message_size": 1000},
            [],
            raw_frame(0x1, b"a" * 400, fin=False)
            + raw_frame(0x0, b"a" * 400, fin=False)
            + raw_frame(0x0, b"a" * 400),
            id="fragmented",
        ),
        pytest.param(
            {"max_message_size": 1000},
            [],
            # Declares 1 MB but only 2000 bytes come: no need to wait for the rest.
            raw_frame(0x2, b"a" * 1_000_000)[: 10 + 2000],
            id="declared-huge",
        ),
        pytest.param(
            {"max_message_size": 1000},
            [],
            raw_frame(0x1, "€".encode() * 334),  # 334 characters, 1002 bytes
            id="text-counted-in-utf8-bytes",
        ),
        pytest.param({"max_message_size": 1000}, [], raw_frame(0x2, b"a" * 1001), id="one-over"),
        pytest.param(
            {"max_message_size": 1000, "compress": True},
            [("sec-websocket-extensions", "permessage-deflate")],
            deflate_frame(b"\x00" * 1_000_000),
            id="deflate-bomb",
        ),
    ],
)
def test_message_over_max_message_size_closes_1009(
    origin: ScriptedOrigin,
    ws_opts: dict[str, Any],
    extra: list[tuple[str, str]],
    frames: bytes,
) -> None:
    """gunpy's max_message_size (ws.py docstring; the 1009 "message too big" close of
    RFC 6455 7.4.1): a message over the limit, whole, fragmented, announced or
    inflated, fails the connection with 1009, the user is told, and nothing of the
    message is delivered."""
    conn, ref, peer, _ = upgraded(origin, ws_opts=ws_opts, extra=extra)
    peer.server.send(frames)
    close = peer.expect_close()
    assert close.code == 1009
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("close", 1009, close.reason)
    if b"\x7f" in frames[1:2]:
        # The frame still owes ~1 MB: a close would be read as its payload, so the
        # server ends the TCP connection (as Gun's max_frame_size tests do).
        peer.server.close()
        assert_receive(gun_down(conn, "ws", "closed", [ref]), after=5000)
    else:
        peer.server.send(raw_frame(0x8, struct.pack("!H", 1009)))
        assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    refute_receive(gun_ws(conn, ref), after=0)


def test_max_message_size_is_inclusive(origin: ScriptedOrigin) -> None:
    """A message of exactly max_message_size bytes (UTF-8 bytes for text) is delivered."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"max_message_size": 999})
    peer.server.send(raw_frame(0x2, b"a" * 999) + raw_frame(0x1, "€".encode() * 333))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("binary", b"a" * 999)
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "€" * 333)


def test_max_message_size_control_frames_do_not_count(origin: ScriptedOrigin) -> None:
    """A ping between fragments does not count toward the message's size (RFC 6455
    5.4): 90 bytes of text with a 50-byte ping inside pass a limit of 100."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"max_message_size": 100})
    chunk = b"a" * 30
    peer.server.send(
        raw_frame(0x1, chunk, fin=False)
        + raw_frame(0x9, b"p" * 50)
        + raw_frame(0x0, chunk, fin=False)
        + raw_frame(0x0, chunk)
    )
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "a" * 90)
    assert peer.next_event() == Pong(payload=b"p" * 50)


@pytest.mark.parametrize("limit", ["default", "infinity"])
def test_max_message_size_default_and_infinity(origin: ScriptedOrigin, limit: str) -> None:
    """ws.py DEFAULT_MAX_MESSAGE_SIZE (64 MiB): one byte more fails with 1009 by
    default; max_message_size infinity turns the limit off and the message arrives
    whole."""
    ws_opts = {"max_message_size": "infinity"} if limit == "infinity" else None
    conn, ref, peer, _ = upgraded(origin, ws_opts=ws_opts)
    big = b"a" * (64 * 1024 * 1024 + 1)
    peer.server.send(raw_frame(0x2, big))
    if limit == "infinity":
        assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("binary", big)
    else:
        assert peer.expect_close().code == 1009
        assert assert_receive(gun_ws(conn, ref), after=5000)[3][:2] == ("close", 1009)


def test_deflate_bomb_is_not_inflated_past_max_message_size(origin: ScriptedOrigin) -> None:
    """ws.py DEFAULT_MAX_MESSAGE_SIZE: the limit bounds "what one peer can make us hold
    in memory".  A compressed frame that would inflate to 64 MiB must be refused (1009)
    without inflating it: with max_message_size 1000 the connection's peak allocation
    stays far below the inflated size (measured with tracemalloc, all threads)."""
    conn, ref, peer, _ = upgraded(
        origin,
        ws_opts={"max_message_size": 1000, "compress": True},
        extra=[("sec-websocket-extensions", "permessage-deflate")],
    )
    bomb = deflate_frame(b"\x00" * (64 * 1024 * 1024))
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        peer.server.send(bomb)
        assert peer.expect_close().code == 1009
        assert assert_receive(gun_ws(conn, ref), after=5000)[3][:2] == ("close", 1009)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


# ---------------------------------------------------------------------------
# permessage-deflate with the scripted server (RFC 7692)


def test_deflate_negotiated_both_ways(origin: ScriptedOrigin) -> None:
    """RFC 7692: with compress and the server's acceptance, gunpy's frames carry RSV1
    and inflate at the server; the server's compressed frames are inflated."""
    conn = open_http(origin)
    server = origin.accept()
    ref = gunpy.ws_upgrade(conn, "/ws", [], {"compress": True})
    req = server.recv_http_request()
    ext = PerMessageDeflate()
    offer = dict(request_headers(req.raw))[b"sec-websocket-extensions"].decode()
    answer = ext.accept(offer)
    assert isinstance(answer, str)
    server.accept_ws(req, headers=[("sec-websocket-extensions", "permessage-deflate; " + answer)])
    assert gunpy.await_(conn, ref)[0] == "upgrade"
    peer = Peer(server, [ext])
    text = "compressible " * 1000
    gunpy.ws_send(conn, ref, [("text", text), ("binary", b"\x00" * 10000)])
    assert peer.next_events(2) == [TextMessage(data=text), BytesMessage(data=b"\x00" * 10000)]
    # The client's frames were compressed: far fewer bytes than the payloads.
    assert len(server.received) < len(req.raw) + 2000
    peer.send(TextMessage(data=text))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", text)
    server.send(deflate_frame(b"by hand", opcode=0x2))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("binary", b"by hand")


def test_deflate_no_context_takeover(origin: ScriptedOrigin) -> None:
    """RFC 7692 7.1.1: with client_no_context_takeover the client resets its
    compressor per message; the server's inflater (reset per message too) would fail
    on a back-reference into the previous message."""
    ext = PerMessageDeflate(client_no_context_takeover=True, server_no_context_takeover=True)
    conn, ref, peer, answer = _deflate_upgrade(origin, ext)
    assert "client_no_context_takeover" in answer
    text = os.urandom(500).hex()
    gunpy.ws_send(conn, ref, [("text", text), ("text", text), ("text", text)])
    assert peer.next_events(3) == [TextMessage(data=text)] * 3
    peer.send(*[TextMessage(data=text)] * 3)
    assert [assert_receive(gun_ws(conn, ref), after=5000)[3] for _ in range(3)] == [
        ("text", text)
    ] * 3


def test_deflate_client_max_window_bits(origin: ScriptedOrigin) -> None:
    """RFC 7692 7.1.2.2: the server limits the client's LZ77 window (here to 2^10);
    gunpy must not refer further back, or the server's small-window inflater fails."""
    ext = PerMessageDeflate(client_max_window_bits=10)
    conn, ref, peer, answer = _deflate_upgrade(origin, ext)
    assert "client_max_window_bits=10" in answer
    chunk = os.urandom(3000)  # repeated at a distance of 3000 > 1024
    gunpy.ws_send(conn, ref, ("binary", chunk * 4))
    assert peer.next_event() == BytesMessage(data=chunk * 4)


# ---------------------------------------------------------------------------
# Flow control (gun-reference 4.5, flow_SUITE) and stream_info


@pytest.mark.parametrize("where", ["upgrade", "connection"])
def test_flow_control(origin: ScriptedOrigin, where: str) -> None:
    """flow_SUITE flow_ws: with flow 1 one gun_ws is delivered, then nothing until
    update_flow raises the budget."""
    if where == "upgrade":
        conn, ref, peer, _ = upgraded(origin, ws_opts={"flow": 1})
    else:
        conn = open_http(origin, ws_opts={"flow": 1})
        server = origin.accept()
        ref = gunpy.ws_upgrade(conn, "/ws")
        server.accept_ws()
        assert gunpy.await_(conn, ref)[0] == "upgrade"
        peer = Peer(server)
    peer.send(*(TextMessage(data=str(i)) for i in range(5)))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "0")
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)
    gunpy.update_flow(conn, ref, 1)
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "1")
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)
    gunpy.update_flow(conn, ref, 2)
    assert [assert_receive(gun_ws(conn, ref), after=5000)[3] for _ in range(2)] == [
        ("text", "2"),
        ("text", "3"),
    ]
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)
    gunpy.update_flow(conn, ref, 1)
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "4")
    # A silenced ping costs nothing: with a budget of 1 the text behind it arrives.
    peer.send(Ping(payload=b""), TextMessage(data="5"))
    gunpy.update_flow(conn, ref, 1)
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "5")
    assert peer.next_event() == Pong(payload=b"")
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)


def test_flow_cost_comes_from_the_handler(origin: ScriptedOrigin) -> None:
    """gun_ws_protocol handle/2 returns {ok, FlowDec, State}: the budget is charged what
    the handler says (gun-reference 4.5, 4.7)."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"flow": 1, "default_protocol": _FreeHandler})
    peer.send(
        TextMessage(data="a"),
        TextMessage(data="b"),
        BytesMessage(data=b"c"),
        TextMessage(data="d"),
    )
    assert [assert_receive(gun_ws(conn, ref), after=5000)[3] for _ in range(3)] == [
        ("text", "a"),
        ("text", "b"),
        ("binary", b"c"),
    ]
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)
    gunpy.update_flow(conn, ref, 1)
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "d")


def test_flow_is_lifted_once_our_close_is_out(origin: ScriptedOrigin) -> None:
    """ws.py docstring (flow): after our close the budget no longer pauses reading, so
    the messages the server sent before its close and the close itself arrive within
    closing_timeout (Gun reads until the close too)."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"flow": 1})
    peer.send(TextMessage(data="0"), TextMessage(data="1"), TextMessage(data="2"))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "0")
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)
    gunpy.ws_send(conn, ref, "close")
    close = peer.expect_close()
    peer.send(close.response())
    assert [assert_receive(gun_ws(conn, ref), after=5000)[3] for _ in range(3)] == [
        ("text", "1"),
        ("text", "2"),
        "close",
    ]
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)


def test_flow_holds_the_server_close_until_update_flow(origin: ScriptedOrigin) -> None:
    """gun-reference 4.5, ws.py (flow): the budget is exact; a close frame behind a
    spent budget waits for update_flow like any frame, then ends the connection."""
    conn, ref, peer, _ = upgraded(origin, ws_opts={"flow": 1})
    peer.send(TextMessage(data="0"), TextMessage(data="1"), CloseConnection(code=1000))
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "0")
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)
    gunpy.update_flow(conn, ref, 1)
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("text", "1")
    gunpy.info(conn)  # a barrier: the connection delivered what it had read
    refute_receive(gun_ws(conn, ref), after=0)
    refute_receive(gun_down(conn), after=0)
    gunpy.update_flow(conn, ref, 1)
    assert assert_receive(gun_ws(conn, ref), after=5000)[3] == ("close", 1000, "")
    assert_receive(gun_down(conn, "ws", "normal", [ref]), after=5000)
    assert close_event_of(peer.expect_close()) == (1000, "")


def test_stream_info_on_websocket(origin: ScriptedOrigin) -> None:
    """gun:stream_info/2 on the Websocket stream: running, then stopping after our close."""
    conn, ref, peer, _ = upgraded(origin)
    ok, info = gunpy.stream_info(conn, ref)
    assert ok == "ok" and info["ref"] is ref and info["state"] == "running"
    assert info["reply_to"] is gunpy.self()
    gunpy.ws_send(conn, ref, "close")
    peer.expect_close()
    assert gunpy.stream_info(conn, ref)[1]["state"] == "stopping"
    assert gunpy.stream_info(conn, gunpy.make_ref()) == ("ok", None)
    assert peer.ws.state is ConnectionState.REMOTE_CLOSING
