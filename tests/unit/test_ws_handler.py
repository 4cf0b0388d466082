"""RFC 6455 / RFC 7692 client handler (``gunpy.protocols.ws``), no sockets.

Every frame the handler sends is decoded by an independent peer: wsproto in the
SERVER role, which also builds the server frames fed to the handler (hand-made bytes
only where wsproto refuses to produce a broken frame).  Behaviour follows Gun's
``gun_ws`` / ``gun_ws_h`` (gun-reference sections 4.5-4.7) plus gunpy's documented
improvements (section 7: protocol errors are reported, ``max_message_size``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib
from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import WSConnection
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate

from gunpy._commands import CancelTimer, Close, Closing, Deliver, Send, SetActive, StartTimer
from gunpy.protocols import ws as ws_mod
from gunpy.protocols.base import BADSTATE_WS_ONLY, HandlerContext
from gunpy.protocols.ws import (
    DEFAULT_MAX_MESSAGE_SIZE,
    WsDefaultProtocol,
    WsHandler,
    WsReplyTo,
    check_options,
    handshake_check,
    handshake_offer,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Recorder:
    """A reply_to that records what it is sent (never used directly by the handler)."""

    def __init__(self) -> None:
        self.msgs: list[Any] = []

    def send(self, msg: Any) -> None:
        self.msgs.append(msg)


class Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CONN = Sentinel("CONN")
REF = Sentinel("REF")


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def response_headers(
    req_headers: list[tuple[str, str]],
    *,
    extensions: str | None = None,
    protocol: str | None = None,
) -> list[tuple[str, str]]:
    key = dict(req_headers)["sec-websocket-key"]
    headers = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-accept", accept_for(key)),
    ]
    if extensions is not None:
        headers.append(("sec-websocket-extensions", extensions))
    if protocol is not None:
        headers.append(("sec-websocket-protocol", protocol))
    return headers


def sent(cmds: list[Any]) -> bytes:
    return b"".join(c.data for c in cmds if isinstance(c, Send))


def delivered(cmds: list[Any]) -> list[Any]:
    return [c.msg for c in cmds if isinstance(c, Deliver)]


def raw_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = False
) -> bytes:
    """A server frame built by hand (for what wsproto refuses to build)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        head = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack("!Q", n)
    if mask:
        head += b"\x00\x00\x00\x00"  # a zero mask leaves the payload as is
    return head + payload


class Pair:
    """A WsHandler (client) and a wsproto SERVER connection, negotiated together."""

    def __init__(
        self,
        opts: dict[str, Any] | None = None,
        *,
        server_ext: PerMessageDeflate | None = None,
        protocol: str | None = None,
    ) -> None:
        self.opts = dict(opts or {})
        self.reply_to = Recorder()
        self.owner = Recorder()
        req_headers, offer = handshake_offer(self.opts)
        ext_header = None
        server_exts: list[Extension] = []
        if server_ext is not None:
            params = server_ext.accept(dict(req_headers)["sec-websocket-extensions"])
            assert isinstance(params, str)
            ext_header = "permessage-deflate" + ("; " + params if params else "")
            server_exts = [server_ext]
        self.resp_headers = response_headers(req_headers, extensions=ext_header, protocol=protocol)
        result = handshake_check(offer, self.resp_headers)
        assert isinstance(result, dict), result
        self.result = result
        self.ctx = HandlerContext(conn=CONN, owner=self.owner)
        self.client = WsHandler(
            self.ctx, self.opts, REF, self.reply_to, self.resp_headers, **result
        )
        self.server = Connection(ConnectionType.SERVER, extensions=server_exts)

    def to_server(self, cmds: list[Any]) -> list[Event]:
        """Feed the client's Send bytes to the server; the server's events."""
        self.server.receive_data(sent(cmds))
        return list(self.server.events())

    def from_server(self, *events: Event) -> bytes:
        return b"".join(self.server.send(e) for e in events)

    def recv(self, *events: Event) -> list[Any]:
        return self.client.handle(self.from_server(*events))


def gun_ws(frame: Any) -> tuple[Any, ...]:
    return ("gun_ws", CONN, REF, frame)


# ---------------------------------------------------------------------------
# RFC 6455 section 4.1: the opening handshake (handshake_offer / handshake_check)
# ---------------------------------------------------------------------------


def test_offer_headers_default() -> None:
    headers, _ = handshake_offer({})
    names = [n for n, _ in headers]
    assert names == ["connection", "upgrade", "sec-websocket-version", "sec-websocket-key"]
    assert headers[:3] == [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
    ]
    # Section 4.1: the key is 16 random bytes, base64-encoded, fresh for each offer.
    key = headers[3][1]
    assert len(base64.b64decode(key, validate=True)) == 16
    assert handshake_offer({})[0][3][1] != key


def test_offer_headers_compress_and_protocols() -> None:
    headers, _ = handshake_offer(
        {"compress": True, "protocols": [("xmpp", WsDefaultProtocol), ("mqtt", WsDefaultProtocol)]}
    )
    assert headers[4] == (
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits; server_max_window_bits=15",
    )
    assert headers[5] == ("sec-websocket-protocol", "xmpp, mqtt")
    assert len(headers) == 6


def test_offer_understood_by_wsproto_server_handshake() -> None:
    """An independent server handshake parses our GET and its 101 passes our check."""
    headers, offer = handshake_offer({"compress": True, "protocols": [("echo", WsDefaultProtocol)]})
    req = h11.Request(method="GET", target="/", headers=[("host", "localhost"), *headers])
    wire = h11.Connection(h11.CLIENT).send(req)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(wire)
    (event,) = list(server.events())
    assert isinstance(event, Request)
    assert event.subprotocols == ["echo"]
    assert [e.split(";")[0] for e in event.extensions] == ["permessage-deflate"]  # type: ignore[union-attr]
    ext = PerMessageDeflate()
    reply = server.send(AcceptConnection(subprotocol="echo", extensions=[ext]))
    client_h11 = h11.Connection(h11.CLIENT)
    client_h11.send(req)
    client_h11.receive_data(reply)
    resp = client_h11.next_event()
    assert isinstance(resp, h11.InformationalResponse) and resp.status_code == 101
    resp_headers = [(n.decode().lower(), v.decode("latin-1")) for n, v in resp.headers]
    result = handshake_check(offer, resp_headers)
    assert isinstance(result, dict), result
    assert result["protocol"] == "echo"
    assert result["protocol_handler"] is WsDefaultProtocol
    (client_ext,) = result["extensions"]
    assert isinstance(client_ext, PerMessageDeflate) and client_ext.enabled()


def test_check_good_accept() -> None:
    headers, offer = handshake_offer({})
    result = handshake_check(offer, response_headers(headers))
    assert result == {"extensions": [], "protocol": None, "protocol_handler": WsDefaultProtocol}


def test_check_default_protocol_option() -> None:
    class Custom:
        init = staticmethod(lambda reply_to, ref, headers, opts: None)
        handle = staticmethod(lambda frame, state: ("ok", 1, state))

    headers, offer = handshake_offer({"default_protocol": Custom})
    result = handshake_check(offer, response_headers(headers))
    assert isinstance(result, dict) and result["protocol_handler"] is Custom


def test_check_bad_accept() -> None:
    headers, offer = handshake_offer({})
    resp = [(n, "AAAA" if n == "sec-websocket-accept" else v) for n, v in response_headers(headers)]
    assert isinstance(handshake_check(offer, resp), str)


