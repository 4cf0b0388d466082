"""HTTP/2 through the connection actor: hypercorn smoke tests, then a scripted server.

The handler's behaviour is unit-tested against h2's server role in
tests/unit/test_http2_handler.py.  Here the whole stack runs: the actor, its
socket, its timers.  The first tests check that the actor selects and drives the
handler against a real HTTP/2 server (hypercorn; more in test_http2_peers.py).
The rest drive a scripted server (:class:`H2Server`): h2 in the SERVER role over a
connection accepted by ``gunpy.testing``'s ``scripted_origin``, plus hand-made
frames (hyperframe) where h2 would refuse to write them; every frame gunpy sends is parsed and kept, so the
tests assert the wire as Gun's rfc7540_SUITE does.  Each docstring names the RFC
9113 section and the Gun test (rfc7540_SUITE, shutdown_SUITE, flow_SUITE,
ping_SUITE) or gun-reference section it mirrors.  Nothing sleeps: the tests wait
for messages, for frames, or for the ack of a PING the server sends as a barrier
(gunpy answers frames in order, so once the ack is in, everything gunpy did
about the earlier frames is done too).  Every test starts with an empty mailbox and
must leave no Gun message unread (``gun_mailbox``).
"""

from __future__ import annotations

import errno
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAckReceived,
    PingReceived,
    RequestReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.settings import SettingCodes, Settings
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

import gunpy
from gunpy import ANY
from gunpy.testing import (
    GunMailbox,
    OriginConn,
    OriginFactory,
    ScriptedOrigin,
    TLSPair,
    assert_receive,
    down,
    gun_conn_error,
    gun_down,
    gun_error,
    gun_up,
    refute_receive,
)
from tests.peers import Peer, TLSFiles

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY_TEXT = "The connection is going away."
PREFACE_TEXT = "Invalid connection preface received. (RFC7540 3.5)"
PREFACE_HTTP1_TEXT = (
    "Invalid connection preface received. Appears to be an HTTP/1 response? (RFC7540 3.5)"
)


# --------------------------------------------------------------------------- the scripted server


class _ServerConnection(H2Connection):
    """h2's server role, able to finish streams after a GOAWAY (python-hyper/h2 #1181)."""

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Event]]:
        ev = ConnectionTerminated()
        ev.error_code = ErrorCodes(frame.error_code)
        ev.last_stream_id = frame.last_stream_id
        ev.additional_data = frame.additional_data or None
        return [], [ev]


def frame_bytes(f: Frame) -> bytes:
    return bytes(f.serialize())


def goaway_frame(last: int, code: int = 0) -> bytes:
    f = GoAwayFrame(0)
    f.last_stream_id = last
    f.error_code = code
    return frame_bytes(f)


