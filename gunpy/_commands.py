"""Commands: what a protocol handler asks the connection actor to do.

Theory of operation
-------------------
Protocol handlers (``gunpy.protocols.*``) are sans-IO: they never touch a socket, a
thread or a clock.  Every handler entry point returns a ``list`` of commands, in the
order they must be carried out.  The connection actor (``gunpy._conn``) executes
them: it coalesces consecutive ``Send`` commands into one ``sendall`` and batches
``Deliver`` commands per recipient, so a handler may emit as many as it likes.

This mirrors Gun's handler return values (``{state, S}``, ``{active, B}``, ``close``,
``{closing, Timeout}``, ``{error, R}``, ``{switch_protocol, Proto, ReplyTo}``); Gun's
handlers still call ``Transport:send`` themselves, ours return ``Send`` instead so
each handler is unit-tested by feeding bytes and reading commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class ReplyTo(Protocol):
    """Anything a stream's messages can be delivered to (a ``Pid`` or a wrapper).

    ``send`` never raises: a message to a dead process is dropped, like Erlang's ``!``.
    """

    def send(self, msg: Any) -> None: ...


@dataclass(slots=True)
class Send:
    """Write ``data`` to the socket (after any earlier ``Send``).

    A ``bytearray`` is handed over: the handler that built it (a Websocket frame
    built in place) never touches it again.
    """

    data: bytes | bytearray


@dataclass(slots=True)
class Deliver:
    """Deliver the Gun message ``msg`` (a tuple) to ``to``."""

    to: ReplyTo
    msg: tuple[Any, ...]


@dataclass(slots=True)
class SetActive:
    """Start (True) or stop (False) reading the socket: Gun's ``{active, B}``.

    Flow control uses it: when a stream's budget is spent the socket is not read,
    so TCP itself pushes back on the server (Gun's active-once not re-armed).
    """

    active: bool


@dataclass(slots=True)
class Close:
    """The connection is over: close the socket, then take the disconnect path.

    ``reason`` is what the owner sees in ``gun_down`` (``"normal"``, ``"closed"``,
    ``("error", R)``...).  The actor calls the handler's ``close(reason)`` and
    ``down()`` to error the open streams and list the killed ones, then reconnects
    per ``retry`` unless the connection is shutting down.
    """

    reason: Any = "normal"


@dataclass(slots=True)
class Closing:
    """Enter Gun's ``closing`` state; force ``Close`` after ``timeout`` ms.

    New requests are then queued for the next connection (or refused with
    ``gun_error closing`` when ``retry`` is 0), as Gun does.
    """

    timeout: int | str = 15000


@dataclass(slots=True)
class SwitchProtocol:
    """Replace the current handler by protocol ``protocol`` (``"ws"`` or ``"raw"``).

    ``args`` are passed to the new handler's constructor as keyword arguments;
    ``buffer`` holds the bytes that arrived after the upgrade response and must be
    fed to the new handler first (wsproto's ``trailing_data``).
    """

    protocol: str
    args: dict[str, Any] = field(default_factory=dict)
    buffer: bytes = b""


@dataclass(slots=True)
class StartTimer:
    """(Re)start the handler timer ``name``: ``handler.timeout(name)`` runs after ``ms``."""

    name: str
    ms: int


@dataclass(slots=True)
class CancelTimer:
    """Cancel the handler timer ``name`` if it is running."""

    name: str


@dataclass(slots=True)
class Tunnel:
    """The connection becomes a tunnel to ``destination`` (Gun's ``origin`` command
    followed by ``tls_handshake`` or ``switch_protocol``).

    Given by the HTTP/1.1 handler for a 2xx answer to a CONNECT, and by the SOCKS
    handler once the proxy has connected.  ``kind`` is the intermediary's type
    (``"connect"`` or ``"socks5"``); ``ref`` the stream ref the tunnel runs on (the
    CONNECT's, or the SOCKS layer's own, None at the top level); ``reply_to`` gets
    ``gun_tunnel_up``; ``destination`` holds ``host``, ``port``, ``transport``,
    ``protocols``, ``tls_opts`` and ``tls_handshake_timeout``; ``buffer`` the bytes
    that followed the proxy's answer, for the protocol inside the tunnel.  The
    actor records the proxy as an intermediary, makes the destination the origin,
    runs the TLS handshake when asked, then installs the inner protocol's handler.
    """

    kind: str
    ref: Any
    reply_to: ReplyTo
    destination: dict[str, Any]
    buffer: bytes = b""


@dataclass(slots=True)
class Event:
    """Call the event handler's ``name`` callback with ``event`` (Gun's
    ``EvHandler:Name(Event, State)``), in order with the other commands.

    Handlers emit it only when ``ctx.events`` is true: no map is built for a
    connection without an ``event_handler``.
    """

    name: str
    event: dict[str, Any]


Command = (
    Send
    | Deliver
    | SetActive
    | Close
    | Closing
    | SwitchProtocol
    | StartTimer
    | CancelTimer
    | Tunnel
    | Event
)
Commands = list[Command]
