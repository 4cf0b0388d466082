"""HTTP/1.1 client protocol handler: Gun's ``gun_http``, sans-IO.

Theory of operation
-------------------
One ``HttpHandler`` holds one HTTP/1.1 (or 1.0) connection's state.  It never touches
a socket, a thread or a clock: every entry point returns a list of commands
(``gunpy._commands``) for the connection actor.

*Writing.*  Requests are serialized here, byte for byte like Gun's
(``GET /p HTTP/1.1\\r\\ncontent-length: 0\\r\\nhost: h:p\\r\\n<user headers>\\r\\n\\r\\n``,
lower-case names, no user-agent), and written at once: requests are pipelined
(Gun 4.9) and their streams kept FIFO in ``_streams``; responses are matched to
them in order.  A request cannot be written while it would corrupt the byte
stream, so it is *held* (queued unsent, still a live stream) while

* a previous request's streamed body is unfinished (Gun has no code path for this
  case; we queue and write it after ``data(..., "fin", ...)``),
* a previous request said ``connection: close`` (RFC 9112 9.6: no further
  requests after ``close``; Gun writes them anyway and errors them ``closing``
  when the response arrives: the user sees the same message),
* an ``Upgrade`` request is waiting for its answer (after a 101 the bytes would
  belong to another protocol; Gun writes them and loses the streams silently).

*Reading.*  Responses are parsed by the small parser below instead of h11's client.
h11's client cannot pipeline, so it would have to be primed with a fake request per
response cycle.  Measured on this machine in one run (a 9-header nginx-like
response with a small body, parse + the Deliver commands): h11 primed per cycle
40-66 us per response, this parser 7-9 us.  And what Gun does that h11 hides would
have needed h11 internals anyway: exact header/trailer block
limits (h11 only bounds its incomplete buffer), merging every body chunk of one
read into one ``gun_data``, a ``transfer-encoding`` other than ``chunked`` (RFC
9112 6.3: read until close), and parking unparsed bytes while a flow budget is
spent.  The parser is strict where RFC 9112 requires it (status line, field
names and values, chunk sizes, content-length) and tolerant where it allows it
(bare LF line ends 2.2, obs-fold 5.2, blank lines between messages 2.2).  It is
cross-checked against h11's server role in the unit tests.

*CONNECT* (``connect``): ``CONNECT host:port`` with a ``host`` header and Basic
``proxy-authorization`` from the destination's ``username``/``password``, only
while no other stream is active (Gun).  A 2xx answer, HTTP/1.0 included, is
delivered as ``gun_response`` (fin) and ends this handler with the ``Tunnel``
command (the bytes after the head go with it); any other answer is an ordinary
response.  Requests made while the CONNECT is pending are held, then refused if
it succeeds (they were not made for the tunnel) or written if it fails.

Every ``handle`` call parses everything the read contains in one pass: body
bytes for one stream are merged into one ``gun_data`` (Gun does the same), and
all deliveries come out in one command list.  Malformed input never raises: it
becomes a connection-wide ``gun_error`` ``("connection_error", "protocol_error",
text)`` and ``Close(("error", ...))`` (Gun 2.4.1 crashes on some of these; see
gun-reference.md section 7).
"""

from __future__ import annotations

import base64
import importlib
import re
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from .. import cookies as _cookies
from .._commands import (
    Close,
    Closing,
    Commands,
    Deliver,
    Event,
    ReplyTo,
    Send,
    SetActive,
    SwitchProtocol,
    Tunnel,
)
from . import content as _content
from .base import (
    BADSTATE_ALREADY_CLOSED,
    BADSTATE_NOT_FOUND,
    BADSTATE_WS_ONLY,
    RECV_SIZE,
    RECV_SIZE_MAX,
    BaseHandler,
    HandlerContext,
    Headers,
)

# --------------------------------------------------------------------------------------
# Options (Gun 3.2)

_DEFAULTS: dict[str, Any] = {
    "version": "HTTP/1.1",
    "keepalive": "infinity",
    "closing_timeout": 15000,
    "max_header_block_size": 100000,
    "max_trailer_block_size": 10000,
    "cookie_ignore_informational": False,
    "content_handlers": ["data"],
}


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _timeout(v: Any) -> bool:
    return v == "infinity" or _pos_int(v)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "version": lambda v: v in ("HTTP/1.1", "HTTP/1.0"),
    "keepalive": _timeout,
    "closing_timeout": _timeout,
    "flow": _pos_int,
    "max_header_block_size": _pos_int,
    "max_trailer_block_size": _pos_int,
    "transform_header_name": callable,
    "cookie_ignore_informational": lambda v: isinstance(v, bool),
    # Gun's gun_content_handler:check_option (an empty list is refused).
    "content_handlers": _content.check_option,
}


def check_options(opts: dict[str, Any]) -> tuple[str, Any] | None:
    """The first bad ``(key, value)`` of an ``http_opts`` dict, or None (Gun's check_options)."""
    for k, v in opts.items():
        check = _CHECKS.get(k)
        if check is None or not check(v):
            return (k, v)
    return None


# --------------------------------------------------------------------------------------
# Response parsing tables

_TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"  # RFC 9110 5.6.2 tchar
_VCHARS = r"\t\x20-\x7e\x80-\xff"  # RFC 9110 5.5 field-content chars (+SP/HTAB), latin-1 str
# The whole head (status line + field lines, CRLF-separated, no final CRLF) in one
# C-level match: RFC 9112 4 status-line (reason phrase optional) and 5 field lines.
_HEAD_RE = re.compile(
    r"HTTP/1\.([0-9]) ([0-9]{3})(?: [" + _VCHARS + r"]*)?"
    r"((?:\r\n[" + _TCHAR + r"]+:[" + _VCHARS + r"]*)*)"
)
_STATUS_RE = re.compile(r"HTTP/1\.([0-9]) ([0-9]{3})(?:[ \t][" + _VCHARS + r"]*)?")
_FIELD_RE = re.compile(r"([" + _TCHAR + r"]+):([" + _VCHARS + r"]*)")
_FOLD_RE = re.compile(r"[ \t][" + _VCHARS + r"]*")
_EOL_RE = re.compile(r"\r?\n")
# End of a head or trailer section; RFC 9112 2.2 lets a recipient accept a bare LF.
_BLOCK_END_RE = re.compile(rb"\r?\n\r?\n")
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CL_RE = re.compile(r"[0-9]{1,18}")
_BAD_TARGET_RE = re.compile(r"[\x00-\x20\x7f]")
_FRAMING = frozenset(("transfer-encoding", "content-length", "connection", "upgrade"))
_REQ_SPECIAL = frozenset(("transfer-encoding", "content-length", "host", "connection", "upgrade"))
# 1xx responses before a final one: flow control does not count them, so a server
# sending them for ever would flood the caller (Go's net/http allows 5).
_MAX_INFORMS = 100
# A chunk-size line with its extensions longer than this is refused rather than
# buffered without end (7.1.1 sets no bound; extensions are ignored anyway).
_MAX_CHUNK_LINE = 4096