def test_check_missing_accept() -> None:
    headers, offer = handshake_offer({})
    resp = [(n, v) for n, v in response_headers(headers) if n != "sec-websocket-accept"]
    assert "sec-websocket-accept" in str(handshake_check(offer, resp))


def test_check_accept_for_another_key() -> None:
    _, offer = handshake_offer({})
    other, _ = handshake_offer({})
    assert isinstance(handshake_check(offer, response_headers(other)), str)


@pytest.mark.parametrize("drop", ["upgrade", "connection"])
def test_check_missing_upgrade_headers(drop: str) -> None:
    # RFC 6455 section 4.1, client requirements 2 and 3.
    headers, offer = handshake_offer({})
    resp = [(n, v) for n, v in response_headers(headers) if n != drop]
    assert isinstance(handshake_check(offer, resp), str)


def test_check_connection_token_list() -> None:
    headers, offer = handshake_offer({})
    resp = [
        (n, "keep-alive, Upgrade" if n == "connection" else v) for n, v in response_headers(headers)
    ]
    assert isinstance(handshake_check(offer, resp), dict)


def test_check_unrequested_extension() -> None:
    # Gun: "Fail the connection if extension was not requested."
    headers, offer = handshake_offer({})
    resp = response_headers(headers, extensions="permessage-deflate")
    assert "not offered" in str(handshake_check(offer, resp))


def test_check_unknown_extension() -> None:
    headers, offer = handshake_offer({"compress": True})
    resp = response_headers(headers, extensions="x-webkit-deflate-frame")
    assert isinstance(handshake_check(offer, resp), str)


@pytest.mark.parametrize(
    "ext",
    [
        "permessage-deflate; foo",  # unknown parameter
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=09",
        "permessage-deflate; server_max_window_bits",  # value required
        "permessage-deflate; client_max_window_bits",  # value required in the answer
        "permessage-deflate; client_no_context_takeover=1",
        "permessage-deflate, permessage-deflate",  # accepted twice
    ],
)
def test_check_bad_deflate_params(ext: str) -> None:
    # RFC 7692 section 5 / 7.1: the client fails on an invalid answer.
    headers, offer = handshake_offer({"compress": True})
    assert isinstance(handshake_check(offer, response_headers(headers, extensions=ext)), str)


def test_check_deflate_params_applied() -> None:
    headers, offer = handshake_offer({"compress": True})
    ext = (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        'server_max_window_bits="10"; client_max_window_bits=11'
    )
    result = handshake_check(offer, response_headers(headers, extensions=ext))
    assert isinstance(result, dict), result
    (pmd,) = result["extensions"]
    assert pmd.enabled()
    assert pmd.server_no_context_takeover and pmd.client_no_context_takeover
    assert pmd.server_max_window_bits == 10
    assert pmd.client_max_window_bits == 11


def test_check_deflate_window_8_uses_9() -> None:
    # zlib cannot raw-deflate with an 8-bit window: Cowlib uses 9, so do we.
    headers, offer = handshake_offer({"compress": True})
    ext = "permessage-deflate; client_max_window_bits=8; server_max_window_bits=8"
    result = handshake_check(offer, response_headers(headers, extensions=ext))
    assert isinstance(result, dict), result
    (pmd,) = result["extensions"]
    assert pmd.client_max_window_bits == 9 and pmd.server_max_window_bits == 9


def test_check_extension_header_case_and_spacing() -> None:
    headers, offer = handshake_offer({"compress": True})
    resp = response_headers(
        headers, extensions=", Permessage-Deflate ;  Server_No_Context_Takeover,"
    )
    result = handshake_check(offer, resp)
    assert isinstance(result, dict), result
    assert result["extensions"][0].server_no_context_takeover


def test_check_subprotocol_selected() -> None:
    class Xmpp:
        init = staticmethod(lambda reply_to, ref, headers, opts: None)
        handle = staticmethod(lambda frame, state: ("ok", 1, state))

    headers, offer = handshake_offer({"protocols": [("mqtt", WsDefaultProtocol), ("xmpp", Xmpp)]})
    result = handshake_check(offer, response_headers(headers, protocol="xmpp"))
    assert isinstance(result, dict)
    assert result["protocol"] == "xmpp" and result["protocol_handler"] is Xmpp


def test_check_subprotocol_not_offered() -> None:
    headers, offer = handshake_offer({"protocols": [("mqtt", WsDefaultProtocol)]})
    assert "not offered" in str(handshake_check(offer, response_headers(headers, protocol="xmpp")))
    # Nothing offered at all.
    headers, offer = handshake_offer({})
    assert isinstance(handshake_check(offer, response_headers(headers, protocol="xmpp")), str)


def test_check_subprotocol_several_selected() -> None:
    headers, offer = handshake_offer(
        {"protocols": [("a", WsDefaultProtocol), ("b", WsDefaultProtocol)]}
    )
    assert isinstance(handshake_check(offer, response_headers(headers, protocol="a, b")), str)


def test_check_no_subprotocol_selected_falls_back() -> None:
    # Gun's select_protocol: no header -> default_protocol (a server that requires a
    # subprotocol answers 400 instead: ws_SUITE subprotocol_required_but_missing).
    headers, offer = handshake_offer({"protocols": [("mqtt", WsDefaultProtocol)]})
    result = handshake_check(offer, response_headers(headers))
    assert isinstance(result, dict)
    assert result["protocol"] is None and result["protocol_handler"] is WsDefaultProtocol


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


def test_check_options_good() -> None:
    assert check_options({}) is None
    assert (
        check_options(
            {
                "compress": True,
                "protocols": [("xmpp", WsDefaultProtocol)],
                "default_protocol": WsDefaultProtocol,
                "silence_pings": False,
                "keepalive": 1000,
                "closing_timeout": "infinity",
                "flow": 3,
                "reply_to": Recorder(),
                "user_opts": {"anything": 1},
                "max_message_size": 1024,
                "invalid_request_headers": "ignore",
            }
        )
        is None
    )
    assert check_options({"keepalive": "infinity", "closing_timeout": 1}) is None
    assert check_options({"max_message_size": "infinity"}) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("unknown", 1),
        ("compress", 1),
        ("silence_pings", "no"),
        ("keepalive", 0),
        ("keepalive", True),
        ("keepalive", 1.5),
        ("closing_timeout", 0),
        ("closing_timeout", "never"),
        ("flow", 0),
        ("flow", True),
        ("protocols", "xmpp"),
        ("protocols", [("xmpp",)]),
        ("protocols", [(b"xmpp", WsDefaultProtocol)]),
        ("protocols", [("xmpp", object())]),
        ("default_protocol", object()),
        ("max_message_size", 0),
        ("max_message_size", "big"),
        ("invalid_request_headers", "warn"),
    ],
)
def test_check_options_bad(key: str, value: Any) -> None:
    assert check_options({"compress": False, key: value}) == (key, value)


# ---------------------------------------------------------------------------
# Incoming frames (RFC 6455 sections 5.4, 5.6; Gun's gun_ws_h)
# ---------------------------------------------------------------------------


def test_text_and_binary() -> None:
    p = Pair()
    cmds = p.recv(TextMessage("Hello!"))
    assert cmds == [Deliver(p.reply_to, gun_ws(("text", "Hello!")))]
    cmds = p.recv(BytesMessage(b"\x00\x01"))
    assert cmds == [Deliver(p.reply_to, gun_ws(("binary", b"\x00\x01")))]
    assert p.reply_to.msgs == []  # delivery is the actor's job