class H2Server:
    """The server side of one accepted connection, driven by the test thread.

    With ``h2=True`` (the default) every byte read goes to h2 in the SERVER role
    (which answers SETTINGS and PINGs itself) and its events pile up in ``events``;
    with ``h2=False`` the test writes every byte itself.  Either way every frame
    gunpy sent is parsed (hyperframe) into ``frames``, in order.  All waits have a
    timeout; none sleeps.
    """

    def __init__(
        self,
        oc: OriginConn,
        settings: dict[SettingCodes, int] | None = None,
        *,
        h2: bool = True,
    ) -> None:
        self.oc = oc
        self.use_h2 = h2
        self.h2 = _ServerConnection(H2Configuration(client_side=False, header_encoding=None))
        if settings:
            initial = {SettingCodes.MAX_CONCURRENT_STREAMS: 100}
            initial.update(settings)
            self.h2.local_settings = Settings(client=False, initial_values=initial)
        self.events: list[Event] = []
        self.frames: list[Frame] = []
        self.closed = False
        self._raw = b""
        self._preface = False
        self._cursor = 0  # frames before it were consumed by expect_frame
        self._pings = 0

    # -- reading

    def read(self, timeout: float) -> None:
        """One recv (up to ``timeout`` s): parse the frames, feed h2, send its answers."""
        try:
            data = self.oc.recv(max(timeout, 0.001) * 1000)  # b"" once gunpy closed (or reset)
        except TimeoutError:
            return
        if not data:
            self.closed = True
            return
        self._parse(data)
        if self.use_h2:
            self.events += self.h2.receive_data(data)
            self.flush()

    def _parse(self, data: bytes) -> None:
        self._raw += data
        if not self._preface:
            if len(self._raw) < len(PREFACE):
                return
            assert self._raw.startswith(PREFACE), self._raw
            self._raw = self._raw[len(PREFACE) :]
            self._preface = True
        while len(self._raw) >= 9:
            f, length = Frame.parse_frame_header(memoryview(self._raw[:9]))
            if len(self._raw) < 9 + length:
                return
            f.parse_body(memoryview(self._raw[9 : 9 + length]))
            self._raw = self._raw[9 + length :]
            self.frames.append(f)

    def _until(self, found: Callable[[], Any], what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            r = found()
            if r is not None:
                return r
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(
                    f"no {what} ({'closed' if self.closed else 'timeout'});"
                    f" events {self.events!r}; frames {self.frames[self._cursor :]!r}"
                )
            self.read(left)

    def expect(
        self,
        kind: type[Any] | tuple[type[Any], ...],
        pred: Callable[[Any], bool] | None = None,
        timeout: float = 5.0,
    ) -> Any:
        """The first h2 event of type ``kind`` (matching ``pred``), taken out of ``events``."""

        def found() -> Any:
            for i, e in enumerate(self.events):
                if isinstance(e, kind) and (pred is None or pred(e)):
                    del self.events[i]
                    return e
            return None

        return self._until(found, getattr(kind, "__name__", repr(kind)), timeout)

    def expect_frame(
        self, kind: type[Any], pred: Callable[[Any], bool] | None = None, timeout: float = 5.0
    ) -> Any:
        """The next frame gunpy sent of type ``kind`` (matching ``pred``)."""

        def found() -> Any:
            for i in range(self._cursor, len(self.frames)):
                f = self.frames[i]
                if isinstance(f, kind) and (pred is None or pred(f)):
                    self._cursor = i + 1
                    return f
            return None

        return self._until(found, kind.__name__, timeout)

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Read until gunpy closes the connection."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            assert left > 0, f"gunpy did not close the connection; frames {self.frames!r}"
            self.read(left)

    # -- writing

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.oc.send(data)

    def send(self, data: bytes) -> None:
        """Bytes written by hand (h2 is not told)."""
        self.oc.send(data)

    def start(self) -> None:
        """The server preface, then wait until gunpy has acked our SETTINGS (so they are
        in force on its side: Gun's ``handshake_completed``)."""
        self.h2.initiate_connection()
        self.flush()
        self.expect(SettingsAcknowledged)

    def request(self, timeout: float = 5.0) -> RequestReceived:
        ev: RequestReceived = self.expect(RequestReceived, timeout=timeout)
        return ev

    def respond(
        self,
        sid: int,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> None:
        self.h2.send_headers(
            sid,
            [(b":status", str(status).encode()), *(headers or [])],
            end_stream=body is None and end,
        )
        if body is not None:
            self.h2.send_data(sid, body, end_stream=end)
        self.flush()

    def barrier(self) -> None:
        """PING gunpy and wait for the ack: gunpy has handled every earlier frame."""
        self._pings += 1
        payload = b"barrier" + bytes([self._pings])
        self.h2.ping(payload)
        self.flush()
        self.expect(PingAckReceived, lambda e: e.ping_data == payload)


def headers_of(req: RequestReceived) -> dict[bytes, bytes]:
    return dict(req.headers)


# --------------------------------------------------------------------------- the client side


@pytest.fixture(autouse=True)
def _fresh_mailbox(gun_mailbox: GunMailbox) -> Iterator[None]:
    """An empty mailbox for each test; a Gun message left unread fails it."""
    yield


@pytest.fixture
def origin(scripted_origin: OriginFactory) -> ScriptedOrigin:
    return scripted_origin()


def open_h2(origin: ScriptedOrigin, **opts: Any) -> gunpy.Pid:
    """``origin.open`` with prior knowledge and ``retry: 0`` unless given; closed after
    the test."""
    return origin.open({"protocols": ["http2"], **opts})


def connect(
    origin: ScriptedOrigin,
    settings: dict[SettingCodes, int] | None = None,
    *,
    start: bool = True,
    h2: bool = True,
    **opts: Any,
) -> tuple[gunpy.Pid, H2Server]:
    """Open, wait for gun_up, accept on the origin, and (``start``) do the handshake."""
    conn = open_h2(origin, **opts)
    assert gunpy.await_up(conn) == ("ok", "http2")
    srv = H2Server(origin.accept(), settings, h2=h2)
    if start:
        srv.start()
    return conn, srv


# =========================================================================== hypercorn


def test_prior_knowledge_h2c(hypercorn_server: Peer) -> None:
    """protocols ["http2"] over TCP: no negotiation, the preface is sent at once."""
    ok, conn = gunpy.open("127.0.0.1", hypercorn_server.port, {"protocols": ["http2"], "retry": 0})
    assert gunpy.await_up(conn) == ("ok", "http2")
    ref = gunpy.get(conn, "/x")
    status = gunpy.await_(conn, ref)
    assert status[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/2 /x\n")
    refs = [gunpy.post(conn, "/echo", [], b"body %d" % i) for i in range(10)]
    for i, r in enumerate(refs):  # ten concurrent streams on one connection
        assert gunpy.await_(conn, r)[:3] == ("response", "nofin", 200)
        assert gunpy.await_body(conn, r) == ("ok", b"body %d" % i)
    gunpy.close(conn)


def test_alpn_h2_is_the_tls_default(hypercorn_tls_server: Peer, trustme_ca: TLSFiles) -> None:
    """Gun 3.1: over TLS the default protocols are [http2, http]; ALPN picks h2."""
    ok, conn = gunpy.open(
        "127.0.0.1",
        hypercorn_tls_server.port,
        {"transport": "tls", "retry": 0, "tls_opts": {"cacertfile": str(trustme_ca.ca_file)}},
    )
    assert gunpy.await_up(conn) == ("ok", "http2")
    ref = gunpy.get(conn, "/y")
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/2 /y\n")
    gunpy.close(conn)


def test_alpn_http11_when_only_http_is_offered(
    hypercorn_tls_server: Peer, trustme_ca: TLSFiles
) -> None:
    ok, conn = gunpy.open(
        "127.0.0.1",
        hypercorn_tls_server.port,
        {
            "transport": "tls",
            "protocols": ["http"],
            "retry": 0,
            "tls_opts": {"cacertfile": str(trustme_ca.ca_file)},
        },
    )
    assert gunpy.await_up(conn) == ("ok", "http")
    ref = gunpy.get(conn, "/z")
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref) == ("ok", b"HTTP/1.1 /z\n")
    gunpy.close(conn)


def test_ping_ack(hypercorn_server: Peer) -> None:
    """gun:ping/1: the ack is ("gun_notify", conn, "ping_ack", ref); await_ sees it."""
    ok, conn = gunpy.open("127.0.0.1", hypercorn_server.port, {"protocols": ["http2"], "retry": 0})
    assert gunpy.await_up(conn) == ("ok", "http2")
    ref = gunpy.ping(conn)
    assert gunpy.receive(("gun_notify", conn, "ping_ack", ref), after=2000)
    ref2 = gunpy.ping(conn)
    assert gunpy.await_(conn, None) == ("notify", "ping_ack", ref2)
    gunpy.close(conn)


def test_ping_on_http11_ends_the_connection(origin: ScriptedOrigin) -> None:
    """ping_SUITE: on HTTP/1.1 a ping is a connection error."""
    conn = origin.open({"retry": 0})
    assert gunpy.await_up(conn) == ("ok", "http")
    origin.accept()
    ref = gunpy.ping(conn)
    assert assert_receive(gun_down(conn), after=2000) == (
        "gun_down",
        conn,
        "http",
        ("error", ("ping_unsupported_by_protocol", ref)),
        [],
    )


# =========================================================================== scripted server
# --------------------------------------------------------------------------- :authority


def listen(scripted_origin: OriginFactory, host: str, port: int, **kw: Any) -> ScriptedOrigin:
    """An origin on ``host``:``port`` (skips the test when it cannot be bound)."""
    try:
        return scripted_origin(host=host, port=port, **kw)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            pytest.skip(f"cannot listen on {host} port {port}: {e}")
        raise


@pytest.mark.parametrize(
    ("transport", "port", "suffix"),
    [("tcp", 80, b""), ("tls", 443, b""), ("tcp", 443, b":443"), ("tls", 80, b":80")],
    ids=["default_port_http", "default_port_https", "other_port_http", "other_port_https"],
)
def test_authority_port(
    scripted_origin: OriginFactory, tls_pair: TLSPair, transport: str, port: int, suffix: bytes
) -> None:
    """rfc7540_SUITE authority_default_port_http(s) / authority_other_port_http(s)
    (RFC 9113 8.3.1, RFC 9110 4.2): the scheme's default port is left out of
    ``:authority``, any other port is written.  Gun fakes the port with
    sys:replace_state; here a listener on 127.0.0.2:80 and :443 (loopback, root)."""
    opts: dict[str, Any] = {"transport": transport}  # port 443 alone would mean TLS
    tls = None
    if transport == "tls":
        tls = tls_pair.server_context(alpn=["h2"], hostnames=["127.0.0.2"])
        opts["tls_opts"] = {"cacertfile": tls_pair.ca_file}
    origin = listen(scripted_origin, "127.0.0.2", port, tls=tls)
    conn = open_h2(origin, **opts)
    assert gunpy.await_up(conn) == ("ok", "http2")
    srv = H2Server(origin.accept())
    srv.start()
    gunpy.get(conn, "/")
    h = headers_of(srv.request())
    assert h[b":authority"] == b"127.0.0.2" + suffix
    assert h[b":scheme"] == (b"https" if transport == "tls" else b"http")


def test_authority_ipv6(scripted_origin: OriginFactory) -> None:
    """rfc7540_SUITE authority_ipv6 (RFC 9113 8.3.1, RFC 3986 3.2.2): an IPv6 address
    is bracketed in ``:authority``."""
    origin = listen(scripted_origin, "::1", 0)
    conn = open_h2(origin)
    assert gunpy.await_up(conn) == ("ok", "http2")
    srv = H2Server(origin.accept())
    srv.start()
    gunpy.get(conn, "/")
    assert headers_of(srv.request())[b":authority"] == b"[::1]:%d" % origin.port


def test_authority_from_host_header_and_request_pseudo_headers(origin: ScriptedOrigin) -> None:
    """RFC 9113 8.3.1 and 8.2.2 (gun-reference 4.10): a user ``host`` header becomes
    ``:authority``; the HTTP/1 connection-specific headers are not sent; the
    pseudo-headers come first; a bodyless request ends with its HEADERS frame."""
    conn, srv = connect(origin)
    gunpy.get(
        conn,
        "/path?q=1",
        [
            ("host", "example.org:8443"),
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ],
    )
    req = srv.request()
    names = [n for n, _ in req.headers]
    assert names[:4] == [b":method", b":scheme", b":authority", b":path"]
    h = headers_of(req)
    assert (h[b":method"], h[b":scheme"], h[b":authority"], h[b":path"]) == (
        b"GET", b"http", b"example.org:8443", b"/path?q=1",
    )  # fmt: skip
    assert h[b"te"] == b"trailers" and h[b"accept"] == b"*/*"
    for gone in (b"host", b"connection", b"keep-alive", b"x-hop", b"upgrade"):
        assert gone not in h
    assert req.stream_ended is not None  # END_STREAM on the HEADERS frame
    headers_frame = srv.expect_frame(HeadersFrame)
    assert "END_STREAM" in headers_frame.flags
    assert not [f for f in srv.frames if isinstance(f, DataFrame)]


# --------------------------------------------------------------------------- preface


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (bytes(range(16)), PREFACE_TEXT),
        (
            b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n"
            b"Date: Thu, 27 Feb 2020 09:32:17 GMT\r\n\r\n",
            PREFACE_HTTP1_TEXT,
        ),
        (frame_bytes(WindowUpdateFrame(0, window_increment=1)), PREFACE_TEXT),
    ],
    ids=["garbage", "http1_response", "other_frame"],
)
def test_preface_error(origin: ScriptedOrigin, data: bytes, text: str) -> None:
    """rfc7540_SUITE prior_knowledge_preface_garbage / _http1 / _other_frame
    (RFC 9113 3.4): the server's preface must be a SETTINGS frame; anything else is
    a PROTOCOL_ERROR connection error with Gun's readable text, gunpy's GOAWAY, and
    ``gun_down``.  A request already made gets the connection error."""
    conn, srv = connect(origin, start=False, h2=False)
    ref = gunpy.get(conn, "/")
    srv.expect_frame(HeadersFrame)
    srv.send(data)
    assert gunpy.await_(conn, ref) == ("error", ("connection_error", ("protocol_error", text)))
    assert assert_receive(gun_down(conn), after=5000) == (
        "gun_down", conn, "http2", ("error", ("connection_error", "protocol_error", text)), [ref]
    )  # fmt: skip
    reason = ("error", ("connection_error", "protocol_error", text))
    assert_receive(gun_error(conn, ref, ("closed", reason)), after=5000)
    goaway = srv.expect_frame(GoAwayFrame)
    assert goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    srv.wait_closed()


