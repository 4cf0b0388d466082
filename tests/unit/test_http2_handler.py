"""Unit tests of the sans-IO HTTP/2 handler (``gunpy.protocols.http2``).

No sockets, threads or clocks.  Every test wires the handler to h2 in the SERVER
role (an independent HTTP/2 state machine) over an in-memory link: the bytes of the
handler's ``Send`` commands go to the server, the server's bytes go to ``handle``.
What the server sees (its h2 events) and what the handler delivers (Gun's tuples)
are both asserted.  Websocket streams (RFC 8441) are decoded and produced by
wsproto in the SERVER role on top of the h2 server's DATA frames.  "Gun x.y" is a
section of /work/shared/design/gun-reference.md.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.settings import SettingCodes, Settings
from hyperframe.frame import Frame, GoAwayFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate

from gunpy._commands import (
    CancelTimer,
    Close,
    Closing,
    Deliver,
    Send,
    SetActive,
    StartTimer,
    SwitchProtocol,
)
from gunpy._process import Ref
from gunpy.protocols.base import HandlerContext
from gunpy.protocols.http2 import Http2Handler, check_options

CONN = object()  # the connection's Pid as users see it: any sentinel will do
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Rec:
    """A recording reply_to."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.msgs: list[Any] = []

    def send(self, msg: Any) -> None:
        self.msgs.append(msg)

    def __repr__(self) -> str:
        return f"Rec({self.name})"


class Server(H2Connection):
    """h2's server role, able to finish streams after a GOAWAY (h2 #1181)."""

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Event]]:
        ev = ConnectionTerminated()
        ev.error_code = ErrorCodes(frame.error_code)
        ev.last_stream_id = frame.last_stream_id
        ev.additional_data = frame.additional_data or None
        return [], [ev]


def goaway(last: int, code: int = 0) -> bytes:
    f = GoAwayFrame(0)
    f.last_stream_id = last
    f.error_code = code
    return bytes(f.serialize())


def wire(cmds: list[Any]) -> bytes:
    return b"".join(c.data for c in cmds if isinstance(c, Send))


def delivered(cmds: list[Any]) -> list[Any]:
    return [c.msg for c in cmds if isinstance(c, Deliver)]


class Link:
    """The handler and an h2 server, connected by an in-memory link."""

    def __init__(
        self,
        opts: dict[str, Any] | None = None,
        *,
        server_settings: dict[SettingCodes, int] | None = None,
        start: bool = True,
        **ctx: Any,
    ) -> None:
        kw: dict[str, Any] = {"origin_host": "example.com", "origin_port": 8080}
        kw.update(ctx)
        self.owner = Rec("owner")
        self.h = Http2Handler(HandlerContext(conn=CONN, owner=self.owner, **kw), opts or {})
        self.srv = Server(H2Configuration(client_side=False, header_encoding=None))
        if server_settings is not None:
            initial = {SettingCodes.MAX_CONCURRENT_STREAMS: 100}
            initial.update(server_settings)
            self.srv.local_settings = Settings(client=False, initial_values=initial)
            # h2 applies a table size to its decoder only when a change is acked.
            self.srv.decoder.max_allowed_table_size = self.srv.local_settings.header_table_size
        self.srv.initiate_connection()
        self.sev: list[Any] = []  # every event the server saw
        self.init_cmds = self.h.init()
        self.c2s(self.init_cmds)
        if start:
            self.s2c()

    def c2s(self, cmds: list[Any]) -> list[Any]:
        """Feed the handler's bytes to the server; the server's events."""
        data = wire(cmds)
        ev = self.srv.receive_data(data) if data else []
        self.sev += ev
        return ev

    def s2c(self, extra: bytes = b"") -> list[Any]:
        """Feed the server's pending bytes (then ``extra``) to the handler; its commands
        (whose bytes are fed back to the server)."""
        data = self.srv.data_to_send() + extra
        cmds = self.h.handle(data) if data else []
        self.c2s(cmds)
        return cmds

    def get(self, ref: Any = None, rt: Rec | None = None, path: str = "/", **kw: Any) -> Any:
        ref = ref if ref is not None else Ref()
        rt = rt or Rec()
        cmds = self.h.request(
            ref,
            rt,
            kw.get("method", "GET"),
            path,
            kw.get("headers", []),
            kw.get("body", b""),
            kw.get("req_opts", {}),
        )
        self.last = cmds
        self.c2s(cmds)
        return ref

    def respond(
        self,
        sid: int,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> None:
        self.srv.send_headers(
            sid,
            [(b":status", str(status).encode()), *(headers or [])],
            end_stream=body is None and end,
        )
        if body is not None:
            self.srv.send_data(sid, body, end_stream=end)


def reqs(events: list[Any]) -> list[RequestReceived]:
    return [e for e in events if isinstance(e, RequestReceived)]


def hdict(ev: RequestReceived) -> dict[bytes, bytes]:
    return dict(ev.headers)


# ======================================================================================
# 1. The preface: magic, SETTINGS with Gun's values, the connection WINDOW_UPDATE


def test_init_sends_preface_settings_and_window_update() -> None:
    """Gun 3.3/4.10: windows overridden to 8,000,000; cowlib advertises 100 streams."""
    link = Link(start=False)
    data = wire(link.init_cmds)
    assert data.startswith(PREFACE)
    [settings_ev, window] = link.sev
    assert isinstance(settings_ev, RemoteSettingsChanged)
    values = {k: v.new_value for k, v in settings_ev.changed_settings.items()}
    assert values[SettingCodes.INITIAL_WINDOW_SIZE] == 8000000
    assert values[SettingCodes.MAX_CONCURRENT_STREAMS] == 100
    assert values[SettingCodes.MAX_FRAME_SIZE] == 16384
    assert values[SettingCodes.HEADER_TABLE_SIZE] == 4096
    assert values[SettingCodes.ENABLE_CONNECT_PROTOCOL] == 0
    assert isinstance(window, WindowUpdated) and window.stream_id == 0
    assert window.delta == 8000000 - 65535
    assert StartTimer("preface", 5000) in link.init_cmds
    assert StartTimer("settings", 5000) in link.init_cmds


def test_init_with_default_windows_sends_no_window_update() -> None:
    link = Link(
        {
            "initial_connection_window_size": 65535,
            "initial_stream_window_size": 65535,
            "preface_timeout": "infinity",
            "settings_timeout": 1000,
            "max_concurrent_streams": "infinity",
            "max_frame_size_received": 32768,
            "enable_connect_protocol": True,
        },
        start=False,
    )
    assert [type(e) for e in link.sev] == [RemoteSettingsChanged]
    values = {k: v.new_value for k, v in link.sev[0].changed_settings.items()}
    assert SettingCodes.MAX_CONCURRENT_STREAMS not in values
    assert values[SettingCodes.MAX_FRAME_SIZE] == 32768
    assert values[SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    assert [c for c in link.init_cmds if isinstance(c, StartTimer)] == [
        StartTimer("settings", 1000)
    ]


def test_server_settings_cancel_the_timers() -> None:
    link = Link(start=False)
    cmds = link.s2c()
    assert CancelTimer("preface") in cmds
    assert CancelTimer("settings") in cmds  # the server's ack of our SETTINGS
    # The server got our ack of its SETTINGS.
    assert link.srv.remote_settings.initial_window_size == 8000000


def test_check_options() -> None:
    good: dict[str, Any] = {
        "keepalive": 1000,
        "keepalive_tolerance": 0,
        "closing_timeout": "infinity",
        "flow": 1,
        "notify_settings_changed": True,
        "cookie_ignore_informational": False,
        "content_handlers": ["data"],
        "initial_connection_window_size": 65535,
        "initial_stream_window_size": 0,
        "max_concurrent_streams": "infinity",
        "max_decode_table_size": 0,
        "max_encode_table_size": 8192,
        "max_frame_size_received": 16777215,
        "max_frame_size_sent": "infinity",
        "max_fragmented_header_block_size": 16384,
        "max_headers": 100,
        "preface_timeout": 0,
        "settings_timeout": "infinity",
        "connection_window_margin_size": 0,
        "stream_window_margin_size": 65535,
        "connection_window_update_threshold": 163840,
        "stream_window_update_threshold": 1,
        "max_connection_window_size": 2**31 - 1,
        "max_stream_window_size": 100,
        "stream_window_data_threshold": 16384,
        "enable_connect_protocol": False,
    }
    assert check_options(good) is None
    assert check_options({}) is None
    for bad in [
        ("keepalive", 0),
        ("keepalive", "never"),
        ("keepalive_tolerance", -1),
        ("closing_timeout", 0),
        ("flow", 0),
        ("flow", True),
        ("notify_settings_changed", 1),
        ("content_handlers", []),
        ("initial_connection_window_size", 65534),
        ("initial_stream_window_size", 2**31),
        ("max_concurrent_streams", -1),
        ("max_frame_size_received", 16383),
        ("max_frame_size_sent", 2**24),
        ("max_fragmented_header_block_size", 100),
        ("preface_timeout", -5),
        ("stream_window_margin_size", "x"),
        ("enable_connect_protocol", "yes"),
        ("version", "HTTP/2"),
    ]:
        assert check_options({**good, bad[0]: bad[1]}) == bad


# ======================================================================================
# 2. Requests: pseudo-headers, :authority, connection-specific headers, bodies


def test_get_request_headers() -> None:
    """Gun 4.10: :method/:scheme/:authority/:path; bodyless requests end with HEADERS
    (END_STREAM), no DATA frame; ``request`` with b"" sets content-length: 0 (Gun)."""
    link = Link()
    link.get(path="/index.html", headers=[("accept", "*/*")])
    [req] = reqs(link.sev)
    assert req.headers[:4] == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"example.com:8080"),
        (b":path", b"/index.html"),
    ]
    assert req.headers[4:] == [(b"accept", b"*/*"), (b"content-length", b"0")]
    assert req.stream_ended is not None
    assert not [e for e in link.sev if isinstance(e, DataReceived)]


