"""The protocol handler interface, written down.

Theory of operation
-------------------
Gun has one module per protocol (``gun_http``, ``gun_ws``, ``gun_raw``, ...), all
exporting the same callbacks, and leaves that interface implicit.  gunpy writes it
down here as ``ProtocolHandler`` and gives every handler the same rules:

* A handler is a plain object holding one connection's protocol state.  It never
  touches a socket, a thread or a clock.  Every method returns a list of commands
  (``gunpy._commands``) that the connection actor carries out in order.
* Bytes come in through ``handle(data)``; the peer's EOF through ``handle_eof()``
  (h11 wants ``b""`` and wsproto ``None`` for EOF: that difference stays inside the
  handlers).  Caller operations (``request``, ``data``, ``ws_send``, ...) come in as
  method calls, with header lists already normalised by the caller (lower-case
  ``str`` names, ``str`` values) and the stream ref already made.
* Messages to users are ``Deliver`` commands carrying Gun's exact tuples, built with
  ``ctx.conn`` as the connection element.
* ``close(reason)`` is called when the connection is lost or closed: the handler
  emits the per-stream ``gun_error`` messages Gun sends (``("closed", R)``...).
  ``down()`` then lists the stream refs killed, for ``gun_down``.
* An operation a protocol does not support answers with the ``gun_error`` Gun sends
  in that state (``BaseHandler`` has the defaults), never with an exception.
* Exceptions from h11, wsproto or h2 never escape: a handler turns them into
  ``gun_error`` deliveries and ``Close(("error", ...))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from .._commands import Close, Commands, Deliver, ReplyTo

Headers = list[tuple[str, str]]


@dataclass(slots=True)
class HandlerContext:
    """What every handler knows about its connection.

    ``conn`` is the connection's Pid as users see it in messages; ``owner`` the
    current owner (the actor updates it on ``set_owner``).  ``origin_*`` describe
    the server the requests are for (host header, ``:authority``); ``transport`` is
    ``"tcp"``, ``"tls"`` or ``"unix"``.  ``opts`` are the whole, validated
    connection options.  Inside a tunnel (``gunpy.connect``, SOCKS) ``origin_*`` and
    ``transport`` describe the tunnel's destination, and ``base_ref`` is the stream
    ref of the HTTP/1.1 CONNECT the connection runs through (None outside one):
    the refs of tunnelled streams start with it, and a handler that makes up a
    ref itself (an HTTP/2 push) puts it in front, as Gun's ``stream_ref/2``.
    ``events`` is true when the connection has an ``event_handler``: only then
    do handlers build ``Event`` commands (gunpy.events).
    """

    conn: Any
    owner: ReplyTo
    origin_scheme: str = "http"
    origin_host: str = "localhost"
    origin_port: int = 80
    transport: str = "tcp"
    opts: dict[str, Any] = field(default_factory=dict)
    base_ref: Any = None
    events: bool = False


#: Bytes asked of one read of the socket: a ``recv`` of 128 KiB or more costs a fresh
#: mmap per call (ARCHITECTURE 8), worth it only when that much is surely coming.
RECV_SIZE = 65536
#: The most ``recv_size`` asks for when the handler knows that much is coming.
RECV_SIZE_MAX = 1 << 20


class ProtocolHandler(Protocol):
    """The interface every protocol module implements (Gun's implicit one)."""

    #: Gun's protocol name as it appears in ``gun_up`` / ``gun_down``.
    name: ClassVar[str]

    def init(self) -> Commands:
        """Commands to run right after the handler is installed (preface, buffer)."""
        ...

    def handle(self, data: bytes) -> Commands:
        """Bytes read from the socket."""
        ...

    def handle_eof(self) -> Commands:
        """The peer closed its side (recv returned b"")."""
        ...

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
        """A request; ``body`` None means the body follows through ``data``."""
        ...

    def data(self, ref: Any, reply_to: ReplyTo, fin: str, data: bytes) -> Commands:
        """A request body chunk (``fin`` is ``"fin"`` or ``"nofin"``)."""
        ...

    def connect(
        self,
        ref: Any,
        reply_to: ReplyTo,
        destination: dict[str, Any],
        headers: Headers,
        req_opts: dict[str, Any],
    ) -> Commands:
        """A CONNECT to open a tunnel to ``destination`` (``gunpy.connect``)."""
        ...

    def cancel(self, ref: Any, reply_to: ReplyTo) -> Commands: ...

    def update_flow(self, ref: Any, inc: int) -> Commands: ...

    def ws_upgrade(
        self, ref: Any, reply_to: ReplyTo, path: str, headers: Headers, ws_opts: dict[str, Any]
    ) -> Commands: ...

    def ws_send(self, ref: Any, reply_to: ReplyTo, frames: list[Any]) -> Commands: ...

    def ping(self, ref: Any, reply_to: ReplyTo) -> Commands:
        """A user ping (``gunpy.ping``): HTTP/2 acks it with ``gun_notify ping_ack``."""
        ...

    def keepalive(self) -> Commands:
        """The periodic keepalive tick (only armed when the protocol's option is set)."""
        ...

    def keepalive_interval(self) -> int | None:
        """Milliseconds between ``keepalive`` ticks, or None for no keepalive."""
        ...

    def timeout(self, name: str) -> Commands:
        """A timer this handler started with ``StartTimer(name, ms)`` fired."""
        ...

    def closing(self, reason: Any) -> Commands:
        """Graceful close requested (``shutdown``, owner down): Gun's ``closing/4``."""
        ...

    def close(self, reason: Any) -> Commands:
        """The connection is gone: per-stream ``gun_error`` messages (Gun's ``close/4``)."""
        ...

    def down(self) -> list[Any]:
        """Refs of the streams killed by the loss of the connection, for ``gun_down``."""
        ...

    def stream_info(self, ref: Any) -> dict[str, Any] | None: ...

    def active(self) -> bool:
        """Whether the socket should be read now (False while a flow budget is spent)."""
        ...

    def recv_size(self) -> int:
        """How many bytes the next read asks for: ``RECV_SIZE``, or up to
        ``RECV_SIZE_MAX`` while the rest of a long body or frame is pending (fewer
        reads, so fewer passes through the actor and fewer messages to the owner)."""
        ...

    def inline_ok(self, op: tuple[Any, ...]) -> bool:
        """Whether user operation ``op`` (``("$ws_send", ...)``, ``("$request",
        ...)``, ...) may run on the caller's thread while the actor sleeps
        (``Connection._inline``): cheap, and true only where the handler's answer is
        almost always ``Send``/``Deliver`` commands and needs no event handler."""
        ...


def stream_op(h: Any, op: tuple[Any, ...]) -> Commands | None:
    """Call handler ``h`` for the user operations that mean the same on a connection
    and inside a stream's tunnel (``("$request", ...)``, ``$data``, ``$ws_send``,
    ``$cancel``, ``$update_flow``, ``$connect``); None for any other: the caller's
    (``$ws_upgrade`` and ``$ping`` take defaults and tunnels from where they run)."""
    tag = op[0]
    if tag == "$request":
        _, ref, reply_to, method, path, headers, body, req_opts = op
        return h.request(ref, reply_to, method, path, headers, body, req_opts)  # type: ignore[no-any-return]
    if tag == "$ws_send":
        return h.ws_send(op[1], op[2], op[3])  # type: ignore[no-any-return]
    if tag == "$data":
        return h.data(op[1], op[2], op[3], op[4])  # type: ignore[no-any-return]
    if tag == "$cancel":
        return h.cancel(op[1], op[2])  # type: ignore[no-any-return]
    if tag == "$update_flow":
        return h.update_flow(op[1], op[2])  # type: ignore[no-any-return]
    if tag == "$connect":
        _, ref, reply_to, destination, headers, req_opts = op
        return h.connect(ref, reply_to, destination, headers, req_opts)  # type: ignore[no-any-return]
    return None


BADSTATE_WS_ONLY = "This connection only accepts Websocket frames."
BADSTATE_NOT_FOUND = "The stream cannot be found."
BADSTATE_ALREADY_CLOSED = "The stream has already been closed."
BADSTATE_NOT_A_TUNNEL = "The stream is not a tunnel."
BADSTATE_WS_NOT_UPGRADED = (
    "This connection does not currently accept Websocket frames. "
    "The Websocket upgrade was not performed. "
    "This may happen as a result of automatic reconnect."
)
BADSTATE_DATA_ONLY = (
    "This connection does not accept new requests to be opened "
    "nor does it accept Websocket frames."
)


class BaseHandler:
    """Defaults shared by every handler: Gun's answers to unsupported operations."""

    name: ClassVar[str] = "base"
    #: True while the handler takes no user operation (Gun's ``connected_no_input``:
    #: SOCKS negotiating): the actor queues them until the next protocol is up.
    no_input: ClassVar[bool] = False

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx

    # -- helpers -----------------------------------------------------------
    def conn_error(self, reply_to: ReplyTo, reason: Any) -> Commands:
        """The connection-wide 3-tuple ``("gun_error", conn, reason)``."""
        return [Deliver(reply_to, ("gun_error", self.ctx.conn, reason))]

    def stream_error(self, reply_to: ReplyTo, ref: Any, reason: Any) -> Commands:
        """The stream 4-tuple ``("gun_error", conn, ref, reason)``."""
        return [Deliver(reply_to, ("gun_error", self.ctx.conn, ref, reason))]

    # -- defaults ------------------------------------------------------------
    def init(self) -> Commands:
        return []

    def handle_eof(self) -> Commands:
        return [Close("closed")]

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
        return self.conn_error(
            reply_to, ("badstate", f"The {self.name} protocol does not support requests.")
        )

    def data(self, ref: Any, reply_to: ReplyTo, fin: str, data: bytes) -> Commands:
        return self.stream_error(reply_to, ref, ("badstate", BADSTATE_ALREADY_CLOSED))

    def connect(
        self,
        ref: Any,
        reply_to: ReplyTo,
        destination: dict[str, Any],
        headers: Headers,
        req_opts: dict[str, Any],
    ) -> Commands:
        # Gun refuses a CONNECT exactly as it refuses a request in that state
        # (connected_ws_only, connected_data_only): the same answer.
        return self.request(ref, reply_to, "CONNECT", "", headers, None, req_opts)

    def cancel(self, ref: Any, reply_to: ReplyTo) -> Commands:
        return self.stream_error(reply_to, ref, ("badstate", BADSTATE_NOT_FOUND))

    def update_flow(self, ref: Any, inc: int) -> Commands:
        return []

    def ws_upgrade(
        self, ref: Any, reply_to: ReplyTo, path: str, headers: Headers, ws_opts: dict[str, Any]
    ) -> Commands:
        return self.stream_error(
            reply_to,
            ref,
            ("badstate", f"Websocket is not supported by the {self.name} protocol."),
        )

    def ws_send(self, ref: Any, reply_to: ReplyTo, frames: list[Any]) -> Commands:
        # gun_http:ws_send's text (Gun 2.4): also what ws_send gets after an
        # automatic reconnect turned a Websocket connection back into HTTP.
        return self.conn_error(reply_to, ("badstate", BADSTATE_WS_NOT_UPGRADED))

    def ping(self, ref: Any, reply_to: ReplyTo) -> Commands:
        # Gun's ping_SUITE: a ping on HTTP/1.1 is a connection error, the connection
        # goes down with {error, {ping_unsupported_by_protocol, PingRef}}.
        return [Close(("error", ("ping_unsupported_by_protocol", ref)))]

    def timeout_stream(self, ref: Any, reply_to: ReplyTo) -> Commands:
        """The request option ``timeout`` ran out for stream ``ref`` (gunpy addition,
        Gun issue #317): cancel the stream and tell its reply_to."""
        if self.stream_info(ref) is None:
            return []  # already complete or gone
        return [
            Deliver(reply_to, ("gun_error", self.ctx.conn, ref, "timeout")),
            *self.cancel(ref, reply_to),
        ]

    def keepalive(self) -> Commands:
        return []

    def keepalive_interval(self) -> int | None:
        return None

    def timeout(self, name: str) -> Commands:
        return []

    def closing(self, reason: Any) -> Commands:
        return [Close("normal")]

    def close(self, reason: Any) -> Commands:
        return []

    def down(self) -> list[Any]:
        return []

    def stream_info(self, ref: Any) -> dict[str, Any] | None:
        return None

    def active(self) -> bool:
        return True

    def recv_size(self) -> int:
        return RECV_SIZE

    def inline_ok(self, op: tuple[Any, ...]) -> bool:
        return False