def test_preface_http1_via_await(origin: ScriptedOrigin) -> None:
    """rfc7540_SUITE prior_knowledge_preface_http1_await: with ``retry: 0`` the
    connection exits and ``await_`` on any ref says why."""
    conn, srv = connect(origin, start=False, h2=False)
    srv.send(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert gunpy.await_(conn, gunpy.make_ref()) == (
        "error",
        (
            "down",
            ("shutdown", ("error", ("connection_error", "protocol_error", PREFACE_HTTP1_TEXT))),
        ),
    )
    reason = ("error", ("connection_error", "protocol_error", PREFACE_HTTP1_TEXT))
    assert_receive(gun_down(conn, "http2", reason, []), after=5000)


def test_preface_timeout(origin: ScriptedOrigin) -> None:
    """RFC 9113 3.4 (http2_opts ``preface_timeout``): no SETTINGS from the server in
    time is a PROTOCOL_ERROR connection error."""
    conn, srv = connect(origin, start=False, h2=False, http2_opts={"preface_timeout": 100})
    text = "The preface was not received in a reasonable amount of time."
    assert assert_receive(gun_down(conn), after=5000) == (
        "gun_down", conn, "http2", ("error", ("connection_error", "protocol_error", text)), []
    )  # fmt: skip
    assert srv.expect_frame(GoAwayFrame).error_code == ErrorCodes.PROTOCOL_ERROR
    srv.wait_closed()


def test_settings_ack_timeout(origin: ScriptedOrigin) -> None:
    """rfc7540_SUITE settings_ack_timeout (RFC 9113 6.5.3): a server that never acks
    our SETTINGS gets GOAWAY SETTINGS_TIMEOUT (http2_opts ``settings_timeout``)."""
    conn, srv = connect(origin, start=False, h2=False, http2_opts={"settings_timeout": 100})
    srv.send(frame_bytes(SettingsFrame(0)))  # a valid preface; we never ack theirs
    settings = srv.expect_frame(SettingsFrame)
    assert "ACK" not in settings.flags  # gunpy's own SETTINGS
    assert srv.expect_frame(WindowUpdateFrame).stream_id == 0
    assert "ACK" in srv.expect_frame(SettingsFrame).flags  # gunpy acks ours
    text = "The SETTINGS ack was not received within the configured time. (RFC7540 6.5.3)"
    assert assert_receive(gun_down(conn), after=5000) == (
        "gun_down", conn, "http2", ("error", ("connection_error", "settings_timeout", text)), []
    )  # fmt: skip
    assert srv.expect_frame(GoAwayFrame).error_code == ErrorCodes.SETTINGS_TIMEOUT
    srv.wait_closed()


def test_headers_priority_flag(origin: ScriptedOrigin) -> None:
    """rfc7540_SUITE headers_priority_flag (RFC 9113 6.2): a HEADERS frame with the
    PRIORITY flag (dependency and weight before the block) is a normal response."""
    conn, srv = connect(origin)
    ref = gunpy.get(conn, "/")
    sid = srv.request().stream_id
    f = HeadersFrame(sid, Encoder().encode([(b":status", b"200")]))
    f.flags.add("END_HEADERS")
    f.flags.add("END_STREAM")
    f.flags.add("PRIORITY")
    f.depends_on, f.stream_weight, f.exclusive = 3, 42, True
    srv.send(frame_bytes(f))
    assert gunpy.await_(conn, ref) == ("response", "fin", 200, [])


# --------------------------------------------------------------------------- streams


def test_server_rst_stream_is_a_stream_error(origin: ScriptedOrigin) -> None:
    """RFC 9113 6.4, gun-reference 4.10: a server RST_STREAM gives that stream
    ``("stream_error", code, "Stream reset by server.")``; the others go on."""
    conn, srv = connect(origin)
    r1 = gunpy.get(conn, "/one")
    r2 = gunpy.get(conn, "/two")
    s1, s2 = srv.request().stream_id, srv.request().stream_id
    srv.h2.reset_stream(s1, ErrorCodes.REFUSED_STREAM)
    srv.respond(s2, body=b"two")
    assert gunpy.await_(conn, r1) == (
        "error", ("stream_error", ("stream_error", "refused_stream", "Stream reset by server."))
    )  # fmt: skip
    assert gunpy.await_(conn, r2)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, r2) == ("ok", b"two")
    assert gunpy.stream_info(conn, r1) == ("ok", None)