@pytest.mark.parametrize(
    ("host", "port", "transport", "scheme", "authority"),
    [
        ("example.org", 80, "tcp", b"http", b"example.org"),
        ("example.org", 443, "tls", b"https", b"example.org"),
        ("example.org", 443, "tcp", b"http", b"example.org:443"),
        ("example.org", 80, "tls", b"https", b"example.org:80"),
        ("::1", 8443, "tls", b"https", b"[::1]:8443"),
        ("::1", 80, "tcp", b"http", b"[::1]"),
        ("/tmp/s", 0, "unix", b"http", b"localhost"),
    ],
)
def test_authority(host: str, port: int, transport: str, scheme: bytes, authority: bytes) -> None:
    """rfc7540_SUITE: :authority with default ports omitted, IPv6 bracketed."""
    link = Link(origin_host=host, origin_port=port, transport=transport)
    link.get()
    [req] = reqs(link.sev)
    assert hdict(req)[b":authority"] == authority
    assert hdict(req)[b":scheme"] == scheme


def test_user_host_header_becomes_authority_and_connection_headers_go() -> None:
    """Gun's prepare_headers: host -> :authority; connection, keep-alive,
    proxy-connection, transfer-encoding, upgrade removed (RFC 9113 8.2.2), and so
    are the fields the connection header names; te other than trailers too."""
    link = Link()
    link.get(
        headers=[
            ("host", "other.example:9"),
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-hop", "1"),
            ("te", "gzip"),
            ("x-keep", "2"),
        ]
    )
    [req] = reqs(link.sev)
    assert req.headers == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"other.example:9"),
        (b":path", b"/"),
        (b"x-keep", b"2"),
        (b"content-length", b"0"),
    ]
    link.get(headers=[("te", "trailers")])
    assert (b"te", b"trailers") in reqs(link.sev)[1].headers


def test_request_with_body_sets_content_length() -> None:
    """Gun's request1: content-length replaced in place by the real size; DATA fin."""
    link = Link()
    link.get(
        method="POST", headers=[("x-a", "1"), ("content-length", "99"), ("x-b", "2")], body=b"hello"
    )
    [req] = reqs(link.sev)
    assert req.headers[4:] == [(b"x-a", b"1"), (b"content-length", b"5"), (b"x-b", b"2")]
    assert req.stream_ended is None
    [data] = [e for e in link.sev if isinstance(e, DataReceived)]
    assert data.data == b"hello" and data.stream_ended is not None
    link.respond(1)
    link.s2c()
    assert link.h.down() == []  # both sides ended: the stream is gone


def test_headers_then_data() -> None:
    """body None = headers only; ``data`` streams the body; empty nofin data is
    dropped; empty fin data ends the stream with an empty DATA frame (Gun 1)."""
    link = Link()
    rt = Rec()
    ref = link.get(rt=rt, method="PUT", body=None, headers=[("content-type", "text/plain")])
    [req] = reqs(link.sev)
    assert b"content-length" not in hdict(req) and req.stream_ended is None
    assert link.h.data(ref, rt, "nofin", b"") == []
    link.c2s(link.h.data(ref, rt, "nofin", b"abc"))
    link.c2s(link.h.data(ref, rt, "fin", b""))
    datas = [e for e in link.sev if isinstance(e, DataReceived)]
    assert [(d.data, d.stream_ended is not None) for d in datas] == [(b"abc", False), (b"", True)]
    # After fin: Gun's "already closed".
    assert delivered(link.h.data(ref, rt, "fin", b"x")) == [
        ("gun_error", CONN, ref, ("badstate", "The stream has already been closed."))
    ]
    unknown = Ref()
    assert delivered(link.h.data(unknown, rt, "fin", b"x")) == [
        ("gun_error", CONN, unknown, ("badstate", "The stream cannot be found."))
    ]


def test_head_request_always_ends_with_headers() -> None:
    """cowlib's prepare_headers: a HEAD request ends with its HEADERS frame."""
    link = Link()
    rt = Rec()
    ref = link.get(rt=rt, method="HEAD", body=None)
    [req] = reqs(link.sev)
    assert req.stream_ended is not None
    assert delivered(link.h.data(ref, rt, "fin", b"x"))[0][3][0] == "badstate"


def test_large_body_waits_for_the_servers_windows() -> None:
    """cowlib's send_or_queue_data: what does not fit the windows is queued and goes
    out as WINDOW_UPDATEs arrive, in max-frame-size DATA frames."""
    link = Link(server_settings={SettingCodes.INITIAL_WINDOW_SIZE: 20000})
    body = bytes(range(256)) * 400  # 102400 bytes, over the 65535 connection window
    link.get(method="POST", body=body)
    got = b"".join(e.data for e in link.sev if isinstance(e, DataReceived))
    assert len(got) == 20000  # the stream window
    assert all(len(e.data) <= 16384 for e in link.sev if isinstance(e, DataReceived))
    for _ in range(20):
        for e in [e for e in link.sev if isinstance(e, DataReceived)]:
            if not getattr(e, "_acked", False):
                link.srv.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                e._acked = True  # type: ignore[attr-defined]
        link.s2c()
    datas = [e for e in link.sev if isinstance(e, DataReceived)]
    assert b"".join(e.data for e in datas) == body
    assert datas[-1].stream_ended is not None


def test_hpack_table_size_options() -> None:
    """max_decode_table_size is our SETTINGS_HEADER_TABLE_SIZE; max_encode_table_size
    caps the table our encoder uses whatever the server allows (cowlib)."""
    link = Link(
        {"max_decode_table_size": 0, "max_encode_table_size": 0},
        server_settings={SettingCodes.HEADER_TABLE_SIZE: 65536},
    )
    assert link.srv.remote_settings.header_table_size == 0
    assert link.h._h2.encoder.header_table_size == 0
    for i in range(3):
        ref = link.get(headers=[("x-custom", "value")])
        sid = 1 + 2 * i
        link.respond(sid, headers=[(b"x-resp", b"same")])
        assert delivered(link.s2c()) == [
            ("gun_response", CONN, ref, "fin", 200, [("x-resp", "same")])
        ]
    assert [dict(r.headers)[b"x-custom"] for r in reqs(link.sev)] == [b"value"] * 3


