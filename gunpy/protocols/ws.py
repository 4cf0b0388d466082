"""Websocket (RFC 6455) with permessage-deflate (RFC 7692): Gun's ``gun_ws``.

Theory of operation
-------------------
``WsHandler`` is installed after a successful upgrade (the HTTP/1.1 handler calls
``handshake_offer`` to build the upgrade request and ``handshake_check`` on the 101
response, then returns ``SwitchProtocol("ws", ...)``).  It is sans-IO like every
handler: wsproto's frame layer (``wsproto.connection.Connection``, not its handshake
layer) parses and builds frames, and every entry point returns a list of commands.

Incoming
    ``handle(data)`` feeds wsproto and walks every event the bytes produced in one
    pass.  Text and binary messages are reassembled (wsproto hands out pieces cut at
    read boundaries, not at the peer's fragment boundaries) and given to the
    subprotocol handler as one frame, Gun's ``{text, Bin}`` / ``{binary, Bin}``.  The
    default handler (``WsDefaultProtocol``, Gun's ``gun_ws_h``) turns each frame into
    ``("gun_ws", conn, ref, frame)``; pings and pongs are forwarded only with
    ``silence_pings: False``.  Pongs to the server's pings are always sent.

    Plain data frames skip wsproto (``_fast``): with no extension negotiated and no
    event handler, an unfragmented, unmasked text or binary frame that wsproto would
    accept is taken directly while wsproto's decoder sits between frames, and a
    large binary frame is kept as the reads that carry it and joined once (wsproto
    copies each payload byte three or four times).  Everything else goes through
    wsproto; ``recv_size`` asks the actor for the rest of such a frame in one read.

Outgoing
    ``ws_send`` encodes Gun's frame terms in order (masked, RFC 6455 section 5.3)
    into one ``Send``, and stops after a close.  Text and binary frames without an
    extension are built by ``_data_frame`` in one buffer, masked by the optional C
    extension ``gunpy._speedups`` when it was built (else in Python); control frames
    and compressed frames by wsproto.

Closing (RFC 6455 section 7, Gun's behaviour, gun-reference 4.7)
    * The server closes: the user gets the close frame, we answer
      ``("close", 1000, "")`` (Gun always answers 1000 with no reason) and end the
      connection at once: ``Close("normal")``.
    * The user closes (``ws_send`` with a close frame) or the connection is shut down
      (``closing``: close 1001): output is closed, timer ``"closing"`` starts
      (``closing_timeout``); the server's close is delivered, then ``Close("normal")``;
      if the timer fires first, ``Close("normal")``.
    * The server breaks the protocol (bad frame 1002, invalid UTF-8 1007, a message
      over ``max_message_size`` 1009): we send that close and wait as above.  Gun
      tells nobody (gun-reference section 7); gunpy delivers
      ``("gun_ws", conn, ref, ("close", code, reason))`` naming the close we sent, and
      the peer's close reply ends the connection at once.

Flow control (Gun 4.5)
    With ``flow: N`` each message the handler delivers costs what it reports (1 for
    the default handler).  When the budget is spent we stop walking wsproto's events
    (the rest stays parsed-but-unread inside wsproto) and return ``SetActive(False)``;
    ``update_flow`` resumes where we stopped.  So the budget is exact, where Gun may
    deliver every frame of the last read past it.  Once our close frame is out the
    budget is lifted, so the server's close can still be read within
    ``closing_timeout``.

Events (Gun 4.14, ``gunpy.events``)
    Only with an ``event_handler`` (``ctx.events``): each frame received gives
    ``ws_recv_frame_start``/``_header``/``_end`` before it is dispatched, each frame
    sent ``ws_send_frame_start``/``_end`` around its ``Send`` (automatic pongs and
    closes too).  wsproto's ``Connection`` hides frame headers, so ``_ev_setup``
    wraps its decoder's ``parse_header`` to note each header in order: a private
    interface, guarded by tests/unit/test_events_handlers.py.

Subprotocol handlers (Gun's ``gun_ws_protocol`` behaviour, in Python)
    Any object (module, class, instance) with ``init(reply_to, ref, headers, opts) ->
    state`` and ``handle(frame, state) -> ("ok", flow_dec, state)``.  ``reply_to`` is
    never the real recipient but a proxy (``WsReplyTo``) whose ``send(msg)`` appends
    ``Deliver(real_reply_to, msg)`` to the command list being built, so the handler's
    messages stay in order with ours; its ``conn`` attribute is the connection's Pid,
    for building ``("gun_ws", conn, ref, frame)``.  Frames given to ``handle`` are
    whole messages (never Gun's ``{fragment, ...}``), pings/pongs and close frames.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.events import Event as WsEvent
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import ProtocolError

from .._commands import (
    CancelTimer,
    Close,
    Closing,
    Commands,
    Deliver,
    Event,
    ReplyTo,
    Send,
    SetActive,
    StartTimer,
)
from .base import (
    BADSTATE_WS_ONLY,
    RECV_SIZE,
    RECV_SIZE_MAX,
    BaseHandler,
    HandlerContext,
    Headers,
)

__all__ = [
    "DEFAULT_CLOSING_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "WsDefaultProtocol",
    "WsHandler",
    "WsOffer",
    "WsReplyTo",
    "check_options",
    "handshake_check",
    "handshake_offer",
]

#: Gun's ``closing_timeout`` default (ms).
DEFAULT_CLOSING_TIMEOUT = 15000
#: gunpy addition (Gun has no limit): the largest message we reassemble, in bytes
#: (decompressed, UTF-8 for text).  Bigger messages fail the connection with 1009
#: (RFC 6455 section 7.4.1).  64 MiB keeps legitimate bulk transfers working while
#: bounding what one peer can make us hold in memory.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024

_CLOSING_TIMER = "closing"

# RFC 6455 section 1.3: the GUID appended to the key to compute the accept value.
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Gun's offer, verbatim (gun_http:ws_upgrade).  RFC 7692 section 7.1.2.2: a bare
# client_max_window_bits says we can honour any value the server picks.
_DEFLATE_OFFER = "permessage-deflate; client_max_window_bits; server_max_window_bits=15"

# RFC 6455 section 7.1.5: close without a status code is reported as 1005.  wsproto
# sends an empty close only for this enum member (it tests identity, not value).
_NO_STATUS = CloseReason.NO_STATUS_RCVD

# wsproto connection states, bound once (the event loop tests them per close).
_OPEN = ConnectionState.OPEN
_LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING


# ---------------------------------------------------------------------------
# Subprotocol handlers
# ---------------------------------------------------------------------------


class WsReplyTo:
    """What a subprotocol handler gets as ``reply_to``.

    ``send(msg)`` queues ``Deliver(real_reply_to, msg)`` in the command list the
    ``WsHandler`` is building, so the handler's messages are delivered in order with
    everything else the same bytes caused.  ``conn`` is the connection's Pid (the
    second element of Gun's messages).
    """

    __slots__ = ("cmds", "conn", "to")

    def __init__(self, to: ReplyTo, conn: Any) -> None:
        self.to = to
        self.conn = conn
        self.cmds: Commands = []

    def send(self, msg: Any) -> None:
        self.cmds.append(Deliver(self.to, msg))


@dataclass(slots=True)
class _DefaultState:
    reply_to: Any
    conn: Any
    ref: Any
    silence_pings: bool


class WsDefaultProtocol:
    """Gun's ``gun_ws_h``: forward every frame as ``("gun_ws", conn, ref, frame)``.

    Pings and pongs are dropped (flow cost 0) unless ``silence_pings`` is False.
    ``WsHandler`` inlines this behaviour when it is the negotiated handler (same
    messages, no call per frame); the class stays usable on its own.
    """

    @staticmethod
    def init(reply_to: Any, ref: Any, headers: Headers, opts: dict[str, Any]) -> _DefaultState:
        return _DefaultState(
            reply_to, getattr(reply_to, "conn", None), ref, opts.get("silence_pings", True)
        )

    @staticmethod
    def handle(frame: Any, state: _DefaultState) -> tuple[str, int, _DefaultState]:
        if state.silence_pings and (
            frame in ("ping", "pong") or (type(frame) is tuple and frame[0] in ("ping", "pong"))
        ):
            return ("ok", 0, state)
        state.reply_to.send(("gun_ws", state.conn, state.ref, frame))
        return ("ok", 1, state)


def _is_protocol_handler(h: Any) -> bool:
    return callable(getattr(h, "init", None)) and callable(getattr(h, "handle", None))


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _is_stream_ref(v: Any) -> bool:
    from .._process import Ref

    if isinstance(v, Ref):
        return True
    return isinstance(v, (tuple, list)) and bool(v) and all(isinstance(r, Ref) for r in v)


def _check_protocols(v: Any) -> bool:
    if not isinstance(v, list):
        return False
    for p in v:
        if not (isinstance(p, (tuple, list)) and len(p) == 2):
            return False
        name, handler = p
        if not (isinstance(name, str) and name) or not _is_protocol_handler(handler):
            return False
    return True


_CHECKS: dict[str, Any] = {
    "closing_timeout": lambda v: v == "infinity" or _pos_int(v),
    "compress": lambda v: isinstance(v, bool),
    "default_protocol": _is_protocol_handler,
    "flow": _pos_int,
    "keepalive": lambda v: v == "infinity" or _pos_int(v),
    "protocols": _check_protocols,
    # Resolved by the caller before the options reach a handler.
    "reply_to": lambda v: True,
    "silence_pings": lambda v: isinstance(v, bool),
    "user_opts": lambda v: True,
    # gunpy addition: see DEFAULT_MAX_MESSAGE_SIZE.
    "max_message_size": lambda v: v == "infinity" or _pos_int(v),
    # Used by the caller (header checks) and the tunnel layer; accepted here.
    "invalid_request_headers": lambda v: v in ("raise", "ignore"),
    # Upgrade inside a CONNECT tunnel: the tunnel's stream ref (Gun's tunnel).
    "tunnel": lambda v: _is_stream_ref(v),
    # gunpy addition (Gun issues #42, #231): after the connection is lost and comes
    # back, the connection actor sends this upgrade again, under the same ref.
    "reupgrade": lambda v: isinstance(v, bool),
}


def check_options(opts: dict[str, Any]) -> tuple[str, Any] | None:
    """The first bad ``(key, value)`` of a ``ws_opts`` dict (unknown key or wrong
    type), or None.  Gun's ``gun_ws:check_options/1``."""
    for k, v in opts.items():
        check = _CHECKS.get(k)
        if check is None or not check(v):
            return (k, v)
    return None