def test_cancel_sends_rst_stream_cancel(origin: ScriptedOrigin) -> None:
    """rfc7540_SUITE lingering_data_counts_toward_connection_window (RFC 9113 5.1,
    6.9): ``cancel`` is RST_STREAM CANCEL on the wire; DATA the server had already
    sent is dropped silently but still counted, so the connection window is refilled."""
    conn, srv = connect(
        origin,
        http2_opts={"initial_connection_window_size": 65536, "initial_stream_window_size": 65535},
    )
    ref = gunpy.get(conn, "/")
    sid = srv.request().stream_id
    srv.respond(sid, end=False)
    assert gunpy.await_(conn, ref) == ("response", "nofin", 200, [])
    gunpy.cancel(conn, ref)
    rst = srv.expect_frame(RstStreamFrame)
    assert (rst.stream_id, rst.error_code) == (sid, ErrorCodes.CANCEL)
    # DATA in flight when the reset crossed it (h2 would refuse to write it now).
    srv.send(frame_bytes(DataFrame(sid, b"")) + frame_bytes(DataFrame(sid, bytes(1000))))
    update = srv.expect_frame(WindowUpdateFrame, lambda f: f.stream_id == 0)
    assert update.window_increment > 0
    srv.barrier()
    assert gunpy.await_(conn, ref, 0) == ("error", "timeout")  # nothing for the stream


def test_max_concurrent_streams_exceeded_fails_at_once(origin: ScriptedOrigin) -> None:
    """RFC 9113 5.1.2, Gun 2.2 (gun-reference 4.10): past the server's
    SETTINGS_MAX_CONCURRENT_STREAMS a new request fails at once with
    ``too_many_streams`` (nothing is queued); once a stream ends, requests go again."""
    conn, srv = connect(origin, {SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    r1 = gunpy.get(conn, "/one")
    r2 = gunpy.get(conn, "/two")
    assert gunpy.await_(conn, r2) == (
        "error",
        ("stream_error", ("stream_error", "too_many_streams",
                          "Maximum concurrency limit has been reached.")),
    )  # fmt: skip
    req = srv.request()
    assert headers_of(req)[b":path"] == b"/one"
    srv.respond(req.stream_id, body=b"one")
    assert gunpy.await_(conn, r1)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, r1) == ("ok", b"one")
    r3 = gunpy.get(conn, "/three")
    req3 = srv.request()
    assert headers_of(req3)[b":path"] == b"/three"
    srv.respond(req3.stream_id, status=204)
    assert gunpy.await_(conn, r3) == ("response", "fin", 204, [])
    srv.barrier()
    assert not [e for e in srv.events if isinstance(e, RequestReceived)]  # /two never went


# --------------------------------------------------------------------------- GOAWAY, shutdown


def test_goaway_from_server_then_reconnect(origin: ScriptedOrigin) -> None:
    """RFC 9113 6.8, gun-reference 4.10: streams above the GOAWAY's last-stream-id get
    ``("goaway", code, text)``, gunpy answers GOAWAY NO_ERROR, the streams at or below
    it finish, then ``gun_down(..., "normal", [])`` and the connection comes back
    (``retry``).  A request made while the old connection finishes waits for the new one."""
    conn, srv = connect(origin, retry=1)
    refs = [gunpy.get(conn, f"/{i}") for i in range(3)]
    sids = [srv.request().stream_id for _ in range(3)]
    assert sids == [1, 3, 5]
    srv.send(goaway_frame(last=3))
    assert gunpy.await_(conn, refs[2]) == (
        "error", ("stream_error", ("goaway", "no_error", GOAWAY_TEXT))
    )  # fmt: skip
    term = srv.expect(ConnectionTerminated)
    assert term.error_code == ErrorCodes.NO_ERROR
    later = gunpy.get(conn, "/later")  # the connection is closing: queued for the next one
    srv.respond(1, body=b"zero")
    srv.respond(3, body=b"one")
    for ref, body in ((refs[0], b"zero"), (refs[1], b"one")):
        assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
        assert gunpy.await_body(conn, ref) == ("ok", body)
    assert_receive(gun_down(conn, "http2", "normal", []), after=5000)
    srv.wait_closed()
    assert not [f for f in srv.frames if isinstance(f, HeadersFrame) and f.stream_id > 5]
    # The reconnection: a new preface, and the queued request on it.
    srv2 = H2Server(origin.accept())
    srv2.start()
    assert assert_receive(gun_up(conn), after=5000) == ("gun_up", conn, "http2")
    req = srv2.request()
    assert (req.stream_id, headers_of(req)[b":path"]) == (1, b"/later")
    srv2.respond(1, status=204)
    assert gunpy.await_(conn, later) == ("response", "fin", 204, [])


def test_goaway_with_an_error_code(origin: ScriptedOrigin) -> None:
    """RFC 9113 6.8: the GOAWAY's error code is in the ``goaway`` stream errors."""
    conn, srv = connect(origin)
    ref = gunpy.get(conn, "/")
    srv.request()
    srv.send(goaway_frame(last=0, code=ErrorCodes.ENHANCE_YOUR_CALM))
    assert gunpy.await_(conn, ref) == (
        "error", ("stream_error", ("goaway", "enhance_your_calm", GOAWAY_TEXT))
    )  # fmt: skip
    assert_receive(gun_down(conn, "http2", "normal", []), after=5000)


def test_shutdown_sends_goaway_no_error_and_waits(origin: ScriptedOrigin) -> None:
    """rfc7540_SUITE/shutdown_SUITE http2_gun_shutdown_many_streams (RFC 9113 6.8,
    Gun 2.2 fix): ``shutdown`` sends GOAWAY NO_ERROR, the running stream finishes,
    then the connection exits with reason ``shutdown`` (no gun_down)."""
    conn, srv = connect(origin)
    mref = gunpy.monitor(conn)
    ref = gunpy.get(conn, "/")
    sid = srv.request().stream_id
    gunpy.shutdown(conn)
    term = srv.expect(ConnectionTerminated)
    assert (term.error_code, term.last_stream_id) == (ErrorCodes.NO_ERROR, 0)
    srv.respond(sid, body=b"done")
    assert gunpy.await_(conn, ref, mref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, ref, mref) == ("ok", b"done")
    assert_receive(down(mref, "shutdown"), after=5000)
    srv.wait_closed()
    refute_receive(gun_down(conn), after=0)


def test_shutdown_without_streams_closes_at_once(origin: ScriptedOrigin) -> None:
    """shutdown_SUITE http2_gun_shutdown_no_streams: GOAWAY NO_ERROR, then the
    connection closes without waiting for closing_timeout."""
    conn, srv = connect(origin)
    mref = gunpy.monitor(conn)
    gunpy.shutdown(conn)
    assert srv.expect_frame(GoAwayFrame).error_code == ErrorCodes.NO_ERROR
    srv.wait_closed(timeout=2.0)  # closing_timeout is 15 s
    assert_receive(down(mref, "shutdown"), after=5000)


def test_push_refused_while_shutting_down(origin: ScriptedOrigin) -> None:
    """shutdown_SUITE http2_gun_shutdown_ignore_push (gun-reference 4.10): a
    PUSH_PROMISE that arrives after our GOAWAY is refused with RST_STREAM CANCEL;
    the stream that was running still finishes."""
    conn, srv = connect(origin)
    mref = gunpy.monitor(conn)
    ref = gunpy.get(conn, "/")
    sid = srv.request().stream_id
    gunpy.shutdown(conn)
    srv.expect(ConnectionTerminated)
    authority = b"127.0.0.1:%d" % origin.port
    srv.h2.push_stream(
        sid, 2, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority),
                 (b":path", b"/pushed")]
    )  # fmt: skip
    srv.flush()
    reset = srv.expect(StreamReset, lambda e: e.stream_id == 2)
    assert reset.error_code == ErrorCodes.CANCEL
    srv.respond(sid, status=204)
    assert gunpy.await_(conn, ref, mref) == ("response", "fin", 204, [])
    assert_receive(down(mref, "shutdown"), after=5000)
    refute_receive(("gun_push", conn, ANY, ANY, ANY, ANY, ANY), after=0)