def test_many_messages_one_read_one_list_in_order() -> None:
    p = Pair()
    cmds = p.recv(TextMessage("a"), BytesMessage(b"b"), TextMessage("c"))
    assert delivered(cmds) == [
        gun_ws(("text", "a")),
        gun_ws(("binary", b"b")),
        gun_ws(("text", "c")),
    ]


def test_fragmented_message_reassembled() -> None:
    p = Pair()
    # RFC 6455 section 5.4: a message in three fragments, with a ping in between.
    cmds = p.recv(
        TextMessage("Hel", message_finished=False),
        Ping(b"p"),
        TextMessage("lo ", message_finished=False),
    )
    assert delivered(cmds) == []
    assert p.to_server(cmds) == [Pong(b"p")]
    cmds = p.recv(TextMessage("wörld", message_finished=True))
    assert delivered(cmds) == [gun_ws(("text", "Hello wörld"))]
    cmds = p.recv(BytesMessage(b"ab", message_finished=False), BytesMessage(b"cd"))
    assert delivered(cmds) == [gun_ws(("binary", b"abcd"))]


def test_message_split_across_reads_byte_by_byte() -> None:
    p = Pair()
    wire = p.from_server(TextMessage("€uro " * 20), BytesMessage(bytes(range(200))))
    msgs = []
    for i in range(len(wire)):
        cmds = p.client.handle(wire[i : i + 1])
        assert all(isinstance(c, Deliver) for c in cmds)
        msgs += delivered(cmds)
    assert msgs == [gun_ws(("text", "€uro " * 20)), gun_ws(("binary", bytes(range(200))))]


def test_large_binary() -> None:
    p = Pair()
    data = bytes(range(256)) * 1000
    assert delivered(p.recv(BytesMessage(data))) == [gun_ws(("binary", data))]


def test_invalid_utf8_closes_1007() -> None:
    p = Pair()
    cmds = p.client.handle(raw_frame(0x1, b"ok \xff"))
    # Our close 1007 (RFC 6455 section 7.4.1), read back by the server...
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code == 1007
    # ... and the user is told, with the same code (better than Gun).
    (msg,) = delivered(cmds)
    assert msg[:3] == ("gun_ws", CONN, REF)
    assert msg[3][:2] == ("close", 1007) and msg[3][2] == close.reason
    assert StartTimer("closing", 15000) in cmds
    assert not any(isinstance(c, Close) for c in cmds)
    # The peer's close reply ends the connection at once.
    cmds = p.recv(CloseConnection(1007))
    assert cmds == [CancelTimer("closing"), Close("normal")]


def test_invalid_utf8_across_fragments_closes_1007() -> None:
    p = Pair()
    # "é" is c3 a9: a valid first fragment, then a continuation that breaks it.
    cmds = p.client.handle(raw_frame(0x1, b"caf\xc3", fin=False))
    assert cmds == []
    cmds = p.client.handle(raw_frame(0x0, b"\x41"))
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code == 1007
    assert [m[3][:2] for m in delivered(cmds)] == [("close", 1007)]


@pytest.mark.parametrize(
    "frame",
    [
        raw_frame(0x3, b"x"),  # reserved non-control opcode
        raw_frame(0xB, b""),  # reserved control opcode
        raw_frame(0x1, b"x", rsv=0x4),  # RSV1 without an extension
        raw_frame(0x2, b"x", rsv=0x1),  # RSV3
        raw_frame(0x1, b"x", mask=True),  # servers must not mask (section 5.1)
        raw_frame(0x9, b"x", fin=False),  # fragmented control frame
        raw_frame(0x9, b"x" * 126),  # control frame over 125 bytes
        raw_frame(0x0, b"x"),  # continuation without a message
        raw_frame(0x8, b"\x03"),  # close with a 1-byte payload
        raw_frame(0x8, struct.pack("!H", 999)),  # close with an invalid code
    ],
)
def test_bad_frames_close_1002(frame: bytes) -> None:
    p = Pair()
    cmds = p.client.handle(frame)
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code == 1002
    assert [m[3][:2] for m in delivered(cmds)] == [("close", 1002)]
    assert StartTimer("closing", 15000) in cmds
    # Frames after the failure are skipped until the peer's close arrives.
    assert p.client.handle(raw_frame(0x1, b"ignored") + raw_frame(0x2, b"x" * 70000)) == []
    assert p.client.handle(raw_frame(0x8, struct.pack("!H", 1002))) == [
        CancelTimer("closing"),
        Close("normal"),
    ]


def test_bad_frame_then_close_in_pieces() -> None:
    p = Pair({"closing_timeout": 500})
    cmds = p.client.handle(raw_frame(0x3))
    assert StartTimer("closing", 500) in cmds
    big = raw_frame(0x2, b"y" * 300, mask=True)
    wire = big + raw_frame(0x8, struct.pack("!H", 1000))
    out: list[Any] = []
    for i in range(len(wire)):
        out += p.client.handle(wire[i : i + 1])
        if out:
            assert i == len(wire) - 4 + 1  # ended on the close frame's 2-byte header
            break
    assert out == [CancelTimer("closing"), Close("normal")]


def test_bad_frame_then_timer() -> None:
    p = Pair()
    p.client.handle(raw_frame(0x3))
    assert p.client.timeout("closing") == [Close("normal")]
    assert p.client.handle(raw_frame(0x8)) == []


def test_bad_frame_then_garbage_ends() -> None:
    # RFC 6455 section 7.1.7: after failing we need not wait on an unframeable peer.
    p = Pair()
    p.client.handle(raw_frame(0x3))
    assert p.client.handle(bytes([0x8F, 0x00])) == [CancelTimer("closing"), Close("normal")]


def test_bad_frame_after_user_close_waits_silently() -> None:
    p = Pair()
    cmds = p.client.ws_send(REF, p.reply_to, ["close"])
    assert StartTimer("closing", 15000) in cmds
    cmds = p.client.handle(raw_frame(0x3))
    assert cmds == []  # a second close cannot be sent; keep waiting
    assert p.client.handle(raw_frame(0x8)) == [CancelTimer("closing"), Close("normal")]


def test_oversize_message_closes_1009() -> None:
    p = Pair({"max_message_size": 10})
    assert delivered(p.recv(BytesMessage(b"x" * 10))) == [gun_ws(("binary", b"x" * 10))]
    cmds = p.recv(BytesMessage(b"x" * 11))
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code == 1009
    assert [m[3][:2] for m in delivered(cmds)] == [("close", 1009)]
    # Data and pings still in flight are dropped (no pong after our close), the
    # peer's reply ends the connection; the user gets no second close message.
    late = raw_frame(0x1, b"late") + raw_frame(0x9, b"p") + raw_frame(0xA, b"q")
    cmds = p.client.handle(late + p.from_server(CloseConnection(1000)))
    assert cmds == [CancelTimer("closing"), Close("normal")]


def test_oversize_counted_across_fragments_and_utf8_bytes() -> None:
    p = Pair({"max_message_size": 10})
    cmds = p.recv(TextMessage("€€€", message_finished=False))  # 9 bytes, 3 characters
    assert cmds == []
    cmds = p.recv(TextMessage("é", message_finished=True))  # 2 more bytes: 11
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code == 1009


def test_oversize_with_compression() -> None:
    # The limit applies to the decompressed size (what we would hold in memory).
    p = Pair({"compress": True, "max_message_size": 1000}, server_ext=PerMessageDeflate())
    wire = p.from_server(BytesMessage(b"\x00" * 5000))
    assert len(wire) < 100
    (close,) = p.to_server(p.client.handle(wire))
    assert isinstance(close, CloseConnection) and close.code == 1009