# ---------------------------------------------------------------------------
# Opening handshake (RFC 6455 section 4.1, RFC 7692 section 5)
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class WsOffer:
    """What ``handshake_check`` needs to judge the 101 response (opaque to callers)."""

    key: str
    accept: str
    compress: bool
    protocols: dict[str, Any] = field(default_factory=dict)
    default_protocol: Any = None


def handshake_offer(ws_opts: dict[str, Any]) -> tuple[list[tuple[str, str]], Any]:
    """Headers for the upgrade GET, and the offer object for ``handshake_check``.

    In Gun's order: ``connection``, ``upgrade``, ``sec-websocket-version``,
    ``sec-websocket-key`` (16 random bytes, base64: RFC 6455 section 4.1), then
    ``sec-websocket-extensions`` when ``compress`` and ``sec-websocket-protocol``
    (names comma-joined) when ``protocols`` is set.
    """
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    headers = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", key),
    ]
    compress = bool(ws_opts.get("compress", False))
    if compress:
        headers.append(("sec-websocket-extensions", _DEFLATE_OFFER))
    protocols = ws_opts.get("protocols") or []
    if protocols:
        headers.append(("sec-websocket-protocol", ", ".join(name for name, _ in protocols)))
    offer = WsOffer(
        key=key,
        accept=_accept_value(key),
        compress=compress,
        protocols=dict(protocols),
        default_protocol=ws_opts.get("default_protocol", WsDefaultProtocol),
    )
    return headers, offer


def _accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _WS_GUID).digest()).decode("ascii")


def _header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in headers if n == name]