# --------------------------------------------------------------------------- server push


def test_server_push(origin: ScriptedOrigin) -> None:
    """RFC 9113 8.4, gun-reference 2 (gun_push): the PUSH_PROMISE gives
    ``("gun_push", conn, ref, new_ref, method, uri, headers)`` before the original
    response; the pushed response comes under ``new_ref``."""
    conn, srv = connect(origin)
    ref = gunpy.get(conn, "/index.html")
    sid = srv.request().stream_id
    authority = b"127.0.0.1:%d" % origin.port
    srv.h2.push_stream(
        sid,
        2,
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority),
         (b":path", b"/style.css"), (b"accept", b"text/css")],
    )  # fmt: skip
    srv.respond(sid, headers=[(b"content-type", b"text/html")], body=b"<html></html>")
    srv.respond(2, headers=[(b"content-type", b"text/css")], body=b"body{}")
    push = assert_receive(("gun_push", conn, ref, ANY, ANY, ANY, ANY), after=5000)
    new_ref = push[3]
    assert push == (
        "gun_push", conn, ref, new_ref, "GET",
        f"http://127.0.0.1:{origin.port}/style.css", [("accept", "text/css")],
    )  # fmt: skip
    assert isinstance(new_ref, gunpy.Ref) and new_ref != ref
    assert gunpy.await_(conn, ref) == ("response", "nofin", 200, [("content-type", "text/html")])
    assert gunpy.await_body(conn, ref) == ("ok", b"<html></html>")
    assert gunpy.await_(conn, new_ref) == (
        "response", "nofin", 200, [("content-type", "text/css")]
    )  # fmt: skip
    assert gunpy.await_body(conn, new_ref) == ("ok", b"body{}")


def test_server_push_is_before_the_response_in_await(origin: ScriptedOrigin) -> None:
    """gun-reference 1 (await): ``await_`` on the original ref gives ``("push", new_ref,
    method, uri, headers)`` first, then the response."""
    conn, srv = connect(origin)
    ref = gunpy.get(conn, "/")
    sid = srv.request().stream_id
    authority = b"127.0.0.1:%d" % origin.port
    srv.h2.push_stream(
        sid, 2, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority),
                 (b":path", b"/a.js")]
    )  # fmt: skip
    srv.respond(sid, status=204)
    first = gunpy.await_(conn, ref)
    assert first[0] == "push" and first[2:] == ("GET", f"http://127.0.0.1:{origin.port}/a.js", [])
    assert gunpy.await_(conn, ref) == ("response", "fin", 204, [])
    srv.respond(2, body=b"js")
    assert gunpy.await_(conn, first[1])[:3] == ("response", "nofin", 200)
    assert gunpy.await_(conn, first[1]) == ("data", "fin", b"js")


@pytest.mark.parametrize(
    ("scheme", "authority"),
    [(b"http", b"other.example"), (b"https", None)],
    ids=["other_authority", "other_scheme"],
)
def test_push_for_another_origin_is_refused(
    origin: ScriptedOrigin, scheme: bytes, authority: bytes | None
) -> None:
    """rfc7540_SUITE push_promise_invalid_authority (Gun 2.4; RFC 9113 8.4): a push for
    another scheme or authority is refused with RST_STREAM PROTOCOL_ERROR and never
    shown to the user; the original response is not affected."""
    conn, srv = connect(origin)
    ref = gunpy.get(conn, "/")
    sid = srv.request().stream_id
    authority = authority or b"127.0.0.1:%d" % origin.port
    srv.h2.push_stream(
        sid, 2, [(b":method", b"GET"), (b":scheme", scheme), (b":authority", authority),
                 (b":path", b"/evil.js")]
    )  # fmt: skip
    srv.flush()
    reset = srv.expect(StreamReset, lambda e: e.stream_id == 2)
    assert reset.error_code == ErrorCodes.PROTOCOL_ERROR
    srv.respond(sid, body=b"ok")
    assert gunpy.await_(conn, ref) == ("response", "nofin", 200, [])
    assert gunpy.await_body(conn, ref) == ("ok", b"ok")
    refute_receive(("gun_push", conn, ANY, ANY, ANY, ANY, ANY), after=0)


# --------------------------------------------------------------------------- flow control


def test_flow_one_message_then_the_window_is_withheld(origin: ScriptedOrigin) -> None:
    """flow_SUITE flow_http2 (RFC 9113 6.9, gun-reference 4.5): with ``flow: 1`` one
    ``gun_data`` is delivered, then no stream WINDOW_UPDATE goes out, so the server
    is stopped by its window (other streams still flow); ``update_flow`` sends the
    WINDOW_UPDATE and the data resumes."""
    conn, srv = connect(origin, http2_opts={"initial_stream_window_size": 16384})
    ref = gunpy.get(conn, "/slow", [], {"flow": 1})
    sid = srv.request().stream_id
    srv.respond(sid, end=False)
    assert srv.h2.local_flow_control_window(sid) == 16384
    srv.h2.send_data(sid, b"a" * 16384)
    srv.flush()
    srv.barrier()
    assert gunpy.await_(conn, ref, 0)[:3] == ("response", "nofin", 200)
    assert gunpy.await_(conn, ref, 0) == ("data", "nofin", b"a" * 16384)
    assert gunpy.await_(conn, ref, 0) == ("error", "timeout")
    assert not [e for e in srv.events if isinstance(e, WindowUpdated) and e.stream_id == sid]
    assert srv.h2.local_flow_control_window(sid) == 0  # the server cannot send more
    # Another stream, without flow control, is not held back.
    other = gunpy.get(conn, "/other")
    osid = srv.request().stream_id
    srv.respond(osid, body=b"b" * 16384)
    assert gunpy.await_(conn, other)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, other) == ("ok", b"b" * 16384)
    # update_flow: the stream's window comes back.
    gunpy.update_flow(conn, ref, 1)
    update = srv.expect(WindowUpdated, lambda e: e.stream_id == sid)
    assert update.delta > 0
    srv.h2.send_data(sid, b"c" * 100, end_stream=True)
    srv.flush()
    assert gunpy.await_(conn, ref) == ("data", "fin", b"c" * 100)


# --------------------------------------------------------------------------- settings, ping


def test_notify_settings_changed(origin: ScriptedOrigin) -> None:
    """Gun 2.2 (gun-reference 2): with ``notify_settings_changed`` every SETTINGS from
    the server gives the owner ``("gun_notify", conn, "settings_changed", map)``: all
    the server's settings so far, defaults included."""
    conn, srv = connect(
        origin,
        {SettingCodes.MAX_CONCURRENT_STREAMS: 7, SettingCodes.INITIAL_WINDOW_SIZE: 100000},
        http2_opts={"notify_settings_changed": True},
    )
    first = assert_receive(("gun_notify", conn, "settings_changed", ANY), after=5000)
    assert first == (
        "gun_notify", conn, "settings_changed",
        {
            "header_table_size": 4096,
            "enable_push": False,
            "max_concurrent_streams": 7,
            "initial_window_size": 100000,
            "max_frame_size": 16384,
            "max_header_list_size": "infinity",
            "enable_connect_protocol": False,
        },
    )  # fmt: skip
    srv.h2.update_settings(
        {SettingCodes.MAX_FRAME_SIZE: 32768, SettingCodes.ENABLE_CONNECT_PROTOCOL: 1}
    )
    srv.flush()
    srv.expect(SettingsAcknowledged)
    assert gunpy.await_(conn, None) == (
        "notify", "settings_changed", {**first[3], "max_frame_size": 32768,
                                       "enable_connect_protocol": True},
    )  # fmt: skip