def test_default_max_message_size() -> None:
    assert DEFAULT_MAX_MESSAGE_SIZE == 64 * 1024 * 1024
    p = Pair({"max_message_size": "infinity"})
    assert delivered(p.recv(BytesMessage(b"x" * 100))) == [gun_ws(("binary", b"x" * 100))]


# ---------------------------------------------------------------------------
# Close handshake (RFC 6455 sections 5.5.1, 7; gun-reference 4.7)
# ---------------------------------------------------------------------------


def test_close_from_server_with_code() -> None:
    p = Pair()
    cmds = p.recv(TextMessage("last"), CloseConnection(1001, "bye"))
    assert delivered(cmds) == [gun_ws(("text", "last")), gun_ws(("close", 1001, "bye"))]
    # Gun's reply is always 1000 with no reason, and it closes at once.
    (reply,) = p.to_server(cmds)
    assert isinstance(reply, CloseConnection) and (reply.code, reply.reason) == (1000, "")
    assert p.server.state is ConnectionState.CLOSED
    assert cmds[-1] == Close("normal")
    assert not any(isinstance(c, (StartTimer, CancelTimer)) for c in cmds)
    # Anything later is ignored.
    assert p.client.handle(b"\x81\x01a") == []
    assert p.client.handle_eof() == []
    assert p.client.ws_send(REF, p.reply_to, [("text", "x")]) == []


def test_close_from_server_without_code() -> None:
    p = Pair()
    cmds = p.client.handle(raw_frame(0x8) + raw_frame(0x1, b"after close"))
    assert delivered(cmds) == [gun_ws("close")]
    (reply,) = p.to_server(cmds)
    assert isinstance(reply, CloseConnection) and reply.code == 1000
    assert cmds[-1] == Close("normal")


def test_close_from_user_then_server_close() -> None:
    p = Pair()
    # What the server sends before it reads our close.
    wire = p.from_server(TextMessage("Hello!"), BytesMessage(b"World!"))
    cmds = p.client.ws_send(REF, p.reply_to, [("text", "Hello!"), ("binary", b"World!"), "close"])
    assert [type(c) for c in cmds] == [Send, StartTimer]
    assert cmds[1] == StartTimer("closing", 15000)
    events = p.to_server(cmds)
    assert events[:2] == [TextMessage("Hello!"), BytesMessage(b"World!")]
    assert isinstance(events[2], CloseConnection) and events[2].code == 1005  # no status code
    # Gun still delivers what arrives before the server's close, then the close.
    cmds = p.client.handle(wire + p.from_server(CloseConnection(1000)))
    assert delivered(cmds) == [
        gun_ws(("text", "Hello!")),
        gun_ws(("binary", b"World!")),
        gun_ws(("close", 1000, "")),
    ]
    assert cmds[-2:] == [CancelTimer("closing"), Close("normal")]
    assert sent(cmds) == b""  # no second close


def test_close_from_user_timer() -> None:
    p = Pair({"closing_timeout": 200})
    cmds = p.client.ws_send(REF, p.reply_to, [("close", 4000, "done")])
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and (close.code, close.reason) == (4000, "done")
    assert cmds[-1] == StartTimer("closing", 200)
    assert p.client.timeout("other") == []
    assert p.client.timeout("closing") == [Close("normal")]
    assert p.client.timeout("closing") == []


def test_close_infinity_timeout_starts_no_timer() -> None:
    p = Pair({"closing_timeout": "infinity"})
    cmds = p.client.ws_send(REF, p.reply_to, "close")  # type: ignore[arg-type]
    assert not any(isinstance(c, StartTimer) for c in cmds)
    assert p.recv(CloseConnection(1000)) == [
        Deliver(p.reply_to, gun_ws(("close", 1000, ""))),
        Close("normal"),
    ]


def test_ws_send_stops_after_close_and_ignores_later_sends() -> None:
    p = Pair()
    cmds = p.client.ws_send(REF, p.reply_to, [("text", "a"), ("close", b"bye"), ("text", "never")])
    events = p.to_server(cmds)
    assert events[0] == TextMessage("a")
    assert isinstance(events[1], CloseConnection) and (events[1].code, events[1].reason) == (
        1000,
        "bye",
    )
    assert len(events) == 2
    # After our close, ws_send is ignored (documented): RFC 6455 section 5.5.1.
    assert p.client.ws_send(REF, p.reply_to, [("text", "x"), "ping"]) == []
    assert p.client.keepalive() == []
    # Our close is already out: nothing to send, but the actor must wait for the
    # server's close (Gun's closing state).
    assert p.client.closing("shutdown") == [Closing("infinity")]


def test_shutdown_sends_1001_and_waits() -> None:
    p = Pair({"closing_timeout": 3000})
    cmds = p.client.closing("shutdown")
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code == 1001
    assert cmds[-2:] == [StartTimer("closing", 3000), Closing("infinity")]
    assert p.client.closing(("owner_down", "crash")) == [Closing("infinity")]  # already out
    assert p.client.stream_info(REF)["state"] == "stopping"  # type: ignore[index]
    cmds = p.recv(CloseConnection(1001))
    assert cmds == [
        Deliver(p.reply_to, gun_ws(("close", 1001, ""))),
        CancelTimer("closing"),
        Close("normal"),
    ]


def test_shutdown_timer() -> None:
    p = Pair()
    p.client.closing("shutdown")
    assert p.client.timeout("closing") == [Close("normal")]


def test_eof() -> None:
    p = Pair()
    assert p.client.handle_eof() == [Close("closed")]
    assert p.client.handle_eof() == []
    assert p.client.handle(b"\x81\x01a") == []


def test_eof_while_closing_cancels_timer() -> None:
    p = Pair()
    p.client.ws_send(REF, p.reply_to, ["close"])
    assert p.client.handle_eof() == [CancelTimer("closing"), Close("closed")]


# ---------------------------------------------------------------------------
# Outgoing frames
# ---------------------------------------------------------------------------


def test_ws_send_all_frame_forms() -> None:
    p = Pair()
    frames = [
        ("text", "héllo"),
        ("text", "héllo".encode()),
        ("text", [b"a", ["b", b"c"]]),
        ("binary", b"\x00\xff"),
        ("binary", bytearray(b"ba")),
        ("binary", memoryview(b"mv")),
        "ping",
        ("ping", b"pp"),
        "pong",
        ("pong", b"qq"),
    ]
    cmds = p.client.ws_send(REF, p.reply_to, frames)
    assert [type(c) for c in cmds] == [Send]  # one write for the whole list
    assert p.to_server(cmds) == [
        TextMessage("héllo"),
        TextMessage("héllo"),
        TextMessage("abc"),
        BytesMessage(b"\x00\xff"),
        BytesMessage(b"ba"),
        BytesMessage(b"mv"),
        Ping(b""),
        Ping(b"pp"),
        Pong(b""),
        Pong(b"qq"),
    ]


def test_ws_send_single_frame_not_in_list() -> None:
    p = Pair()
    assert p.to_server(p.client.ws_send(REF, p.reply_to, ("text", "one"))) == [TextMessage("one")]  # type: ignore[arg-type]


def test_ws_send_frames_are_masked() -> None:
    # RFC 6455 section 5.3: every client frame has the MASK bit and a fresh key.
    p = Pair()
    a = sent(p.client.ws_send(REF, p.reply_to, [("binary", b"\x00" * 8)]))
    b = sent(p.client.ws_send(REF, p.reply_to, [("binary", b"\x00" * 8)]))
    assert a[1] & 0x80 and b[1] & 0x80
    assert a[2:6] != b[2:6] or a[6:] != b[6:]