def _tokens(values: list[str]) -> list[str]:
    # RFC 9110 section 5.6.1: a list header may be split over several lines and
    # may contain empty elements.
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def handshake_check(offer: Any, headers: list[tuple[str, str]]) -> dict[str, Any] | str:
    """Judge the 101 response ``headers`` against ``offer``.

    Success: the extra keyword arguments for ``WsHandler`` (``extensions``,
    ``protocol``, ``protocol_handler``).  Failure: a ``str`` saying why; the caller
    then drops the connection as Gun does (gun-reference 4.7).
    """
    assert isinstance(offer, WsOffer)
    # RFC 6455 section 4.1, client requirements 2 and 3 (Gun leaves these as a
    # "@todo"; wsproto checks them, and a 101 without them is not a Websocket).
    upgrade = _header_values(headers, "upgrade")
    if [u.strip().lower() for u in upgrade] != ["websocket"]:
        return "The upgrade header of the 101 response is not 'websocket'."
    if "upgrade" not in (t.lower() for t in _tokens(_header_values(headers, "connection"))):
        return "The connection header of the 101 response has no 'upgrade' token."
    # Requirement 4: the accept value proves the server read our key.
    accept = _header_values(headers, "sec-websocket-accept")
    if not accept:
        return "The 101 response has no sec-websocket-accept header."
    if len(accept) != 1 or accept[0].strip() != offer.accept:
        return "The sec-websocket-accept value does not match the key sent."
    # Requirement 5: only extensions we offered, with valid parameters.
    extensions: list[Extension] = []
    ext_values = _header_values(headers, "sec-websocket-extensions")
    if ext_values:
        result = _check_extensions(offer, ",".join(ext_values))
        if isinstance(result, str):
            return result
        extensions = result
    # Requirement 6: a subprotocol we did not offer fails the connection.  None
    # selected falls back to default_protocol, as in Gun (a server that requires one
    # refuses the upgrade with a non-101 response instead).
    proto_values = _header_values(headers, "sec-websocket-protocol")
    protocol: str | None = None
    handler = offer.default_protocol
    if proto_values:
        names = _tokens(proto_values)
        if len(names) != 1:
            return "The server selected more than one subprotocol."
        protocol = names[0]
        if protocol not in offer.protocols:
            return f"The server selected subprotocol {protocol!r}, which was not offered."
        handler = offer.protocols[protocol]
    return {"extensions": extensions, "protocol": protocol, "protocol_handler": handler}


def _window_bits(value: str | None) -> int | None:
    # RFC 7692 section 7.1.2: 1*DIGIT, 8..15, no leading zero; may be quoted.
    if value is None:
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if value in ("8", "9", "10", "11", "12", "13", "14", "15"):
        return int(value)
    return None


def _check_extensions(offer: WsOffer, value: str) -> list[Extension] | str:
    """RFC 7692 section 5 / 7.1: validate the server's permessage-deflate answer."""
    extensions: list[Extension] = []
    for element in value.split(","):
        element = element.strip()
        if not element:
            continue
        parts = [p.strip() for p in element.split(";")]
        name = parts[0].lower()
        if name != "permessage-deflate" or not offer.compress:
            return f"The server accepted extension {parts[0]!r}, which was not offered."
        if extensions:
            return "The server accepted permessage-deflate twice."
        params: dict[str, str | None] = {}
        for p in parts[1:]:
            pname, eq, pvalue = p.partition("=")
            pname = pname.strip().lower()
            if pname in params:
                return f"Duplicate permessage-deflate parameter {pname!r}."
            params[pname] = pvalue.strip() if eq else None
        canonical = ["permessage-deflate"]
        client_bits = 15
        server_bits = 15
        for k, v in params.items():
            if k in ("server_no_context_takeover", "client_no_context_takeover"):
                if v is not None:
                    return f"Invalid permessage-deflate parameter {k}={v}."
                canonical.append(k)
            elif k in ("server_max_window_bits", "client_max_window_bits"):
                # We offered server_max_window_bits=15 and a bare
                # client_max_window_bits, so any value 8..15 is acceptable; the
                # answer must carry one (RFC 7692 sections 7.1.2.1 and 7.1.2.2).
                bits = _window_bits(v)
                if bits is None:
                    return f"Invalid permessage-deflate parameter {k}={v}."
                if k == "server_max_window_bits":
                    server_bits = bits
                else:
                    client_bits = bits
            else:
                return f"Unknown permessage-deflate parameter {k!r}."
        # zlib cannot run a raw deflate stream with an 8-bit window: like Cowlib
        # (cow_ws:init_permessage_deflate), use 9.  Inflating with a window larger
        # than the sender's is always safe, so 8 -> 9 is harmless for the server side.
        canonical.append(f"client_max_window_bits={max(client_bits, 9)}")
        canonical.append(f"server_max_window_bits={max(server_bits, 9)}")
        ext = _BoundedDeflate()
        try:
            ext.finalize("; ".join(canonical))
        except ValueError as exc:  # pragma: no cover - values are pre-validated
            return f"Invalid permessage-deflate parameters: {exc}."
        extensions.append(ext)
    return extensions


class _BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that never inflates more than ``limit`` bytes per message:
    a deflate bomb fails with 1009 (RFC 6455 7.4.1) before it is inflated."""

    limit: int | None = None
    _inflated = 0

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if self.limit is None or not self._inbound_compressed or not self._inbound_is_compressible:
            return super().frame_inbound_payload_data(proto, data)
        assert self._decompressor is not None
        try:
            out = self._decompressor.decompress(bytes(data), self.limit - self._inflated + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self.limit or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if fin:
            self._inflated = 0
        return super().frame_inbound_complete(proto, fin)


# ---------------------------------------------------------------------------
# Outgoing frames
# ---------------------------------------------------------------------------


class _BadFrame(Exception):
    """A ``ws_send`` frame that is not one of Gun's frame terms."""


def _iodata(data: Any) -> bytes:
    # Gun's iodata(): bytes, str (UTF-8) or a (nested) list of them.
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, list):
        return b"".join(_iodata(d) for d in data)
    raise _BadFrame(f"payload must be bytes, str or a list of them, not {type(data).__name__}")


def _text(data: Any) -> str:
    if isinstance(data, str):
        return data
    try:
        return _iodata(data).decode("utf-8")
    except UnicodeDecodeError:
        # RFC 6455 section 5.6: a text frame carries UTF-8; the server would fail
        # the connection with 1007, so refuse it here.
        raise _BadFrame("text frame payload is not valid UTF-8") from None


def _close_reason(data: Any) -> str:
    reason = _text(data)
    if len(reason.encode("utf-8")) > 123:
        # RFC 6455 5.5: a control payload is at most 125 bytes (wsproto would cut it).
        raise _BadFrame("close reason over 123 bytes (RFC 6455 section 5.5)")
    return reason


# RFC 6455 section 5.2 base framing, for the data frames we build ourselves (see
# ``_data_frame``): byte 0 is FIN + opcode (RSV bits zero: no extension applies),
# byte 1 is MASK (a client masks every frame, section 5.3) + the 7-bit length.
_DATA_KINDS = ("binary", "text")
_OP_TEXT = 0x81  # FIN, opcode 0x1
_OP_BINARY = 0x82  # FIN, opcode 0x2
_LEN16 = struct.Struct("!BBH")  # 7-bit length 126: a 16-bit length follows
_LEN64 = struct.Struct("!BBQ")  # 7-bit length 127: a 64-bit length follows
# XOR tables for bytes.translate: _XOR[k] maps every byte b to b ^ k.
_XOR = [bytes(b ^ k for b in range(256)) for k in range(256)]