def test_no_settings_notification_by_default(origin: ScriptedOrigin) -> None:
    """gun-reference 3.3: ``notify_settings_changed`` is off by default."""
    conn, srv = connect(origin)
    srv.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 3})
    srv.flush()
    srv.expect(SettingsAcknowledged)
    refute_receive(("gun_notify", conn, ANY, ANY), after=0)


def test_ping_ack_out_of_order(origin: ScriptedOrigin) -> None:
    """ping_SUITE gun_ping (RFC 9113 6.7, Gun 4.6): ``ping`` sends a PING whose payload
    is 10000 or more (below is Gun's keepalive), the ack gives
    ``("gun_notify", conn, "ping_ack", ref)``; acks answered out of order still find
    their ref; ``await_`` on the ping ref returns ``("notify", "ping_ack", ref)``."""
    conn, srv = connect(origin, h2=True)
    srv.use_h2 = False  # we ack the pings ourselves, below
    r1 = gunpy.ping(conn)
    r2 = gunpy.ping(conn)
    p1 = srv.expect_frame(PingFrame)
    p2 = srv.expect_frame(PingFrame)
    assert "ACK" not in p1.flags and "ACK" not in p2.flags
    n1, n2 = int.from_bytes(p1.opaque_data, "big"), int.from_bytes(p2.opaque_data, "big")
    assert 10000 <= n1 < n2
    for p in (p2, p1):
        ack = PingFrame(0, opaque_data=p.opaque_data)
        ack.flags.add("ACK")
        srv.send(frame_bytes(ack))
    assert gunpy.await_(conn, r2) == ("notify", "ping_ack", r2)
    assert gunpy.await_(conn, r1) == ("notify", "ping_ack", r1)


def test_ping_reply_to(origin: ScriptedOrigin) -> None:
    """ping_SUITE / gun-reference 4.8: ``ping(conn, {"reply_to": pid})`` sends the ack
    to that process."""
    conn, srv = connect(origin)
    box = gunpy.Mailbox()
    other = gunpy.Pid(box, name="other")
    ref = gunpy.ping(conn, {"reply_to": other})
    srv.expect(PingReceived)
    msg = box.receive((("gun_notify", conn, "ping_ack", ANY),), 5.0)
    assert msg == ("gun_notify", conn, "ping_ack", ref)
    refute_receive(("gun_notify", conn, ANY, ANY), after=0)


def test_keepalive_pings(origin: ScriptedOrigin) -> None:
    """Gun 4.6 (http2_opts ``keepalive``): a PING with payload 0 every ``keepalive`` ms;
    acked ones keep the connection up (``keepalive_tolerance`` is not reached)."""
    conn, srv = connect(origin, http2_opts={"keepalive": 30, "keepalive_tolerance": 1})
    for _ in range(4):
        ping = srv.expect(PingReceived)  # h2 acks each one
        assert ping.ping_data == bytes(8)
    ref = gunpy.get(conn, "/")
    srv.respond(srv.request().stream_id, status=204)
    assert gunpy.await_(conn, ref) == ("response", "fin", 204, [])
    refute_receive(gun_down(conn), after=0)


def test_keepalive_tolerance(origin: ScriptedOrigin) -> None:
    """rfc7540_SUITE keepalive_tolerance_ping_ack_timeout (Gun 4.6): when
    ``keepalive_tolerance`` pings are unacked at the next tick, the connection ends
    with a NO_ERROR connection error."""
    conn, srv = connect(origin, h2=True, http2_opts={"keepalive": 30, "keepalive_tolerance": 2})
    srv.use_h2 = False  # from now on nothing is answered
    text = "The number of unacknowledged pings exceed the configured tolerance value."
    assert assert_receive(gun_down(conn), after=5000) == (
        "gun_down", conn, "http2", ("error", ("connection_error", "no_error", text)), []
    )  # fmt: skip
    goaway = srv.expect_frame(GoAwayFrame)
    assert goaway.error_code == ErrorCodes.NO_ERROR
    pings = [f for f in srv.frames if isinstance(f, PingFrame) and f.opaque_data == bytes(8)]
    assert len(pings) == 2


def test_keepalive_tolerance_ignores_unrequested_acks(origin: ScriptedOrigin) -> None:
    """rfc7540_SUITE keepalive_tolerance_unrequested_ping_ack (Gun 2.4 fix): PING acks
    nobody asked for are tolerated and give no credit: the tolerance still ends a
    connection whose keepalive pings go unanswered."""
    conn, srv = connect(origin, h2=True, http2_opts={"keepalive": 30, "keepalive_tolerance": 2})
    srv.use_h2 = False
    for _ in range(5):
        ack = PingFrame(0, opaque_data=bytes(8))
        ack.flags.add("ACK")
        srv.send(frame_bytes(ack))
    text = "The number of unacknowledged pings exceed the configured tolerance value."
    assert assert_receive(gun_down(conn), after=5000) == (
        "gun_down", conn, "http2", ("error", ("connection_error", "no_error", text)), []
    )  # fmt: skip


# --------------------------------------------------------------------------- more streams


@pytest.mark.parametrize(
    ("window", "opts"),
    [(20000, {}), (1000, {"stream_window_data_threshold": 1000})],
    ids=["window_20000", "window_1000_threshold_1000"],
)
def test_request_body_waits_for_the_servers_window(
    origin: ScriptedOrigin, window: int, opts: dict[str, Any]
) -> None:
    """RFC 9113 5.2 and 6.9.2 (cowlib's send_or_queue_data): a request body larger
    than the server's initial stream window goes out as WINDOW_UPDATEs arrive.  As in
    cowlib, a window below ``stream_window_data_threshold`` (16384) is not worth a
    frame; a server whose window stays below it must be met with a lower threshold."""
    conn, srv = connect(origin, {SettingCodes.INITIAL_WINDOW_SIZE: window}, http2_opts=opts)
    body = bytes(range(256)) * 200  # 51200 bytes
    ref = gunpy.post(conn, "/upload", [("content-type", "application/octet-stream")], body)
    req = srv.request()
    sid = req.stream_id
    assert headers_of(req)[b"content-length"] == b"51200"
    got = b""
    while True:
        ev = srv.expect((DataReceived, StreamEnded), lambda e: e.stream_id == sid)
        if isinstance(ev, StreamEnded):
            break
        got += ev.data
        srv.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
        srv.flush()
    assert got == body
    data_frames = [f for f in srv.frames if isinstance(f, DataFrame) and f.stream_id == sid]
    assert max(len(f.data) for f in data_frames) <= min(window, 16384)
    assert len(data_frames) >= 51200 // window
    srv.respond(sid, status=204)
    assert gunpy.await_(conn, ref) == ("response", "fin", 204, [])