@pytest.mark.parametrize(
    "bad",
    [
        ("text", b"\xff\xfe"),  # not UTF-8
        ("ping", b"x" * 126),  # control payload over 125 bytes
        ("close", 999, b""),  # code outside 1000..4999
        ("close", True, b""),
        ("binary", 42),
        ("other", b""),
        "text",
        42,
    ],
)
def test_ws_send_bad_frame(bad: Any) -> None:
    p = Pair()
    other = Recorder()
    cmds = p.client.ws_send(REF, other, [("text", "before"), bad, ("text", "after")])
    assert p.to_server(cmds) == [TextMessage("before")]
    (err,) = delivered(cmds)
    assert err[:3] == ("gun_error", CONN, REF) and err[3][0] == "badarg"
    last = cmds[-1]
    assert isinstance(last, Deliver) and last.to is other  # errors go to the caller of ws_send
    # The connection is still usable.
    assert p.to_server(p.client.ws_send(REF, other, [("text", "ok")])) == [TextMessage("ok")]


# ---------------------------------------------------------------------------
# Pings (RFC 6455 sections 5.5.2, 5.5.3; silence_pings) and keepalive
# ---------------------------------------------------------------------------


def test_server_ping_answered_and_silenced_by_default() -> None:
    p = Pair()
    cmds = p.recv(Ping(b"abc"), Ping(b""), Pong(b"x"))
    assert delivered(cmds) == []
    assert p.to_server(cmds) == [Pong(b"abc"), Pong(b"")]


def test_pings_delivered_when_not_silenced() -> None:
    p = Pair({"silence_pings": False})
    cmds = p.recv(Ping(b"abc"), Ping(b""), Pong(b"x"), Pong(b""))
    assert delivered(cmds) == [
        gun_ws(("ping", b"abc")),
        gun_ws("ping"),
        gun_ws(("pong", b"x")),
        gun_ws("pong"),
    ]
    assert p.to_server(cmds) == [Pong(b"abc"), Pong(b"")]
    # Gun delivers the ping before answering it.
    assert isinstance(cmds[0], Deliver) and isinstance(cmds[1], Send)


def test_no_pong_after_our_close() -> None:
    p = Pair({"silence_pings": False})
    p.client.ws_send(REF, p.reply_to, ["close"])
    p.to_server([])
    cmds = p.recv(Ping(b"late"))
    assert cmds == [Deliver(p.reply_to, gun_ws(("ping", b"late")))]


def test_keepalive() -> None:
    p = Pair({"keepalive": 250})
    assert p.client.keepalive_interval() == 250
    cmds = p.client.keepalive()
    assert p.to_server(cmds) == [Ping(b"")]
    assert Pair().client.keepalive_interval() is None
    assert Pair({"keepalive": "infinity"}).client.keepalive_interval() is None


def test_keepalive_pong_visible_without_silence() -> None:
    # ws_SUITE keepalive: the server's pong to our keepalive ping reaches the user.
    p = Pair({"keepalive": 100, "silence_pings": False})
    for ev in p.to_server(p.client.keepalive()):
        assert isinstance(ev, Ping)
        assert delivered(p.client.handle(p.server.send(ev.response()))) == [gun_ws("pong")]


# ---------------------------------------------------------------------------
# permessage-deflate (RFC 7692) against wsproto's implementation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server_ext",
    [
        lambda: PerMessageDeflate(),
        lambda: PerMessageDeflate(server_no_context_takeover=True, client_no_context_takeover=True),
        lambda: PerMessageDeflate(client_max_window_bits=9, server_max_window_bits=10),
    ],
)
def test_deflate_both_directions(server_ext: Any) -> None:
    p = Pair({"compress": True}, server_ext=server_ext())
    assert p.result["extensions"][0].enabled()
    text = "compress me please " * 200
    for _ in range(3):  # context takeover (or not) across messages
        cmds = p.client.ws_send(REF, p.reply_to, [("text", text), ("binary", text.encode())])
        wire = sent(cmds)
        assert wire[0] & 0x40  # RSV1: compressed (RFC 7692 section 6)
        assert len(wire) < len(text)
        assert p.to_server(cmds) == [TextMessage(text), BytesMessage(text.encode())]
        wire = p.from_server(TextMessage(text), BytesMessage(text.encode()), Ping(b"c"))
        assert len(wire) < len(text)
        cmds = p.client.handle(wire)
        assert delivered(cmds) == [gun_ws(("text", text)), gun_ws(("binary", text.encode()))]
        assert p.to_server(cmds) == [Pong(b"c")]


def test_deflate_fragmented_from_server() -> None:
    p = Pair({"compress": True}, server_ext=PerMessageDeflate())
    cmds = p.recv(
        TextMessage("abc" * 50, message_finished=False),
        TextMessage("def" * 50, message_finished=True),
    )
    assert delivered(cmds) == [gun_ws(("text", "abc" * 50 + "def" * 50))]


def test_deflate_corrupt_payload_closes() -> None:
    p = Pair({"compress": True}, server_ext=PerMessageDeflate())
    bad = zlib.compress(b"x")[:1] + b"\xff\xff\xff\xff"
    cmds = p.client.handle(raw_frame(0x2, bad, rsv=0x4))
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code in (1002, 1007)


def test_rsv1_on_control_frame_with_deflate_is_1002() -> None:
    p = Pair({"compress": True}, server_ext=PerMessageDeflate())
    cmds = p.client.handle(raw_frame(0x9, b"", rsv=0x4))
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code == 1002


# ---------------------------------------------------------------------------
# Flow control (Gun 4.5: one unit per delivered message)
# ---------------------------------------------------------------------------


def test_flow_exact_budget() -> None:
    p = Pair({"flow": 2})
    assert p.client.active()
    cmds = p.recv(*(TextMessage(str(i)) for i in range(5)))
    assert delivered(cmds) == [gun_ws(("text", "0")), gun_ws(("text", "1"))]
    assert cmds[-1] == SetActive(False)
    assert not p.client.active()
    # Bytes fed while paused stay queued inside wsproto, in order.
    assert p.recv(TextMessage("5")) == []
    cmds = p.client.update_flow(REF, 2)
    assert delivered(cmds) == [gun_ws(("text", "2")), gun_ws(("text", "3"))]
    assert not any(isinstance(c, SetActive) for c in cmds)  # still paused, no noise
    assert not p.client.active()
    cmds = p.client.update_flow(REF, 10)
    assert delivered(cmds) == [gun_ws(("text", "4")), gun_ws(("text", "5"))]
    assert SetActive(True) in cmds
    assert p.client.active()


def test_flow_silenced_pings_cost_nothing() -> None:
    p = Pair({"flow": 1})
    cmds = p.recv(Ping(b"1"), Pong(b"2"), TextMessage("t"))
    assert delivered(cmds) == [gun_ws(("text", "t"))]
    assert p.to_server(cmds) == [Pong(b"1")]
    assert cmds[-1] == SetActive(False)


def test_flow_close_while_paused_is_processed_on_resume() -> None:
    p = Pair({"flow": 1})
    cmds = p.recv(TextMessage("a"), CloseConnection(1000, "bye"))
    assert delivered(cmds) == [gun_ws(("text", "a"))]
    cmds = p.client.update_flow(REF, 1)
    assert delivered(cmds) == [gun_ws(("close", 1000, "bye"))]
    assert cmds[-1] == Close("normal")