def test_small_window_waits_for_a_worthwhile_frame() -> None:
    """cowlib's stream_window_data_threshold: with a stream window under 16384 and
    more data than fits, nothing is sent until the window grows."""
    link = Link(server_settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    link.get(method="POST", body=b"z" * 5000)
    assert not [e for e in link.sev if isinstance(e, DataReceived)]
    link.srv.increment_flow_control_window(20000, 1)
    link.s2c()
    [data] = [e for e in link.sev if isinstance(e, DataReceived)]
    assert data.data == b"z" * 5000 and data.stream_ended is not None


def test_queued_body_dropped_when_the_server_resets() -> None:
    link = Link(server_settings={SettingCodes.INITIAL_WINDOW_SIZE: 16384})
    rt = Rec()
    ref = link.get(rt=rt, method="POST", body=b"q" * 50000)
    link.srv.reset_stream(1, ErrorCodes.REFUSED_STREAM)
    link.srv.increment_flow_control_window(100000)
    cmds = link.s2c()
    assert delivered(cmds) == [
        ("gun_error", CONN, ref, ("stream_error", "refused_stream", "Stream reset by server."))
    ]
    assert link.h._out == {}
    assert sum(len(e.data) for e in link.sev if isinstance(e, DataReceived)) == 16384


def test_max_frame_size_sent() -> None:
    """Our cap on DATA frames, below what the server allows."""
    link = Link(
        {"max_frame_size_sent": 16384}, server_settings={SettingCodes.MAX_FRAME_SIZE: 65536}
    )
    link.get(method="POST", body=b"x" * 40000)
    sizes = [len(e.data) for e in link.sev if isinstance(e, DataReceived)]
    assert sizes == [16384, 16384, 7232]


def test_invalid_method_path_or_header_name() -> None:
    link = Link()
    rt = Rec()
    ref = Ref()
    assert delivered(link.h.request(ref, rt, "GET", "/a b", [], b"", {})) == [
        (
            "gun_error",
            CONN,
            ref,
            ("badstate", "The request method or path contains invalid characters."),
        )
    ]
    assert delivered(link.h.request(ref, rt, "G\nET", "/", [], b"", {}))[0][3][0] == "badstate"
    cmds = link.h.request(ref, rt, "GET", "/", [(":path", "/x")], b"", {})
    assert delivered(cmds) == [
        ("gun_error", CONN, ref, ("badstate", "Invalid request header name ':path'."))
    ]
    assert wire(cmds) == b""
    # The connection is still fine.
    link.get()
    assert len(reqs(link.sev)) == 1


def test_too_many_streams() -> None:
    """Gun 4.10 (2.2): over the server's SETTINGS_MAX_CONCURRENT_STREAMS the new
    stream fails at once; once a stream ends there is room again."""
    link = Link(server_settings={SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    rt = Rec()
    link.get(rt=rt)
    ref2 = Ref()
    cmds = link.h.request(ref2, rt, "GET", "/", [], b"", {})
    assert delivered(cmds) == [
        (
            "gun_error",
            CONN,
            ref2,
            ("stream_error", "too_many_streams", "Maximum concurrency limit has been reached."),
        )
    ]
    assert wire(cmds) == b""
    link.respond(1)
    link.s2c()
    link.get(rt=rt)
    assert len(reqs(link.sev)) == 2


# ======================================================================================
# 3. Responses: inform, response fin/nofin, data, trailers


def test_response_messages() -> None:
    """Gun 2: gun_inform, gun_response nofin, one gun_data per DATA frame, the
    last one fin."""
    link = Link()
    rt = Rec()
    ref = link.get(rt=rt)
    link.srv.send_headers(1, [(b":status", b"103"), (b"link", b"</s.css>")])
    link.srv.send_headers(1, [(b":status", b"200"), (b"content-type", b"text/plain")])
    link.srv.send_data(1, b"hello ")
    link.srv.send_data(1, b"world", end_stream=True)
    cmds = link.s2c()
    assert delivered(cmds) == [
        ("gun_inform", CONN, ref, 103, [("link", "</s.css>")]),
        ("gun_response", CONN, ref, "nofin", 200, [("content-type", "text/plain")]),
        ("gun_data", CONN, ref, "nofin", b"hello "),
        ("gun_data", CONN, ref, "fin", b"world"),
    ]
    assert link.h.stream_info(ref) is None
    assert link.h.down() == []


def test_response_fin_and_trailers() -> None:
    link = Link()
    r1 = link.get()
    r2 = link.get()
    link.respond(1, 204)
    link.srv.send_headers(3, [(b":status", b"200")])
    link.srv.send_data(3, b"body")
    link.srv.send_headers(3, [(b"x-checksum", b"abc")], end_stream=True)
    cmds = link.s2c()
    assert delivered(cmds) == [
        ("gun_response", CONN, r1, "fin", 204, []),
        ("gun_response", CONN, r2, "nofin", 200, []),
        ("gun_data", CONN, r2, "nofin", b"body"),
        ("gun_trailers", CONN, r2, [("x-checksum", "abc")]),
    ]
    assert link.h.down() == []


def test_header_values_are_latin1_str() -> None:
    link = Link()
    ref = link.get()
    link.respond(1, headers=[(b"x-bin", b"caf\xe9")])
    assert delivered(link.s2c()) == [("gun_response", CONN, ref, "fin", 200, [("x-bin", "café")])]


def test_streams_are_independent() -> None:
    """Responses on several streams interleave; each goes to its own reply_to."""
    link = Link()
    a, b = Rec("a"), Rec("b")
    ra = link.get(rt=a)
    rb = link.get(rt=b)
    link.srv.send_headers(3, [(b":status", b"200")])
    link.srv.send_headers(1, [(b":status", b"201")])
    link.srv.send_data(3, b"B", end_stream=True)
    link.srv.send_data(1, b"A", end_stream=True)
    cmds = link.s2c()
    assert [(c.to, c.msg[0], c.msg[2]) for c in cmds if isinstance(c, Deliver)] == [
        (b, "gun_response", rb),
        (a, "gun_response", ra),
        (b, "gun_data", rb),
        (a, "gun_data", ra),
    ]


def test_stream_stays_open_while_the_request_body_is_unfinished() -> None:
    """Gun's maybe_delete_stream: a stream is gone when both sides have ended."""
    link = Link()
    rt = Rec()
    ref = link.get(rt=rt, method="POST", body=None)
    link.respond(1)
    link.s2c()
    assert link.h.stream_info(ref) is not None
    assert link.h.down() == [ref]
    link.c2s(link.h.data(ref, rt, "fin", b"late"))
    assert link.h.stream_info(ref) is None


# ======================================================================================
# 4. cancel and RST_STREAM


def test_cancel_sends_rst_stream_cancel_and_forgets() -> None:
    """Gun: cancel = RST_STREAM(CANCEL); later frames for the stream are dropped, and
    their DATA still counts toward the connection window (refilled)."""
    link = Link({"initial_connection_window_size": 65535, "initial_stream_window_size": 65535})
    rt = Rec()
    ref = link.get(rt=rt)
    link.respond(1, body=None, end=False)
    link.s2c()
    link.c2s(link.h.cancel(ref, rt))
    [reset] = [e for e in link.sev if isinstance(e, StreamReset)]
    assert reset.stream_id == 1 and reset.error_code == ErrorCodes.CANCEL
    assert link.h.stream_info(ref) is None and link.h.down() == []
    # Frames the server had already sent: hand-made DATA (h2's server knows the
    # stream is reset), 60000 bytes.
    late = b"".join(
        struct.pack(">I", 15000)[1:] + b"\x00\x00" + struct.pack(">I", 1) + b"x" * 15000
        for _ in range(4)
    )
    cmds = link.h.handle(late)
    assert delivered(cmds) == []
    assert isinstance(link.h._h2.inbound_flow_control_window, int)
    assert link.h._h2.inbound_flow_control_window > 65535 - 60000  # refilled
    assert not any(isinstance(c, Close) for c in cmds)
    unknown = Ref()
    assert delivered(link.h.cancel(unknown, rt)) == [
        ("gun_error", CONN, unknown, ("badstate", "The stream cannot be found."))
    ]


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (ErrorCodes.CANCEL, "cancel"),
        (ErrorCodes.PROTOCOL_ERROR, "protocol_error"),
        (ErrorCodes.REFUSED_STREAM, "refused_stream"),
        (0x99, "unknown_error"),
    ],
)
def test_server_rst_stream(code: int, name: str) -> None:
    """Gun 4.10: ("stream_error", code, "Stream reset by server.")."""
    link = Link()
    rt = Rec()
    ref = link.get(rt=rt)
    link.srv.reset_stream(1, code)
    cmds = link.s2c()
    assert delivered(cmds) == [
        ("gun_error", CONN, ref, ("stream_error", name, "Stream reset by server."))
    ]
    assert link.h.down() == []


# ======================================================================================
# 5. Flow control (Gun 4.5)


def _data_sizes(link: Link) -> int:
    return sum(len(e.data) for e in link.sev if isinstance(e, DataReceived))


def test_flow_budget_withholds_the_stream_window_only() -> None:
    """Gun 4.5 / flow_SUITE flow_http2: with the budget spent no stream WINDOW_UPDATE
    goes out, so the server stops; the connection window is still refilled; an
    update_flow gives the window back."""
    opts = {"initial_connection_window_size": 65535, "initial_stream_window_size": 65535}
    link = Link(opts)
    rt = Rec()
    ref = link.get(rt=rt, req_opts={"flow": 1})
    link.respond(1, body=None, end=False)
    # The server sends what its windows allow.
    sent = 0
    while link.srv.local_flow_control_window(1) > 0:
        n = min(16384, link.srv.local_flow_control_window(1))
        link.srv.send_data(1, b"d" * n)
        sent += n
    assert sent == 65535
    link.sev.clear()
    cmds = link.s2c()
    msgs = delivered(cmds)
    assert msgs[0][0] == "gun_response"
    assert [m[0] for m in msgs[1:]] == ["gun_data"] * 4  # Gun delivers them all
    updates = [e for e in link.sev if isinstance(e, WindowUpdated)]
    assert updates and all(u.stream_id == 0 for u in updates)
    assert link.srv.local_flow_control_window(1) == 0  # the stream is stalled...
    assert link.srv.outbound_flow_control_window > 0  # ...the connection is not
    # A second stream still flows.
    r2 = link.get(rt=rt)
    link.respond(3, body=b"other")
    assert delivered(link.s2c())[-1] == ("gun_data", CONN, r2, "fin", b"other")
    # update_flow: budget back above 0, window back.
    link.sev.clear()
    cmds = link.h.update_flow(ref, 5)
    link.c2s(cmds)
    [upd] = [e for e in link.sev if isinstance(e, WindowUpdated) and e.stream_id == 1]
    assert upd.delta > 0
    assert link.srv.local_flow_control_window(1) > 0


class ChunkedApp:
    """A server handler writing 40000-byte messages as fast as the windows allow
    (flow_SUITE's sse_clock_h, 40000): each message may be cut by the windows."""

    def __init__(self, link: Link, sid: int) -> None:
        self.link = link
        self.sid = sid
        self.left = 0  # bytes of the current message still to send

    def pump(self) -> None:
        srv = self.link.srv
        while True:
            if self.left == 0:
                self.left = 40000
            n = min(self.left, srv.local_flow_control_window(self.sid), srv.max_outbound_frame_size)
            if n <= 0:
                return
            srv.send_data(self.sid, b"c" * n)
            self.left -= n


def test_flow_like_gun_flow_suite() -> None:
    """flow_SUITE flow_http2, frame for frame: windows 65535, frames up to 65535;
    flow 1 gives two messages (65535 bytes) then silence; update_flow 2 lets
    exactly 131070 more bytes through (cowlib's ensure_window: size + margin)."""
    opts = {
        "initial_connection_window_size": 65535,
        "initial_stream_window_size": 65535,
        "max_frame_size_received": 65535,
    }
    link = Link(opts)
    rt = Rec()
    ref = link.get(rt=rt, req_opts={"flow": 1})
    link.respond(1, body=None, end=False)
    app = ChunkedApp(link, 1)
    msgs: list[Any] = []
    for _ in range(5):
        app.pump()
        msgs += delivered(link.s2c())
    data = [m[4] for m in msgs if m[0] == "gun_data"]
    assert [len(d) for d in data] == [40000, 25535]
    link.c2s(link.h.update_flow(ref, 2))
    more: list[Any] = []
    for _ in range(5):
        app.pump()
        more += delivered(link.s2c())
    assert sum(len(m[4]) for m in more) == 131070
    assert all(m[0] == "gun_data" and m[3] == "nofin" for m in more)


def test_flow_budget_window_updates_like_cowlib() -> None:
    """cowlib's ensure_window: no update while the window is above the threshold,
    then back to size + margin."""
    link = Link({"flow": 100})
    link.get()
    link.respond(1, body=None, end=False)
    link.s2c()
    link.sev.clear()
    link.srv.send_data(1, b"x" * 16384)
    link.s2c()
    assert not [e for e in link.sev if isinstance(e, WindowUpdated)]  # 8 MB window
    st = link.h._h2.streams[1]
    assert st.inbound_flow_control_window == 8000000 - 16384


def test_update_flow_ignored_without_flow() -> None:
    """Gun 4.5: streams without flow control ignore updates."""
    link = Link()
    ref = link.get()
    assert link.h.update_flow(ref, 3) == []
    assert link.h.update_flow(Ref(), 3) == []


def test_flow_option_default_and_override() -> None:
    """http2_opts flow is the default budget, req_opts flow overrides it."""
    link = Link({"flow": 3})
    r1 = link.get()
    r2 = link.get(req_opts={"flow": 7})
    assert link.h._refs[r1].flow == 3 and link.h._refs[r2].flow == 7


# ======================================================================================
# 6. GOAWAY, closing, close, down


def test_goaway_from_server() -> None:
    """Gun 4.10: streams above last-stream-id get ("goaway", code, text); we answer
    GOAWAY no_error; the others finish; then Close("normal")."""
    link = Link()
    a, b = Rec("a"), Rec("b")
    r1 = link.get(rt=a)
    r3 = link.get(rt=b)
    cmds = link.s2c(goaway(1))
    assert delivered(cmds) == [
        ("gun_error", CONN, r3, ("goaway", "no_error", "The connection is going away."))
    ]
    assert Closing(15000) in cmds
    [term] = [e for e in link.sev if isinstance(e, ConnectionTerminated)]
    assert term.error_code == ErrorCodes.NO_ERROR and term.last_stream_id == 0
    # New requests: closing (the actor normally queues them).
    r5 = Ref()
    assert delivered(link.h.request(r5, a, "GET", "/", [], b"", {})) == [
        ("gun_error", CONN, r5, "closing")
    ]
    link.respond(1, body=b"done")
    cmds = link.s2c()
    assert delivered(cmds) == [
        ("gun_response", CONN, r1, "nofin", 200, []),
        ("gun_data", CONN, r1, "fin", b"done"),
    ]
    assert cmds[-1] == Close("normal")
    assert link.h.down() == []


def test_goaway_with_nothing_running_closes_at_once() -> None:
    link = Link()
    cmds = link.s2c(goaway(0, ErrorCodes.ENHANCE_YOUR_CALM))
    assert cmds[-1] == Close("normal")
    assert any(isinstance(e, ConnectionTerminated) for e in link.sev)


def test_second_goaway_with_lower_last_stream_id() -> None:
    """Gun: a later GOAWAY may cancel more streams; we answer only once."""
    link = Link()
    r1, r3 = link.get(), link.get()
    link.s2c(goaway(3))
    cmds = link.s2c(goaway(0))
    assert delivered(cmds) == [
        ("gun_error", CONN, r1, ("goaway", "no_error", "The connection is going away.")),
        ("gun_error", CONN, r3, ("goaway", "no_error", "The connection is going away.")),
    ]
    assert len([e for e in link.sev if isinstance(e, ConnectionTerminated)]) == 1
    assert cmds[-1] == Close("normal")


def test_closing_sends_goaway_and_waits() -> None:
    """Gun 4.10 (2.2 fix): our graceful close sends GOAWAY no_error, then waits for
    the streams (Closing(closing_timeout))."""
    link = Link({"closing_timeout": 3000})
    ref = link.get()
    cmds = link.h.closing("shutdown")
    link.c2s(cmds)
    assert cmds[-1] == Closing(3000)
    [term] = [e for e in link.sev if isinstance(e, ConnectionTerminated)]
    assert term.error_code == ErrorCodes.NO_ERROR
    assert link.h.closing("shutdown") == []  # only once
    link.respond(1, body=b"x")
    cmds = link.s2c()
    assert delivered(cmds)[-1] == ("gun_data", CONN, ref, "fin", b"x")
    assert cmds[-1] == Close("normal")


def test_closing_without_streams_and_other_reasons() -> None:
    link = Link()
    cmds = link.h.closing("owner_down")
    link.c2s(cmds)
    assert cmds[-1] == Close("normal")
    link2 = Link()
    link2.get()
    link2.c2s(link2.h.closing(("error", "x")))
    [term] = [e for e in link2.sev if isinstance(e, ConnectionTerminated)]
    assert term.error_code == ErrorCodes.INTERNAL_ERROR


def test_push_refused_while_closing() -> None:
    """Gun 4.10: promises during shutdown are refused (RST_STREAM cancel)."""
    link = Link()
    link.get()
    link.c2s(link.h.closing("shutdown"))
    link.srv.push_stream(
        1,
        2,
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"example.com:8080"),
            (b":path", b"/p"),
        ],
    )
    cmds = link.s2c()
    assert delivered(cmds) == []
    [reset] = [e for e in link.sev if isinstance(e, StreamReset)]
    assert reset.stream_id == 2 and reset.error_code == ErrorCodes.CANCEL