def test_one_gun_data_per_data_frame(origin: ScriptedOrigin) -> None:
    """RFC 9113 6.1 (Gun's data_frame): every DATA frame is one ``gun_data``; Gun does
    not merge them, even when they arrive in one read; an empty DATA frame with
    END_STREAM is an empty ``fin``."""
    conn, srv = connect(origin)
    ref = gunpy.get(conn, "/")
    sid = srv.request().stream_id
    srv.h2.send_headers(sid, [(b":status", b"200")])
    for part in (b"one", b"two", b"three"):
        srv.h2.send_data(sid, part)
    srv.h2.send_data(sid, b"", end_stream=True)
    srv.flush()  # one write: four DATA frames
    assert gunpy.await_(conn, ref) == ("response", "nofin", 200, [])
    assert [gunpy.await_(conn, ref) for _ in range(4)] == [
        ("data", "nofin", b"one"),
        ("data", "nofin", b"two"),
        ("data", "nofin", b"three"),
        ("data", "fin", b""),
    ]


def test_streamed_request_body_with_data(origin: ScriptedOrigin) -> None:
    """gun-reference 1 (``data/4``) over HTTP/2: ``headers`` opens the stream, each
    ``data`` is a DATA frame, an empty ``fin`` is an empty DATA frame with END_STREAM."""
    conn, srv = connect(origin)
    ref = gunpy.headers(conn, "PUT", "/up", [("content-type", "text/plain")])
    sid = srv.request().stream_id
    gunpy.data(conn, ref, "nofin", b"hello ")
    gunpy.data(conn, ref, "nofin", b"")  # dropped, as in Gun
    gunpy.data(conn, ref, "nofin", b"world")
    gunpy.data(conn, ref, "fin", b"")
    srv.expect(StreamEnded, lambda e: e.stream_id == sid)
    frames = [f for f in srv.frames if isinstance(f, DataFrame) and f.stream_id == sid]
    assert [(bytes(f.data), "END_STREAM" in f.flags) for f in frames] == [
        (b"hello ", False),
        (b"world", False),
        (b"", True),
    ]
    gunpy.data(conn, ref, "nofin", b"late")
    assert gunpy.await_(conn, ref) == (
        "error", ("stream_error", ("badstate", "The stream has already been closed."))
    )  # fmt: skip
    srv.respond(sid, body=b"ok")
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_(conn, ref) == ("data", "fin", b"ok")


def test_inform_then_response_and_trailers(origin: ScriptedOrigin) -> None:
    """RFC 9113 8.1: 1xx HEADERS give ``gun_inform``; trailers (a HEADERS frame with
    END_STREAM after DATA) give ``gun_trailers``, which ``await_body`` returns."""
    conn, srv = connect(origin)
    ref = gunpy.get(conn, "/", [("te", "trailers")])
    sid = srv.request().stream_id
    srv.h2.send_headers(sid, [(b":status", b"103"), (b"link", b"</s.css>; rel=preload")])
    srv.respond(sid, headers=[(b"trailer", b"x-checksum")], body=b"hello", end=False)
    srv.h2.send_headers(sid, [(b"x-checksum", b"abc")], end_stream=True)
    srv.flush()
    assert gunpy.await_(conn, ref) == ("inform", 103, [("link", "</s.css>; rel=preload")])
    assert gunpy.await_(conn, ref) == ("response", "nofin", 200, [("trailer", "x-checksum")])
    assert gunpy.await_body(conn, ref) == ("ok", b"hello", [("x-checksum", "abc")])


def test_stream_info(origin: ScriptedOrigin) -> None:
    """gun_SUITE stream_info_http2: a running stream's info; None once it is done."""
    conn, srv = connect(origin)
    ref = gunpy.get(conn, "/")
    sid = srv.request().stream_id
    assert gunpy.stream_info(conn, ref) == (
        "ok",
        {"ref": ref, "reply_to": gunpy.self(), "state": "running",
         "intermediaries": [], "tunnel": None},
    )  # fmt: skip
    srv.respond(sid, status=204)
    assert gunpy.await_(conn, ref) == ("response", "fin", 204, [])
    assert gunpy.stream_info(conn, ref) == ("ok", None)


def test_server_closes_the_socket_with_streams_open(origin: ScriptedOrigin) -> None:
    """gun-reference 4.2: a lost connection errors the open streams with ``closed``
    and ``gun_down`` lists them."""
    conn, srv = connect(origin)
    r1 = gunpy.get(conn, "/one")
    r2 = gunpy.get(conn, "/two")
    srv.request()
    srv.request()
    srv.oc.close()
    assert gunpy.await_(conn, r1) == ("error", ("stream_error", "closed"))
    assert gunpy.await_(conn, r2) == ("error", ("stream_error", "closed"))
    down_msg = assert_receive(gun_down(conn), after=5000)
    assert down_msg[:4] == ("gun_down", conn, "http2", "closed")
    assert sorted(map(id, down_msg[4])) == sorted(map(id, [r1, r2]))


def test_goaway_without_streams_closes_at_once(origin: ScriptedOrigin) -> None:
    """RFC 9113 6.8: a GOAWAY while nothing runs: gunpy answers GOAWAY NO_ERROR and
    closes at once with ``gun_down(..., "normal", [])``."""
    conn, srv = connect(origin)
    srv.send(goaway_frame(last=0))
    assert srv.expect(ConnectionTerminated).error_code == ErrorCodes.NO_ERROR
    assert_receive(gun_down(conn, "http2", "normal", []), after=5000)
    srv.wait_closed()


# --------------------------------------------------------------------------- Websocket (RFC 8441)


def test_ws_upgrade_refused_without_enable_connect_protocol(origin: ScriptedOrigin) -> None:
    """RFC 8441 3 (a gunpy difference, see gunpy/protocols/http2.py): a server whose
    SETTINGS do not set SETTINGS_ENABLE_CONNECT_PROTOCOL gets no extended CONNECT; the
    upgrade fails at once with a ``badstate`` that says why."""
    conn, srv = connect(origin)
    ref = gunpy.ws_upgrade(conn, "/ws")
    assert gunpy.await_(conn, ref) == (
        "error",
        ("stream_error", ("badstate", "The server does not allow Websocket over HTTP/2: its "
                          "SETTINGS_ENABLE_CONNECT_PROTOCOL is not 1. (RFC8441 3)")),
    )  # fmt: skip
    srv.barrier()
    assert not [f for f in srv.frames if isinstance(f, HeadersFrame)]


def test_ws_upgrade_sends_an_extended_connect(origin: ScriptedOrigin) -> None:
    """RFC 8441 4 and 5 (ws_SUITE http2 group): ``ws_upgrade`` is a CONNECT with
    ``:protocol websocket`` and ``sec-websocket-version: 13``, without the HTTP/1.1
    key, ``connection`` or ``upgrade``; a 200 gives ``gun_upgrade``."""
    conn, srv = connect(origin, {SettingCodes.ENABLE_CONNECT_PROTOCOL: 1})
    ref = gunpy.ws_upgrade(conn, "/ws?x=1", [("x-token", "t")])
    req = srv.request()
    h = headers_of(req)
    assert (h[b":method"], h[b":protocol"], h[b":path"], h[b":scheme"]) == (
        b"CONNECT", b"websocket", b"/ws?x=1", b"http",
    )  # fmt: skip
    assert h[b":authority"] == b"127.0.0.1:%d" % origin.port
    assert h[b"sec-websocket-version"] == b"13" and h[b"x-token"] == b"t"
    for absent in (b"sec-websocket-key", b"connection", b"upgrade", b"host"):
        assert absent not in h
    assert req.stream_ended is None
    srv.respond(req.stream_id, end=False)
    assert gunpy.await_(conn, ref) == ("upgrade", ["websocket"], [])