@pytest.mark.parametrize("how", ["user", "shutdown"])
def test_flow_lifted_once_our_close_is_sent(how: str) -> None:
    # Paused reading would hide the server's close until closing_timeout: once our
    # close is out, the budget no longer stops the socket.
    p = Pair({"flow": 1})
    p.recv(TextMessage("a"), TextMessage("b"))
    assert not p.client.active()
    if how == "user":
        cmds = p.client.ws_send(REF, p.reply_to, ["close"])
    else:
        cmds = p.client.closing("shutdown")
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection)
    assert delivered(cmds) == [gun_ws(("text", "b"))]
    assert SetActive(True) in cmds
    assert p.client.active()
    cmds = p.client.handle(
        raw_frame(0x1, b"c") + raw_frame(0x1, b"d") + p.from_server(CloseConnection(1000))
    )
    assert delivered(cmds) == [
        gun_ws(("text", "c")),
        gun_ws(("text", "d")),
        gun_ws(("close", 1000, "")),
    ]
    assert not any(isinstance(c, SetActive) for c in cmds)
    assert cmds[-1] == Close("normal")


def test_flow_update_ignored_without_flow_or_other_ref() -> None:
    assert Pair().client.update_flow(REF, 5) == []
    p = Pair({"flow": 1})
    p.recv(TextMessage("a"), TextMessage("b"))
    assert p.client.update_flow(Sentinel("OTHER"), 5) == []
    assert not p.client.active()


# ---------------------------------------------------------------------------
# Subprotocol handlers (Gun's gun_ws_protocol behaviour)
# ---------------------------------------------------------------------------


class Tagger:
    """A custom handler: tags frames, sends two messages per text frame."""

    seen_reply_to: list[Any] = []

    @staticmethod
    def init(reply_to: Any, ref: Any, headers: Any, opts: dict[str, Any]) -> dict[str, Any]:
        Tagger.seen_reply_to.append(reply_to)
        reply_to.send(("init", reply_to.conn, ref, opts["user_opts"]))
        return {"reply_to": reply_to, "ref": ref, "n": 0}

    @staticmethod
    def handle(frame: Any, state: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
        state["n"] += 1
        rt = state["reply_to"]
        if isinstance(frame, tuple) and frame[0] == "text":
            rt.send(("tag", state["n"], "before"))
            rt.send(("gun_ws", rt.conn, state["ref"], ("text", frame[1].upper())))
            return ("ok", 1, state)
        rt.send(("other", frame))
        return ("ok", 0, state)


def test_subprotocol_handler_order_and_proxy() -> None:
    Tagger.seen_reply_to.clear()
    p = Pair({"protocols": [("tag", Tagger)], "user_opts": {"k": 1}}, protocol="tag")
    assert p.client.protocol == "tag"
    # The handler never sees the real reply_to, only the ordering proxy.
    (proxy,) = Tagger.seen_reply_to
    assert isinstance(proxy, WsReplyTo) and proxy.conn is CONN
    assert proxy.to is p.reply_to and proxy is not p.reply_to  # type: ignore[comparison-overlap]
    # Messages sent from init come out of init().
    assert p.client.init() == [Deliver(p.reply_to, ("init", CONN, REF, {"k": 1}))]
    assert p.client.init() == []
    cmds = p.recv(TextMessage("a"), Ping(b"p"), TextMessage("b"))
    assert [type(c).__name__ for c in cmds] == [
        "Deliver",
        "Deliver",
        "Deliver",
        "Send",
        "Deliver",
        "Deliver",
    ]
    assert delivered(cmds) == [
        ("tag", 1, "before"),
        ("gun_ws", CONN, REF, ("text", "A")),
        ("other", ("ping", b"p")),  # custom handlers see pings (they decide)
        ("tag", 3, "before"),
        ("gun_ws", CONN, REF, ("text", "B")),
    ]
    assert all(c.to is p.reply_to for c in cmds if isinstance(c, Deliver))
    assert p.reply_to.msgs == []
    cmds = p.recv(CloseConnection(1000, "x"))
    assert delivered(cmds) == [("other", ("close", 1000, "x"))]
    assert cmds[-1] == Close("normal")


def test_subprotocol_flow_dec_from_handler() -> None:
    p = Pair({"protocols": [("tag", Tagger)], "user_opts": None, "flow": 1}, protocol="tag")
    p.client.init()
    cmds = p.recv(BytesMessage(b"free"), TextMessage("paid"), TextMessage("held"))
    assert delivered(cmds) == [
        ("other", ("binary", b"free")),
        ("tag", 2, "before"),
        ("gun_ws", CONN, REF, ("text", "PAID")),
    ]
    assert cmds[-1] == SetActive(False)


def test_default_protocol_class_same_as_inlined() -> None:
    class Wrapped(WsDefaultProtocol):
        """Not identical to WsDefaultProtocol: goes through handle() and the proxy."""

    for silence in (True, False):
        events = (
            TextMessage("t"),
            BytesMessage(b"b"),
            Ping(b"p"),
            Pong(b""),
            CloseConnection(1000),
        )
        inline = Pair({"silence_pings": silence})
        wrapped = Pair({"silence_pings": silence, "default_protocol": Wrapped})
        assert wrapped.result["protocol_handler"] is Wrapped
        a, b = inline.recv(*events), wrapped.recv(*events)
        assert [type(c) for c in a] == [type(c) for c in b]
        assert delivered(a) == delivered(b)
        assert all(c.to is wrapped.reply_to for c in b if isinstance(c, Deliver))
        assert a[-1] == b[-1] == Close("normal")


def test_subprotocol_handler_crash_closes_1011() -> None:
    class Crasher:
        init = staticmethod(lambda reply_to, ref, headers, opts: None)

        @staticmethod
        def handle(frame: Any, state: Any) -> Any:
            raise RuntimeError("boom")

    p = Pair({"default_protocol": Crasher})
    cmds = p.recv(TextMessage("x"), TextMessage("y"))
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code == 1011
    (msg,) = delivered(cmds)
    assert msg[3][:2] == ("close", 1011) and "boom" in msg[3][2]


def test_subprotocol_handler_bad_return_closes_1011() -> None:
    class Bad:
        init = staticmethod(lambda reply_to, ref, headers, opts: None)
        handle = staticmethod(lambda frame, state: None)

    p = Pair({"default_protocol": Bad})
    (close,) = p.to_server(p.recv(TextMessage("x")))
    assert isinstance(close, CloseConnection) and close.code == 1011

    class Wrong:
        init = staticmethod(lambda reply_to, ref, headers, opts: None)
        handle = staticmethod(lambda frame, state: ("error", 1, state))

    p = Pair({"default_protocol": Wrong})
    cmds = p.recv(TextMessage("x"))
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code == 1011
    assert "not ('ok', flow_dec, state)" in delivered(cmds)[0][3][2]


def test_subprotocol_handler_init_crash_closes_1011() -> None:
    class Crasher:
        @staticmethod
        def init(reply_to: Any, ref: Any, headers: Any, opts: Any) -> Any:
            raise RuntimeError("no init")

        handle = staticmethod(lambda frame, state: ("ok", 1, state))

    p = Pair({"default_protocol": Crasher})  # the constructor does not raise
    cmds = p.client.init()
    (close,) = p.to_server(cmds)
    assert isinstance(close, CloseConnection) and close.code == 1011
    (msg,) = delivered(cmds)
    assert msg[3][:2] == ("close", 1011) and "no init" in msg[3][2]
    assert p.client.handle(raw_frame(0x1, b"dropped")) == []


def test_subprotocol_handler_crash_on_server_close() -> None:
    class Crasher:
        init = staticmethod(lambda reply_to, ref, headers, opts: None)

        @staticmethod
        def handle(frame: Any, state: Any) -> Any:
            raise RuntimeError("boom")

    p = Pair({"default_protocol": Crasher})
    cmds = p.recv(CloseConnection(1000))
    (close,) = p.to_server(cmds)  # exactly one close goes out
    assert isinstance(close, CloseConnection) and close.code == 1011
    assert cmds[-1] == Close("normal")


# ---------------------------------------------------------------------------
# The rest of the handler interface
# ---------------------------------------------------------------------------


def test_down_close_and_info() -> None:
    p = Pair()
    assert p.client.name == "ws"
    assert p.client.down() == [REF]
    assert p.client.close("closed") == []
    assert p.client.init() == []
    assert p.client.stream_info(REF) == {
        "ref": REF,
        "reply_to": p.reply_to,
        "state": "running",
        "intermediaries": [],
    }
    assert p.client.stream_info(Sentinel("OTHER")) is None


def test_constructor_defaults_without_handshake_result() -> None:
    # Only opts/ref/reply_to/headers: no extension, default_protocol from opts.
    reply_to = Recorder()
    ctx = HandlerContext(conn=CONN, owner=Recorder())
    h = WsHandler(ctx, {"silence_pings": False}, REF, reply_to, [])
    server = Connection(ConnectionType.SERVER)
    cmds = h.handle(server.send(TextMessage("x")) + server.send(Ping(b"")))
    assert delivered(cmds) == [gun_ws(("text", "x")), gun_ws("ping")]


def test_http_operations_refused() -> None:
    # gun-reference 4.7: after the upgrade only ws_send is accepted.
    p = Pair()
    other = Recorder()
    expected = [Deliver(other, ("gun_error", CONN, ("badstate", BADSTATE_WS_ONLY)))]
    assert p.client.request(REF, other, "GET", "/", [], None, {}) == expected
    assert p.client.data(REF, other, "fin", b"") == expected
    assert p.client.cancel(REF, other) == expected
    assert p.client.ws_upgrade(REF, other, "/", [], {}) == expected


def test_trailing_data_then_more() -> None:
    """The bytes after the 101 are fed first (SwitchProtocol.buffer), then the rest."""
    p = Pair()
    wire = p.from_server(TextMessage("first"), TextMessage("second"))
    cut = 4
    assert p.client.handle(wire[:cut]) == []
    assert delivered(p.client.handle(wire[cut:])) == [
        gun_ws(("text", "first")),
        gun_ws(("text", "second")),
    ]


def test_unexpected_wsproto_exception_never_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    p = Pair()

    def boom(data: Any) -> None:
        raise AssertionError("wsproto internal")

    monkeypatch.setattr(p.client._ws, "receive_data", boom)
    # A ping: whole plain data frames skip wsproto (WsHandler._fast), control frames do not.
    cmds = p.client.handle(b"\x89\x00")
    assert len(cmds) == 1 and isinstance(cmds[0], Close)
    assert cmds[0].reason[0] == "error" and cmds[0].reason[1][:2] == (
        "connection_error",
        "protocol_error",
    )
    assert p.client.handle(b"") == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=20))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    """No wsproto exception escapes, whatever the server sends, however it is cut."""
    p = Pair({"compress": True, "max_message_size": 100}, server_ext=PerMessageDeflate())
    pos = 0
    cmds: list[Any] = []
    for n in [*cuts, len(data)]:
        cmds += p.client.handle(data[pos : pos + n])
        pos += n
    cmds += p.client.timeout("closing")
    cmds += p.client.handle_eof()
    assert sum(isinstance(c, Close) for c in cmds) == 1
    assert isinstance(cmds[-1], Close)
    # Whatever we sent is valid Websocket for the server.
    for ev in p.to_server(cmds):
        assert isinstance(ev, (Pong, CloseConnection))