def test_close_and_down() -> None:
    """Gun's close/4: every open stream gets ("closed", reason) (or "closed")."""
    link = Link()
    a, b = Rec("a"), Rec("b")
    r1 = link.get(rt=a)
    r3 = link.get(rt=b)
    assert link.h.down() == [r1, r3]
    assert delivered(link.h.close(("error", "econnreset"))) == [
        ("gun_error", CONN, r1, ("closed", ("error", "econnreset"))),
        ("gun_error", CONN, r3, ("closed", ("error", "econnreset"))),
    ]
    assert link.h.close("closed") == []  # once
    assert link.h.handle(b"\x00" * 30) == []
    link2 = Link()
    r = link2.get()
    assert delivered(link2.h.close("closed")) == [("gun_error", CONN, r, "closed")]


def test_handle_eof() -> None:
    link = Link()
    link.get()
    assert link.h.handle_eof() == [Close("closed")]
    assert link.h.handle_eof() == []


def test_stream_info() -> None:
    link = Link()
    rt = Rec()
    ref = link.get(rt=rt)
    assert link.h.stream_info(ref) == {
        "ref": ref,
        "reply_to": rt,
        "state": "running",
        "intermediaries": [],
        "tunnel": None,
    }
    assert link.h.stream_info(Ref()) is None
    assert link.h.active() is True