def _py_mask(out: bytearray, h: int, key: bytes) -> None:
    """Mask ``out[h:]`` in place with ``key`` (RFC 6455 5.3), in Python: one strided
    ``translate`` per key octet (octet i is XORed with key octet i mod 4).  1-1.5 ms
    per MiB; the C version (``gunpy/_speedups.c``) ~0.05 ms."""
    x = _XOR
    out[h::4] = out[h::4].translate(x[key[0]])
    out[h + 1 :: 4] = out[h + 1 :: 4].translate(x[key[1]])
    out[h + 2 :: 4] = out[h + 2 :: 4].translate(x[key[2]])
    out[h + 3 :: 4] = out[h + 3 :: 4].translate(x[key[3]])


def _load_mask() -> Callable[[bytearray, int, bytes], None]:
    # The C masker is optional (setup.py builds it when a compiler is there);
    # GUNPY_NO_SPEEDUPS=1 forces the Python one (tests compare the two).
    if not os.environ.get("GUNPY_NO_SPEEDUPS"):
        try:
            from .._speedups import mask

            return mask
        except ImportError:
            pass
    return _py_mask


_mask = _load_mask()


def _data_frame(b0: int, payload: bytes) -> bytearray:
    """One masked, unfragmented data frame (RFC 6455 sections 5.2 and 5.3).

    What wsproto's ``send`` builds, with one copy of the payload where wsproto makes
    six (bytearray, masker, header + key + masked, bytearray, ``b"" +=``): for a
    1 MiB message those copies, each a fresh mmap'd block with its page faults,
    cost more than the masking itself.  The frame is built in one buffer: header,
    key, payload, then masked in place (``_mask``: C when built, else Python).
    """
    n = len(payload)
    # Section 5.3: a fresh key per frame from a strong source of entropy.
    key = os.urandom(4)
    if n < 126:
        out = bytearray((b0, 0x80 | n))
    elif n < 65536:
        out = bytearray(_LEN16.pack(b0, 0xFE, n))
    else:
        out = bytearray(_LEN64.pack(b0, 0xFF, n))
    out += key
    h = len(out)
    out += payload
    if n:
        _mask(out, h, key)
    return out


def _text_bytes(data: Any) -> bytes:
    """A text frame's payload as UTF-8 bytes (``_text``'s checks, without a round
    trip through ``str`` for bytes given by the caller)."""
    if isinstance(data, str):
        return data.encode("utf-8")
    raw = _iodata(data)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # RFC 6455 section 5.6, as in _text.
        raise _BadFrame("text frame payload is not valid UTF-8") from None
    return raw


def _frame_event(frame: Any) -> WsEvent:
    """Gun's frame term -> the wsproto event that sends it.

    ``close | ping | pong | {text|binary|close|ping|pong, iodata()} |
    {close, 1000..4999, iodata()}``; ``{close, Payload}`` is a close 1000 with
    ``Payload`` as reason (cow_ws:frame/2).
    """
    if frame == "close":
        return CloseConnection(code=_NO_STATUS, reason=None)
    if frame == "ping":
        return Ping(b"")
    if frame == "pong":
        return Pong(b"")
    if type(frame) is tuple:
        kind = frame[0]
        if len(frame) == 2:
            if kind == "text":
                return TextMessage(data=_text(frame[1]))
            if kind == "binary":
                return BytesMessage(data=_iodata(frame[1]))
            if kind == "ping":
                return Ping(_iodata(frame[1]))
            if kind == "pong":
                return Pong(_iodata(frame[1]))
            if kind == "close":
                return CloseConnection(code=1000, reason=_close_reason(frame[1]))
        elif len(frame) == 3 and kind == "close":
            code = frame[1]
            if not (isinstance(code, int) and not isinstance(code, bool) and 1000 <= code <= 4999):
                raise _BadFrame(f"close code must be an integer in 1000..4999, not {code!r}")
            if code in (1005, 1006, 1015):
                # RFC 6455 7.4.1: never sent on the wire (wsproto would send 1000).
                raise _BadFrame(f"close code {code} must not be sent (RFC 6455 section 7.4.1)")
            return CloseConnection(code=code, reason=_close_reason(frame[2]))
    raise _BadFrame(f"not a Websocket frame: {frame!r}")


# ---------------------------------------------------------------------------
# The handler
# ---------------------------------------------------------------------------