# Input states (Gun's ``in``).
_HEAD = 0  # waiting for a status line and header section
_LEN = 1  # content-length body, ``_left`` bytes to go
_CHUNK_SIZE = 2  # waiting for a chunk-size line
_CHUNK_DATA = 3  # inside chunk data, ``_left`` bytes to go
_CHUNK_CRLF = 4  # waiting for the CRLF that ends chunk data
_TRAILERS = 5  # after the last chunk: trailer section or final CRLF
_CLOSE = 6  # body delimited by the server closing the connection
_DONE = 7  # the handler is finished (closed, switched protocol): input ignored

# Output body modes for a request whose body follows through ``data``.
_OUT_NONE = 0
_OUT_CHUNKED = 1
_OUT_LEN = 2
_OUT_RAW = 3  # HTTP/1.0 without content-length: close-delimited, written as is

# Stream kinds.
_PLAIN = 0
_WS = 1
_UPGRADE = 2
_CONNECT = 3  # a CONNECT: a 2xx answer makes the connection a tunnel


class _ProtocolError(Exception):
    """Internal: bad input from the server; never leaves this module."""


class _LimitError(Exception):
    """Internal: a header or trailer block over its limit; never leaves this module."""


class _ContentError(Exception):
    """Internal: a content handler refused the body (``(kind, text)``); never leaves
    this module (Gun: a connection error)."""


class _Stream:
    __slots__ = (
        "ref",
        "reply_to",
        "method",
        "flow",
        "alive",
        "kind",
        "close",
        "upgrade",
        "ws_offer",
        "ws_opts",
        "out_mode",
        "out_left",
        "out_done",
        "pending",
        "informs",
        "destination",
        "content",
        "cookie_uri",
        "ev_later",
    )

    def __init__(self, ref: Any, reply_to: ReplyTo, method: str, flow: int | None) -> None:
        self.ref = ref
        self.reply_to = reply_to
        self.method = method
        self.flow = flow  # None: no flow control (Gun's infinity)
        self.alive = True  # False once cancelled: drained, never delivered
        self.kind = _PLAIN
        self.close = False  # the request asked for the connection to close
        self.upgrade: frozenset[str] = frozenset()  # protocols a generic Upgrade asked for
        self.ws_offer: Any = None
        self.ws_opts: dict[str, Any] = {}
        self.out_mode = _OUT_NONE
        self.out_left = 0
        self.out_done = True  # request body complete (from the user's side)
        self.pending: list[bytes] | None = None  # bytes of a held (unsent) request
        self.informs = 0  # 1xx responses received (at most _MAX_INFORMS)
        self.destination: dict[str, Any] = {}  # a CONNECT's tunnel destination
        self.content: list[Any] | None = None  # content handler chain; None: gun_data
        self.cookie_uri: tuple[str, str] | None = None  # (authority, path), with a cookie store
        self.ev_later: list[Any] | None = None  # events for when a held request is written


def _tokens(value: str) -> list[str]:
    """A comma-separated list header (RFC 9110 5.6.1) as lower-case tokens."""
    return [t for t in (p.strip(" \t").lower() for p in value.split(",")) if t]


def _encode(s: str) -> bytes:
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


def _bytes(v: str | bytes) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else v


def _ws() -> Any:
    """``gunpy.protocols.ws``, imported on first use: this module never needs it to load."""
    return importlib.import_module(".ws", __package__)