# ======================================================================================
# 7. Server push


PUSH_HEADERS = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"example.com:8080"),
    (b":path", b"/style.css"),
    (b"accept", b"text/css"),
]


def test_push_before_response_and_pushed_stream_messages() -> None:
    """Gun 2: gun_push before the original gun_response; the pushed stream's messages
    come under the new ref, to the same reply_to, with the parent's flow."""
    link = Link()
    rt = Rec()
    ref = link.get(rt=rt, req_opts={"flow": 4})
    link.srv.push_stream(1, 2, PUSH_HEADERS)
    link.respond(1, body=b"page")
    link.srv.send_headers(2, [(b":status", b"200")])
    link.srv.send_data(2, b"css", end_stream=True)
    cmds = link.s2c()
    msgs = delivered(cmds)
    push = msgs[0]
    assert push[:3] == ("gun_push", CONN, ref)
    new_ref = push[3]
    assert isinstance(new_ref, Ref) and new_ref is not ref
    assert push[4:] == ("GET", "http://example.com:8080/style.css", [("accept", "text/css")])
    assert msgs[1:] == [
        ("gun_response", CONN, ref, "nofin", 200, []),
        ("gun_data", CONN, ref, "fin", b"page"),
        ("gun_response", CONN, new_ref, "nofin", 200, []),
        ("gun_data", CONN, new_ref, "fin", b"css"),
    ]
    assert all(c.to is rt for c in cmds if isinstance(c, Deliver))
    assert link.h.down() == []


def test_pushed_stream_inherits_flow_and_can_be_cancelled() -> None:
    link = Link()
    rt = Rec()
    link.get(rt=rt, req_opts={"flow": 4})
    link.srv.push_stream(1, 2, PUSH_HEADERS)
    [push] = delivered(link.s2c())
    new_ref = push[3]
    assert link.h._refs[new_ref].flow == 4
    assert link.h.stream_info(new_ref) is not None
    link.c2s(link.h.cancel(new_ref, rt))
    [reset] = [e for e in link.sev if isinstance(e, StreamReset)]
    assert reset.stream_id == 2 and reset.error_code == ErrorCodes.CANCEL


@pytest.mark.parametrize(
    ("header", "value"),
    [(b":authority", b"evil.example"), (b":scheme", b"https"), (b":authority", b"example.com")],
)
def test_push_for_another_origin_is_refused(header: bytes, value: bytes) -> None:
    """Gun 4.10 (2.4): a promise whose scheme/authority differ from the request's is
    refused with RST_STREAM protocol_error, and the user hears nothing of it."""
    link = Link()
    ref = link.get()
    hs = [(n, value if n == header else v) for n, v in PUSH_HEADERS]
    link.srv.push_stream(1, 2, hs)
    link.respond(1)
    cmds = link.s2c()
    assert delivered(cmds) == [("gun_response", CONN, ref, "fin", 200, [])]
    [reset] = [e for e in link.sev if isinstance(e, StreamReset)]
    assert reset.stream_id == 2 and reset.error_code == ErrorCodes.PROTOCOL_ERROR


def test_push_compares_with_the_requests_own_authority() -> None:
    """The parent's :authority came from the user's host header: pushes match it."""
    link = Link()
    ref = link.get(headers=[("host", "cdn.example")])
    hs = [(n, b"cdn.example" if n == b":authority" else v) for n, v in PUSH_HEADERS]
    link.srv.push_stream(1, 2, hs)
    msgs = delivered(link.s2c())
    assert msgs[0][:3] == ("gun_push", CONN, ref)
    assert msgs[0][5] == "http://cdn.example/style.css"


# ======================================================================================
# 8. PING, keepalive, settings notifications, timers


def test_user_ping_ack() -> None:
    """Gun 4.6: user ping payloads are >= 10000; the ack is
    ("gun_notify", conn, "ping_ack", ref) to the ping's reply_to."""
    link = Link()
    a, b = Rec("a"), Rec("b")
    pa, pb = Ref(), Ref()
    link.c2s(link.h.ping(pa, a))
    link.c2s(link.h.ping(pb, b))
    pings = [e for e in link.sev if isinstance(e, PingReceived)]
    payloads = [int.from_bytes(p.ping_data, "big") for p in pings]
    assert len(set(payloads)) == 2 and min(payloads) >= 10000
    cmds = link.s2c()  # h2's server acked both
    assert [(c.to, c.msg) for c in cmds if isinstance(c, Deliver)] == [
        (a, ("gun_notify", CONN, "ping_ack", pa)),
        (b, ("gun_notify", CONN, "ping_ack", pb)),
    ]
    # Unexpected acks are ignored.
    assert (
        delivered(link.s2c(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + (12345).to_bytes(8, "big")))
        == []
    )


def test_keepalive_pings_and_acks() -> None:
    """Gun 4.6: PING with payload 0 every ``keepalive`` ms; acks lower the count;
    unsolicited acks are tolerated (2.4)."""
    link = Link({"keepalive": 5000, "keepalive_tolerance": 2})
    assert link.h.keepalive_interval() == 5000
    for _ in range(5):
        link.c2s(link.h.keepalive())
        link.s2c()  # acked each time: never over the tolerance
    pings = [e for e in link.sev if isinstance(e, PingReceived)]
    assert len(pings) == 5 and all(p.ping_data == bytes(8) for p in pings)
    ack0 = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + bytes(8)
    assert link.h.handle(ack0 * 3) == []  # unsolicited, count stays >= 0
    assert link.h._pings_unack == 0
    assert Link().h.keepalive_interval() is None


def test_keepalive_tolerance() -> None:
    """rfc7540_SUITE keepalive_tolerance: too many unacked pings at the next tick is
    a connection error no_error."""
    link = Link({"keepalive": 1000, "keepalive_tolerance": 2})
    rt = Rec()
    link.get(rt=rt)
    link.h.keepalive()
    link.h.keepalive()
    cmds = link.h.keepalive()
    text = "The number of unacknowledged pings exceed the configured tolerance value."
    assert delivered(cmds) == [("gun_error", CONN, ("no_error", text))]
    assert cmds[-1] == Close(("error", ("connection_error", "no_error", text)))
    link.c2s(cmds)
    [term] = [e for e in link.sev if isinstance(e, ConnectionTerminated)]
    assert term.error_code == ErrorCodes.NO_ERROR


