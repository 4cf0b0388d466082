"""HTTP/2 client protocol handler: Gun's ``gun_http2``, sans-IO on h2.

Theory of operation
-------------------
One ``Http2Handler`` holds one HTTP/2 connection (ALPN ``h2`` or prior knowledge).
Like every handler it never touches a socket, a thread or a clock: each entry point
returns a list of commands (``gunpy._commands``) for the connection actor.  The
framing, HPACK, stream states and flow-control windows are h2's
(``h2.connection.H2Connection`` in the client role); this module holds Gun's
semantics on top of it: streams known by ``StreamRef``, Gun's messages, flow budgets,
pushes, pings, GOAWAY and Websocket streams (RFC 8441).

Reading.  ``handle`` cuts the bytes into whole frames itself and gives h2 one frame
at a time.  Three reasons: the first frame must be the server's SETTINGS (the
preface, RFC 9113 3.4; Gun says "Appears to be an HTTP/1 response?" when it starts
with ``HTTP/1``), which h2 does not check; h2 drops every event of a ``receive_data``
call that raises, so a response delivered just before a protocol error would be
lost; and the ``max_fragmented_header_block_size`` limit needs the frame headers.
h2's events are then turned into Gun's messages, in order: ``gun_inform``,
``gun_push`` (always before the parent's ``gun_response``, as the server sends the
PUSH_PROMISE first), ``gun_response`` fin/nofin, one ``gun_data`` per DATA frame
(Gun does not merge them), ``gun_trailers``.  Exceptions never escape: an h2
``ProtocolError`` is a connection error (Gun's ``connection_error/2``): every
distinct reply_to with an open stream gets ``("gun_error", conn, (code, text))``,
a GOAWAY goes out and ``Close(("error", ("connection_error", code, text)))`` ends
the connection; ``close`` then gives each stream ``("closed", reason)``.

GOAWAY.  h2 4.4 moves its connection state machine to CLOSED as soon as a GOAWAY is
sent or received, and then refuses every frame (python-hyper/h2 issue #1181), so
the graceful close RFC 9113 6.8 describes cannot be done through its API.  This
module therefore writes its own GOAWAY frames (hyperframe) without telling h2, and
``_H2Connection`` turns a received GOAWAY into h2's ``ConnectionTerminated`` event
without closing the state machine.  Gun's behaviour follows: streams above the
server's last-stream-id get ``("goaway", code, "The connection is going away.")``,
we answer GOAWAY ``no_error``, the others finish, then ``Close("normal")`` (or
``Closing(closing_timeout)`` while they run).  Our own ``closing`` sends GOAWAY
``no_error`` and waits the same way.

Flow control (Gun 4.5 and cowlib's ``ensure_window``).  Our receive windows start
at 8,000,000 bytes (Gun's override).  After each non-empty DATA frame the
connection window is refilled when it falls to ``connection_window_update_threshold``
(up to the initial size plus ``connection_window_margin_size``), and so is the
stream's window, unless the frame ended the stream or the stream's message budget
(``flow``) is spent: then the server runs out of stream window and stops, while the
other streams go on.  ``update_flow`` adds to the budget and refills the window.

Websocket over HTTP/2 (RFC 8441).  ``ws_upgrade`` sends an extended CONNECT
(``:protocol websocket``) once the server's SETTINGS said
``SETTINGS_ENABLE_CONNECT_PROTOCOL = 1``.  A 2xx answer (without END_STREAM) makes
the stream a Websocket: a ``gunpy.protocols.ws.WsHandler`` per stream parses and
builds the frames (masked, RFC 8441 5) carried in DATA frames.  Its commands are
translated: ``Send`` becomes DATA on the stream, ``SetActive(False)`` withholds the
stream's WINDOW_UPDATEs, ``StartTimer``/``CancelTimer`` get the stream id in their
name, and ``Close`` ends only that stream (END_STREAM), never the connection.

CONNECT tunnels (RFC 9113 8.5, Gun 4.11).  ``connect`` opens a stream with
``:method CONNECT`` and ``:authority host:port`` (no ``:scheme``, no ``:path``).
A 2xx answer without END_STREAM gives ``gun_response`` (fin) and makes the stream
a tunnel: a ``gunpy.protocols.tunnel.StreamTunnel`` runs the protocol inside
(with TLS when asked) over the stream's DATA frames, its commands translated as
the Websocket ones are (timers ``tun<id>:<name>``).  Refs through it are the
CONNECT's ref followed by more (``_through``): requests, data, cancel... with
such refs are handed to that stream's tunnel.  Many tunnels share a connection;
the connection's own ``info`` is unchanged (Gun: HTTP/2 intermediaries are per
stream).

Outgoing data waits in a per-stream queue while the peer's windows are too small
(cowlib's ``send_or_queue_data``, with ``stream_window_data_threshold``) and goes out
as WINDOW_UPDATEs arrive.

Differences from Gun 2.4.1 (each one deliberate)
    * The close of a Websocket stream ends that stream only; Gun's
      ``tunnel_commands`` closes the whole connection.  A server that ends a
      Websocket stream without a close frame gives ``("gun_error", conn, ref,
      "closed")``.
    * ``ws_upgrade`` made before the server's SETTINGS waits for them, and is
      refused with a ``badstate`` stream error when the server did not set
      SETTINGS_ENABLE_CONNECT_PROTOCOL (Gun sends the CONNECT regardless).
    * ``closing`` also sends close 1001 on each Websocket stream, and ends the
      connection at once when no stream is open.
    * A refused extended CONNECT (non-2xx) gets our END_STREAM, so the stream goes
      away instead of lingering until the connection closes.
    * Per-stream Websocket ``flow`` withholds that stream's window while spent, and
      Websocket ``keepalive`` works on HTTP/2 streams (timer ``ws<id>:keepalive``).
    * h2 treats a malformed response header block or a body that contradicts its
      content-length as a connection error; cowlib resets only the stream.
    * Option values are range-checked (Gun accepts any value for cowlib's options).
"""

from __future__ import annotations

import base64
import importlib
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    InformationalResponseReceived,
    PingAckReceived,
    PushedStreamReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings
from hyperframe.frame import Frame, GoAwayFrame

from .. import cookies as _cookies
from .._commands import (
    CancelTimer,
    Close,
    Closing,
    Commands,
    Deliver,
    ReplyTo,
    Send,
    SetActive,
    StartTimer,
)
from .._commands import Event as EvCmd  # h2 has an Event class too
from .._process import make_ref
from . import content as _content
from .base import (
    BADSTATE_ALREADY_CLOSED,
    BADSTATE_NOT_A_TUNNEL,
    BADSTATE_NOT_FOUND,
    BaseHandler,
    HandlerContext,
    Headers,
)
from .http import HttpOptions, _host_header

__all__ = ["Http2Handler", "check_options"]

# --------------------------------------------------------------------------------------
# Options (gun-reference 3.3; Gun's check_options plus cowlib's machine options)

_MAX31 = 2**31 - 1

_DEFAULTS: dict[str, Any] = {
    "keepalive": "infinity",
    "closing_timeout": 15000,
    "notify_settings_changed": False,
    "cookie_ignore_informational": False,
    "content_handlers": ["data"],
    # Gun overrides cowlib's 65535 "in order to optimize for performance".
    "initial_connection_window_size": 8000000,
    "initial_stream_window_size": 8000000,
    "max_concurrent_streams": 100,
    "max_decode_table_size": 4096,
    "max_encode_table_size": 4096,
    "max_frame_size_received": 16384,
    "max_frame_size_sent": "infinity",
    "max_fragmented_header_block_size": 32768,
    "preface_timeout": 5000,
    "settings_timeout": 5000,
    "connection_window_margin_size": 65535,
    "stream_window_margin_size": 65535,
    "connection_window_update_threshold": 163840,
    "stream_window_update_threshold": 163840,
    "max_connection_window_size": _MAX31,
    "max_stream_window_size": _MAX31,
    "stream_window_data_threshold": 16384,
    "enable_connect_protocol": False,
}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _range(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: _int(v) and lo <= v <= hi


def _timeout(v: Any) -> bool:
    return v == "infinity" or (_int(v) and v > 0)


def _timeout0(v: Any) -> bool:
    return v == "infinity" or (_int(v) and v >= 0)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "keepalive": _timeout,
    "keepalive_tolerance": _range(0, 2**63),
    "closing_timeout": _timeout,
    "flow": _range(1, 2**63),
    "notify_settings_changed": _bool,
    "cookie_ignore_informational": _bool,
    "content_handlers": _content.check_option,
    "initial_connection_window_size": _range(65535, _MAX31),
    "initial_stream_window_size": _range(0, _MAX31),
    "max_concurrent_streams": lambda v: v == "infinity" or (_int(v) and 0 <= v <= 2**32 - 1),
    "max_decode_table_size": _range(0, 2**32 - 1),
    "max_encode_table_size": _range(0, 2**32 - 1),
    "max_frame_size_received": _range(16384, 16777215),
    "max_frame_size_sent": lambda v: v == "infinity" or (_int(v) and 16384 <= v <= 16777215),
    "max_fragmented_header_block_size": _range(16384, _MAX31),
    "max_headers": _range(0, 2**63),
    "preface_timeout": _timeout0,
    "settings_timeout": _timeout0,
    "connection_window_margin_size": _range(0, _MAX31),
    "stream_window_margin_size": _range(0, _MAX31),
    "connection_window_update_threshold": _range(0, _MAX31),
    "stream_window_update_threshold": _range(0, _MAX31),
    "max_connection_window_size": _range(0, _MAX31),
    "max_stream_window_size": _range(0, _MAX31),
    "stream_window_data_threshold": _range(0, _MAX31),
    "enable_connect_protocol": _bool,
}