# ---------------------------------------------------------------------------
# The lean data-frame paths (WsHandler._fast in, _data_frame out): same messages,
# same commands as wsproto's path, whatever the frames and the read boundaries.
# ---------------------------------------------------------------------------


def _run_reads(opts: dict[str, Any], reads: list[bytes], fast: bool) -> list[Any]:
    p = Pair(opts)
    p.client._fast_in = fast
    out: list[Any] = []

    def note(cmds: list[Any]) -> None:
        for c in cmds:
            if isinstance(c, Send):
                # Our own frames are masked with a random key: compare what they say.
                out.append(("send", _decode_sent(c.data)))
            elif isinstance(c, Deliver):
                out.append(("deliver", c.msg))
            else:
                out.append(c)

    for r in reads:
        note(p.client.handle(r))
        while p.client._paused:
            note(p.client.update_flow(REF, 1))
    return out


def _decode_sent(data: bytes) -> Any:
    server = Connection(ConnectionType.SERVER)
    server.receive_data(bytes(data))
    return [(type(e).__name__, getattr(e, "data", getattr(e, "payload", None))) for e in server.events()]


_FRAMES = st.one_of(
    st.builds(lambda b: raw_frame(0x2, b), st.binary(max_size=300)),
    st.builds(
        lambda n: raw_frame(0x2, bytes(range(256)) * (n // 256) + b"x" * (n % 256)),
        st.sampled_from([125, 126, 65535, 65536, 70000]),
    ),
    st.builds(lambda t: raw_frame(0x1, t.encode()), st.text(max_size=50)),
    st.builds(lambda b: raw_frame(0x1, b), st.binary(max_size=8)),  # often invalid UTF-8
    st.builds(lambda b: raw_frame(0x9, b), st.binary(max_size=10)),
    st.builds(lambda b: raw_frame(0xA, b), st.binary(max_size=10)),
    st.just(raw_frame(0x2, b"ab", fin=False) + raw_frame(0x0, b"cd")),
    st.just(raw_frame(0x1, b"\xc3", fin=False) + raw_frame(0x0, b"\xa9")),
    st.just(raw_frame(0x2, b"masked", mask=True)),
    st.just(b"\x82\x7e\x00\x05hello"),  # 16-bit length for 5 bytes (RFC 6455 5.2: refused)
    st.just(raw_frame(0x2, b"r", rsv=4)),
    st.just(raw_frame(0x2, b"y" * 300)),
    st.just(raw_frame(0x1, b"t" * 300)),
)


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(_FRAMES, min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=70000), max_size=6),
    opts=st.sampled_from([{}, {"flow": 1}, {"max_message_size": 200}, {"silence_pings": False}]),
)
def test_fast_receive_same_as_wsproto(frames: list[bytes], cuts: list[int], opts: dict[str, Any]) -> None:
    wire = b"".join(frames)
    points = sorted({c % len(wire) for c in cuts} - {0})
    reads = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    assert _run_reads(opts, reads, fast=True) == _run_reads(opts, reads, fast=False)


_BIG = bytes(range(256)) * 300