def test_notify_settings_changed() -> None:
    """Gun 2 (2.2): ("gun_notify", conn, "settings_changed", map) to the owner, with
    cowlib's defaults for what the server did not send."""
    link2 = Link(
        {"notify_settings_changed": True},
        start=False,
        server_settings={
            SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            SettingCodes.MAX_CONCURRENT_STREAMS: 50,
        },
    )
    cmds = link2.s2c()
    [(to, msg)] = [(c.to, c.msg) for c in cmds if isinstance(c, Deliver)]
    assert to is link2.owner
    assert msg == (
        "gun_notify",
        CONN,
        "settings_changed",
        {
            "header_table_size": 4096,
            "enable_push": False,
            "max_concurrent_streams": 50,
            "initial_window_size": 65535,
            "max_frame_size": 16384,
            "max_header_list_size": "infinity",
            "enable_connect_protocol": True,
        },
    )
    # Later SETTINGS are notified too.
    link2.srv.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 7})
    [msg2] = delivered(link2.s2c())
    assert msg2[3]["max_concurrent_streams"] == 7
    # Off by default.
    assert delivered(Link(start=False).s2c()) == []


def test_preface_timeout() -> None:
    link = Link(start=False)
    rt = Rec()
    link.get(rt=rt)
    cmds = link.h.timeout("preface")
    text = "The preface was not received in a reasonable amount of time."
    assert delivered(cmds) == [("gun_error", CONN, ("protocol_error", text))]
    assert cmds[-1] == Close(("error", ("connection_error", "protocol_error", text)))


def test_settings_timeout() -> None:
    link = Link(start=False)
    cmds = link.h.timeout("settings")
    assert cmds[-1] == Close(
        (
            "error",
            (
                "connection_error",
                "settings_timeout",
                "The SETTINGS ack was not received within the configured time. (RFC7540 6.5.3)",
            ),
        )
    )
    ok = Link()
    assert ok.h.timeout("settings") == [] and ok.h.timeout("preface") == []
    assert ok.h.timeout("ws99:closing") == []


# ======================================================================================
# 9. Errors: preface, protocol errors, limits


HTTP1_TEXT = "Invalid connection preface received. Appears to be an HTTP/1 response? (RFC7540 3.5)"
PREFACE_TEXT = "Invalid connection preface received. (RFC7540 3.5)"


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n", HTTP1_TEXT),
        (b"HTTP/1.0 200 OK\r\n\r\n", HTTP1_TEXT),
        (b"garbage garbage garbage", PREFACE_TEXT),
        (b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + bytes(8), PREFACE_TEXT),  # PING first
        (b"\x00\x00\x00\x04\x01\x00\x00\x00\x00", PREFACE_TEXT),  # SETTINGS ack first
    ],
)
def test_preface_errors(data: bytes, text: str) -> None:
    """rfc7540_SUITE: readable protocol_error, special text for an HTTP/1 reply."""
    link = Link(start=False)
    rt = Rec()
    link.get(rt=rt)
    cmds = link.h.handle(data)
    assert delivered(cmds) == [("gun_error", CONN, ("protocol_error", text))]
    assert cmds[-1] == Close(("error", ("connection_error", "protocol_error", text)))
    assert delivered(link.h.close(cmds[-1].reason))[0][3][0] == "closed"


def test_preface_bytes_may_come_one_by_one() -> None:
    link = Link(start=False)
    data = link.srv.data_to_send()
    cmds: list[Any] = []
    for i in range(len(data)):
        cmds += link.h.handle(data[i : i + 1])
    assert CancelTimer("preface") in cmds
    assert not any(isinstance(c, Close) for c in cmds)


def test_protocol_error_is_a_connection_error() -> None:
    """Gun's connection_error/2: every distinct reply_to with an open stream gets
    ("gun_error", conn, (code, text)); GOAWAY; Close(("error", ...)). What came
    before the error in the same read is still delivered."""
    link = Link()
    a, b = Rec("a"), Rec("b")
    r1 = link.get(rt=a)
    link.get(rt=a)
    link.get(rt=b)
    link.respond(1, body=b"ok")
    bad = b"\x00\x00\x01\x00\x00\x00\x00\x00\x63x"  # DATA on idle stream 99
    cmds = link.s2c(bad)
    msgs = [(c.to, c.msg) for c in cmds if isinstance(c, Deliver)]
    assert msgs[:2] == [
        (a, ("gun_response", CONN, r1, "nofin", 200, [])),
        (a, ("gun_data", CONN, r1, "fin", b"ok")),
    ]
    errs = msgs[2:]
    assert [to for to, _ in errs] == [a, b]
    code, text = errs[0][1][2]
    assert code == "protocol_error" and isinstance(text, str) and text
    assert cmds[-1] == Close(("error", ("connection_error", "protocol_error", text)))
    [term] = [e for e in link.sev if isinstance(e, ConnectionTerminated)]
    assert term.error_code == ErrorCodes.PROTOCOL_ERROR


def test_server_enable_push_is_a_protocol_error() -> None:
    link = Link(start=False)
    frame = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x02\x00\x00\x00\x01"
    cmds = link.h.handle(frame)
    assert cmds[-1].reason[1][:2] == ("connection_error", "protocol_error")


def test_frame_too_large() -> None:
    link = Link()
    cmds = link.h.handle(b"\x00\x80\x00\x00\x00\x00\x00\x00\x01")
    assert cmds[-1].reason[1][:2] == ("connection_error", "frame_size_error")


def test_fragmented_header_block_limit() -> None:
    """cowlib's max_fragmented_header_block_size (2.1): enhance_your_calm."""
    link = Link()
    link.get()
    big = [(f"x-h{i}".encode(), bytes(range(48, 48 + 64)) * 4) for i in range(200)]
    link.srv.send_headers(1, [(b":status", b"200"), *big], end_stream=True)
    cmds = link.s2c()
    assert cmds[-1].reason[1] == (
        "connection_error",
        "enhance_your_calm",
        "Larger fragmented header block size than we are willing to accept.",
    )