def check_options(opts: dict[str, Any]) -> tuple[str, Any] | None:
    """The first bad ``(key, value)`` of an ``http2_opts`` dict, or None.

    Gun's ``gun_http2:check_options`` accepts any value for cowlib's machine
    options; gunpy checks them against the ranges cowlib documents (a bad value
    would otherwise fail later inside h2).
    """
    for k, v in opts.items():
        check = _CHECKS.get(k)
        if check is None or not check(v):
            return (k, v)
    return None


# --------------------------------------------------------------------------------------
# Wire details

_CONN_SPECIFIC = frozenset(
    ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host")
)
_WS_OFFER_HEADERS = ("sec-websocket-protocol", "sec-websocket-extensions")

_PREFACE_TEXT = "Invalid connection preface received. (RFC7540 3.5)"
_PREFACE_HTTP1_TEXT = (
    "Invalid connection preface received. Appears to be an HTTP/1 response? (RFC7540 3.5)"
)
_RESET_TEXT = "Stream reset by server."
_GOAWAY_TEXT = "The connection is going away."
_TOO_MANY_TEXT = "Maximum concurrency limit has been reached."
_BAD_TARGET = frozenset(chr(c) for c in [*range(0x21), 0x7F])

_KEEPALIVE_PAYLOAD = bytes(8)  # Gun's keepalive PING payload is 0
_FIRST_USER_PING = 10000  # Gun 4.6: 1..9999 reserved, user pings from 10000

# Frame types and flags the frame splitter looks at (RFC 9113 6).
_HEADERS = 0x1
_SETTINGS = 0x4
_PUSH_PROMISE = 0x5
_CONTINUATION = 0x9
_END_HEADERS = 0x4
_ACK = 0x1

# Connection status (Gun's http2_state.status).
_CONNECTED = 0
_GOAWAY = 1  # the server sent GOAWAY; we answered; streams still finishing
_CLOSING = 2  # Closing(timeout) given: the connection ends with its last stream

# Stream kinds.
_HTTP = 0
_WS_REQ = 1  # extended CONNECT sent, response not seen yet
_WS = 2  # Websocket established on the stream
_TUN_REQ = 3  # CONNECT sent (RFC 9113 8.5), response not seen yet
_TUN = 4  # a tunnel runs on the stream (gunpy.protocols.tunnel.StreamTunnel)

_SETTING_NAMES = {
    SettingCodes.HEADER_TABLE_SIZE: "header_table_size",
    SettingCodes.ENABLE_PUSH: "enable_push",
    SettingCodes.MAX_CONCURRENT_STREAMS: "max_concurrent_streams",
    SettingCodes.INITIAL_WINDOW_SIZE: "initial_window_size",
    SettingCodes.MAX_FRAME_SIZE: "max_frame_size",
    SettingCodes.MAX_HEADER_LIST_SIZE: "max_header_list_size",
    SettingCodes.ENABLE_CONNECT_PROTOCOL: "enable_connect_protocol",
}
_BOOL_SETTINGS = frozenset(("enable_push", "enable_connect_protocol"))


def _code_name(code: Any) -> str:
    """An HTTP/2 error code as Gun's atom (lower-case ``str``)."""
    try:
        return ErrorCodes(int(code)).name.lower()
    except (ValueError, TypeError):
        return "unknown_error"


def _enc(s: str) -> bytes:
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


def _dec_headers(raw: Any) -> tuple[int | None, Headers]:
    """h2's bytes headers: (``:status`` or None, regular headers as latin-1 str)."""
    status: int | None = None
    out: Headers = []
    for n, v in raw:
        if n[:1] == b":":
            if n == b":status":
                status = int(v)
            continue
        out.append((n.decode("latin-1"), v.decode("latin-1")))
    return status, out


def _ws() -> Any:
    """``gunpy.protocols.ws``, imported on first use (only Websocket streams need it)."""
    return importlib.import_module(".ws", __package__)