class WsHandler(BaseHandler):
    """One Websocket connection (Gun's ``gun_ws`` state), sans-IO on wsproto."""

    name: ClassVar[str] = "ws"

    # Slots: attribute reads are the handler's hot path, and CPython 3.11 makes
    # them slower for an instance with 30 or more attributes in its __dict__
    # (measured: HttpHandler 7.2 -> 7.8 µs a request at 31); slots stay fast.
    __slots__ = (
        "_acc",
        "_big_left",
        "_big_parts",
        "_closing_timeout",
        "_conn",
        "_default",
        "_drain_buf",
        "_drain_skip",
        "_draining",
        "_ended",
        "_ev",
        "_ev_ext",
        "_ev_frag",
        "_ev_hdrs",
        "_ev_open",
        "_ev_payload",
        "_failed",
        "_fast_in",
        "_flow",
        "_handler",
        "_hstate",
        "_init_error",
        "_keepalive",
        "_max_size",
        "_out_closed",
        "_paused",
        "_plain",
        "_proxy",
        "_reading",
        "_silence_pings",
        "_silent",
        "_size",
        "_timer",
        "_ws",
        "headers",
        "opts",
        "protocol",
        "ref",
        "reply_to",
        "user_closed",
    )

    def __init__(
        self,
        ctx: HandlerContext,
        opts: dict[str, Any],
        ref: Any,
        reply_to: ReplyTo,
        headers: Headers,
        *,
        extensions: list[Extension] | None = None,
        protocol: str | None = None,
        protocol_handler: Any = None,
    ) -> None:
        super().__init__(ctx)
        self.opts = opts
        self.ref = ref
        self.reply_to = reply_to
        self.headers = headers
        self.protocol = protocol
        self._ws = Connection(ConnectionType.CLIENT, extensions=extensions or [])
        # No extension negotiated: data frames take the lean paths (_data_frame out,
        # _fast_in in); with permessage-deflate every frame goes through wsproto.
        self._plain = not extensions
        # Frame events (gunpy.events) need wsproto's frame headers: no lean receive then.
        self._fast_in = self._plain and not ctx.events
        # A large binary frame being received by _fast: the bytes still to come, and
        # the reads (or pieces of reads) holding what came so far.
        self._big_left = 0
        self._big_parts: list[bytes | memoryview] = []
        self._conn = ctx.conn
        self._silence_pings: bool = opts.get("silence_pings", True)
        timeout = opts.get("closing_timeout", DEFAULT_CLOSING_TIMEOUT)
        self._closing_timeout: int | None = None if timeout == "infinity" else timeout
        limit = opts.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
        self._max_size: int | None = None if limit == "infinity" else limit
        # The inflater stops at the limit too: a deflate bomb is refused, not inflated.
        for ext in extensions or []:
            if isinstance(ext, _BoundedDeflate):
                ext.limit = self._max_size
        keepalive = opts.get("keepalive", "infinity")
        self._keepalive: int | None = None if keepalive == "infinity" else keepalive
        # Gun 4.5: None = no flow control; else the remaining budget.
        self._flow: int | None = opts.get("flow")
        # _paused: the budget is spent, events stay unread inside wsproto.
        # _reading: what we last told the actor (SetActive only on a change).
        self._paused = False
        self._reading = True

        # Message reassembly: one growing buffer per message (a list of pieces costs
        # ~50 bytes per fragment, so tiny fragments would multiply the memory).
        self._acc: bytearray | io.StringIO | None = None
        self._size = 0

        # Closing state: _out_closed = we sent a close frame (Gun's out=close);
        # _failed = we failed the connection (RFC 6455 section 7.1.7) and only wait
        # for the peer's close; _draining = wsproto's parser stopped at the bad
        # frame, so the peer's close is looked for by _drain; _ended = Close given.
        self._out_closed = False
        #: True once the *user* sent a close frame: a deliberate end, so the
        #: ``reupgrade`` option does not bring this Websocket back.
        self.user_closed = False
        self._failed = False
        self._draining = False
        self._drain_buf = bytearray()
        self._drain_skip = 0
        self._ended = False
        self._timer = False

        # Events (gunpy.events, Gun's ws_recv_frame_*/ws_send_frame_*): only with an
        # event_handler, so the data path below pays one attribute test per frame.
        self._ev = ctx.events
        if self._ev:
            self._ev_setup(extensions or [])

        self._proxy = WsReplyTo(reply_to, ctx.conn)
        if protocol_handler is None:
            protocol_handler = opts.get("default_protocol", WsDefaultProtocol)
        self._handler = protocol_handler
        self._default = protocol_handler is WsDefaultProtocol
        # Pings/pongs skip the handler entirely when the default one would drop them.
        self._silent = self._default and self._silence_pings
        self._hstate: Any = None
        self._init_error: Exception | None = None
        if not self._default:
            # Messages the handler sends from init are queued in the proxy and come
            # out first, from init().
            try:
                self._hstate = protocol_handler.init(self._proxy, ref, headers, opts)
            except Exception as exc:
                # Reported from init() (a constructor cannot return commands).
                self._init_error = exc

    # -- command list plumbing -------------------------------------------------
    def _begin(self) -> Commands:
        # The proxy appends to the list being built; anything a subprotocol handler
        # sent outside our calls (from init) is at its front.
        return self._proxy.cmds

    def _end(self, cmds: Commands) -> Commands:
        self._proxy.cmds = []
        return cmds

    # -- entry points ------------------------------------------------------------
    def init(self) -> Commands:
        cmds = self._begin()
        if self._init_error is not None:
            self._fail(cmds, 1011, f"Subprotocol handler error: {self._init_error!r}"[:123])
            self._init_error = None
        return self._end(cmds)

    def handle(self, data: bytes) -> Commands:
        cmds = self._begin()
        if self._ended:
            return self._end(cmds)
        if self._draining:
            if self._drain(data):
                self._finish(cmds, "normal")
            return self._end(cmds)
        try:
            if self._fast_in:
                data = self._fast(cmds, data)
                if not data:
                    return self._end(cmds)
            self._ws.receive_data(data)
            if not self._paused:
                self._process(cmds)
        except Exception as exc:  # pragma: no cover - defensive border
            self._crash(cmds, exc)
        return self._end(cmds)

    def _fast(self, cmds: Commands, data: bytes) -> bytes:
        """Take the plain data frames at the head of ``data`` without wsproto; return
        the bytes wsproto must see (the first frame we do not take, and all after it).

        wsproto copies every payload byte three to four times (its buffer, a slice
        per read, ``bytes(payload)``) and we once more to reassemble what it cuts at
        read boundaries; a large binary frame is kept here as the reads that carry
        it and joined once.  Only while wsproto is idle: between frames with nothing
        buffered, no message half-read, its connection OPEN, so wsproto never sees
        these bytes and its state stays what it would be after them (an unfragmented
        data frame without extension leaves none).  Only frames whose handling
        cannot differ from wsproto's: FIN set, RSV zero, opcode text or binary, not
        masked (RFC 6455 section 5.1: a server never masks), the shortest length
        encoding (section 5.2), within ``max_message_size``; a text frame only when
        it is whole in ``data`` and valid UTF-8 (section 8.1), so an invalid one
        still fails where wsproto fails it, as soon as its bytes arrive.  Anything
        else — control frames, fragments, a header cut by the read — goes to wsproto.
        """
        pos = 0
        end = len(data)
        left = self._big_left
        if left:
            # The rest of a large binary frame (started below).
            if end < left:
                self._big_parts.append(data)
                self._big_left = left - end
                return b""
            parts = self._big_parts
            parts.append(data if end == left else memoryview(data)[:left])
            self._big_parts = []
            self._big_left = 0
            pos = left
            if not self._failed:
                self._dispatch(cmds, ("binary", b"".join(parts)))
        ws = self._ws
        proto = ws._proto
        dec = proto._frame_decoder
        if (
            dec.header is not None
            or len(dec.buffer)
            or proto._message_decoder.opcode is not None
            or ws._events
            or self._acc is not None
        ):
            return data[pos:] if pos else data
        limit = self._max_size
        while end - pos >= 2:
            if ws.state is not _OPEN or self._paused or self._failed or self._ended:
                break
            b0 = data[pos]
            if b0 != _OP_BINARY and b0 != _OP_TEXT:
                break
            n = data[pos + 1]
            if n < 126:
                h = pos + 2
            elif n == 126:
                h = pos + 4
                if h > end:
                    break
                n = (data[pos + 2] << 8) | data[pos + 3]
                if n < 126:
                    break
            elif n == 127:
                h = pos + 10
                if h > end:
                    break
                n = int.from_bytes(data[pos + 2 : h], "big")
                if n < 65536 or n >> 63:
                    break
            else:
                break  # masked
            if limit is not None and n > limit:
                break
            if end - h < n:
                if b0 != _OP_BINARY:
                    break
                # A binary frame longer than this read: collect its reads.
                self._big_parts = [memoryview(data)[h:]] if h < end else []
                self._big_left = n - (end - h)
                return b""
            if b0 == _OP_BINARY:
                self._dispatch(cmds, ("binary", data[h : h + n]))
            else:
                try:
                    text = data[h : h + n].decode("utf-8")
                except UnicodeDecodeError:
                    break  # wsproto fails it (1007), with its own reason text
                self._dispatch(cmds, ("text", text))
            pos = h + n
        return data[pos:] if pos else data

    def handle_eof(self) -> Commands:
        cmds = self._begin()
        if not self._ended:
            # wsproto's EOF is None; it only records a 1006 close we do not report:
            # Gun says nothing in gun_ws either, the owner gets gun_down.
            self._ws.receive_data(None)
            self._finish(cmds, "closed")
        return self._end(cmds)

    def update_flow(self, ref: Any, inc: int) -> Commands:
        cmds = self._begin()
        if self._flow is None or ref != self.ref or self._ended:
            return self._end(cmds)
        self._flow += inc
        if self._paused and self._flow > 0:
            self._paused = False
            try:
                self._process(cmds)
            except Exception as exc:  # pragma: no cover - defensive border
                self._crash(cmds, exc)
            if not self._paused and not self._ended and not self._reading:
                self._reading = True
                cmds.append(SetActive(True))
        return self._end(cmds)

    def inline_ok(self, op: tuple[Any, ...]) -> bool:
        # Text and binary frames on the lean path (one Send, or a gun_error for bad
        # UTF-8); control frames may close, so they go to the actor.
        if op[0] != "$ws_send" or not self._plain or self._ev or self._out_closed or self._ended:
            return False
        if self._ws.state is not _OPEN or self._proxy.cmds:
            return False
        for f in op[3]:
            if type(f) is not tuple or len(f) != 2 or f[0] not in _DATA_KINDS:
                return False
        return True

    def ws_send(self, ref: Any, reply_to: ReplyTo, frames: list[Any]) -> Commands:
        # Like Gun, the ref is not checked: the connection has one Websocket.
        cmds = self._begin()
        # A single frame is accepted too (gun:ws_send/3 takes Frame | [Frame]).
        items: list[Any] = frames if isinstance(frames, list) else [frames]
        out: list[bytes | bytearray] = []
        for frame in items:
            # After our close (sent by the user, a shutdown or a protocol error),
            # RFC 6455 section 5.5.1 forbids more data frames and wsproto refuses
            # every frame: the rest is ignored, as Gun stops after a close.
            if self._out_closed or self._ended:
                break
            try:
                # Text and binary frames without an extension: built here (see
                # _data_frame); wsproto keeps its state, as it never sees them: its
                # send only tests the state (OPEN, tested here) and tracks the
                # opcode of a fragmented message, and we never fragment.
                event: WsEvent | None = None
                if (
                    self._plain
                    and type(frame) is tuple
                    and len(frame) == 2
                    and frame[0] in _DATA_KINDS
                    and self._ws.state is _OPEN
                ):
                    if frame[0] == "binary":
                        out.append(_data_frame(_OP_BINARY, _iodata(frame[1])))
                    else:
                        out.append(_data_frame(_OP_TEXT, _text_bytes(frame[1])))
                else:
                    event = _frame_event(frame)
                    out.append(self._ws.send(event))
                if self._ev:
                    self._send_frame(cmds, frame, b"".join(out), reply_to)
                    out = []
            except (_BadFrame, ProtocolError, ValueError, TypeError) as exc:
                # ValueError: control payload over 125 bytes (RFC 6455 section 5.5).
                # Gun would crash the connection; gunpy tells the caller and stops.
                if out:
                    cmds.append(Send(b"".join(out)))
                    out = []
                cmds.append(
                    Deliver(
                        reply_to,
                        (
                            "gun_error",
                            self._conn,
                            ref,
                            ("badarg", f"Invalid Websocket frame: {exc}"),
                        ),
                    )
                )
                break
            if event is not None and type(event) is CloseConnection:
                self._out_closed = True
                self.user_closed = True
                if out:
                    cmds.append(Send(b"".join(out)))
                    out = []
                self._after_close_sent(cmds)
        if out:
            cmds.append(Send(out[0] if len(out) == 1 else b"".join(out)))
        if self._out_closed:
            self._lift_flow(cmds)
        return self._end(cmds)

    def ping(self, ref: Any, reply_to: ReplyTo) -> Commands:
        # Gun never handles gun:ping on a Websocket connection (the cast is
        # postponed forever); send ("ping", data) frames with ws_send instead.
        return []

    def keepalive(self) -> Commands:
        cmds = self._begin()
        if self._ws.state is _OPEN and not self._ended:
            self._send_frame(cmds, "ping", self._ws.send(Ping(b"")))
        return self._end(cmds)

    def keepalive_interval(self) -> int | None:
        return self._keepalive

    def timeout(self, name: str) -> Commands:
        cmds = self._begin()
        if name == _CLOSING_TIMER and not self._ended:
            # The server never answered our close: end anyway (Gun's closing_timeout).
            self._timer = False
            self._finish(cmds, "normal")
        return self._end(cmds)

    def closing(self, reason: Any) -> Commands:
        # shutdown / owner down: close 1001 "going away" (RFC 6455 section 7.4.1,
        # Gun's closing/4), then wait for the server's close like a user close.
        cmds = self._begin()
        if not self._ended:
            if not self._out_closed:
                self._send_close(cmds, 1001, "")
                self._lift_flow(cmds)
            # Our close is out: wait for the server's (bounded by our "closing"
            # timer).  Say so, or the actor takes "still connected" for "nothing to
            # finish" and disconnects at once.
            cmds.append(Closing("infinity"))
        return self._end(cmds)

    def close(self, reason: Any) -> Commands:
        # Gun's gun_ws:close/4 sends nothing: gun_down covers the stream.
        return self._end(self._begin())

    def down(self) -> list[Any]:
        return [self.ref]

    def active(self) -> bool:
        return not self._paused

    def recv_size(self) -> int:
        # The rest of a large binary frame taken by _fast is surely coming.
        left = self._big_left
        return min(left, RECV_SIZE_MAX) if left > RECV_SIZE else RECV_SIZE

    def stream_info(self, ref: Any) -> dict[str, Any] | None:
        if ref != self.ref:
            return None
        return {
            "ref": ref,
            "reply_to": self.reply_to,
            "state": "stopping" if self._out_closed or self._failed else "running",
            "intermediaries": [],
        }

    # After an upgrade only Websocket frames are accepted (gun-reference 4.7): the
    # connection-wide 3-tuple, as Gun's connected_ws_only state answers.
    def request(
        self,
        ref: Any,
        reply_to: ReplyTo,
        method: str,
        path: str,
        headers: Headers,
        body: bytes | None,
        req_opts: dict[str, Any],
    ) -> Commands:
        return self.conn_error(reply_to, ("badstate", BADSTATE_WS_ONLY))

    def data(self, ref: Any, reply_to: ReplyTo, fin: str, data: bytes) -> Commands:
        return self.conn_error(reply_to, ("badstate", BADSTATE_WS_ONLY))

    def cancel(self, ref: Any, reply_to: ReplyTo) -> Commands:
        return self.conn_error(reply_to, ("badstate", BADSTATE_WS_ONLY))

    def ws_upgrade(
        self, ref: Any, reply_to: ReplyTo, path: str, headers: Headers, ws_opts: dict[str, Any]
    ) -> Commands:
        return self.conn_error(reply_to, ("badstate", BADSTATE_WS_ONLY))

    # -- events (Gun 4.14) ---------------------------------------------------------
    def _ev_setup(self, extensions: list[Extension]) -> None:
        """Frame events need frame headers, which wsproto's Connection hides: note
        every header its decoder parses (in order; they pair with its frames)."""
        self._ev_ext: dict[str, Any] = (
            {"deflate": True} if any(isinstance(e, PerMessageDeflate) for e in extensions) else {}
        )
        self._ev_hdrs: deque[Any] = deque()
        self._ev_frag: tuple[str, str, tuple[int, int, int]] | None = None
        self._ev_open = False  # between a frame's header event and its end event
        self._ev_payload: list[bytes] = []
        dec = self._ws._proto._frame_decoder
        parse = dec.parse_header
        hdrs = self._ev_hdrs

        def parse_header() -> bool:
            ok: bool = parse()
            if ok:
                hdrs.append(dec.header)
            return ok

        dec.parse_header = parse_header  # type: ignore[method-assign]

    def _ev_recv(self, cmds: Commands, ev: Any, t: type) -> None:
        """ws_recv_frame_start/header/end for the wsproto event ``ev`` (a frame or
        a piece of one)."""
        if t is CloseConnection and self._ws.state in (_OPEN, _LOCAL_CLOSING):
            return  # wsproto's own close for a frame it refused: nothing was received
        base = {"stream_ref": self.ref, "reply_to": self.reply_to}
        if not self._ev_open:
            hdr = self._ev_hdrs.popleft() if self._ev_hdrs else None
            rsv = (int(hdr.rsv[0]), int(hdr.rsv[1]), int(hdr.rsv[2])) if hdr else (0, 0, 0)
            frag = self._ev_frag
            cmds.append(
                Event(
                    "ws_recv_frame_start", {**base, "frag_state": frag, "extensions": self._ev_ext}
                )
            )
            if t is TextMessage or t is BytesMessage:
                kind = "text" if t is TextMessage else "binary"
                fin = hdr.fin if hdr is not None else ev.message_finished
                if frag is None and fin:
                    ftype = kind
                else:
                    # cow_ws: every frame of a fragmented message is a "fragment".
                    ftype = "fragment"
                    frag = ("fin" if fin else "nofin", kind, frag[2] if frag else rsv)
            else:
                ftype = "ping" if t is Ping else "pong" if t is Pong else "close"
            self._ev_frag = frag
            cmds.append(
                Event(
                    "ws_recv_frame_header",
                    {
                        **base,
                        "frag_state": frag,
                        "extensions": self._ev_ext,
                        "type": ftype,
                        "rsv": rsv,
                        "len": hdr.payload_len if hdr is not None else 0,
                        "mask_key": None,
                    },
                )
            )
            self._ev_open = True
        close_code = None
        if t is TextMessage:
            self._ev_payload.append(ev.data.encode("utf-8"))
            done = ev.frame_finished
        elif t is BytesMessage:
            self._ev_payload.append(bytes(ev.data))
            done = ev.frame_finished
        elif t is CloseConnection:
            code = int(ev.code)
            close_code = None if code == _NO_STATUS else code
            self._ev_payload.append((ev.reason or "").encode("utf-8"))
            done = True
        else:
            self._ev_payload.append(bytes(ev.payload))
            done = True
        if done:
            payload = b"".join(self._ev_payload)
            self._ev_payload = []
            self._ev_open = False
            cmds.append(
                Event(
                    "ws_recv_frame_end",
                    {
                        **base,
                        "extensions": self._ev_ext,
                        "close_code": close_code,
                        "payload": payload,
                    },
                )
            )
            if self._ev_frag is not None and self._ev_frag[0] == "fin":
                self._ev_frag = None

    def _send_frame(
        self, cmds: Commands, frame: Any, data: bytes, reply_to: ReplyTo | None = None
    ) -> None:
        """``Send(data)``, between ws_send_frame_start/end when events are on."""
        if not self._ev:
            cmds.append(Send(data))
            return
        ev = {
            "stream_ref": self.ref,
            "reply_to": self.reply_to if reply_to is None else reply_to,
            "extensions": self._ev_ext,
            "frame": frame,
        }
        cmds.append(Event("ws_send_frame_start", ev))
        cmds.append(Send(data))
        cmds.append(Event("ws_send_frame_end", dict(ev)))

    # -- internals ---------------------------------------------------------------
    def _finish(self, cmds: Commands, reason: Any) -> None:
        self._ended = True
        if self._timer:
            self._timer = False
            cmds.append(CancelTimer(_CLOSING_TIMER))
        cmds.append(Close(reason))

    def _crash(self, cmds: Commands, exc: Exception) -> None:
        # Nothing from wsproto may escape a handler (base.py): wsproto only raises
        # here on states we never reach, so treat it as a broken connection.
        if not self._ended:
            self._finish(
                cmds, ("error", ("connection_error", "protocol_error", f"Websocket: {exc!r}"))
            )

    def _lift_flow(self, cmds: Commands) -> None:
        # Once our close is out, the socket must be read for the server's close to
        # arrive within closing_timeout: the flow budget no longer pauses reading
        # (messages still arriving are delivered, as Gun does until the close).
        if self._flow is None or self._ended:
            return
        self._flow = None
        if self._paused:
            self._paused = False
            try:
                self._process(cmds)
            except Exception as exc:  # pragma: no cover - defensive border
                self._crash(cmds, exc)
        if not self._reading and not self._ended:
            self._reading = True
            cmds.append(SetActive(True))

    def _after_close_sent(self, cmds: Commands) -> None:
        # Gun's send/5 after a close frame: {closing, Timeout}.
        if self._closing_timeout is not None:
            self._timer = True
            cmds.append(StartTimer(_CLOSING_TIMER, self._closing_timeout))

    def _send_close(self, cmds: Commands, code: int, reason: str) -> None:
        data = self._ws.send(CloseConnection(code=code, reason=reason))
        self._send_frame(cmds, ("close", code, reason), data)
        self._out_closed = True
        self._after_close_sent(cmds)

    def _fail(self, cmds: Commands, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7) with close ``code``.

        Better than Gun (gun-reference section 7): the user gets
        ``("gun_ws", conn, ref, ("close", code, reason))`` naming the close frame we
        sent, so it learns why the connection ends.  If we had already sent a close
        there is nothing more to send; we just keep waiting for the peer's.
        """
        self._failed = True
        self._acc = None
        if self._out_closed:
            return
        self._send_close(cmds, code, reason)
        cmds.append(
            Deliver(self.reply_to, ("gun_ws", self._conn, self.ref, ("close", code, reason)))
        )

    def _dispatch(self, cmds: Commands, frame: Any) -> None:
        """Give ``frame`` to the subprotocol handler and charge the flow budget."""
        if self._default:
            # WsDefaultProtocol, inlined (silenced pings never get here).
            cmds.append(Deliver(self.reply_to, ("gun_ws", self._conn, self.ref, frame)))
            dec = 1
        else:
            try:
                result = self._handler.handle(frame, self._hstate)
                ok, dec, self._hstate = result
                if ok != "ok" or not isinstance(dec, int):
                    raise TypeError(f"handle/2 returned {result!r}, not ('ok', flow_dec, state)")
            except Exception as exc:
                # Gun's connection process would crash; gunpy fails the Websocket
                # with 1011 (unexpected condition, RFC 6455 section 7.4.1) and says why.
                self._fail(cmds, 1011, f"Subprotocol handler error: {exc!r}"[:123])
                return
        if self._flow is not None and dec:
            self._flow -= dec
            if self._flow <= 0:
                self._paused = True
                if self._reading:
                    self._reading = False
                    cmds.append(SetActive(False))

    def _process(self, cmds: Commands) -> None:
        """Walk wsproto's events in one pass (stops when paused, failed-drained or ended)."""
        ws = self._ws
        for ev in ws.events():
            t = type(ev)
            if self._ev:
                self._ev_recv(cmds, ev, t)
            if t is TextMessage or t is BytesMessage:
                if self._failed:
                    continue  # failed connection: only the peer's close matters
                assert isinstance(ev, Message)
                data = ev.data
                if self._max_size is not None:
                    n = len(data)
                    # Text: 4 bytes per character at most; count exactly only
                    # when that bound could cross the limit (isascii() is O(1)).
                    if (
                        t is TextMessage
                        and self._size + 4 * n > self._max_size
                        and not data.isascii()
                    ):
                        n = len(data.encode("utf-8"))
                    self._size += n
                    if self._size > self._max_size:
                        self._fail(cmds, 1009, "Message too big.")
                        continue
                acc = self._acc
                if ev.message_finished:
                    kind = "text" if t is TextMessage else "binary"
                    if acc is not None:
                        if isinstance(acc, bytearray):
                            acc += data
                            data = bytes(acc)
                        else:
                            acc.write(data)
                            data = acc.getvalue()
                        self._acc = None
                    self._size = 0
                    self._dispatch(cmds, (kind, data))
                else:
                    if acc is None:
                        acc = self._acc = io.StringIO() if t is TextMessage else bytearray()
                    if isinstance(acc, bytearray):
                        acc += data
                    else:
                        acc.write(data)
            elif t is Ping:
                assert isinstance(ev, Ping)
                if self._failed:
                    continue
                payload = bytes(ev.payload)
                if not self._silent:
                    self._dispatch(cmds, ("ping", payload) if payload else "ping")
                # RFC 6455 section 5.5.2: answer with the same payload; not after
                # our close (section 5.5.1; wsproto refuses it).
                if ws.state is _OPEN:
                    self._send_frame(
                        cmds, ("pong", payload) if payload else "pong", ws.send(Pong(payload))
                    )
            elif t is Pong:
                assert isinstance(ev, Pong)
                if self._failed:
                    continue
                if not self._silent:
                    payload = bytes(ev.payload)
                    self._dispatch(cmds, ("pong", payload) if payload else "pong")
            elif t is CloseConnection:
                assert isinstance(ev, CloseConnection)
                self._on_close(cmds, ev)
                return
            if self._paused or self._ended:
                return

    def _on_close(self, cmds: Commands, ev: CloseConnection) -> None:
        code = int(ev.code)
        reason = ev.reason or ""
        state = self._ws.state
        if state is _OPEN or state is _LOCAL_CLOSING:
            # wsproto reports a parse failure (ParseFailed) as a CloseConnection
            # without a state change: it is *our* close to send, not the peer's.
            # Its parser is dead from here on; look for the peer's close ourselves.
            self._draining = True
            self._fail(cmds, code, reason)
            return
        if not self._failed:
            # A genuine close from the server (RFC 6455 section 5.5.1): deliver it
            # through the handler (Gun's dispatch/7), answer 1000 with no reason as
            # Gun does unless we had already sent ours, and end now.
            self._dispatch(cmds, "close" if code == _NO_STATUS else ("close", code, reason))
            # Re-read: a failing subprotocol handler may have sent a close already.
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                data = self._ws.send(CloseConnection(code=1000, reason=""))
                self._send_frame(cmds, ("close", 1000, ""), data)
        # else: the peer's reply to our error close; the user already knows.
        self._finish(cmds, "normal")

    def _drain(self, data: bytes) -> bool:
        """After a parse failure: skip whole frames until the peer's close.

        Returns True when a close frame header is seen, or when the bytes cannot be
        framed at all (RFC 6455 section 7.1.7 lets us close without waiting).  The
        bytes of the read that held the bad frame stay inside wsproto, so a close
        that came in that same read is not seen: EOF or the timer end those cases.
        """
        buf = self._drain_buf
        buf += data
        pos = 0
        end = len(buf)
        while True:
            if self._drain_skip:
                n = min(self._drain_skip, end - pos)
                pos += n
                self._drain_skip -= n
                if self._drain_skip:
                    break
            if end - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            opcode = b0 & 0x0F
            if opcode == 0x8:
                return True
            if opcode not in (0x0, 0x1, 0x2, 0x9, 0xA):
                return True
            length = b1 & 0x7F
            hdr = 2
            if length == 126:
                hdr = 4
            elif length == 127:
                hdr = 10
            if b1 & 0x80:
                hdr += 4
            if end - pos < hdr:
                break
            if length == 126:
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            pos += hdr
            self._drain_skip = length
        del buf[:pos]
        return False