def test_max_headers() -> None:
    link = Link({"max_headers": 3})
    link.get()
    link.respond(1, headers=[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    cmds = link.s2c()
    assert cmds[-1].reason[1][:2] == ("connection_error", "enhance_your_calm")


def test_h2_exceptions_during_operations_never_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    link = Link()

    def boom(*a: Any, **kw: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(link.h._h2, "send_headers", boom)
    cmds = link.h.request(Ref(), Rec(), "GET", "/", [], b"", {})
    assert cmds[-1].reason[1][:2] == ("connection_error", "internal_error")
    assert "boom" in cmds[-1].reason[1][2]


def test_request_after_close_is_refused() -> None:
    link = Link()
    link.h.handle_eof()
    ref = Ref()
    assert delivered(link.h.request(ref, Rec(), "GET", "/", [], b"", {})) == [
        ("gun_error", CONN, ref, "closing")
    ]
    assert link.h.ping(Ref(), Rec()) == [] and link.h.keepalive() == []


# ======================================================================================
# 10. Websocket over HTTP/2 (RFC 8441)


WS_ON = {SettingCodes.ENABLE_CONNECT_PROTOCOL: 1}


class WsPeer:
    """wsproto's server frame layer on one HTTP/2 stream of the h2 server."""

    def __init__(self, link: Link, sid: int, extensions: list[Any] | None = None) -> None:
        self.link = link
        self.sid = sid
        self.ws = Connection(ConnectionType.SERVER, extensions=extensions or [])
        self.raw = b""

    def feed(self) -> list[Any]:
        """Events for the DATA the server received on this stream since last time."""
        data = b""
        for e in self.link.sev:
            if (
                isinstance(e, DataReceived)
                and e.stream_id == self.sid
                and not getattr(e, "_seen", False)
            ):
                data += e.data
                e._seen = True  # type: ignore[attr-defined]
        self.raw += data
        self.ws.receive_data(data)
        return list(self.ws.events())

    def send(self, event: Any, end: bool = False) -> None:
        self.link.srv.send_data(self.sid, self.ws.send(event), end_stream=end)


def upgrade(
    link: Link,
    rt: Rec | None = None,
    opts: dict[str, Any] | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> tuple[Any, list[Any]]:
    ref = Ref()
    cmds = link.h.ws_upgrade(ref, rt or Rec(), "/ws", headers or [], opts or {})
    link.c2s(cmds)
    return ref, cmds


def test_ws_upgrade_sends_extended_connect() -> None:
    """RFC 8441 4: :method CONNECT, :protocol websocket, :scheme, :path,
    :authority; sec-websocket-version 13; no key, no connection/upgrade."""
    link = Link(server_settings=WS_ON)
    upgrade(
        link,
        opts={"protocols": [("chat", object())], "compress": True},
        headers=[("authorization", "Bearer x")],
    )
    [req] = reqs(link.sev)
    hs = dict(req.headers)
    assert hs[b":method"] == b"CONNECT" and hs[b":protocol"] == b"websocket"
    assert hs[b":scheme"] == b"http" and hs[b":path"] == b"/ws"
    assert hs[b":authority"] == b"example.com:8080"
    assert hs[b"sec-websocket-version"] == b"13"
    assert hs[b"sec-websocket-protocol"] == b"chat"
    assert hs[b"sec-websocket-extensions"].startswith(b"permessage-deflate")
    assert hs[b"authorization"] == b"Bearer x"
    assert b"sec-websocket-key" not in hs and b"upgrade" not in hs and b"connection" not in hs
    assert req.stream_ended is None


def test_ws_upgrade_refused_without_enable_connect_protocol() -> None:
    link = Link()
    rt = Rec()
    ref, cmds = upgrade(link, rt)
    [msg] = delivered(cmds)
    assert msg[:3] == ("gun_error", CONN, ref) and msg[3][0] == "badstate"
    assert "SETTINGS_ENABLE_CONNECT_PROTOCOL" in msg[3][1]
    assert reqs(link.sev) == []


def test_ws_upgrade_waits_for_the_servers_settings() -> None:
    """gunpy: a ws_upgrade made before the server's SETTINGS waits for them."""
    link = Link(server_settings=WS_ON, start=False)
    rt = Rec()
    ref, cmds = upgrade(link, rt)
    assert cmds == [] and link.h.stream_info(ref) is not None and link.h.down() == [ref]
    link.s2c()
    [req] = reqs(link.sev)
    assert dict(req.headers)[b":protocol"] == b"websocket"


def _open_ws(
    link: Link,
    rt: Rec | None = None,
    opts: dict[str, Any] | None = None,
    sid: int = 1,
    extensions: list[Any] | None = None,
    resp: list[tuple[bytes, bytes]] | None = None,
) -> tuple[Any, WsPeer, list[Any]]:
    rt = rt or Rec()
    ref, _ = upgrade(link, rt, opts)
    link.respond(sid, headers=resp or [], body=None, end=False)
    cmds = link.s2c()
    return ref, WsPeer(link, sid, extensions), cmds


def test_ws_frames_both_ways() -> None:
    """2xx -> gun_upgrade; frames in DATA become gun_ws; ws_send frames are masked
    (RFC 8441 5 keeps RFC 6455 masking)."""
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, peer, cmds = _open_ws(link, rt, resp=[(b"x-srv", b"1")])
    assert delivered(cmds) == [("gun_upgrade", CONN, ref, ["websocket"], [("x-srv", "1")])]
    peer.send(TextMessage("héllo"))
    peer.send(BytesMessage(b"\x00\x01"))
    assert delivered(link.s2c()) == [
        ("gun_ws", CONN, ref, ("text", "héllo")),
        ("gun_ws", CONN, ref, ("binary", b"\x00\x01")),
    ]
    link.c2s(link.h.ws_send(ref, rt, [("text", "one"), ("binary", b"two")]))
    evs = peer.feed()
    assert [(type(e), e.data) for e in evs] == [(TextMessage, "one"), (BytesMessage, b"two")]
    assert peer.raw[1] & 0x80  # masked
    # Server pings are answered automatically, silently.
    peer.send(Ping(b"p"))
    assert delivered(link.s2c()) == []
    assert [type(e) for e in peer.feed()] == [type(Ping(b"").response())]


def test_several_ws_streams_beside_http_and_one_closes() -> None:
    """Gun 4.7: several Websocket streams and HTTP streams on one connection; the
    close of one Websocket ends only its stream (END_STREAM), not the connection."""
    link = Link(server_settings=WS_ON)
    a, b = Rec("a"), Rec("b")
    ra, pa, _ = _open_ws(link, a, sid=1)
    rh = link.get(rt=a)  # stream 3
    rb, pb, _ = _open_ws(link, b, sid=5)
    pa.send(TextMessage("to a"))
    pb.send(TextMessage("to b"))
    link.respond(3, body=b"http")
    cmds = link.s2c()
    assert [(c.to, c.msg) for c in cmds if isinstance(c, Deliver)] == [
        (a, ("gun_ws", CONN, ra, ("text", "to a"))),
        (b, ("gun_ws", CONN, rb, ("text", "to b"))),
        (a, ("gun_response", CONN, rh, "nofin", 200, [])),
        (a, ("gun_data", CONN, rh, "fin", b"http")),
    ]
    # The server closes stream a's Websocket.
    pa.send(CloseConnection(code=1000, reason="bye"))
    cmds = link.s2c()
    assert delivered(cmds) == [("gun_ws", CONN, ra, ("close", 1000, "bye"))]
    assert not any(isinstance(c, (Close, Closing)) for c in cmds)
    [close_reply] = peer_events = pa.feed()
    assert isinstance(close_reply, CloseConnection) and close_reply.code == 1000
    ends = [e for e in link.sev if isinstance(e, StreamEnded) and e.stream_id == 1]
    assert ends, peer_events
    assert link.h.stream_info(ra) is None and link.h.down() == [rb]
    # b still works, and so do new requests.
    link.c2s(link.h.ws_send(rb, b, [("text", "still")]))
    assert [e.data for e in pb.feed()] == ["still"]
    link.get()
    assert len(reqs(link.sev)) == 4


def test_ws_user_close_then_server_close() -> None:
    """The user's close: close frame sent, timer started; the server's close ends
    the stream only."""
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, peer, _ = _open_ws(link, rt, opts={"closing_timeout": 2000})
    cmds = link.h.ws_send(ref, rt, ["close"])
    link.c2s(cmds)
    assert StartTimer("ws1:closing", 2000) in cmds
    [ev] = peer.feed()
    assert isinstance(ev, CloseConnection)
    peer.send(ev.response(), end=True)
    cmds = link.s2c()
    assert delivered(cmds) == [("gun_ws", CONN, ref, "close")]
    assert CancelTimer("ws1:closing") in cmds
    assert not any(isinstance(c, Close) for c in cmds)
    assert link.h.down() == []
    # The server had ended its side: our END_STREAM closes the stream.
    assert [e for e in link.sev if isinstance(e, StreamEnded) and e.stream_id == 1]
    assert link.srv.streams[1].closed
    # The closing timer firing later is harmless.
    assert link.h.timeout("ws1:closing") == []


def test_ws_user_close_answered_without_end_stream() -> None:
    """hypercorn answers a client's close with its close frame but keeps its side of
    the stream open (and drops DATA sent after it): RST_STREAM NO_ERROR, no DATA."""
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, peer, _ = _open_ws(link, rt)
    link.c2s(link.h.ws_send(ref, rt, ["close"]))
    [ev] = peer.feed()
    peer.send(ev.response())
    link.sev.clear()
    cmds = link.s2c()
    assert delivered(cmds) == [("gun_ws", CONN, ref, "close")]
    assert [type(e) for e in link.sev] == [StreamReset]
    assert link.sev[0].error_code == ErrorCodes.NO_ERROR
    assert link.h.down() == []


def test_ws_server_close_reply_carries_end_stream() -> None:
    """The server closes: our close reply and END_STREAM go in one DATA frame."""
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, peer, _ = _open_ws(link, rt)
    peer.send(CloseConnection(code=1001, reason=""))
    link.sev.clear()
    link.s2c()
    [data] = [e for e in link.sev if isinstance(e, DataReceived)]
    assert data.stream_ended is not None and data.data
    [ev] = peer.feed()
    assert isinstance(ev, CloseConnection) and ev.code == 1000


def test_ws_closing_timeout_ends_the_stream() -> None:
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, peer, _ = _open_ws(link, rt)
    link.c2s(link.h.ws_send(ref, rt, [("close", 1000, "")]))
    cmds = link.h.timeout("ws1:closing")
    link.c2s(cmds)
    assert not any(isinstance(c, Close) for c in cmds)
    # Our close is long gone and the server's side is open: RST_STREAM NO_ERROR.
    [reset] = [e for e in link.sev if isinstance(e, StreamReset)]
    assert reset.stream_id == 1 and reset.error_code == ErrorCodes.NO_ERROR
    assert link.h.down() == []


def test_ws_server_ends_stream_without_close() -> None:
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, peer, _ = _open_ws(link, rt)
    link.srv.end_stream(1)
    cmds = link.s2c()
    assert delivered(cmds) == [("gun_error", CONN, ref, "closed")]
    assert not any(isinstance(c, Close) for c in cmds)
    assert link.h.down() == []


def test_ws_upgrade_refused_by_the_server() -> None:
    """A non-2xx answer is an ordinary response (Gun 4.7); our side of the CONNECT
    stream is then ended so the stream goes away."""
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, _ = upgrade(link, rt)
    link.respond(1, 400, body=b"nope")
    assert delivered(link.s2c()) == [
        ("gun_response", CONN, ref, "nofin", 400, []),
        ("gun_data", CONN, ref, "fin", b"nope"),
    ]
    assert [e for e in link.sev if isinstance(e, StreamEnded) and e.stream_id == 1]
    assert link.h.down() == []


def test_ws_upgrade_counts_against_max_concurrent_streams() -> None:
    """rfc7540_SUITE max_concurrent_streams with ws_upgrade."""
    link = Link(server_settings={**WS_ON, SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    _open_ws(link)
    rt = Rec()
    ref, cmds = upgrade(link, rt)
    assert delivered(cmds) == [
        (
            "gun_error",
            CONN,
            ref,
            ("stream_error", "too_many_streams", "Maximum concurrency limit has been reached."),
        )
    ]


@pytest.mark.parametrize(
    ("header", "value", "text"),
    [
        (
            b"sec-websocket-extensions",
            b"x-unknown",
            "The sec-websocket-extensions header is invalid. (RFC6455 9.1, RFC7692 7)",
        ),
        (
            b"sec-websocket-protocol",
            b"other",
            "The sec-websocket-protocol header is invalid. (RFC6455 4.1)",
        ),
    ],
)
def test_ws_bad_handshake_answer(header: bytes, value: bytes, text: str) -> None:
    """Gun's headers_frame_connect: RST_STREAM cancel and a stream error."""
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, _ = upgrade(link, rt)
    link.respond(1, headers=[(header, value)], body=None, end=False)
    cmds = link.s2c()
    assert delivered(cmds) == [("gun_error", CONN, ref, ("stream_error", "cancel", text))]
    [reset] = [e for e in link.sev if isinstance(e, StreamReset)]
    assert reset.error_code == ErrorCodes.CANCEL


def test_ws_compression_and_subprotocol() -> None:
    link = Link(server_settings=WS_ON)
    rt = Rec()

    class Chat:
        @staticmethod
        def init(reply_to: Any, ref: Any, headers: Any, opts: Any) -> Any:
            return [reply_to, ref]

        @staticmethod
        def handle(frame: Any, state: Any) -> Any:
            state[0].send(("chat", state[1], frame))
            return ("ok", 1, state)

    ext = PerMessageDeflate()
    offer = {"compress": True, "protocols": [("chat", Chat)]}
    ref, _ = upgrade(link, rt, offer)
    [req] = reqs(link.sev)
    accepted = ext.accept(dict(req.headers)[b"sec-websocket-extensions"].decode())
    assert isinstance(accepted, str)
    link.respond(
        1,
        headers=[
            (b"sec-websocket-extensions", f"permessage-deflate; {accepted}".encode()),
            (b"sec-websocket-protocol", b"chat"),
        ],
        body=None,
        end=False,
    )
    link.s2c()
    peer = WsPeer(link, 1, [ext])
    peer.send(TextMessage("z" * 1000))
    assert delivered(link.s2c()) == [("chat", ref, ("text", "z" * 1000))]
    link.c2s(link.h.ws_send(ref, rt, [("text", "y" * 1000)]))
    [ev] = peer.feed()
    assert ev.data == "y" * 1000
    assert len(peer.raw) < 100  # compressed


def test_ws_flow() -> None:
    """Gun 4.5: the Websocket budget counts gun_ws messages; update_flow resumes."""
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, peer, _ = _open_ws(link, rt, opts={"flow": 1})
    peer.send(TextMessage("1"))
    peer.send(TextMessage("2"))
    peer.send(TextMessage("3"))
    assert delivered(link.s2c()) == [("gun_ws", CONN, ref, ("text", "1"))]
    cmds = link.h.update_flow(ref, 1)
    assert delivered(cmds) == [("gun_ws", CONN, ref, ("text", "2"))]
    assert not any(isinstance(c, SetActive) for c in cmds)  # the socket is never paused
    assert delivered(link.h.update_flow(ref, 5)) == [("gun_ws", CONN, ref, ("text", "3"))]


def test_ws_keepalive_timer() -> None:
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, peer, cmds = _open_ws(link, rt, opts={"keepalive": 1000})
    assert StartTimer("ws1:keepalive", 1000) in cmds
    cmds = link.h.timeout("ws1:keepalive")
    link.c2s(cmds)
    assert StartTimer("ws1:keepalive", 1000) in cmds
    assert [type(e) for e in peer.feed()] == [Ping]
    # Cancelled with the stream.
    cmds = link.h.cancel(ref, rt)
    assert CancelTimer("ws1:keepalive") in cmds


def test_ws_closing_sends_1001() -> None:
    """gunpy: a graceful close also closes the Websocket streams (1001)."""
    link = Link(server_settings=WS_ON)
    ref, peer, _ = _open_ws(link)
    cmds = link.h.closing("shutdown")
    link.c2s(cmds)
    assert cmds[-1] == Closing(15000)
    [ev] = peer.feed()
    assert isinstance(ev, CloseConnection) and ev.code == 1001
    peer.send(ev.response(), end=True)
    cmds = link.s2c()
    assert cmds[-1] == Close("normal")


def test_ws_misuse() -> None:
    link = Link(server_settings=WS_ON)
    rt = Rec()
    ref, _, _ = _open_ws(link, rt)
    assert delivered(link.h.data(ref, rt, "fin", b"x"))[0][3][0] == "badstate"
    http = link.get(rt=rt)
    assert delivered(link.h.ws_send(http, rt, ["ping"]))[0][3] == (
        "badstate",
        "The stream is not a Websocket stream (yet).",
    )
    unknown = Ref()
    assert delivered(link.h.ws_send(unknown, rt, ["ping"])) == [
        ("gun_error", CONN, unknown, ("badstate", "The stream cannot be found."))
    ]


# ======================================================================================
# 11. Robustness: random and mutated server bytes never make handle raise


def _server_script() -> bytes:
    """Valid server bytes for a little session: SETTINGS, responses, push, ping."""
    link = Link(start=False, server_settings=WS_ON)
    link.get()
    link.get(method="POST", body=b"abc")
    link.c2s(link.h.ping(Ref(), Rec()))
    link.srv.push_stream(1, 2, PUSH_HEADERS)
    link.respond(1, headers=[(b"content-type", b"text/html")], body=b"hello")
    link.srv.send_headers(3, [(b":status", b"100")])
    link.srv.send_headers(3, [(b":status", b"200")])
    link.srv.send_data(3, b"x" * 100)
    link.srv.send_headers(3, [(b"x-t", b"1")], end_stream=True)
    link.respond(2, body=b"pushed")
    link.srv.ping(b"12345678")
    return bytes(link.srv.data_to_send()) + goaway(3)


SCRIPT = _server_script()
_ALLOWED = (Send, Deliver, Close, Closing, StartTimer, CancelTimer, SetActive, SwitchProtocol)


def _drive(data: bytes, cuts: list[int]) -> None:
    link = Link(start=False, server_settings=WS_ON)
    link.get()
    link.get(method="POST", body=b"abc")
    pos = 0
    for cut in [*sorted(cuts), len(data)]:
        for c in link.h.handle(data[pos:cut]):
            assert isinstance(c, _ALLOWED)
        pos = max(pos, cut)
    for c in link.h.close("closed"):
        assert isinstance(c, Deliver)


def test_script_is_valid() -> None:
    link = Link(start=False, server_settings=WS_ON)
    link.get()
    link.get(method="POST", body=b"abc")
    cmds = link.h.handle(SCRIPT)
    assert not any(isinstance(c, Close) and c.reason != "normal" for c in cmds)
    assert cmds[-1] == Close("normal")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=5))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    _drive(data, cuts)
    link = Link(start=False)
    # After a valid preface too.
    link.h.handle(link.srv.data_to_send())
    for c in link.h.handle(data):
        assert isinstance(c, _ALLOWED)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(SCRIPT) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(min_value=0, max_value=len(SCRIPT)), max_size=4),
)
def test_mutated_server_bytes_never_raise(muts: list[tuple[int, int]], cuts: list[int]) -> None:
    data = bytearray(SCRIPT)
    for i, v in muts:
        data[i] = v
    _drive(bytes(data), cuts)