class _ConnError(Exception):
    """Internal: a connection error found by this module; never leaves it."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class _H2Connection(H2Connection):
    """h2's client, except that a received GOAWAY does not close its state machine.

    h2 4.4 moves to CLOSED on GOAWAY and then refuses the frames of the streams
    the server promised to finish (RFC 9113 6.8; python-hyper/h2 #1181).  We still
    get the same ``ConnectionTerminated`` event, and stop opening streams ourselves.
    Unlike h2 we also keep the bytes already queued (a SETTINGS ack, say).
    """

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Event]]:
        ev = ConnectionTerminated()
        try:
            ev.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            ev.error_code = frame.error_code
        ev.last_stream_id = frame.last_stream_id
        ev.additional_data = frame.additional_data or None
        return [], [ev]


class _Out:
    """Request body bytes waiting for flow-control window (cowlib's local_buffer)."""

    __slots__ = ("chunks", "fin", "off", "size")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.off = 0  # bytes of chunks[0] already sent
        self.size = 0
        self.fin = False


class _Stream:
    __slots__ = (
        "authority",
        "content",
        "flow",
        "id",
        "init_flow",
        "kind",
        "local_done",
        "method",
        "path",
        "ref",
        "remote_done",
        "reply_to",
        "ws",
        "ws_offer",
        "ws_opts",
        "tunnel",
        "destination",
    )

    def __init__(
        self,
        sid: int,
        ref: Any,
        reply_to: ReplyTo,
        flow: int | None,
        authority: str,
        path: str,
        method: str,
    ) -> None:
        self.id = sid
        self.ref = ref
        self.reply_to = reply_to
        self.flow = flow  # None: no flow control (Gun's infinity)
        self.init_flow = flow
        self.authority = authority
        self.path = path
        self.method = method
        self.kind = _HTTP
        self.local_done = False  # END_STREAM queued by us
        self.remote_done = False  # END_STREAM (or trailers) received
        self.ws: Any = None  # WsHandler once established
        self.ws_offer: Any = None
        self.ws_opts: dict[str, Any] = {}
        self.content: list[Any] | None = None  # content handler chain; None: gun_data
        self.tunnel: Any = None  # StreamTunnel once a CONNECT is answered 2xx
        self.destination: dict[str, Any] = {}  # a CONNECT's


class Http2Handler(HttpOptions, BaseHandler):
    """Gun's ``gun_http2``: concurrent streams on one HTTP/2 connection."""

    name: ClassVar[str] = "http2"

    # Slots: attribute reads are the handler's hot path, and CPython 3.11 makes
    # them slower for an instance with 30 or more attributes in its __dict__
    # (measured: HttpHandler 7.2 -> 7.8 µs a request at 31); slots stay fast.
    __slots__ = (
        "_authority",
        "_buf",
        "_closed",
        "_closing_timeout",
        "_content",
        "_cookies",
        "_data_threshold",
        "_dead",
        "_ev",
        "_ev_out",
        "_flow",
        "_frag",
        "_h2",
        "_held_ws",
        "_keepalive",
        "_max_frag",
        "_max_headers",
        "_max_sent",
        "_notify",
        "_out",
        "_ping_ids",
        "_pings_unack",
        "_preface",
        "_refs",
        "_remote_settings",
        "_scheme",
        "_settings_acked",
        "_status",
        "_streams",
        "_tolerance",
        "_user_pings",
        "opts",
    )
    #: Streams may be tunnels (CONNECT): refs through them reach this handler.
    tunnels: ClassVar[bool] = True

    def __init__(self, ctx: HandlerContext, opts: dict[str, Any] | None = None) -> None:
        super().__init__(ctx)
        o = dict(_DEFAULTS)
        if opts:
            o.update(opts)
        self.opts = o
        self._flow: int | None = o.get("flow")
        keepalive = o["keepalive"]
        self._keepalive: int | None = keepalive if _int(keepalive) else None
        self._tolerance: int | None = o.get("keepalive_tolerance")
        self._closing_timeout: int | str = o["closing_timeout"]
        self._notify: bool = o["notify_settings_changed"]
        self._max_headers: int | None = o.get("max_headers")
        self._max_frag: int = o["max_fragmented_header_block_size"]
        sent = o["max_frame_size_sent"]
        self._max_sent: int | None = sent if _int(sent) else None
        self._data_threshold: int = o["stream_window_data_threshold"]
        # None when the data handler alone: _on_data delivers gun_data itself.
        self._content = _content.resolve(o["content_handlers"])
        self._cookies: Any = ctx.opts.get("cookie_store")  # gunpy.cookies (Gun 4.13)
        # Events (gunpy.events): built only with an event_handler.  request_end
        # events wait in _ev_out until the END_STREAM they follow is written.
        self._ev = ctx.events
        self._ev_out: list[Any] = []
        self._scheme = "https" if ctx.transport == "tls" else "http"
        self._authority = _host_header(ctx)

        h2 = _H2Connection(
            config=H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=True,
                normalize_outbound_headers=True,
                validate_inbound_headers=True,
                normalize_inbound_headers=False,
            )
        )
        # Our SETTINGS as Gun sends them (cowlib settings_init), in force at once:
        # frames the server sends before applying them fit the defaults anyway.
        initial: dict[SettingCodes, int] = {
            SettingCodes.HEADER_TABLE_SIZE: o["max_decode_table_size"],
            SettingCodes.INITIAL_WINDOW_SIZE: o["initial_stream_window_size"],
            SettingCodes.MAX_FRAME_SIZE: o["max_frame_size_received"],
            SettingCodes.ENABLE_CONNECT_PROTOCOL: int(o["enable_connect_protocol"]),
            # h2's bound on a decoded header list (CVE-2016-6581); Gun has none.
            SettingCodes.MAX_HEADER_LIST_SIZE: H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
        }
        if o["max_concurrent_streams"] != "infinity":
            initial[SettingCodes.MAX_CONCURRENT_STREAMS] = o["max_concurrent_streams"]
        h2.local_settings = Settings(client=True, initial_values=initial)
        h2.max_inbound_frame_size = o["max_frame_size_received"]
        # Until the server acks our HEADER_TABLE_SIZE it may still use the default.
        h2.decoder.max_allowed_table_size = max(4096, o["max_decode_table_size"])
        self._h2 = h2

        self._streams: dict[int, _Stream] = {}
        self._refs: dict[Any, _Stream] = {}
        self._out: dict[int, _Out] = {}  # stream id -> queued outgoing data
        self._held_ws: list[tuple[Any, ...]] = []  # ws_upgrade before the server's SETTINGS
        self._buf = b""
        self._frag = -1  # header block bytes so far (-1: not inside a header block)
        self._preface = False  # the server's SETTINGS arrived
        self._settings_acked = False  # the server acked ours
        self._status = _CONNECTED
        self._dead = False  # Close given: nothing more happens
        self._closed = False  # close() ran
        self._pings_unack = 0
        self._user_pings: dict[int, tuple[Any, ReplyTo]] = {}
        self._ping_ids = itertools.count(_FIRST_USER_PING)
        self._remote_settings: dict[str, Any] = {
            "header_table_size": 4096,
            "enable_push": True,
            "max_concurrent_streams": "infinity",
            "initial_window_size": 65535,
            "max_frame_size": 16384,
            "max_header_list_size": "infinity",
        }

    # ----------------------------------------------------------------------------------
    # Connection setup

    def init(self) -> Commands:
        """The client preface: magic, SETTINGS, and the connection WINDOW_UPDATE."""
        h2 = self._h2
        h2.initiate_connection()
        size = self.opts["initial_connection_window_size"]
        if size > 65535:
            h2.increment_flow_control_window(size - 65535)
        cmds: Commands = [Send(h2.data_to_send())]
        for name in ("preface", "settings"):
            ms = self.opts[name + "_timeout"]
            if ms != "infinity":
                cmds.append(StartTimer(name, ms))
        return cmds

    # ----------------------------------------------------------------------------------
    # Reading

    def handle(self, data: bytes) -> Commands:
        if self._dead:
            return []
        cmds: Commands = []
        buf = self._buf + data if self._buf else data
        pos = 0
        end = len(buf)
        h2 = self._h2
        try:
            while end - pos >= 9:
                length = int.from_bytes(buf[pos : pos + 3], "big")
                ftype = buf[pos + 3]
                flags = buf[pos + 4]
                if not self._preface:
                    sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                    if (
                        ftype != _SETTINGS
                        or flags & _ACK
                        or sid != 0
                        or length % 6
                        or length > h2.max_inbound_frame_size
                    ):
                        http1 = buf[pos:].startswith(b"HTTP/1")
                        raise _ConnError(
                            "protocol_error", _PREFACE_HTTP1_TEXT if http1 else _PREFACE_TEXT
                        )
                if length > h2.max_inbound_frame_size:
                    raise _ConnError(
                        "frame_size_error",
                        f"Frame of {length} bytes is larger than SETTINGS_MAX_FRAME_SIZE"
                        f" ({h2.max_inbound_frame_size}). (RFC7540 4.2)",
                    )
                nxt = pos + 9 + length
                if nxt > end:
                    break
                self._count_fragment(ftype, flags, length)
                events = h2.receive_data(buf[pos:nxt])
                pos = nxt
                self._events(events, cmds)
                if self._dead:
                    return cmds
        except _ConnError as e:
            self._conn_error(cmds, e.code, e.text)
            return cmds
        except H2Error as e:  # h2's ProtocolError and friends, at the border
            code = _code_name(getattr(e, "error_code", ErrorCodes.PROTOCOL_ERROR))
            self._conn_error(cmds, code, str(e) or type(e).__name__)
            return cmds
        except Exception as e:  # a bug here or in h2: still never raised
            self._internal(cmds, e)
            return cmds
        self._buf = buf[pos:] if pos < end else b""
        self._after_input(cmds)
        return cmds

    def _count_fragment(self, ftype: int, flags: int, length: int) -> None:
        """cowlib's max_fragmented_header_block_size, on HEADERS/PUSH_PROMISE+CONTINUATION."""
        if ftype in (_HEADERS, _PUSH_PROMISE):
            if flags & _END_HEADERS:
                self._frag = -1
                return
            self._frag = length
        elif ftype == _CONTINUATION and self._frag >= 0:
            self._frag += length
            # The last fragment counts too (cowlib's continuation_frame_append).
            if flags & _END_HEADERS and self._frag <= self._max_frag:
                self._frag = -1
                return
        else:
            return
        if self._frag > self._max_frag:
            raise _ConnError(
                "enhance_your_calm",
                "Larger fragmented header block size than we are willing to accept.",
            )

    def _after_input(self, cmds: Commands) -> None:
        """End of a read: refill the connection window, flush, maybe finish closing."""
        self._ensure_conn_window()
        self._flush(cmds)
        if self._status == _GOAWAY and self._streams:
            # Gun: the server said GOAWAY; wait for the streams it will finish.
            self._status = _CLOSING
            cmds.append(Closing(self._closing_timeout))
        self._check_done(cmds)

    def _events(self, events: list[Event], cmds: Commands) -> None:
        for ev in events:
            t = type(ev)
            if t is DataReceived:
                assert isinstance(ev, DataReceived)
                self._on_data(ev, cmds)
            elif t is ResponseReceived:
                assert isinstance(ev, ResponseReceived)
                self._on_response(ev.stream_id, ev.headers, ev.stream_ended is not None, cmds)
            elif t is StreamEnded:
                assert isinstance(ev, StreamEnded)
                self._on_stream_ended(ev.stream_id, cmds)
            elif t is TrailersReceived:
                assert isinstance(ev, TrailersReceived)
                st = self._streams.get(ev.stream_id)
                if st is not None:
                    self._check_max_headers(ev.headers)
                    if st.kind == _HTTP:
                        _, trailers = _dec_headers(ev.headers)
                        cmds.append(
                            Deliver(st.reply_to, ("gun_trailers", self.ctx.conn, st.ref, trailers))
                        )
                        if self._ev:
                            cmds.append(
                                EvCmd("response_trailers", self._ev_map(st, headers=trailers))
                            )
                            cmds.append(EvCmd("response_end", self._ev_map(st)))
            elif t is InformationalResponseReceived:
                assert isinstance(ev, InformationalResponseReceived)
                st = self._streams.get(ev.stream_id)
                if st is not None:
                    self._check_max_headers(ev.headers)
                    status, headers = _dec_headers(ev.headers)
                    if self._cookies is not None and status is not None:
                        self._set_cookies(st, status, headers)
                    if self._ev:
                        cmds.append(EvCmd("response_start", self._ev_map(st)))
                    cmds.append(
                        Deliver(st.reply_to, ("gun_inform", self.ctx.conn, st.ref, status, headers))
                    )
                    if self._ev:
                        cmds.append(
                            EvCmd(
                                "response_inform",
                                self._ev_map(st, status=status, headers=headers),
                            )
                        )
            elif t is WindowUpdated:
                pass  # queued data is flushed once the read is processed
            elif t is PushedStreamReceived:
                assert isinstance(ev, PushedStreamReceived)
                self._on_push(ev, cmds)
            elif t is StreamReset:
                assert isinstance(ev, StreamReset)
                self._on_reset(ev, cmds)
            elif t is PingAckReceived:
                assert isinstance(ev, PingAckReceived)
                self._on_ping_ack(ev.ping_data, cmds)
            elif t is RemoteSettingsChanged:
                assert isinstance(ev, RemoteSettingsChanged)
                self._on_settings(ev, cmds)
            elif t is SettingsAcknowledged:
                # Our SETTINGS are in force on the server's side too.
                self._h2.decoder.max_allowed_table_size = self.opts["max_decode_table_size"]
                if not self._settings_acked:
                    self._settings_acked = True
                    cmds.append(CancelTimer("settings"))
            elif t is ConnectionTerminated:
                assert isinstance(ev, ConnectionTerminated)
                self._on_goaway(ev, cmds)
            # PingReceived (h2 acks it), PriorityUpdated, AlternativeServiceAvailable,
            # UnknownFrameReceived: nothing to do (Gun ignores them too).
            if self._dead:
                return

    def _check_max_headers(self, raw: Any) -> None:
        if self._max_headers is not None and len(raw) > self._max_headers:
            raise _ConnError(
                "enhance_your_calm",
                "The number of headers is larger than configuration allows. (RFC9110 5.4)",
            )

    def _on_settings(self, ev: RemoteSettingsChanged, cmds: Commands) -> None:
        first = not self._preface
        self._preface = True
        rs = self._remote_settings
        for code, changed in ev.changed_settings.items():
            name = _SETTING_NAMES.get(code)  # type: ignore[call-overload]
            if name is None:
                continue  # unknown settings are ignored (RFC 9113 6.5.2)
            value = changed.new_value
            rs[name] = bool(value) if name in _BOOL_SETTINGS else value
            if name == "header_table_size":
                # cowlib: our encoder table is the smaller of theirs and our option.
                self._h2.encoder.header_table_size = min(value, self.opts["max_encode_table_size"])
        if first:
            cmds.append(CancelTimer("preface"))
        if self._notify:
            cmds.append(
                Deliver(self.ctx.owner, ("gun_notify", self.ctx.conn, "settings_changed", dict(rs)))
            )
        if first and self._held_ws:
            held, self._held_ws = self._held_ws, []
            for args in held:
                cmds.extend(self.ws_upgrade(*args))

    def _on_response(self, sid: int, raw: Any, fin: bool, cmds: Commands) -> None:
        st = self._streams.get(sid)
        if st is None:
            return
        self._check_max_headers(raw)
        status, headers = _dec_headers(raw)
        assert status is not None  # h2 validates response pseudo-headers
        conn = self.ctx.conn
        if self._ev:
            cmds.append(EvCmd("response_start", self._ev_map(st)))
        if self._cookies is not None:
            self._set_cookies(st, status, headers)
        if st.kind == _TUN_REQ:
            if 200 <= status <= 299 and not fin:
                self._tun_accept(st, status, headers, cmds)
                return
            st.kind = _HTTP  # refused: an ordinary response, as on HTTP/1.1
            self._queue(st, b"", True)
            st.local_done = True
        if st.kind == _WS_REQ:
            if 200 <= status <= 299 and not fin:
                self._ws_accept(st, headers, cmds)
                return
            # Refused: an ordinary response (Gun 4.7).  Nothing will ever be sent
            # on this CONNECT stream: end our side so that it can go away.
            st.kind = _HTTP
            self._queue(st, b"", True)
            st.local_done = True
        if fin:
            st.remote_done = True
        cmds.append(
            Deliver(
                st.reply_to,
                ("gun_response", conn, st.ref, "fin" if fin else "nofin", status, headers),
            )
        )
        if self._ev:
            cmds.append(EvCmd("response_headers", self._ev_map(st, status=status, headers=headers)))
            if fin:
                cmds.append(EvCmd("response_end", self._ev_map(st)))
        if fin:
            self._maybe_delete(st)
        elif self._content is not None:
            st.content = _content.init(self._content, conn, st.reply_to, st.ref, status, headers)

    def _set_cookies(self, st: _Stream, status: int, headers: Headers) -> None:
        _cookies.set_cookie_header(
            self._cookies,
            self._scheme,
            st.authority,
            st.path,
            status,
            headers,
            self.cookie_ignore_informational,
        )

    def _on_data(self, ev: DataReceived, cmds: Commands) -> None:
        sid = ev.stream_id
        st = self._streams.get(sid)
        if st is None:
            return  # a stream we forgot (cancelled, goaway): h2 counted the window
        data = ev.data
        fin = ev.stream_ended is not None
        if st.kind == _WS:
            if fin:
                st.remote_done = True
            self._ws_input(st, data, cmds)
            if self._streams.get(sid) is st:
                if fin:
                    self._ws_run(st, st.ws.handle_eof(), cmds)
                elif data:
                    self._ensure_conn_window()
                    if st.ws.active():
                        self._ensure_stream_window(st)
            return
        if st.kind == _WS_REQ or st.kind == _TUN_REQ:
            return  # DATA before the CONNECT response: h2 refuses it already
        if st.kind == _TUN:
            if fin:
                st.remote_done = True
            if data:
                self._tun_run(st, st.tunnel.handle(data), cmds)
            if self._streams.get(sid) is st:
                if fin:
                    self._tun_run(st, st.tunnel.handle_eof(), cmds)
                elif data:
                    self._ensure_conn_window()
                    if st.tunnel.active():
                        self._ensure_stream_window(st)
            elif data:
                self._ensure_conn_window()
            return
        if st.content is not None:
            if not self._content_data(st, fin, data, cmds):
                return
        else:
            cmds.append(
                Deliver(
                    st.reply_to,
                    ("gun_data", self.ctx.conn, st.ref, "fin" if fin else "nofin", data),
                )
            )
            if st.flow is not None:
                st.flow -= 1
        if fin:
            if self._ev:
                cmds.append(EvCmd("response_end", self._ev_map(st)))
            st.remote_done = True
            self._maybe_delete(st)
        if data:
            # Gun's data_frame1: the stream window only while the budget lasts and
            # the stream goes on; the connection window always.
            self._ensure_conn_window()
            if not fin and (st.flow is None or st.flow > 0):
                self._ensure_stream_window(st)

    def _content_data(self, st: _Stream, fin: bool, data: bytes, cmds: Commands) -> bool:
        """DATA through the stream's content handlers; False when they refused it:
        the stream is reset (``internal_error``) and gets a stream error (Gun)."""
        assert st.content is not None
        out: list[Any] = []
        r = _content.handle(st.content, "fin" if fin else "nofin", data, out)
        reply_to = st.reply_to
        cmds.extend([Deliver(reply_to, m) for m in out])
        if r[0] == "error":
            _, text = _content.error_parts(r[1])
            self._reset(st, ErrorCodes.INTERNAL_ERROR)
            self._forget(st, cmds)
            reason = ("stream_error", "internal_error", text)
            cmds.append(Deliver(reply_to, ("gun_error", self.ctx.conn, st.ref, reason)))
            if data:
                self._ensure_conn_window()
            return False
        if st.flow is not None:
            st.flow -= r[1]
        return True

    def _on_stream_ended(self, sid: int, cmds: Commands) -> None:
        st = self._streams.get(sid)
        if st is None or st.remote_done:
            return
        st.remote_done = True
        if st.kind == _WS:
            self._ws_run(st, st.ws.handle_eof(), cmds)
        elif st.kind == _TUN:
            self._tun_run(st, st.tunnel.handle_eof(), cmds)
        else:
            # Trailers end the stream (the fin was in gun_trailers).
            self._maybe_delete(st)

    def _on_reset(self, ev: StreamReset, cmds: Commands) -> None:
        st = self._streams.get(ev.stream_id)
        if st is None:
            return
        code = _code_name(ev.error_code)
        text = _RESET_TEXT if ev.remote_reset else "The stream was reset after a stream error."
        self._forget(st, cmds)
        if st.kind == _TUN:
            cmds.extend(st.tunnel.close(("stream_error", code, text)))
        cmds.append(
            Deliver(st.reply_to, ("gun_error", self.ctx.conn, st.ref, ("stream_error", code, text)))
        )
        if self._ev and ev.remote_reset:
            cmds.append(EvCmd("cancel", self._ev_map(st, endpoint="remote", reason=code)))

    def _on_push(self, ev: PushedStreamReceived, cmds: Commands) -> None:
        pid = ev.pushed_stream_id
        parent = self._streams.get(ev.parent_stream_id or 0)
        assert pid is not None
        pseudo: dict[bytes, bytes] = {}
        headers: Headers = []
        for n, v in ev.headers or []:
            if n[:1] == b":":
                pseudo[n] = v
            else:
                headers.append((n.decode("latin-1"), v.decode("latin-1")))
        method = pseudo.get(b":method", b"").decode("latin-1")
        scheme = pseudo.get(b":scheme", b"").decode("latin-1")
        authority = pseudo.get(b":authority", b"").decode("latin-1")
        path = pseudo.get(b":path", b"").decode("latin-1")
        if self._ev and parent is not None:
            cmds.append(EvCmd("push_promise_start", self._ev_map(parent)))
        # Gun 4.10: refused during shutdown, or for another scheme or authority (2.4).
        refuse: ErrorCodes | None = None
        if parent is None or self._status != _CONNECTED:
            refuse = ErrorCodes.CANCEL
        elif scheme != self._scheme or authority != parent.authority:
            refuse = ErrorCodes.PROTOCOL_ERROR
        uri = f"{scheme}://{authority}{path}"
        if refuse is not None:
            self._h2.reset_stream(pid, refuse)
            if self._ev and parent is not None:
                # Gun: no promised_stream_ref when the promise is refused.
                pev = self._ev_map(parent, method=method, uri=uri, headers=headers)
                cmds.append(EvCmd("push_promise_end", pev))
            return
        assert parent is not None
        new_ref: Any = make_ref()
        if self.ctx.base_ref is not None:  # inside a CONNECT tunnel: Gun's stream_ref/2
            base = self.ctx.base_ref
            new_ref = (*base, new_ref) if type(base) is tuple else (base, new_ref)
        st = _Stream(pid, new_ref, parent.reply_to, parent.init_flow, authority, path, method)
        st.local_done = True  # a promised stream is half-closed (local)
        self._streams[pid] = st
        self._refs[new_ref] = st
        cmds.append(
            Deliver(
                parent.reply_to,
                ("gun_push", self.ctx.conn, parent.ref, new_ref, method, uri, headers),
            )
        )
        if self._ev:
            pev = self._ev_map(
                parent, method=method, uri=uri, headers=headers, promised_stream_ref=new_ref
            )
            cmds.append(EvCmd("push_promise_end", pev))

    def _on_ping_ack(self, payload: bytes, cmds: Commands) -> None:
        n = int.from_bytes(payload, "big")
        if n == 0:
            # Keepalive; unsolicited acks are tolerated (Gun 2.4).
            self._pings_unack = max(0, self._pings_unack - 1)
            return
        user = self._user_pings.pop(n, None)
        if user is not None:  # else an unexpected ack: ignored, as RFC 9113 allows
            ref, reply_to = user
            cmds.append(Deliver(reply_to, ("gun_notify", self.ctx.conn, "ping_ack", ref)))

    def _on_goaway(self, ev: ConnectionTerminated, cmds: Commands) -> None:
        last = ev.last_stream_id if ev.last_stream_id is not None else _MAX31
        reason = ("goaway", _code_name(ev.error_code), _GOAWAY_TEXT)
        conn = self.ctx.conn
        # Gun's goaway_streams: only our streams (odd ids) above last-stream-id; they
        # were never processed, the others may still complete.
        for st in [s for s in self._streams.values() if s.id > last and s.id % 2 == 1]:
            self._forget(st, cmds)
            cmds.append(Deliver(st.reply_to, ("gun_error", conn, st.ref, reason)))
        if self._status == _CONNECTED:
            self._send_goaway(cmds, ErrorCodes.NO_ERROR)
            self._status = _GOAWAY
        held, self._held_ws = self._held_ws, []
        for args in held:
            cmds.append(Deliver(args[1], ("gun_error", conn, args[0], "closing")))

    # ----------------------------------------------------------------------------------
    # Requests

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
        op = ("$request", ref, reply_to, method, path, headers, body, req_opts)
        return self._new_stream(op, self._request)

    def _new_stream(self, op: tuple[Any, ...], run: Callable[..., None]) -> Commands:
        """A new stream (``request``, ``ws_upgrade``, ``connect``): into the tunnel
        its ref names, refused when the ref names no tunnel of ours, else
        ``run(cmds, *op[1:])``, whose exceptions never reach the actor (base.py)."""
        ref, reply_to = op[1], op[2]
        t = self._through(ref)
        if t is not None:
            return self._tun_op(t, op)
        if self._deep(ref):
            return self.stream_error(reply_to, ref, ("badstate", BADSTATE_NOT_A_TUNNEL))
        cmds: Commands = []
        try:
            run(cmds, *op[1:])
        except Exception as e:
            self._internal(cmds, e)
        return cmds

    def _refuse_new(self, cmds: Commands, ref: Any, reply_to: ReplyTo, path: str) -> bool:
        """Gun's request_common checks; True (and the error queued) when refused."""
        conn = self.ctx.conn
        if self._dead or self._status != _CONNECTED:
            # Gun's closing state: the actor normally keeps requests away from us then.
            cmds.append(Deliver(reply_to, ("gun_error", conn, ref, "closing")))
            return True
        if not path or any(c in _BAD_TARGET for c in path):
            cmds.append(
                Deliver(
                    reply_to,
                    (
                        "gun_error",
                        conn,
                        ref,
                        ("badstate", "The request method or path contains invalid characters."),
                    ),
                )
            )
            return True
        h2 = self._h2
        if h2.open_outbound_streams >= h2.remote_settings.max_concurrent_streams:
            # Gun 4.10 (2.2): fail at once rather than queue (Gun #246).
            cmds.append(
                Deliver(
                    reply_to,
                    ("gun_error", conn, ref, ("stream_error", "too_many_streams", _TOO_MANY_TEXT)),
                )
            )
            return True
        return False

    def _request(
        self,
        cmds: Commands,
        ref: Any,
        reply_to: ReplyTo,
        method: str,
        path: str,
        headers: Headers,
        body: bytes | None,
        req_opts: dict[str, Any],
    ) -> None:
        if self._refuse_new(cmds, ref, reply_to, path):
            return
        if not method or any(c in _BAD_TARGET for c in method):
            cmds.append(
                Deliver(
                    reply_to,
                    (
                        "gun_error",
                        self.ctx.conn,
                        ref,
                        ("badstate", "The request method or path contains invalid characters."),
                    ),
                )
            )
            return
        if body is not None:
            # Gun's request1: lists:keystore of the real content-length.
            cl = ("content-length", str(len(body)))
            out = [h for h in headers if h[0] != "content-length"]
            idx = next((i for i, h in enumerate(headers) if h[0] == "content-length"), None)
            if idx is None:
                out.append(cl)
            else:
                out.insert(sum(1 for h in headers[:idx] if h[0] != "content-length"), cl)
            headers = out
        if self._cookies is not None:
            headers = self._add_cookies(headers, path)
        prepared = self._prepare_headers(cmds, ref, reply_to, method, path, headers, None)
        if prepared is None:
            return
        wire, authority = prepared
        flow = req_opts.get("flow") if req_opts else None
        h2 = self._h2
        sid = h2.get_next_available_stream_id()
        # Bodyless requests end with the HEADERS frame; cowlib ends HEAD requests
        # there whatever the caller says (no body can follow a HEAD).
        end = (body is not None and not body) or method == "HEAD"
        h2.send_headers(sid, wire, end_stream=end)
        st = _Stream(
            sid, ref, reply_to, flow if _int(flow) else self._flow, authority, path, method
        )
        st.local_done = end or body is not None  # a full body: the fin is queued
        self._streams[sid] = st
        self._refs[ref] = st
        if body and not end:
            self._queue(st, body, True)
        if self._ev:
            fn = "request" if body is not None else "headers"
            after = self._ev_request(cmds, st, fn, wire)
            if end:
                after.append(EvCmd("request_end", self._ev_map(st)))
            self._flush(cmds, after)
            return
        self._flush(cmds)

    def _add_cookies(self, headers: Headers, path: str) -> Headers:
        """The ``cookie`` header appended last (Gun 4.13), for the request's authority."""
        authority = next((v for n, v in headers if n == "host"), self._authority)
        return _cookies.add_cookie_header(self._cookies, self._scheme, authority, path, headers)

    def _prepare_headers(
        self,
        cmds: Commands,
        ref: Any,
        reply_to: ReplyTo,
        method: str,
        path: str,
        headers: Headers,
        protocol: str | None,
    ) -> tuple[list[tuple[bytes, bytes]], str] | None:
        """Gun's prepare_headers: pseudo-headers, ``host`` -> ``:authority``, and the
        HTTP/1 connection-specific headers removed (RFC 9113 8.2.2)."""
        authority = self._authority
        drop = _CONN_SPECIFIC
        host_seen = False
        for n, v in headers:
            if n == "host" and not host_seen:
                authority = v
                host_seen = True
            elif n == "connection":
                # RFC 9113 8.2.2: the fields it names are connection-specific too.
                extra = {t.strip(" \t").lower() for t in v.split(",")} - {""}
                if extra:
                    drop = drop | extra
        wire: list[tuple[bytes, bytes]] = [
            (b":method", _enc(method)),
            (b":scheme", self._scheme.encode()),
            (b":authority", _enc(authority)),
            (b":path", _enc(path)),
        ]
        if protocol is not None:
            wire.append((b":protocol", protocol.encode()))
        for n, v in headers:
            if n in drop:
                continue
            if n == "te" and v.strip(" \t").lower() != "trailers":
                continue  # RFC 9113 8.2.2: only "te: trailers" is allowed
            if not n or n[0] == ":":
                cmds.append(self._bad_header_name(reply_to, ref, n))
                return None
            wire.append((_enc(n), _enc(v)))
        return wire, authority

    def data(self, ref: Any, reply_to: ReplyTo, fin: str, data: bytes) -> Commands:
        t = self._through(ref)
        if t is None:
            tst = self._refs.get(ref)
            if tst is not None and tst.kind == _TUN:
                t = tst  # data on the CONNECT's ref: the raw protocol inside
        if t is not None:
            return self._tun_op(t, ("$data", ref, reply_to, fin, data))
        cmds: Commands = []
        try:
            st = self._refs.get(ref)
            if st is None:
                return self.stream_error(reply_to, ref, ("badstate", BADSTATE_NOT_FOUND))
            if st.kind != _HTTP:
                return self.stream_error(
                    reply_to,
                    ref,
                    ("badstate", "The stream is a Websocket stream: use ws_send to send frames."),
                )
            if st.local_done:
                return self.stream_error(reply_to, ref, ("badstate", BADSTATE_ALREADY_CLOSED))
            is_fin = fin == "fin"
            if not data and not is_fin:
                return []  # Gun drops empty nofin data
            self._queue(st, data, is_fin)
            st.local_done = is_fin
            self._flush(cmds)
            self._maybe_delete(st)
            self._check_done(cmds)
        except Exception as e:
            self._internal(cmds, e)
        return cmds

    def ws_upgrade(
        self, ref: Any, reply_to: ReplyTo, path: str, headers: Headers, ws_opts: dict[str, Any]
    ) -> Commands:
        op = ("$ws_upgrade", ref, reply_to, path, headers, ws_opts)
        return self._new_stream(op, self._ws_upgrade)

    def _ws_upgrade(
        self,
        cmds: Commands,
        ref: Any,
        reply_to: ReplyTo,
        path: str,
        headers: Headers,
        ws_opts: dict[str, Any],
    ) -> None:
        if not self._preface and not self._dead and self._status == _CONNECTED:
            # gunpy: whether the server allows RFC 8441 is only known from its
            # SETTINGS; wait for them rather than fail a ws_upgrade made at once.
            self._held_ws.append((ref, reply_to, path, headers, ws_opts))
            return
        if self._refuse_new(cmds, ref, reply_to, path):
            return
        if not self._remote_settings.get("enable_connect_protocol"):
            cmds.append(
                Deliver(
                    reply_to,
                    (
                        "gun_error",
                        self.ctx.conn,
                        ref,
                        (
                            "badstate",
                            "The server does not allow Websocket over HTTP/2: its "
                            "SETTINGS_ENABLE_CONNECT_PROTOCOL is not 1. (RFC8441 3)",
                        ),
                    ),
                )
            )
            return
        offer_headers, offer = _ws().handshake_offer(ws_opts)
        # RFC 8441 5: no key, no accept, no connection/upgrade; the version and
        # the offers (in Gun's order: version, protocol, extensions) stay.
        extra: Headers = [("sec-websocket-version", "13")]
        offers = dict(offer_headers)
        for name in _WS_OFFER_HEADERS:
            if name in offers:
                extra.append((name, offers[name]))
        user = [h for h in headers if h[0] not in ("content-length", *_WS_OFFER_HEADERS)]
        if self._cookies is not None:
            user = self._add_cookies(user, path)
        prepared = self._prepare_headers(
            cmds, ref, reply_to, "CONNECT", path, extra + user, "websocket"
        )
        if prepared is None:
            return
        wire, authority = prepared
        h2 = self._h2
        sid = h2.get_next_available_stream_id()
        h2.send_headers(sid, wire, end_stream=False)
        st = _Stream(sid, ref, reply_to, None, authority, path, "CONNECT")
        st.kind = _WS_REQ
        st.ws_offer = offer
        st.ws_opts = ws_opts
        self._streams[sid] = st
        self._refs[ref] = st
        if self._ev:
            cmds.append(EvCmd("ws_upgrade", self._ev_map(st, opts=ws_opts)))
            after = self._ev_request(cmds, st, "ws_upgrade", wire)
            after.append(EvCmd("request_end", self._ev_map(st)))
            self._flush(cmds, after)
            return
        self._flush(cmds)

    def ws_send(self, ref: Any, reply_to: ReplyTo, frames: list[Any]) -> Commands:
        t = self._through(ref)
        if t is not None:
            return self._tun_op(t, ("$ws_send", ref, reply_to, frames))
        cmds: Commands = []
        try:
            st = self._refs.get(ref)
            if st is None:
                return self.stream_error(reply_to, ref, ("badstate", BADSTATE_NOT_FOUND))
            if st.kind != _WS:
                return self.stream_error(
                    reply_to,
                    ref,
                    ("badstate", "The stream is not a Websocket stream (yet)."),
                )
            self._ws_run(st, st.ws.ws_send(ref, reply_to, frames), cmds)
            self._flush(cmds)
            self._check_done(cmds)
        except Exception as e:
            self._internal(cmds, e)
        return cmds

    # ----------------------------------------------------------------------------------
    # Websocket streams (RFC 8441)

    def _ws_accept(self, st: _Stream, headers: Headers, cmds: Commands) -> None:
        ws = _ws()
        # ws.handshake_check judges an HTTP/1.1 101: give it the parts RFC 8441
        # drops (upgrade, connection, accept) so only the extension and
        # subprotocol answers are judged, exactly as on HTTP/1.1.
        judged = [
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-accept", st.ws_offer.accept),
            *[h for h in headers if h[0] in _WS_OFFER_HEADERS],
        ]
        try:
            result: Any = ws.handshake_check(st.ws_offer, judged)
        except Exception as e:
            result = f"Invalid Websocket handshake response: {e}"
        if isinstance(result, str):
            # Gun's headers_frame_connect: RST_STREAM cancel and a stream error.
            if "subprotocol" in result:
                text = "The sec-websocket-protocol header is invalid. (RFC6455 4.1)"
            else:
                text = "The sec-websocket-extensions header is invalid. (RFC6455 9.1, RFC7692 7)"
            self._reset(st, ErrorCodes.CANCEL)
            self._forget(st, cmds)
            cmds.append(
                Deliver(
                    st.reply_to,
                    ("gun_error", self.ctx.conn, st.ref, ("stream_error", "cancel", text)),
                )
            )
            return
        if self._ev:
            cmds.append(EvCmd("response_headers", self._ev_map(st, status=200, headers=headers)))
            cmds.append(EvCmd("response_end", self._ev_map(st)))
        cmds.append(
            Deliver(st.reply_to, ("gun_upgrade", self.ctx.conn, st.ref, ["websocket"], headers))
        )
        if self._ev:
            cmds.append(EvCmd("protocol_changed", {"stream_ref": st.ref, "protocol": "ws"}))
        st.kind = _WS
        st.ws = ws.WsHandler(self.ctx, st.ws_opts, st.ref, st.reply_to, headers, **result)
        self._ws_run(st, st.ws.init(), cmds)
        ms = st.ws.keepalive_interval()
        if ms is not None and st.id in self._streams:
            cmds.append(StartTimer(f"ws{st.id}:keepalive", ms))

    def _ws_input(self, st: _Stream, data: bytes, cmds: Commands) -> None:
        if data:
            self._ws_run(st, st.ws.handle(data), cmds)

    def _ws_run(self, st: _Stream, wcmds: Commands, cmds: Commands) -> None:
        """Carry out a stream's WsHandler commands on the HTTP/2 stream."""
        self._nested_run(st, wcmds, cmds, "ws", lambda reason: self._ws_closed(st, reason, cmds))

    def _nested_run(
        self,
        st: _Stream,
        ncmds: Commands,
        cmds: Commands,
        prefix: str,
        on_close: Callable[[Any], None],
    ) -> None:
        """Carry out the commands of a handler nested in stream ``st`` (a Websocket
        or a tunnel): bytes become DATA on the stream, timers are renamed per
        stream, ``Close`` ends that stream only.  Closing / SwitchProtocol are about
        the whole connection: a nested handler's closing is bounded by its own
        timer instead."""
        sid = st.id
        for c in ncmds:
            t = type(c)
            if t is Deliver or t is EvCmd:
                cmds.append(c)
            elif t is Send:
                assert isinstance(c, Send)
                if self._streams.get(sid) is st and not st.local_done:
                    self._queue(st, c.data, False)
            elif t is SetActive:
                assert isinstance(c, SetActive)
                if c.active and self._streams.get(sid) is st:
                    self._ensure_conn_window()
                    self._ensure_stream_window(st)
            elif t is StartTimer:
                assert isinstance(c, StartTimer)
                cmds.append(StartTimer(f"{prefix}{sid}:{c.name}", c.ms))
            elif t is CancelTimer:
                assert isinstance(c, CancelTimer)
                cmds.append(CancelTimer(f"{prefix}{sid}:{c.name}"))
            elif t is Close:
                assert isinstance(c, Close)
                on_close(c.reason)

    def _ws_closed(self, st: _Stream, reason: Any, cmds: Commands) -> None:
        """The Websocket on ``st`` is over: end that stream only (never the connection)."""
        if self._streams.get(st.id) is not st:
            return
        if reason != "normal":
            r = "closed" if reason == "closed" else ("closed", reason)
            cmds.append(Deliver(st.reply_to, ("gun_error", self.ctx.conn, st.ref, r)))
        if reason not in ("normal", "closed"):
            self._reset(st, ErrorCodes.INTERNAL_ERROR)
            self._forget(st, cmds)
            return
        out = self._out.get(st.id)
        if st.local_done:
            pass
        elif (out is not None and out.size) or st.remote_done:
            # RFC 8441 5: an orderly close is END_STREAM, here on the DATA frame
            # that carries our close frame, or closing a stream the server ended.
            self._queue(st, b"", True)
            st.local_done = True
        else:
            # The close handshake is over but the server keeps its side open (our
            # close went out earlier).  An empty END_STREAM now would be DATA for a
            # stream some servers have already dropped (hypercorn 0.17 then fails
            # the whole connection); RST_STREAM NO_ERROR frees the stream on both
            # sides without that risk.
            self._reset(st, ErrorCodes.NO_ERROR)
        self._forget(st, cmds, keep_output=True)

    # ----------------------------------------------------------------------------------
    # CONNECT tunnels (RFC 9113 8.5; Gun 4.11: one tunnel per stream)

    def _bad_header_name(self, reply_to: ReplyTo, ref: Any, name: str) -> Deliver:
        # An empty or pseudo-header name from the user (RFC 9113 8.3): refused.
        return Deliver(
            reply_to,
            ("gun_error", self.ctx.conn, ref, ("badstate", f"Invalid request header name {name!r}.")),
        )

    def connect(
        self,
        ref: Any,
        reply_to: ReplyTo,
        destination: dict[str, Any],
        headers: Headers,
        req_opts: dict[str, Any],
    ) -> Commands:
        op = ("$connect", ref, reply_to, destination, headers, req_opts)
        return self._new_stream(op, self._connect)

    def _connect(
        self,
        cmds: Commands,
        ref: Any,
        reply_to: ReplyTo,
        destination: dict[str, Any],
        headers: Headers,
        req_opts: dict[str, Any],
    ) -> None:
        host = str(destination["host"])
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        authority = f"{host}:{destination['port']}"
        if self._refuse_new(cmds, ref, reply_to, authority):
            return
        wire: list[tuple[bytes, bytes]] = [
            (b":method", b"CONNECT"),
            (b":authority", _enc(authority)),
        ]
        user, password = destination.get("username"), destination.get("password")
        if (
            user is not None
            and password is not None
            and not any(h[0] == "proxy-authorization" for h in headers)
        ):
            u = user.encode() if isinstance(user, str) else user
            p = password.encode() if isinstance(password, str) else password
            cred = base64.b64encode(u + b":" + p)
            wire.append((b"proxy-authorization", b"Basic " + cred))
        drop = _CONN_SPECIFIC | {"content-length"}
        for n, v in headers:
            if n in drop:
                continue
            if not n or n[0] == ":":
                cmds.append(self._bad_header_name(reply_to, ref, n))
                return
            wire.append((_enc(n), _enc(v)))
        h2 = self._h2
        sid = h2.get_next_available_stream_id()
        h2.send_headers(sid, wire, end_stream=False)
        flow = req_opts.get("flow") if req_opts else None
        st = _Stream(
            sid, ref, reply_to, flow if _int(flow) else self._flow, authority, "", "CONNECT"
        )
        st.kind = _TUN_REQ
        st.destination = destination
        self._streams[sid] = st
        self._refs[ref] = st
        if self._ev:
            after = self._ev_request(cmds, st, "connect", wire, path=False)
            after.append(EvCmd("request_end", self._ev_map(st)))
            self._flush(cmds, after)
            return
        self._flush(cmds)

    def _tun_accept(self, st: _Stream, status: int, headers: Headers, cmds: Commands) -> None:
        """A 2xx for a CONNECT: the stream is a tunnel (gun_response fin, as Gun)."""
        from .tunnel import StreamTunnel

        cmds.append(
            Deliver(st.reply_to, ("gun_response", self.ctx.conn, st.ref, "fin", status, headers))
        )
        if self._ev:
            cmds.append(EvCmd("response_headers", self._ev_map(st, status=status, headers=headers)))
            cmds.append(EvCmd("response_end", self._ev_map(st)))
        st.kind = _TUN
        st.tunnel = StreamTunnel(self.ctx, st.ref, st.reply_to, st.destination)
        self._tun_run(st, st.tunnel.start(), cmds)

    def _through(self, ref: Any) -> _Stream | None:
        """The tunnel stream a ref goes through (its CONNECT's ref followed by
        more), or None when the ref is not inside one of our tunnels."""
        if type(ref) is not tuple:
            return None
        base = self.ctx.base_ref
        n = 0 if base is None else (len(base) if type(base) is tuple else 1)
        if len(ref) < n + 2:
            return None
        key = ref[n] if n == 0 else ref[: n + 1]
        st = self._refs.get(key)
        if st is None or st.kind != _TUN:
            return None
        return st

    def _deep(self, ref: Any) -> bool:
        """A ref for a stream inside a tunnel (which ``_through`` did not find)."""
        if type(ref) is not tuple:
            return False
        base = self.ctx.base_ref
        n = 0 if base is None else (len(base) if type(base) is tuple else 1)
        return len(ref) >= n + 2

    def _tun_op(self, st: _Stream, op: tuple[Any, ...]) -> Commands:
        cmds: Commands = []
        try:
            self._tun_run(st, st.tunnel.op(op), cmds)
            self._flush(cmds)
            self._check_done(cmds)
        except Exception as e:
            self._internal(cmds, e)
        return cmds

    def ping_tunnel(self, tunnel: Any, ref: Any, reply_to: ReplyTo) -> Commands:
        """``gunpy.ping`` with ``tunnel``: the HTTP/2 server at the far end of it."""
        probe = (*tunnel, ref) if type(tunnel) is tuple else (tunnel, ref)
        st = self._through(probe)
        if st is None:
            st = self._refs.get(tunnel)
            if st is None or st.kind != _TUN:
                return self.stream_error(reply_to, ref, ("badstate", BADSTATE_NOT_A_TUNNEL))
        return self._tun_op(st, ("$ping", ref, reply_to, tunnel))

    def _proxy_info(self) -> dict[str, Any]:
        ctx = self.ctx
        return {
            "type": "connect",
            "host": ctx.origin_host,
            "port": ctx.origin_port,
            "transport": "tcp" if ctx.transport == "unix" else ctx.transport,
            "protocol": "http2",
        }

    def _tun_run(self, st: _Stream, tcmds: Commands, cmds: Commands) -> None:
        """Carry out a stream tunnel's commands on the HTTP/2 stream."""
        self._nested_run(st, tcmds, cmds, "tun", lambda reason: self._tun_closed(st, cmds))

    def _tun_closed(self, st: _Stream, cmds: Commands) -> None:
        """The tunnel on ``st`` is over: end that stream (END_STREAM, as RFC 9113
        8.5 says for a TCP FIN), never the connection."""
        if self._streams.get(st.id) is not st:
            return
        out = self._out.get(st.id)
        if st.local_done:
            pass
        elif (out is not None and out.size) or st.remote_done:
            self._queue(st, b"", True)  # after the last bytes (a TLS close_notify...)
            st.local_done = True
        else:
            self._reset(st, ErrorCodes.CANCEL)  # nothing left to say: free the stream
        self._forget(st, cmds, keep_output=True)

    # ----------------------------------------------------------------------------------
    # Stream control

    def cancel(self, ref: Any, reply_to: ReplyTo) -> Commands:
        t = self._through(ref)
        if t is not None:
            return self._tun_op(t, ("$cancel", ref, reply_to))
        cmds: Commands = []
        try:
            st = self._refs.get(ref)
            if st is None:
                return self.stream_error(reply_to, ref, ("badstate", BADSTATE_NOT_FOUND))
            self._reset(st, ErrorCodes.CANCEL)
            self._forget(st, cmds)
            if st.kind == _TUN:
                cmds.extend(st.tunnel.close("cancel"))
            if self._ev:
                ev = self._ev_map(st, endpoint="local", reason="cancel")
                ev["reply_to"] = reply_to  # Gun: the process that cancelled
                self._flush(cmds, [EvCmd("cancel", ev)])
            else:
                self._flush(cmds)
            self._check_done(cmds)
        except Exception as e:
            self._internal(cmds, e)
        return cmds

    def update_flow(self, ref: Any, inc: int) -> Commands:
        t = self._through(ref)
        if t is not None:
            return self._tun_op(t, ("$update_flow", ref, inc))
        cmds: Commands = []
        try:
            st = self._refs.get(ref)
            if st is None:
                return []
            if st.kind == _WS:
                self._ws_run(st, st.ws.update_flow(ref, inc), cmds)
                if self._streams.get(st.id) is st and st.ws.active():
                    self._ensure_conn_window()
                    self._ensure_stream_window(st)
            elif st.flow is not None:  # Gun 4.5: no-flow streams ignore updates
                old = st.flow
                st.flow += inc
                if old <= 0 < st.flow:
                    # Gun's update_flow: the budget is back, so is the window.
                    self._ensure_conn_window()
                    self._ensure_stream_window(st)
            self._flush(cmds)
            self._check_done(cmds)
        except Exception as e:
            self._internal(cmds, e)
        return cmds

    def stream_info(self, ref: Any) -> dict[str, Any] | None:
        t = self._through(ref)
        if t is not None:
            info = t.tunnel.stream_info(ref)
            if info is not None:
                # This connection's server is the proxy of the stream (Gun: HTTP/2
                # intermediaries are per stream, not connection-wide).
                info["intermediaries"] = [self._proxy_info(), *info.get("intermediaries", [])]
            return info  # type: ignore[no-any-return]
        st = self._refs.get(ref)
        if st is not None and st.kind == _TUN:
            return {
                "ref": ref,
                "reply_to": st.reply_to,
                "state": "running",
                "intermediaries": [],
                "tunnel": st.tunnel.describe(),
            }
        if st is not None:
            reply_to = st.reply_to
        else:
            held = next((h for h in self._held_ws if h[0] == ref), None)
            if held is None:
                return None
            reply_to = held[1]
        return {
            "ref": ref,
            "reply_to": reply_to,
            "state": "running",
            "intermediaries": [],
            "tunnel": None,
        }

    def active(self) -> bool:
        # HTTP/2 flow control is per stream (windows): the socket is always read.
        return True

    # ----------------------------------------------------------------------------------
    # Ping, keepalive, timers

    def ping(self, ref: Any, reply_to: ReplyTo) -> Commands:
        """User PING (Gun 2.2 ``gun:ping``); acked as ``("gun_notify", conn, "ping_ack", ref)``."""
        cmds: Commands = []
        if self._dead:
            return cmds
        try:
            payload = next(self._ping_ids)
            self._user_pings[payload] = (ref, reply_to)
            self._h2.ping(payload.to_bytes(8, "big"))
            self._flush(cmds)
        except Exception as e:
            self._internal(cmds, e)
        return cmds

    def keepalive(self) -> Commands:
        cmds: Commands = []
        if self._dead:
            return cmds
        try:
            if self._tolerance is not None and self._pings_unack >= self._tolerance:
                self._conn_error(
                    cmds,
                    "no_error",
                    "The number of unacknowledged pings exceed the configured tolerance value.",
                )
                return cmds
            self._h2.ping(_KEEPALIVE_PAYLOAD)
            self._pings_unack += 1
            self._flush(cmds)
        except Exception as e:
            self._internal(cmds, e)
        return cmds

    def keepalive_interval(self) -> int | None:
        return self._keepalive

    def timeout(self, name: str) -> Commands:
        cmds: Commands = []
        if self._dead:
            return cmds
        try:
            if name == "preface":
                if not self._preface:
                    self._conn_error(
                        cmds,
                        "protocol_error",
                        "The preface was not received in a reasonable amount of time.",
                    )
            elif name == "settings":
                if not self._settings_acked:
                    self._conn_error(
                        cmds,
                        "settings_timeout",
                        "The SETTINGS ack was not received within the configured time."
                        " (RFC7540 6.5.3)",
                    )
            elif name.startswith("tun"):
                sid_s, _, sub = name[3:].partition(":")
                st = self._streams.get(int(sid_s)) if sid_s.isdigit() else None
                if st is not None and st.kind == _TUN:
                    self._tun_run(st, st.tunnel.timeout(sub), cmds)
                self._flush(cmds)
                self._check_done(cmds)
            elif name.startswith("ws"):
                sid_s, _, sub = name[2:].partition(":")
                st = self._streams.get(int(sid_s)) if sid_s.isdigit() else None
                if st is not None and st.kind == _WS:
                    if sub == "keepalive":
                        self._ws_run(st, st.ws.keepalive(), cmds)
                        ms = st.ws.keepalive_interval()
                        if ms is not None and self._streams.get(st.id) is st:
                            cmds.append(StartTimer(name, ms))
                    else:
                        self._ws_run(st, st.ws.timeout(sub), cmds)
                self._flush(cmds)
                self._check_done(cmds)
        except Exception as e:
            self._internal(cmds, e)
        return cmds

    # ----------------------------------------------------------------------------------
    # Connection life

    def handle_eof(self) -> Commands:
        if self._dead:
            return []
        self._dead = True
        return [Close("closed")]

    def closing(self, reason: Any) -> Commands:
        """Gun's closing/4: GOAWAY, then wait for the streams (closing_timeout)."""
        cmds: Commands = []
        if self._dead or self._status == _CLOSING:
            return cmds
        try:
            code = (
                ErrorCodes.NO_ERROR
                if reason in ("normal", "owner_down", "shutdown")
                else ErrorCodes.INTERNAL_ERROR
            )
            self._send_goaway(cmds, code)
            self._status = _CLOSING
            # gunpy: Websocket streams are told too (close 1001, as over HTTP/1.1);
            # Gun leaves them to the closing timeout.
            for st in [s for s in self._streams.values() if s.kind == _WS]:
                self._ws_run(st, st.ws.closing(reason), cmds)
            for st in [s for s in self._streams.values() if s.kind == _TUN]:
                self._tun_run(st, st.tunnel.closing(reason), cmds)
            held, self._held_ws = self._held_ws, []
            for args in held:
                cmds.append(Deliver(args[1], ("gun_error", self.ctx.conn, args[0], "closing")))
            self._flush(cmds)
            if self._streams or self._out:
                cmds.append(Closing(self._closing_timeout))
            else:
                # Nothing to wait for (Gun would wait for the server to close).
                self._check_done(cmds)
        except Exception as e:
            self._internal(cmds, e)
        return cmds

    def close(self, reason: Any) -> Commands:
        """The connection is gone: Gun's close/4, every open stream gets ``closed``."""
        if self._closed:
            return []
        self._closed = True
        self._dead = True
        r = "closed" if reason == "closed" else ("closed", reason)
        conn = self.ctx.conn
        cmds: Commands = [
            Deliver(st.reply_to, ("gun_error", conn, st.ref, r)) for st in self._refs.values()
        ]
        cmds += [Deliver(h[1], ("gun_error", conn, h[0], r)) for h in self._held_ws]
        for st in self._refs.values():
            if st.kind == _TUN:
                cmds += st.tunnel.close(reason)
        return cmds

    def down(self) -> list[Any]:
        inner = [r for st in self._refs.values() if st.kind == _TUN for r in st.tunnel.down()]
        return [*self._refs, *(h[0] for h in self._held_ws), *inner]

    # ----------------------------------------------------------------------------------
    # Internals

    def _queue(self, st: _Stream, data: bytes | bytearray, fin: bool) -> None:
        out = self._out.get(st.id)
        if out is None:
            out = self._out[st.id] = _Out()
        if data:
            out.chunks.append(bytes(data))
            out.size += len(data)
        if fin:
            out.fin = True

    def _flush(self, cmds: Commands, after: list[Any] | None = None) -> None:
        """Send what the windows allow of the queued data, then h2's bytes.

        ``after``: events that follow this write (request_headers), before the
        request_end events of the bodies it completes."""
        if self._out:
            for sid in list(self._out):
                self._pump(sid, self._out[sid])
        data = self._h2.data_to_send()
        if data:
            cmds.append(Send(data))
        if after:
            cmds.extend(after)
        if self._ev_out:
            cmds.extend(self._ev_out)
            self._ev_out.clear()

    def _pump(self, sid: int, out: _Out) -> None:
        """cowlib's send_data_for_one_stream: frames within both windows."""
        h2 = self._h2
        stream = h2.streams.get(sid)
        if stream is None or stream.closed:
            del self._out[sid]  # reset meanwhile: the data can never go
            return
        first = True
        max_sent = self._max_sent
        while True:
            size = out.size
            if size == 0:
                if out.fin:
                    h2.send_data(sid, b"", end_stream=True)
                    if self._ev:
                        self._ev_request_end(sid)
                del self._out[sid]
                self._sent_all(sid)
                return
            sw = stream.outbound_flow_control_window
            cw = h2.outbound_flow_control_window
            if first and sw < self._data_threshold and (sw < size or cw < size):
                return  # not worth a small frame (stream_window_data_threshold)
            first = False
            n = min(size, sw, cw, h2.max_outbound_frame_size)
            if max_sent is not None and n > max_sent:
                n = max_sent
            if n <= 0:
                return
            parts: list[bytes] = []
            need = n
            chunks = out.chunks
            while need:
                c = chunks[0]
                avail = len(c) - out.off
                if avail <= need:
                    parts.append(c[out.off :] if out.off else c)
                    chunks.popleft()
                    out.off = 0
                    need -= avail
                else:
                    parts.append(c[out.off : out.off + need])
                    out.off += need
                    need = 0
            out.size = size - n
            end = out.fin and out.size == 0
            h2.send_data(sid, parts[0] if len(parts) == 1 else b"".join(parts), end_stream=end)
            if end:
                del self._out[sid]
                if self._ev:
                    self._ev_request_end(sid)
                self._sent_all(sid)
                return

    # -- events (Gun 4.14) -----------------------------------------------------------
    def _ev_map(self, st: _Stream, **extra: Any) -> dict[str, Any]:
        ev = {"stream_ref": st.ref, "reply_to": st.reply_to}
        if extra:
            ev.update(extra)
        return ev

    def _ev_request_end(self, sid: int) -> None:
        st = self._streams.get(sid)
        if st is not None and st.kind == _HTTP:
            self._ev_out.append(EvCmd("request_end", self._ev_map(st)))

    def _ev_request(
        self,
        cmds: Commands,
        st: _Stream,
        function: str,
        wire: list[tuple[bytes, bytes]],
        path: bool = True,
    ) -> list[Any]:
        """request_start now; returns request_headers, for after the HEADERS write.
        Gun's maps: the regular headers as sent (no pseudo-headers), no scheme."""
        ev = self._ev_map(
            st,
            function=function,
            method=st.method,
            authority=st.authority,
            path=st.path,
            headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in wire if n[:1] != b":"],
        )
        if not path:
            del ev["path"]
        cmds.append(EvCmd("request_start", ev))
        return [EvCmd("request_headers", dict(ev))]

    def _sent_all(self, sid: int) -> None:
        st = self._streams.get(sid)
        if st is not None:
            self._maybe_delete(st)

    def _maybe_delete(self, st: _Stream) -> None:
        """Gun's maybe_delete_stream: gone once both sides have ended."""
        if st.local_done and st.remote_done and st.id not in self._out:
            if self._streams.get(st.id) is st:
                del self._streams[st.id]
            if self._refs.get(st.ref) is st:
                del self._refs[st.ref]

    def _forget(self, st: _Stream, cmds: Commands, keep_output: bool = False) -> None:
        if self._streams.get(st.id) is st:
            del self._streams[st.id]
        if self._refs.get(st.ref) is st:
            del self._refs[st.ref]
        if not keep_output:
            self._out.pop(st.id, None)
        if st.kind == _WS:
            cmds.append(CancelTimer(f"ws{st.id}:keepalive"))
            cmds.append(CancelTimer(f"ws{st.id}:closing"))

    def _reset(self, st: _Stream, code: ErrorCodes) -> None:
        stream = self._h2.streams.get(st.id)
        if stream is not None and not stream.closed:
            self._h2.reset_stream(st.id, code)

    def _check_done(self, cmds: Commands) -> None:
        """Gun: after GOAWAY (either side), the connection ends with its last stream."""
        if not self._dead and self._status != _CONNECTED and not self._streams and not self._out:
            self._flush(cmds)
            self._dead = True
            cmds.append(Close("normal"))

    @staticmethod
    def _increment(size: int, window: int, threshold: int, margin: int, max_window: int) -> int:
        """cowlib's ensure_window/4: the WINDOW_UPDATE increment, or 0."""
        if size == 0 or size <= window or window > threshold:
            return 0
        target = size + margin
        inc = max_window - window if target > max_window else target - window
        return inc if inc > 0 else 0

    def _ensure_conn_window(self) -> None:
        o = self.opts
        h2 = self._h2
        inc = self._increment(
            o["initial_connection_window_size"],
            h2.inbound_flow_control_window,
            o["connection_window_update_threshold"],
            o["connection_window_margin_size"],
            o["max_connection_window_size"],
        )
        if inc:
            h2.increment_flow_control_window(inc)

    def _ensure_stream_window(self, st: _Stream) -> None:
        if st.remote_done:
            return
        stream = self._h2.streams.get(st.id)
        if stream is None or stream.closed:
            return
        o = self.opts
        inc = self._increment(
            o["initial_stream_window_size"],
            stream.inbound_flow_control_window,
            o["stream_window_update_threshold"],
            o["stream_window_margin_size"],
            o["max_stream_window_size"],
        )
        if inc:
            self._h2.increment_flow_control_window(inc, st.id)

    def _send_goaway(self, cmds: Commands, code: ErrorCodes) -> None:
        """A GOAWAY written by hand: h2 would close its state machine (module doc)."""
        pending = self._h2.data_to_send()
        if pending:
            cmds.append(Send(pending))
        f = GoAwayFrame(0)
        f.last_stream_id = self._h2.highest_inbound_stream_id
        f.error_code = int(code)
        cmds.append(Send(f.serialize()))

    def _conn_error(self, cmds: Commands, code: str, text: str) -> None:
        """Gun's connection_error/2: tell every reply_to, GOAWAY, close."""
        if self._dead:
            return
        conn = self.ctx.conn
        seen: list[ReplyTo] = []
        for st in self._refs.values():
            if not any(st.reply_to is r for r in seen):
                seen.append(st.reply_to)
        for h in self._held_ws:
            if not any(h[1] is r for r in seen):
                seen.append(h[1])
        for r in seen:
            cmds.append(Deliver(r, ("gun_error", conn, (code, text))))
        h2 = self._h2
        if h2.state_machine.state is ConnectionState.CLOSED:
            pending = h2.data_to_send()  # h2 queued its GOAWAY after the error
            if pending:
                cmds.append(Send(pending))
        else:
            try:
                self._send_goaway(cmds, ErrorCodes[code.upper()])
            except KeyError:
                self._send_goaway(cmds, ErrorCodes.PROTOCOL_ERROR)
        self._dead = True
        cmds.append(Close(("error", ("connection_error", code, text))))

    def _internal(self, cmds: Commands, exc: Exception) -> None:
        """A failure inside h2 or this module while acting for the user."""
        self._conn_error(cmds, "internal_error", f"HTTP/2 client error: {exc!r}")