@pytest.mark.parametrize(
    ("opts", "wire", "cut"),
    [
        ({"max_message_size": 200}, raw_frame(0x2, _BIG[:300]), 0),
        ({"max_message_size": 200}, raw_frame(0x2, _BIG[:300]), 100),
        ({"max_message_size": 200}, raw_frame(0x1, b"a" * 300), 0),
        ({"max_message_size": 300}, raw_frame(0x2, _BIG[:300]) + raw_frame(0x2, b"z"), 0),
        ({}, raw_frame(0x1, b"ok") + raw_frame(0x1, b"\xce\xba\xff") + raw_frame(0x1, b"no"), 0),
        ({}, raw_frame(0x1, b"\xce\xba\xce"), 3),  # cut text: wsproto decodes it
        ({"flow": 1}, raw_frame(0x2, b"a") + raw_frame(0x2, _BIG) + raw_frame(0x1, b"c"), 0),
        ({"flow": 1}, raw_frame(0x2, _BIG) + raw_frame(0x2, b"b") + raw_frame(0x2, _BIG), 9000),
        ({}, b"\x82\x7e\x00\x05hello", 0),  # 16-bit length for 5 bytes
        ({}, b"\x82\x7f" + struct.pack("!Q", 300) + _BIG[:300], 0),  # 64-bit for 300
        ({}, b"\x82\x7f" + struct.pack("!Q", 1 << 63), 0),  # 64-bit length with the MSB set
        ({}, raw_frame(0x2, b"m", mask=True), 0),
        ({}, raw_frame(0x2, b"r", rsv=4), 0),
        ({}, raw_frame(0x3, b"?"), 0),  # reserved opcode
        ({}, raw_frame(0x2, _BIG), 1),  # header cut: wsproto takes the frame
        ({}, raw_frame(0x2, _BIG), 5),
        ({}, raw_frame(0x2, b"ab", fin=False) + raw_frame(0x9, b"p") + raw_frame(0x0, b"c"), 0),
        ({}, raw_frame(0x0, b"c"), 0),  # continuation with no message
        ({}, raw_frame(0x2, _BIG) + raw_frame(0x8, b"\x03\xe8bye") + raw_frame(0x2, b"x"), 7),
    ],
)
def test_fast_receive_cases(opts: dict[str, Any], wire: bytes, cut: int) -> None:
    reads = [wire[:cut], wire[cut:]] if cut else [wire]
    assert _run_reads(opts, reads, fast=True) == _run_reads(opts, reads, fast=False)


def test_fast_receive_large_binary_over_many_reads() -> None:
    p = Pair()
    blob = bytes(range(256)) * 4096  # 1 MiB
    wire = raw_frame(0x2, blob) + raw_frame(0x9, b"p") + raw_frame(0x1, "é".encode())
    got: list[Any] = []
    pong = b""
    for i in range(0, len(wire), 65536):
        cmds = p.client.handle(wire[i : i + 65536])
        got += delivered(cmds)
        pong += sent(cmds)
    assert got == [gun_ws(("binary", blob)), gun_ws(("text", "é"))]
    assert type(got[0][3][1]) is bytes
    p.server.receive_data(pong)
    assert [type(e) for e in p.server.events()] == [Pong]
    # wsproto never saw the payload and is between frames, as after any whole frame.
    assert p.client._big_left == 0 and len(p.client._ws._proto._frame_decoder.buffer) == 0


# The C masker (gunpy/_speedups.c) is optional; CI builds it and says so
# (GUNPY_EXPECT_SPEEDUPS=1), so there a missing build fails instead of skipping.
try:
    from gunpy._speedups import mask as c_mask
except ImportError:  # pragma: no cover - no compiler where gunpy was installed
    c_mask = None  # type: ignore[assignment]
    if os.environ.get("GUNPY_EXPECT_SPEEDUPS"):
        raise
needs_c = pytest.mark.skipif(c_mask is None, reason="gunpy._speedups not built (no C compiler?)")
MASKERS = [pytest.param(ws_mod._py_mask, id="python"), pytest.param(c_mask, id="c", marks=needs_c)]


def test_mask_loaded_and_no_speedups_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    forced_off = bool(os.environ.get("GUNPY_NO_SPEEDUPS"))
    assert ws_mod._mask is (ws_mod._py_mask if forced_off or c_mask is None else c_mask)
    monkeypatch.setenv("GUNPY_NO_SPEEDUPS", "1")
    assert ws_mod._load_mask() is ws_mod._py_mask


@needs_c
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=100), offset=st.integers(0, 20), key=st.binary(min_size=4, max_size=4))
def test_c_mask_same_as_python(data: bytes, offset: int, key: bytes) -> None:
    # RFC 6455 5.3: octet i of the payload (from offset) XOR key octet i mod 4,
    # whatever the payload's length and alignment (the C loop works in 8-octet words).
    offset = min(offset, len(data))
    a, b = bytearray(data), bytearray(data)
    ws_mod._py_mask(a, offset, key)
    c_mask(b, offset, key)
    assert a == b
    assert a[:offset] == data[:offset]
    assert bytes(x ^ key[i % 4] for i, x in enumerate(data[offset:])) == a[offset:]


@needs_c
def test_c_mask_large_and_bad_arguments() -> None:
    data = bytes(range(256)) * 4097 + b"tail"  # over the GIL-release threshold, odd length
    a, b = bytearray(data), bytearray(data)
    ws_mod._py_mask(a, 6, b"\x01\x80\xff\x7f")
    c_mask(b, 6, b"\x01\x80\xff\x7f")
    assert a == b
    c_mask(b, 6, b"\x01\x80\xff\x7f")
    assert b == data  # masking twice is the identity
    with pytest.raises(ValueError, match="4 octets"):
        c_mask(bytearray(8), 0, b"abc")
    with pytest.raises(ValueError, match="offset outside"):
        c_mask(bytearray(8), 9, b"abcd")
    with pytest.raises(ValueError, match="offset outside"):
        c_mask(bytearray(8), -1, b"abcd")
    with pytest.raises(BufferError):
        c_mask(b"read-only", 0, b"abcd")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c_mask(bytearray(8), 0)  # type: ignore[call-arg]


@pytest.mark.parametrize("masker", MASKERS)
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 125, 126, 65535, 65536, 1 << 20])
@pytest.mark.parametrize("kind", ["binary", "text"])
def test_data_frame_out_decodes(n: int, kind: str, masker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_mod, "_mask", masker)
    p = Pair()
    payload: Any = bytes(i % 251 for i in range(n)) if kind == "binary" else "é" * (n // 2)
    cmds = p.client.ws_send(REF, p.reply_to, [(kind, payload), (kind, [payload, payload])])
    wire = sent(cmds)
    # RFC 6455 5.2: FIN, no RSV, mask bit set, shortest length encoding.
    assert wire[0] == (0x82 if kind == "binary" else 0x81) and wire[1] & 0x80
    events = p.to_server(cmds)
    assert [e.data for e in events] == [payload, payload * 2]


def test_data_frame_out_text_bytes_checked() -> None:
    p = Pair()
    cmds = p.client.ws_send(REF, p.reply_to, [("text", b"caf\xc3\xa9"), ("text", b"\xff")])
    assert [e.data for e in p.to_server(cmds)] == ["café"]
    assert delivered(cmds) == [
        ("gun_error", CONN, REF, ("badarg", "Invalid Websocket frame: text frame payload is not valid UTF-8"))
    ]


def test_recv_size_follows_a_large_frame() -> None:
    from gunpy.protocols.base import RECV_SIZE, RECV_SIZE_MAX

    p = Pair()
    assert p.client.recv_size() == RECV_SIZE
    wire = raw_frame(0x2, b"z" * (3 << 20))
    p.client.handle(wire[:1000])
    assert p.client.recv_size() == RECV_SIZE_MAX
    p.client.handle(wire[1000 : len(wire) - 100000])
    assert p.client.recv_size() == 100000
    assert delivered(p.client.handle(wire[len(wire) - 100000 :])) == [
        gun_ws(("binary", b"z" * (3 << 20)))
    ]
    assert p.client.recv_size() == RECV_SIZE