def _host_header(ctx: HandlerContext) -> str:
    """Gun's host_header/3: default ports omitted, IPv6 bracketed, localhost for Unix."""
    if ctx.transport == "unix":
        return "localhost"
    host = str(ctx.origin_host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = ctx.origin_port
    if (port == 80 and ctx.transport == "tcp") or (port == 443 and ctx.transport == "tls"):
        return host
    return f"{host}:{port}"


class HttpOptions:
    """The options HTTP/1.1 and HTTP/2 share, as read-only attributes of the
    handler (Gun's ``content_handlers`` and ``cookie_ignore_informational``),
    read from its validated ``opts``."""

    __slots__ = ()
    opts: dict[str, Any]

    @property
    def content_handlers(self) -> list[Any]:
        return self.opts["content_handlers"]  # type: ignore[no-any-return]

    @property
    def cookie_ignore_informational(self) -> bool:
        return self.opts["cookie_ignore_informational"]  # type: ignore[no-any-return]


class HttpHandler(HttpOptions, BaseHandler):
    """Gun's ``gun_http``: pipelined HTTP/1.1 (or 1.0) requests and their responses."""

    name: ClassVar[str] = "http"

    # Slots: attribute reads are the handler's hot path, and CPython 3.11 makes
    # them slower for an instance with 30 or more attributes in its __dict__
    # (measured: HttpHandler 7.2 -> 7.8 µs a request at 31); slots stay fast.
    __slots__ = (
        "_block",
        "_buf",
        "_close_after",
        "_closed",
        "_closing_sent",
        "_closing_timeout",
        "_content",
        "_cookies",
        "_dead",
        "_eof",
        "_ev",
        "_flow",
        "_host",
        "_in",
        "_keepalive",
        "_last_reply_to",
        "_left",
        "_max_header",
        "_max_trailer",
        "_out_stream",
        "_parts",
        "_paused",
        "_resp_started",
        "_scanned",
        "_streams",
        "_transform",
        "_unsent",
        "_v10",
        "_version",
        "opts",
    )

    def __init__(self, ctx: HandlerContext, opts: dict[str, Any] | None = None) -> None:
        super().__init__(ctx)
        o = dict(_DEFAULTS)
        if opts:
            o.update(opts)
        self.opts = o
        self._v10 = o["version"] == "HTTP/1.0"
        self._version = "HTTP/1.0" if self._v10 else "HTTP/1.1"
        self._flow: int | None = o.get("flow")
        self._closing_timeout: int | str = o["closing_timeout"]
        self._max_header: int = o["max_header_block_size"]
        self._max_trailer: int = o["max_trailer_block_size"]
        self._transform: Callable[[str], str] | None = o.get("transform_header_name")
        keepalive = o["keepalive"]
        self._keepalive: int | None = keepalive if isinstance(keepalive, int) else None
        # None when the data handler alone: _flush delivers gun_data itself.
        self._content = _content.resolve(o["content_handlers"])
        self._cookies: Any = ctx.opts.get("cookie_store")  # gunpy.cookies (Gun 4.13)
        # The origin does not change during a connection: compute the host header once.
        self._host = _host_header(ctx)

        self._streams: deque[_Stream] = deque()  # FIFO; [0] owns the next response
        self._unsent: deque[_Stream] = deque()  # held requests, a suffix of _streams
        self._out_stream: _Stream | None = None  # request whose body is being written
        self._block: _Stream | None = None  # sent request that forbids writing more
        # Input side.
        self._buf = b""  # unparsed bytes (partial head, chunk line...; all when paused)
        self._in = _HEAD
        self._left = 0
        self._scanned = 0  # bytes of an incomplete head/trailer already searched
        self._parts: list[bytes] = []  # body bytes of _streams[0] parsed this pass
        self._close_after = False  # close once the current response completes
        self._closing_sent = False
        self._paused = False  # flow budget of _streams[0] spent: socket not read
        self._eof = False  # EOF seen while paused
        self._dead = False  # Close/SwitchProtocol emitted: nothing more happens
        self._closed = False  # close() ran
        self._last_reply_to: ReplyTo | None = None  # of the last completed response
        self._ev = ctx.events  # build Event commands (gunpy.events)
        self._resp_started = False  # response_start emitted for the head being read

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
        if self._dead or self._close_after:
            # Gun's closing state: the actor normally keeps requests away from us then.
            return self.stream_error(reply_to, ref, "closing")
        if _BAD_TARGET_RE.search(method) or not method or _BAD_TARGET_RE.search(path):
            # Would split the request line (request smuggling); header values are
            # checked by the caller, the request line is checked here.
            return self.stream_error(
                reply_to,
                ref,
                ("badstate", "The request method or path contains invalid characters."),
            )
        # Gun 3.5: the request's flow, else the protocol's, else none.
        flow = req_opts.get("flow") if req_opts else None
        st = _Stream(ref, reply_to, method, flow if isinstance(flow, int) else self._flow)
        user: Headers = []
        has_host = False
        cl: str | None = None
        conn: str | None = None
        upgrade: str | None = None
        for h in headers:
            n = h[0]
            if n in _REQ_SPECIAL:
                if n == "transfer-encoding":
                    continue  # Gun strips it: the framing is ours (4.9)
                if n == "content-length":
                    if body is not None:
                        continue  # replaced by the real length
                    cl = h[1]
                elif n == "host":
                    has_host = True
                elif n == "connection":
                    conn = h[1] if conn is None else f"{conn}, {h[1]}"
                else:
                    upgrade = h[1]
            user.append(h)
        first: Headers
        if body is not None:
            first = [("content-length", str(len(body)))]
        elif cl is not None:
            if not _CL_RE.fullmatch(cl.strip(" \t")):
                return self.stream_error(
                    reply_to, ref, ("badstate", f"Invalid content-length header {cl!r}.")
                )
            first = []
            st.out_mode, st.out_left, st.out_done = _OUT_LEN, int(cl), False
        elif self._v10:
            first = []  # HTTP/1.0 has no chunked coding: close-delimited (Gun)
            st.out_mode, st.out_done = _OUT_RAW, False
        else:
            first = [("transfer-encoding", "chunked")]
            st.out_mode, st.out_done = _OUT_CHUNKED, False
        if not has_host:
            first.append(("host", self._host))
        if self._cookies is not None:
            st.cookie_uri = self._cookie_target(user, path)
            user = _cookies.add_cookie_header(
                self._cookies, self.ctx.origin_scheme, *st.cookie_uri, user
            )
        tokens = _tokens(conn) if conn is not None else None
        st.close = self._request_closes(tokens)
        if tokens is not None and "upgrade" in tokens and upgrade and not self._v10:
            # Generic Upgrade (Gun 4.9): a matching 101 switches to the raw protocol.
            # RFC 9110 7.8: an HTTP/1.0 request's Upgrade is ignored by servers.
            st.kind = _UPGRADE
            st.upgrade = frozenset(_tokens(upgrade))
        # Gun transforms the host and user header names, then puts its own framing
        # header in front untransformed (gun_http:request/12).
        framing = first[:1] if first and first[0][0] != "host" else []
        head = self._serialize(method, path, first[len(framing) :] + user, framing)
        cmds = self._enqueue(st, head + body if body else head)
        if self._ev:
            sent = framing + first[len(framing) :] + user
            self._ev_request(
                cmds, st, "request" if body is not None else "headers", method, path, sent
            )
            if body is not None:
                self._ev_request_end(cmds, st)
        return cmds

    # -- events (Gun 4.14, gunpy.events); only built when ctx.events is set -----------
    def _ev_request(
        self, cmds: Commands, st: _Stream, function: str, method: str, path: str, headers: Headers
    ) -> None:
        ev = {
            "stream_ref": st.ref,
            "reply_to": st.reply_to,
            "function": function,
            "method": method,
            "authority": next((v for n, v in headers if n == "host"), self._host),
            "path": path,
            "headers": headers,
        }
        if function == "connect":
            # Gun: a CONNECT's authority is its target; there is no path.
            ev["authority"] = path
            del ev["path"]
        # Gun: request_start before the head is written, request_headers after
        # (for a held request: when _flush_unsent writes it).
        cmds.insert(0, Event("request_start", ev))
        self._ev_written(cmds, st, Event("request_headers", dict(ev)))

    def _ev_written(self, cmds: Commands, st: _Stream, event: Event) -> None:
        """An event that follows the request's bytes: now, or when a held request
        is written."""
        if st.pending is None:
            cmds.append(event)
        elif st.ev_later is None:
            st.ev_later = [event]
        else:
            st.ev_later.append(event)

    def _ev_request_end(self, cmds: Commands, st: _Stream) -> None:
        self._ev_written(
            cmds, st, Event("request_end", {"stream_ref": st.ref, "reply_to": st.reply_to})
        )

    def _ev_stream(self, cmds: Commands, name: str, st: _Stream, **extra: Any) -> None:
        ev = {"stream_ref": st.ref, "reply_to": st.reply_to}
        if extra:
            ev.update(extra)
        cmds.append(Event(name, ev))

    def ws_upgrade(
        self, ref: Any, reply_to: ReplyTo, path: str, headers: Headers, ws_opts: dict[str, Any]
    ) -> Commands:
        if self._v10:
            return self.stream_error(
                reply_to, ref, ("badstate", "Websocket cannot be used over an HTTP/1.0 connection.")
            )
        if self._dead or self._close_after:
            return self.stream_error(reply_to, ref, "closing")
        if _BAD_TARGET_RE.search(path):
            return self.stream_error(
                reply_to,
                ref,
                ("badstate", "The request method or path contains invalid characters."),
            )
        offer_headers, offer = _ws().handshake_offer(ws_opts)
        st = _Stream(ref, reply_to, "GET", ws_opts.get("flow"))
        st.kind = _WS
        st.ws_offer = offer
        st.ws_opts = ws_opts
        # Gun's order: host, the handshake headers, then the user's; no body framing.
        out: Headers = [] if any(h[0] == "host" for h in headers) else [("host", self._host)]
        out += offer_headers
        out += [h for h in headers if h[0] not in ("content-length", "transfer-encoding")]
        if self._cookies is not None:
            st.cookie_uri = self._cookie_target(out, path)
            out = _cookies.add_cookie_header(
                self._cookies, self.ctx.origin_scheme, *st.cookie_uri, out
            )
        cmds = self._enqueue(st, self._serialize("GET", path, out))
        if self._ev:
            self._ev_request(cmds, st, "ws_upgrade", "GET", path, out)
            cmds.insert(
                0,
                Event("ws_upgrade", {"stream_ref": ref, "reply_to": reply_to, "opts": ws_opts}),
            )
            self._ev_request_end(cmds, st)
        return cmds

    def _cookie_target(self, headers: Headers, path: str) -> tuple[str, str]:
        """The request's (authority, path) for the cookie store: its host header."""
        return next((v for n, v in headers if n == "host"), self._host), path

    def connect(
        self,
        ref: Any,
        reply_to: ReplyTo,
        destination: dict[str, Any],
        headers: Headers,
        req_opts: dict[str, Any],
    ) -> Commands:
        """Gun's gun_http:connect: ``CONNECT host:port`` (RFC 9110 9.3.6).

        Only when no other stream is active, as Gun: the tunnel takes over the whole
        connection.  A 2xx answer (HTTP/1.0 too) gives ``gun_response`` (fin) then
        the ``Tunnel`` command; any other answer is an ordinary response.
        """
        if self._dead or self._close_after:
            return self.stream_error(reply_to, ref, "closing")
        if self._streams:
            return self.stream_error(
                reply_to,
                ref,
                (
                    "badstate",
                    "CONNECT can only be used with HTTP/1.1 when no other streams are active.",
                ),
            )
        host = str(destination["host"])
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # RFC 9110 4.2.1 / RFC 3986 3.2.2: an IPv6 literal
        authority = f"{host}:{destination['port']}"
        if _BAD_TARGET_RE.search(authority):
            return self.stream_error(
                reply_to,
                ref,
                ("badstate", "The request method or path contains invalid characters."),
            )
        flow = req_opts.get("flow") if req_opts else None
        st = _Stream(ref, reply_to, "CONNECT", flow if isinstance(flow, int) else self._flow)
        st.kind = _CONNECT
        st.destination = destination
        # Gun's order: proxy-authorization, host, then the user's headers without
        # the framing ones (a CONNECT has no body).
        out: Headers = [h for h in headers if h[0] not in ("content-length", "transfer-encoding")]
        if not any(h[0] == "host" for h in out):
            out.insert(0, ("host", authority))
        user, password = destination.get("username"), destination.get("password")
        if (
            user is not None
            and password is not None
            and not any(h[0] == "proxy-authorization" for h in out)
        ):
            cred = _bytes(user) + b":" + _bytes(password)
            out.insert(
                0, ("proxy-authorization", "Basic " + base64.b64encode(cred).decode("ascii"))
            )
        cmds = self._enqueue(st, self._serialize("CONNECT", authority, out))
        if self._ev:
            self._ev_request(cmds, st, "connect", "CONNECT", authority, out)
            self._ev_request_end(cmds, st)
        return cmds

    def _request_closes(self, tokens: list[str] | None) -> bool:
        # Gun's conn_from_headers (RFC 9112 9.3): HTTP/1.0 never keeps alive here (Gun
        # closes after every HTTP/1.0 response); a present connection header without
        # keep-alive or upgrade means close; "close" always does.
        if self._v10:
            return True
        if tokens is None:
            return False
        if "close" in tokens:
            return True
        return "keep-alive" not in tokens and "upgrade" not in tokens

    def _serialize(
        self, method: str, path: str, headers: Headers, framing: Headers | None = None
    ) -> bytes:
        tf = self._transform
        if tf is not None:
            # Outgoing names only (Gun 4.9), host included; not the framing header
            # we add, which Gun puts in front after transforming.
            headers = [(tf(n), v) for n, v in headers]
        if framing:
            headers = framing + headers
        lines = [
            f"{method} {path} {self._version}\r\n",
            *[f"{n}: {v}\r\n" for n, v in headers],
            "\r\n",
        ]
        try:
            return "".join(lines).encode("latin-1")
        except UnicodeEncodeError:
            # Header values are latin-1 str (ARCHITECTURE 1): every byte round-trips.
            # A line with code points above 255 cannot be latin-1: send that line as
            # UTF-8 rather than fail (RFC 9110 5.5 only asks for octets).
            return b"".join([_encode(line) for line in lines])

    def _enqueue(self, st: _Stream, wire: bytes) -> Commands:
        self._streams.append(st)
        if self._out_stream is None and self._block is None:
            self._start(st)
            return [Send(wire)]
        st.pending = [wire]
        self._unsent.append(st)
        return []

    def _start(self, st: _Stream) -> None:
        """``st``'s head is being written: note what it forbids after it."""
        if not st.out_done:
            self._out_stream = st
        if st.close or st.kind != _PLAIN:
            self._block = st

    def _flush_unsent(self, cmds: Commands) -> None:
        """Write the held requests that may now go, in order."""
        unsent = self._unsent
        while unsent and self._out_stream is None and self._block is None:
            st = unsent.popleft()
            pending = st.pending or []
            st.pending = None
            cmds.append(Send(b"".join(pending)))
            self._start(st)
            if st.ev_later is not None:
                cmds.extend(st.ev_later)
                st.ev_later = None

    def data(self, ref: Any, reply_to: ReplyTo, fin: str, data: bytes) -> Commands:
        st = self._out_stream
        if st is None or st.ref != ref:
            # A held request may get its body early; it is written with its head.
            st = next((u for u in self._unsent if u.ref == ref and not u.out_done), None)
            if st is None:
                return self.stream_error(reply_to, ref, ("badstate", BADSTATE_ALREADY_CLOSED))
        is_fin = fin == "fin"
        mode = st.out_mode
        out: bytes
        if mode == _OUT_CHUNKED:
            # RFC 9112 7.1; Gun drops empty nofin data (an empty chunk would end the body).
            if data:
                out = (
                    b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)
                    if is_fin
                    else b"%x\r\n%b\r\n" % (len(data), data)
                )
            else:
                out = b"0\r\n\r\n" if is_fin else b""
        elif mode == _OUT_LEN:
            n = len(data)
            if n > st.out_left:
                # Gun crashes here; we refuse the chunk and keep the connection usable.
                return self.stream_error(
                    reply_to,
                    ref,
                    (
                        "badstate",
                        "The request body would be larger than its content-length header.",
                    ),
                )
            st.out_left -= n
            out = data
            if is_fin and st.out_left:
                # The server waits for bytes that will never come, and any request
                # written after would be read as body: the connection is unusable.
                text = "The request body is shorter than its content-length header."
                self._dead = True
                self._in = _DONE
                cmds: Commands = [Send(out)] if out and st is self._out_stream else []
                cmds.append(
                    Deliver(reply_to, ("gun_error", self.ctx.conn, ref, ("badstate", text)))
                )
                cmds.append(Close(("error", ("badstate", text))))
                return cmds
        else:
            out = data  # HTTP/1.0 close-delimited request body
        if st is not self._out_stream:
            # A held request: keep its body with its head, written together later.
            if out:
                assert st.pending is not None
                st.pending.append(out)
            if is_fin:
                st.out_done = True
                if self._ev:
                    self._ev_request_end([], st)  # held: comes with the write
            return []
        cmds = [Send(out)] if out else []
        if is_fin:
            st.out_done = True
            self._out_stream = None
            if self._ev:
                self._ev_stream(cmds, "request_end", st)
            self._flush_unsent(cmds)
        return cmds

    # ----------------------------------------------------------------------------------
    # Responses

    def handle(self, data: bytes) -> Commands:
        if self._dead:
            return []
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if self._paused:
            # Flow budget spent (Gun 4.5): keep the bytes unparsed until update_flow.
            self._buf = data
            return []
        cmds: Commands = []
        self._parse(data, cmds)
        return cmds

    def _parse(self, buf: bytes, cmds: Commands) -> None:
        """Parse everything in ``buf``; leave what is incomplete in ``_buf``."""
        pos = 0
        end = len(buf)
        state = self._in
        parts = self._parts
        try:
            while True:
                if state == _LEN:
                    left = self._left
                    avail = end - pos
                    if avail < left:
                        if avail:
                            parts.append(buf[pos:] if pos else buf)
                            self._left = left - avail
                        pos = end
                        break
                    parts.append(buf[pos : pos + left])
                    pos += left
                    state = self._end_response(cmds, True)
                elif state == _HEAD:
                    if pos == end:
                        break
                    if buf[pos] in (13, 10):
                        # RFC 9112 2.2: ignore empty lines before a status line.
                        pos = end - len(buf[pos:].lstrip(b"\r\n"))
                        if pos == end:
                            break
                    if not self._streams:
                        raise _ProtocolError(
                            "The server sent data while no request was outstanding."
                        )
                    if self._ev and not self._resp_started:
                        # Gun: when the first byte of a response head arrives.
                        self._resp_started = True
                        self._ev_stream(cmds, "response_start", self._streams[0])
                    start = pos + max(0, self._scanned - 3)
                    # Fast path: a CRLF CRLF within the limit, and a head the strict
                    # regex accepts (so it holds no bare LF that could end it earlier).
                    i = buf.find(b"\r\n\r\n", start)
                    head = None
                    if i >= 0 and i + 4 - pos <= self._max_header:
                        head = _HEAD_RE.fullmatch(buf[pos:i].decode("latin-1"))
                        nxt = i + 4
                    if head is None:
                        # Bare LF line ends (2.2), obs-fold (5.2), an error, or a head
                        # that is incomplete or over the limit.
                        m = _BLOCK_END_RE.search(buf, start)
                        if m is None:
                            if end - pos > self._max_header:
                                raise _LimitError(self._limit_text("header", self._max_header))
                            self._scanned = end - pos
                            break
                        nxt = m.end()
                        if nxt - pos > self._max_header:
                            raise _LimitError(self._limit_text("header", self._max_header))
                        minor, status, headers = self._head_slow(buf[pos : m.start()])
                    else:
                        minor = head[1]
                        status = int(head[2])
                        headers = [
                            (n.lower(), v.strip(" \t"))
                            for n, _, v in (f.partition(":") for f in head[3].split("\r\n")[1:])
                        ]
                    self._scanned = 0
                    state = self._head(minor, status, headers, buf, nxt, cmds)
                    pos = nxt
                    if state == _DONE:
                        break
                elif state == _CHUNK_DATA:
                    left = self._left
                    avail = end - pos
                    if avail < left:
                        if avail:
                            parts.append(buf[pos:] if pos else buf)
                            self._left = left - avail
                        pos = end
                        break
                    parts.append(buf[pos : pos + left])
                    pos += left
                    state = _CHUNK_CRLF
                elif state == _CHUNK_SIZE:
                    nl = buf.find(b"\n", pos)
                    if nl < 0:
                        if end - pos > _MAX_CHUNK_LINE:
                            raise _ProtocolError("The chunk size line is too long.")
                        break
                    line = buf[pos:nl]
                    semi = line.find(b";")  # RFC 9112 7.1.1 chunk extensions: ignored
                    size_b = (line if semi < 0 else line[:semi]).rstrip(b"\r \t")
                    if not _HEX_RE.fullmatch(size_b):
                        raise _ProtocolError(f"Invalid chunk size line {line[:64]!r}.")
                    pos = nl + 1
                    size = int(size_b, 16)
                    if size:
                        self._left = size
                        state = _CHUNK_DATA
                    else:
                        state = _TRAILERS
                elif state == _CHUNK_CRLF:
                    if buf.startswith(b"\r\n", pos):
                        pos += 2
                    elif buf.startswith(b"\n", pos):
                        pos += 1
                    elif pos == end or (pos + 1 == end and buf[pos] == 13):
                        break
                    else:
                        raise _ProtocolError("Chunk data is not followed by CRLF.")
                    state = _CHUNK_SIZE
                elif state == _TRAILERS:
                    if buf.startswith(b"\r\n", pos):
                        pos += 2
                        state = self._end_response(cmds, True)
                    elif buf.startswith(b"\n", pos):
                        pos += 1
                        state = self._end_response(cmds, True)
                    elif pos == end or (pos + 1 == end and buf[pos] == 13):
                        break
                    else:
                        m = _BLOCK_END_RE.search(buf, pos + max(0, self._scanned - 3))
                        if m is None:
                            if end - pos > self._max_trailer:
                                raise _LimitError(self._limit_text("trailer", self._max_trailer))
                            self._scanned = end - pos
                            break
                        self._scanned = 0
                        nxt = m.end()
                        if nxt - pos > self._max_trailer:
                            raise _LimitError(self._limit_text("trailer", self._max_trailer))
                        trailers = self._fields(buf[pos : m.start()].decode("latin-1"))
                        pos = nxt
                        state = self._end_response(cmds, False, trailers)
                elif state == _CLOSE:
                    if pos < end:
                        parts.append(buf[pos:] if pos else buf)
                    pos = end
                    break
                else:  # _DONE
                    pos = end
                    break
        except _ProtocolError as e:
            self._conn_error(cmds, "protocol_error", str(e))
            return
        except _LimitError as e:
            self._conn_error(cmds, "limit_reached", str(e))
            return
        except _ContentError as e:
            self._conn_error(cmds, *e.args)
            return
        if self._dead:
            return
        self._in = state
        self._buf = buf[pos:] if pos < end else b""
        if parts:
            try:
                self._flush(cmds, False)
            except _ContentError as e:
                self._conn_error(cmds, *e.args)
                return
        streams = self._streams
        if self._close_after and not self._closing_sent and streams:
            # Gun 4.9: the response said close; finish its body within closing_timeout.
            self._closing_sent = True
            cmds.append(Closing(self._closing_timeout))
        if streams:
            st = streams[0]
            if st.flow is not None and st.flow <= 0 and st.alive and state != _HEAD:
                # Gun 4.5: stop reading the socket; TCP pushes back on the server.
                self._paused = True
                cmds.append(SetActive(False))

    def _limit_text(self, what: str, limit: int) -> str:
        return f"The response {what} block is larger than the max_{what}_block_size option ({limit} bytes)."

    def _fields(self, text: str) -> Headers:
        """Parse trailer field lines (``text`` without the final empty line)."""
        m = _HEAD_RE.fullmatch("HTTP/1.1 200\r\n" + text)
        if m is not None:
            return [
                (n.lower(), v.strip(" \t"))
                for n, _, v in (f.partition(":") for f in m[3].split("\r\n")[1:])
            ]
        return self._fields_slow(_EOL_RE.split(text))

    def _fields_slow(self, lines: list[str]) -> Headers:
        headers: Headers = []
        for line in lines:
            if line[:1] in (" ", "\t"):
                # RFC 9112 5.2: a user agent replaces obs-fold with SP.
                if not headers or not _FOLD_RE.fullmatch(line):
                    raise _ProtocolError(f"Invalid header line {line[:100]!r}.")
                n, v = headers[-1]
                folded = line.strip(" \t")
                headers[-1] = (n, f"{v} {folded}".strip(" \t"))
                continue
            fm = _FIELD_RE.fullmatch(line)
            if fm is None:
                raise _ProtocolError(f"Invalid header line {line[:100]!r}.")
            headers.append((fm[1].lower(), fm[2].strip(" \t")))
        return headers

    def _head_slow(self, block: bytes) -> tuple[str, int, Headers]:
        """Parse a head the strict regex refused: bare LF, obs-fold, or an error."""
        lines = _EOL_RE.split(block.decode("latin-1"))
        sm = _STATUS_RE.fullmatch(lines[0])
        if sm is None:
            raise _ProtocolError(f"Invalid status line {lines[0][:100]!r}.")
        return sm[1], int(sm[2]), self._fields_slow(lines[1:])

    def _head(
        self, minor: str, status: int, headers: Headers, buf: bytes, nxt: int, cmds: Commands
    ) -> int:
        """A complete head for ``_streams[0]``; returns the next input state."""
        if status < 100:
            raise _ProtocolError(f"Invalid status code {status}.")
        st = self._streams[0]
        conn = self.ctx.conn
        if self._ev:
            self._resp_started = False
            if status < 200:
                # Gun: before the gun_inform / gun_upgrade message.
                self._ev_stream(cmds, "response_inform", st, status=status, headers=headers)
        if self._cookies is not None and st.cookie_uri is not None:
            _cookies.set_cookie_header(
                self._cookies,
                self.ctx.origin_scheme,
                *st.cookie_uri,
                status,
                headers,
                self.cookie_ignore_informational,
            )
        te: str | None = None
        cl: str | None = None
        connection: str | None = None
        upgrade: str | None = None
        for n, v in headers:
            if n in _FRAMING:
                if n == "transfer-encoding":
                    te = v if te is None else f"{te}, {v}"
                elif n == "content-length":
                    cl = v if cl is None else f"{cl}, {v}"
                elif n == "connection":
                    connection = v if connection is None else f"{connection}, {v}"
                else:
                    upgrade = v
        if status < 200:
            if status == 101:
                return self._switch(st, minor, headers, upgrade, buf[nxt:], cmds)
            # RFC 9110 15.2: 1xx, then the final response for the same request.
            st.informs += 1
            if st.informs > _MAX_INFORMS:
                raise _ProtocolError("Too many informational (1xx) responses.")
            if st.alive:
                cmds.append(Deliver(st.reply_to, ("gun_inform", conn, st.ref, status, headers)))
            return _HEAD
        if st.kind == _CONNECT and status < 300:
            return self._tunnel(st, status, headers, buf[nxt:], cmds)
        # RFC 9112 6.3 message body length.
        state: int
        if st.method == "HEAD" or status == 204 or status == 304:
            state = _HEAD
        elif te is not None and minor != "0":
            # Transfer-encoding wins over content-length (6.3 item 3); Gun ignores it
            # in HTTP/1.0 responses.  Chunked last = chunked, else read until close.
            codings = _tokens(te)
            state = _CHUNK_SIZE if codings and codings[-1] == "chunked" else _CLOSE
        elif cl is not None:
            values = {x.strip(" \t") for x in cl.split(",")}
            length = values.pop() if len(values) == 1 else ""
            if not _CL_RE.fullmatch(length):
                # 6.3 item 5: an invalid content-length is an unrecoverable error.
                raise _ProtocolError(f"Invalid content-length header {cl[:100]!r}.")
            self._left = int(length)
            state = _LEN if self._left else _HEAD
        else:
            state = _CLOSE
        fin = state == _HEAD
        if st.alive:
            cmds.append(
                Deliver(
                    st.reply_to,
                    ("gun_response", conn, st.ref, "fin" if fin else "nofin", status, headers),
                )
            )
            if not fin and self._content is not None:
                st.content = _content.init(
                    self._content, conn, st.reply_to, st.ref, status, headers
                )
            if self._ev:
                # Gun: after gun_response, and not for a cancelled stream.
                self._ev_stream(cmds, "response_headers", st, status=status, headers=headers)
        if not self._close_after and self._response_closes(st, minor, connection):
            # Gun 4.9: the pipelined streams can never be answered: tell them now,
            # before this response's last gun_data.
            self._close_after = True
            self._drop_pipelined(cmds, "closing")
        if fin:
            return self._end_response(cmds, None)
        return state

    def _response_closes(self, st: _Stream, minor: str, connection: str | None) -> bool:
        """RFC 9112 9.3 as Gun reads it (4.9): is this the last response here?"""
        if st.close or self._v10 or minor == "0":
            return True
        if connection is None:
            return False
        c = connection.lower()
        if c == "keep-alive" or c == "upgrade":  # the common cases, without a split
            return False
        tokens = _tokens(c)
        if "close" in tokens:
            return True
        return "keep-alive" not in tokens and "upgrade" not in tokens

    def _switch(
        self,
        st: _Stream,
        minor: str,
        headers: Headers,
        upgrade: str | None,
        rest: bytes,
        cmds: Commands,
    ) -> int:
        """A 101 for ``st`` (RFC 9110 15.2.2): switch protocols, or fail the connection."""
        conn = self.ctx.conn
        if st.kind == _WS and minor != "0":
            try:
                result: dict[str, Any] | str = _ws().handshake_check(st.ws_offer, headers)
            except Exception as e:  # a malformed 101 must not crash the connection
                result = f"Invalid Websocket handshake response: {e}"
            if not isinstance(result, dict) or not st.alive or self._close_after:
                # Gun 4.7: a bad handshake drops the connection (reason normal); the
                # stream then gets ("closed", "normal") from close().  A cancelled or
                # closing stream cannot go back to HTTP after a 101 either.
                if not st.alive:
                    self._streams.popleft()
                self._finish(cmds, Close("normal"))
                return _DONE
            cmds.append(Deliver(st.reply_to, ("gun_upgrade", conn, st.ref, ["websocket"], headers)))
            self._streams.popleft()
            self._drop_held(cmds, ("badstate", BADSTATE_WS_ONLY))
            args = {
                "opts": st.ws_opts,
                "ref": st.ref,
                "reply_to": st.reply_to,
                "headers": headers,
                **result,
            }
            self._finish(cmds, SwitchProtocol("ws", args=args, buffer=rest))
            return _DONE
        if st.kind == _UPGRADE and minor != "0":
            protos = _tokens(upgrade) if upgrade is not None else []
            # RFC 9110 7.8: the server may only switch to a protocol the client offered.
            if protos and all(p in st.upgrade for p in protos):
                if not st.alive or self._close_after:
                    # As for Websocket: a live stream stays, so close() tells it.
                    if not st.alive:
                        self._streams.popleft()
                    self._finish(cmds, Close("normal"))
                    return _DONE
                self._streams.popleft()
                cmds.append(Deliver(st.reply_to, ("gun_upgrade", conn, st.ref, protos, headers)))
                self._drop_held(
                    cmds,
                    ("badstate", "This connection only accepts data for the upgraded protocol."),
                )
                args = {"ref": st.ref, "reply_to": st.reply_to}
                self._finish(cmds, SwitchProtocol("raw", args=args, buffer=rest))
                return _DONE
            raise _ProtocolError(
                "Unexpected 101 response: its upgrade header does not match the request's."
            )
        raise _ProtocolError("Unexpected 101 response: no upgrade was requested.")

    def _tunnel(
        self, st: _Stream, status: int, headers: Headers, rest: bytes, cmds: Commands
    ) -> int:
        """A 2xx for a CONNECT: the connection becomes the tunnel (Gun's handle_connect).

        HTTP/1.0 answers count (old proxies send them); the answer's framing headers
        are ignored (RFC 9110 9.3.6: a 2xx CONNECT response has no content).  The
        bytes after the head belong to the protocol inside the tunnel.
        """
        self._streams.popleft()
        if not st.alive or self._close_after:
            # Cancelled (or shutting down): nobody wants the tunnel; close rather
            # than leave the connection a tunnel with no user (Gun opens it).
            self._finish(cmds, Close("normal"))
            return _DONE
        cmds.append(
            Deliver(st.reply_to, ("gun_response", self.ctx.conn, st.ref, "fin", status, headers))
        )
        if self._ev:
            self._ev_stream(cmds, "response_headers", st, status=status, headers=headers)
            self._ev_stream(cmds, "response_end", st)
        self._drop_held(
            cmds,
            (
                "badstate",
                "The connection became a tunnel: requests must go through it (tunnel option).",
            ),
        )
        self._finish(cmds, Tunnel("connect", st.ref, st.reply_to, st.destination, rest))
        return _DONE

    def _flush(self, cmds: Commands, fin: bool) -> None:
        """Deliver the body bytes parsed this pass as one gun_data (Gun merges them)."""
        parts = self._parts
        if len(parts) == 1:
            data = parts[0]
        elif parts:
            data = b"".join(parts)
        else:
            data = b""
        parts.clear()
        st = self._streams[0]
        if st.alive and (data or fin):
            if st.content is not None:
                self._content_data(st, fin, data, cmds)
                return
            cmds.append(
                Deliver(
                    st.reply_to,
                    ("gun_data", self.ctx.conn, st.ref, "fin" if fin else "nofin", data),
                )
            )
            if st.flow is not None:
                st.flow -= 1

    def _content_data(self, st: _Stream, fin: bool, data: bytes, cmds: Commands) -> None:
        """Body bytes through the stream's content handlers (Gun's send_data)."""
        assert st.content is not None
        out: list[Any] = []
        r = _content.handle(st.content, "fin" if fin else "nofin", data, out)
        reply_to = st.reply_to
        cmds.extend([Deliver(reply_to, m) for m in out])
        if r[0] == "error":
            raise _ContentError(*_content.error_parts(r[1]))
        if st.flow is not None:
            st.flow -= r[1]

    def _end_response(
        self, cmds: Commands, fin: bool | None, trailers: Headers | None = None
    ) -> int:
        """``_streams[0]``'s response is complete.

        ``fin`` True: deliver the pending body with fin; False: pending body nofin, then
        the trailers (Gun 2: data before gun_trailers is nofin); None: no body at all.
        """
        if fin is not None:
            self._flush(cmds, fin)
        st = self._streams.popleft()
        if st.alive:
            self._last_reply_to = st.reply_to
        if trailers is not None and st.alive:
            cmds.append(Deliver(st.reply_to, ("gun_trailers", self.ctx.conn, st.ref, trailers)))
        if self._ev:
            if trailers is not None:
                self._ev_stream(cmds, "response_trailers", st, headers=trailers)
            self._ev_stream(cmds, "response_end", st)
        if self._close_after:
            # Gun 4.9: the server closes after this response; Gun closes the socket itself.
            self._finish(cmds, Close("normal"))
            return _DONE
        if st is self._block:
            # A refused upgrade: the connection stays HTTP; release the held requests.
            self._block = None
            self._flush_unsent(cmds)
        return _HEAD

    def _finish(self, cmds: Commands, cmd: Close | SwitchProtocol | Tunnel) -> None:
        self._dead = True
        self._in = _DONE
        self._buf = b""
        self._parts.clear()
        cmds.append(cmd)

    def _conn_error(self, cmds: Commands, kind: str, text: str) -> None:
        """Connection-wide error (Gun 2 ``{gun_error, Pid, Reason}``), then close."""
        # The stream whose response is being parsed (the owner if it was cancelled);
        # with none outstanding, the one whose response just ended (the bytes past its
        # end are what went wrong), else the owner.  The owner also gets gun_down.
        to: ReplyTo = self.ctx.owner
        if self._streams:
            if self._parts:
                try:
                    self._flush(cmds, False)
                except _ContentError:
                    pass  # already failing
            st = self._streams[0]
            if st.alive:
                to = st.reply_to
        elif self._last_reply_to is not None:
            to = self._last_reply_to
        reason = ("connection_error", kind, text)
        cmds.append(Deliver(to, ("gun_error", self.ctx.conn, reason)))
        self._finish(cmds, Close(("error", reason)))

    def _drop_pipelined(self, cmds: Commands, reason: Any) -> None:
        """Error every stream behind ``_streams[0]`` with ``reason`` and forget them."""
        streams = self._streams
        if len(streams) <= 1:
            return
        head = streams.popleft()
        dropped = list(streams)
        streams.clear()
        streams.append(head)
        self._unsent.clear()
        conn = self.ctx.conn
        for st in dropped:
            if st.alive:
                cmds.append(Deliver(st.reply_to, ("gun_error", conn, st.ref, reason)))
        if self._out_stream is not None and self._out_stream in dropped:
            self._out_stream = None
        if self._block is not None and self._block in dropped:
            self._block = None

    def _drop_held(self, cmds: Commands, reason: Any) -> None:
        """After a protocol switch: the held requests will never be written."""
        conn = self.ctx.conn
        for st in self._unsent:
            if st.alive:
                cmds.append(Deliver(st.reply_to, ("gun_error", conn, st.ref, reason)))
        self._unsent.clear()
        self._streams.clear()

    def handle_eof(self) -> Commands:
        if self._dead:
            return []
        if self._paused:
            self._eof = True  # handled once the buffered bytes are delivered
            return []
        cmds: Commands = []
        state = self._in
        if state == _CLOSE:
            # RFC 9112 6.3 item 8: the close ends the body: a complete response, so
            # not a killed stream (gun-reference 7).
            try:
                self._flush(cmds, True)
            except _ContentError as e:
                self._conn_error(cmds, *e.args)
                return cmds
            st = self._streams.popleft()
            if self._ev:
                self._ev_stream(cmds, "response_end", st)
            self._finish(cmds, Close("normal" if self._close_after else "closed"))
        elif state == _HEAD and not self._buf.strip(b"\r\n"):
            self._finish(cmds, Close("closed"))
        elif state == _HEAD:
            self._conn_error(
                cmds,
                "protocol_error",
                "The server closed the connection in the middle of a response head.",
            )
        else:
            self._conn_error(
                cmds,
                "protocol_error",
                "The server closed the connection before the end of the response body.",
            )
        return cmds

    # ----------------------------------------------------------------------------------
    # Stream control

    def cancel(self, ref: Any, reply_to: ReplyTo) -> Commands:
        for st in self._streams:
            if st.ref == ref:
                break
        else:
            return self.stream_error(reply_to, ref, ("badstate", BADSTATE_NOT_FOUND))
        if st.pending is not None:
            # Never written: forget it entirely rather than ask the server for it.
            self._unsent.remove(st)
            self._streams.remove(st)
            if self._ev:
                return [
                    Event(
                        "cancel",
                        {
                            "stream_ref": ref,
                            "reply_to": st.reply_to,
                            "endpoint": "local",
                            "reason": "cancel",
                        },
                    )
                ]
            return []
        # Gun 4.9: HTTP/1.1 cannot cancel; the response is drained without messages.
        st.alive = False
        cmds: Commands = []
        if self._ev:
            self._ev_stream(cmds, "cancel", st, endpoint="local", reason="cancel")
        if self._paused and st is self._streams[0]:
            self._resume(cmds)
        return cmds

    def timeout_stream(self, ref: Any, reply_to: ReplyTo) -> Commands:
        # The request option timeout (gunpy addition, Gun #317).  HTTP/1.1 cannot
        # abandon a response: when the late one is on the wire now, the connection
        # is useless until it ends, so it is closed (the streams behind it get the
        # usual ("closed", ...) errors); a stream further back is only cancelled.
        for st in self._streams:
            if st.ref == ref:
                break
        else:
            return []
        err = Deliver(st.reply_to, ("gun_error", self.ctx.conn, ref, "timeout"))
        if st is self._streams[0] and st.pending is None:
            self._streams.popleft()
            return [err, Close(("error", "timeout"))]
        return [err, *self.cancel(ref, st.reply_to)]

    def update_flow(self, ref: Any, inc: int) -> Commands:
        for st in self._streams:
            if st.ref == ref:
                break
        else:
            return []
        if st.flow is None:
            return []  # Gun 4.5: streams without flow control ignore updates
        st.flow += inc
        if self._paused and st.flow > 0 and st is self._streams[0]:
            cmds: Commands = []
            self._resume(cmds)
            return cmds
        return []

    def _resume(self, cmds: Commands) -> None:
        """Parse what arrived while paused (merged into one gun_data), then read again."""
        self._paused = False
        buf = self._buf
        self._buf = b""
        if buf:
            self._parse(buf, cmds)
        if self._eof and not self._paused and not self._dead:
            cmds.extend(self.handle_eof())
        if not self._paused and not self._dead:
            cmds.append(SetActive(True))

    def inline_ok(self, op: tuple[Any, ...]) -> bool:
        # A request or body chunk: a Send (or a stream error), unless events are on.
        return not self._ev and op[0] in ("$request", "$data")

    def active(self) -> bool:
        return not self._paused

    def recv_size(self) -> int:
        # The rest of a content-length body (RFC 9112 6.3) or of a chunk (7.1) is
        # surely coming: read it in as few reads as possible, each one gun_data as
        # before.  Not for a stream under flow control (Gun 4.5): there a gun_data
        # is what the budget counts, and a read per message bounds what it admits.
        left = self._left
        if (
            left > RECV_SIZE
            and (self._in == _LEN or self._in == _CHUNK_DATA)
            and self._streams
            and self._streams[0].flow is None
        ):
            return min(left, RECV_SIZE_MAX)
        return RECV_SIZE

    def stream_info(self, ref: Any) -> dict[str, Any] | None:
        for st in self._streams:
            if st.ref == ref:
                return {
                    "ref": ref,
                    "reply_to": st.reply_to,
                    "state": "running" if st.alive else "stopping",
                    "intermediaries": [],
                    "tunnel": None,
                }
        return None

    # ----------------------------------------------------------------------------------
    # Connection life

    def keepalive(self) -> Commands:
        # Gun 4.6: an empty line between requests (RFC 9112 2.2 lets servers skip it);
        # never inside a request body, nor after a close or Upgrade request.
        if (
            self._dead
            or self._close_after
            or self._out_stream is not None
            or self._block is not None
        ):
            return []
        return [Send(b"\r\n")]

    def keepalive_interval(self) -> int | None:
        return self._keepalive

    def closing(self, reason: Any) -> Commands:
        """Gun's closing/4: finish the current response, drop the pipelined ones."""
        if self._dead:
            return []
        cmds: Commands = []
        if not self._streams:
            self._finish(cmds, Close("normal"))
            return cmds
        self._drop_pipelined(cmds, ("closing", reason))
        self._close_after = True
        if not self._closing_sent:
            self._closing_sent = True
            cmds.append(Closing(self._closing_timeout))
        return cmds

    def close(self, reason: Any) -> Commands:
        """The connection is gone: Gun's close/4 and close_reason/1."""
        if self._closed:
            return []
        self._closed = True
        self._dead = True
        self._in = _DONE
        r = "closed" if reason == "closed" else ("closed", reason)
        conn = self.ctx.conn
        return [
            Deliver(st.reply_to, ("gun_error", conn, st.ref, r)) for st in self._streams if st.alive
        ]

    def down(self) -> list[Any]:
        # Gun 4.2: every stream still in the pipeline (cancelled ones too), never a
        # completed one.
        return [st.ref for st in self._streams]