# --------------------------------------------------------------------------- odds and ends


def test_ping_made_before_the_connection_is_up(origin: ScriptedOrigin) -> None:
    """Gun postpones every cast while not connected (gun-reference 4.1): a ping made
    right after ``open`` goes out once the connection is up, and is acked."""
    conn = open_h2(origin)
    ref = gunpy.ping(conn)
    srv = H2Server(origin.accept())
    srv.start()
    ping = srv.expect(PingReceived)
    assert int.from_bytes(ping.ping_data, "big") >= 10000
    assert gunpy.await_(conn, ref) == ("notify", "ping_ack", ref)
    assert_receive(gun_up(conn, "http2"))


def test_connection_error_reaches_every_reply_to(origin: ScriptedOrigin) -> None:
    """gun-reference 4.8 (Gun's connection_error): a protocol error from the server is
    sent as ``("gun_error", conn, (code, text))`` to each distinct reply_to with an
    open stream, then GOAWAY with that code and ``gun_down``."""
    conn, srv = connect(origin)
    box = gunpy.Mailbox()
    other = gunpy.Pid(box, name="other")
    r1 = gunpy.get(conn, "/mine")
    r2 = gunpy.get(conn, "/theirs", [], {"reply_to": other})
    r3 = gunpy.get(conn, "/mine-too")
    for _ in range(3):
        srv.request()
    # DATA on stream 0 (RFC 9113 6.1: PROTOCOL_ERROR); hyperframe refuses to build it.
    srv.send(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
    mine = gunpy.await_(conn, r1)
    assert mine[0] == "error" and mine[1][0] == "connection_error"
    code, text = mine[1][1]
    assert code == "protocol_error" and isinstance(text, str) and text
    theirs = box.receive((("gun_error", conn, ANY),), 5.0)
    assert theirs == ("gun_error", conn, (code, text))
    # One connection error per reply_to, not per stream: r3 gets its "closed" next.
    down_msg = assert_receive(gun_down(conn), after=5000)
    assert down_msg[:4] == ("gun_down", conn, "http2", ("error", ("connection_error", code, text)))
    assert sorted(map(id, down_msg[4])) == sorted(map(id, [r1, r2, r3]))
    assert srv.expect_frame(GoAwayFrame).error_code == ErrorCodes.PROTOCOL_ERROR
    closed = ("closed", ("error", ("connection_error", code, text)))
    assert_receive(gun_error(conn, r1, closed), after=0)
    assert_receive(gun_error(conn, r3, closed), after=0)
    refute_receive(gun_conn_error(conn), after=0)


def _send_header_block(srv: H2Server, sid: int, size: int, chunk: int) -> None:
    """A response header block of about ``size`` bytes (no Huffman, no indexing of the
    big value), as HEADERS + CONTINUATION frames of ``chunk`` bytes."""
    block = Encoder().encode([(b":status", b"200"), (b"x-big", b"v" * size)], huffman=False)
    parts = [block[i : i + chunk] for i in range(0, len(block), chunk)]
    frames = [HeadersFrame(sid, parts[0])]
    frames += [ContinuationFrame(sid, p) for p in parts[1:]]
    frames[-1].flags.add("END_HEADERS")
    srv.send(b"".join(frame_bytes(f) for f in frames))


def test_fragmented_header_block_within_the_limit(origin: ScriptedOrigin) -> None:
    """RFC 9113 6.10 (Gun 2.1 ``max_fragmented_header_block_size``, 32768): a header
    block cut in HEADERS + CONTINUATION frames is put back together."""
    conn, srv = connect(origin)
    ref = gunpy.get(conn, "/")
    sid = srv.request().stream_id
    _send_header_block(srv, sid, 30000, 10000)  # four frames, 30011 bytes
    srv.send(frame_bytes(DataFrame(sid, b"ok", flags=["END_STREAM"])))
    msg = gunpy.await_(conn, ref)
    assert msg[:3] == ("response", "nofin", 200) and msg[3] == [("x-big", "v" * 30000)]
    assert gunpy.await_body(conn, ref) == ("ok", b"ok")


@pytest.mark.parametrize(
    ("size", "chunk"),
    [
        (40000, 10000),
        (32800, 16384),
    ],
    ids=["limit_passed_mid_block", "limit_passed_by_the_last_frame"],
)
def test_fragmented_header_block_too_large(origin: ScriptedOrigin, size: int, chunk: int) -> None:
    """cowlib's continuation_frame_append (Gun 2.1 ``max_fragmented_header_block_size``,
    32768; RFC 9113 10.5.1): a header block whose fragments add up to more than the
    limit is an ENHANCE_YOUR_CALM connection error, whichever CONTINUATION frame
    goes past it, the last one (END_HEADERS) included."""
    conn, srv = connect(origin)
    ref = gunpy.get(conn, "/")
    sid = srv.request().stream_id
    # 40011 bytes as 10000 x 4 + 11: the 4th frame (no END_HEADERS) passes the limit;
    # 32811 bytes as 16384 x 2 + 43: the last frame (END_HEADERS) passes it.
    _send_header_block(srv, sid, size, chunk)
    text = "Larger fragmented header block size than we are willing to accept."
    assert gunpy.await_(conn, ref) == (
        "error", ("connection_error", ("enhance_your_calm", text))
    )  # fmt: skip
    assert srv.expect_frame(GoAwayFrame).error_code == ErrorCodes.ENHANCE_YOUR_CALM
    reason = ("error", ("connection_error", "enhance_your_calm", text))
    assert_receive(gun_error(conn, ref, ("closed", reason)), after=5000)
    assert_receive(gun_down(conn, "http2", reason, [ref]), after=5000)


def test_tls_without_alpn_answer_is_http11(
    scripted_origin: OriginFactory, tls_pair: TLSPair
) -> None:
    """Gun 3.1 (gun-reference 4.10): over TLS with the default protocols
    ``["http2", "http"]``, a server that does not answer ALPN gets HTTP/1.1."""
    origin = scripted_origin(tls=tls_pair.server_context())  # no ALPN on the server
    conn = origin.open({"transport": "tls", "tls_opts": {"cacertfile": tls_pair.ca_file}})
    assert gunpy.await_up(conn) == ("ok", "http")
    oc = origin.accept()
    ref = gunpy.get(conn, "/")
    assert oc.recv_request().startswith(b"GET / HTTP/1.1\r\n")
    oc.send(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 204)


def test_tls_alpn_h2_with_a_scripted_server(
    scripted_origin: OriginFactory, tls_pair: TLSPair
) -> None:
    """Gun 3.1: ALPN ``h2`` selects HTTP/2 (the client offers h2 then http/1.1)."""
    origin = scripted_origin(tls=tls_pair.server_context(alpn=["h2", "http/1.1"]))
    conn = origin.open({"transport": "tls", "tls_opts": {"cacertfile": tls_pair.ca_file}})
    assert gunpy.await_up(conn) == ("ok", "http2")
    oc = origin.accept()
    assert isinstance(oc.sock, ssl.SSLSocket) and oc.sock.selected_alpn_protocol() == "h2"
    srv = H2Server(oc)
    srv.start()
    ref = gunpy.get(conn, "/")
    assert headers_of(srv.request())[b":scheme"] == b"https"
    srv.respond(1, status=204)
    assert gunpy.await_(conn, ref) == ("response", "fin", 204, [])
