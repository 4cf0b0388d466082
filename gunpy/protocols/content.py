"""Content handlers: Gun's ``gun_content_handler``, ``gun_data_h`` and ``gun_sse_h``.

Theory of operation
-------------------
A response body goes through the chain of content handlers named by the
``content_handlers`` option of ``http_opts`` / ``http2_opts`` (default ``["data"]``,
Gun's ``[gun_data_h]``).  When a response head announces a body, each handler's
``init`` is called in order with the response's status and headers: it returns a
handler instance for this response, or None to stay out of it (Gun's
``disable``).  Each piece of body then goes to the first instance's ``handle``,
which returns

* ``("done", inc)``: the piece is dealt with, the handlers after it see nothing;
* ``("ok", data, inc)``: pass ``data`` (maybe transformed) to the next handler;
* ``("error", (kind, text))``: the response cannot go on.  HTTP/1.1 makes it a
  connection error (``("gun_error", conn, ("connection_error", kind, text))``,
  then ``gun_down``); HTTP/2 resets the stream (``("gun_error", conn, ref,
  ("stream_error", "internal_error", text))``) and the connection goes on.

``inc`` is the number of messages the handler delivered: a stream's ``flow``
budget goes down by the sum (Gun 4.5 counts messages).  Handlers deliver by
appending messages to ``out``; the protocol handler sends them to the stream's
``reply_to``, in order with the other messages of the same read.  Handlers are
sans-IO like the protocol handlers: no socket, no thread, no clock.

``"data"`` (``DataHandler``) delivers each piece as ``("gun_data", conn, ref,
is_fin, data)``.  When it is the only handler left for a response, the protocol
handlers do not call it at all: they deliver ``gun_data`` themselves, the same code
as before content handlers existed, so the default costs nothing.

``"sse"`` (``SseHandler``) takes responses whose ``content-type`` is
``text/event-stream`` (parameters ignored) and delivers ``("gun_sse", conn, ref,
event)`` per event, then ``("gun_sse", conn, ref, "fin")`` when the body ends.
``event`` is a dict like Gun's map: ``last_event_id``, ``event_type`` (``"message"``
by default) and ``data``, a list of ``str`` whose concatenation is the event's data
(Gun's iolist: the lines with ``"\\n"`` between them).  A block with an ``id`` (or a
``retry``) but no data gives ``{"last_event_id": id}`` alone (Gun's lone id), and a
valid ``retry`` field adds ``"retry": ms`` to the event of its block (a gunpy
addition).  Fields are decoded as UTF-8 (errors replaced), as the HTML standard
says.  Option ``max_event_size`` (bytes, default 10240, or ``"infinity"``) bounds
an unfinished event; a finished one is delivered whatever its size.

A content handler of one's own is a class (or any object) with ``init`` and
``handle`` as above, and optionally ``check_options(opts) -> bool``; the
``content_handlers`` list takes it in place of a name, alone or as ``(handler,
opts)``.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = [
    "HANDLERS",
    "ContentHandler",
    "DataHandler",
    "SseHandler",
    "SseParser",
    "check_option",
    "error_parts",
    "handle",
    "init",
    "resolve",
]

Headers = list[tuple[str, str]]


class ContentHandler(Protocol):
    """What ``content_handlers`` entries are (Gun's ``gun_content_handler`` behaviour)."""

    def init(
        self,
        conn: Any,
        reply_to: Any,
        ref: Any,
        status: int,
        headers: Headers,
        opts: dict[str, Any],
    ) -> Any:
        """A handler instance for this response, or None to stay out of it."""
        ...


class DataHandler:
    """Gun's ``gun_data_h``: every piece of body as a ``gun_data`` message."""

    __slots__ = ("conn", "ref")

    def __init__(self, conn: Any, ref: Any) -> None:
        self.conn = conn
        self.ref = ref

    @classmethod
    def check_options(cls, opts: dict[str, Any]) -> bool:
        return True

    @classmethod
    def init(
        cls,
        conn: Any,
        reply_to: Any,
        ref: Any,
        status: int,
        headers: Headers,
        opts: dict[str, Any],
    ) -> DataHandler:
        return cls(conn, ref)

    def handle(self, is_fin: str, data: bytes, out: list[Any]) -> tuple[Any, ...]:
        out.append(("gun_data", self.conn, self.ref, is_fin, data))
        return ("done", 1)


# --------------------------------------------------------------------------------------
# Server-sent events (HTML Living Standard, "Server-sent events", 9.2.6 parsing)

SSE_TOO_LARGE = "The Server-Sent Events event is too large."
_DEFAULT_MAX_EVENT_SIZE = 10240


def _is_event_stream(headers: Headers) -> bool:
    """Gun: the first ``content-type`` is ``text/event-stream``, parameters ignored."""
    for n, v in headers:
        if n == "content-type":
            return v.split(";", 1)[0].strip(" \t").lower() == "text/event-stream"
    return False


class SseParser:
    """The event stream parser (Cowlib's ``cow_sse``), fed bytes, giving event dicts.

    Lines end with CRLF, LF or CR; a CR at the end of the input waits for the next
    piece (it may be the first half of a CRLF).  The UTF-8 BOM is skipped once.
    ``pending()`` is the size in bytes of the unfinished event (the lines read for
    it plus the incomplete line).
    """

    __slots__ = (
        "_bom",
        "_buf",
        "_data",
        "_event_type",
        "_id_set",
        "_pending",
        "_retry",
        "last_event_id",
    )

    def __init__(self) -> None:
        self._bom = True  # the BOM may still come
        self._buf = b""  # an incomplete line
        self._pending = 0  # bytes of the lines of the unfinished event
        self.last_event_id = ""
        self._id_set = False
        self._event_type = ""
        self._data: list[str] = []
        self._retry: int | None = None

    def pending(self) -> int:
        return self._pending + len(self._buf)

    def feed(self, data: bytes, fin: bool = False) -> list[dict[str, Any]]:
        """The events ``data`` completes (at ``fin``, a last line without its end
        counts; an unfinished event is dropped, as the standard says)."""
        buf = self._buf + data if self._buf else data
        if self._bom:
            if len(buf) < 3 and b"\xef\xbb\xbf".startswith(buf) and not fin:
                self._buf = buf
                return []
            self._bom = False
            if buf.startswith(b"\xef\xbb\xbf"):
                buf = buf[3:]
        events: list[dict[str, Any]] = []
        lines = buf.splitlines(keepends=True)
        rest = b""
        if lines:
            last = lines[-1]
            if not last.endswith((b"\n", b"\r")) or (last.endswith(b"\r") and not fin):
                rest = lines.pop()
        for raw in lines:
            self._line(raw, events)
        if fin and rest:
            self._line(rest, events)
            rest = b""
        self._buf = rest
        if fin:
            self._pending = 0
        return events

    def _line(self, raw: bytes, events: list[dict[str, Any]]) -> None:
        line = raw.rstrip(b"\r\n")
        if not line:
            self._dispatch(events)
            return
        self._pending += len(raw)
        if line[:1] == b":":
            return  # a comment
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event_type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self.last_event_id = value.decode("utf-8", "replace")
                self._id_set = True
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)

    def _dispatch(self, events: list[dict[str, Any]]) -> None:
        self._pending = 0
        event: dict[str, Any]
        if self._data:
            parts: list[str] = []
            for i, d in enumerate(self._data):
                if i:
                    parts.append("\n")
                parts.append(d)
            event = {
                "last_event_id": self.last_event_id,
                "event_type": self._event_type or "message",
                "data": parts,
            }
        elif self._id_set or self._retry is not None:
            # cow_sse: the id on its own, so the client knows the latest id.
            event = {"last_event_id": self.last_event_id}
        else:
            self._event_type = ""
            return
        if self._retry is not None:
            event["retry"] = self._retry
        events.append(event)
        self._data = []
        self._event_type = ""
        self._id_set = False
        self._retry = None


class SseHandler:
    """Gun's ``gun_sse_h``: ``gun_sse`` messages for ``text/event-stream`` bodies."""

    __slots__ = ("conn", "max", "parser", "ref")

    def __init__(self, conn: Any, ref: Any, max_event_size: int | None) -> None:
        self.conn = conn
        self.ref = ref
        self.max = max_event_size
        self.parser = SseParser()

    @classmethod
    def check_options(cls, opts: dict[str, Any]) -> bool:
        if "max_event_size" not in opts:
            return True
        v = opts["max_event_size"]
        return v == "infinity" or (isinstance(v, int) and not isinstance(v, bool) and v > 0)

    @classmethod
    def init(
        cls,
        conn: Any,
        reply_to: Any,
        ref: Any,
        status: int,
        headers: Headers,
        opts: dict[str, Any],
    ) -> SseHandler | None:
        if not _is_event_stream(headers):
            return None
        size = opts.get("max_event_size", _DEFAULT_MAX_EVENT_SIZE)
        return cls(conn, ref, None if size == "infinity" else size)

    def handle(self, is_fin: str, data: bytes, out: list[Any]) -> tuple[Any, ...]:
        parser = self.parser
        conn, ref = self.conn, self.ref
        events = parser.feed(data)
        for ev in events:
            out.append(("gun_sse", conn, ref, ev))
        if self.max is not None and parser.pending() > self.max:
            # Gun: also when this piece ends the body (the event can never finish).
            return ("error", ("limit_reached", SSE_TOO_LARGE))
        inc = len(events)
        if is_fin == "fin":
            for ev in parser.feed(b"", fin=True):
                out.append(("gun_sse", conn, ref, ev))
                inc += 1
            out.append(("gun_sse", conn, ref, "fin"))
            inc += 1
        return ("done", inc)


# --------------------------------------------------------------------------------------
# The chain (gun_content_handler)

HANDLERS: dict[str, Any] = {
    "data": DataHandler,
    "gun_data_h": DataHandler,
    "sse": SseHandler,
    "gun_sse_h": SseHandler,
}

Resolved = list[tuple[Any, dict[str, Any]]]


def _entry(e: Any) -> tuple[Any, dict[str, Any]] | None:
    """``(handler, opts)`` for one ``content_handlers`` entry, or None when invalid."""
    opts: Any = {}
    if isinstance(e, tuple):
        if len(e) != 2:
            return None
        e, opts = e
        if not isinstance(opts, dict):
            return None
    if isinstance(e, str):
        h = HANDLERS.get(e)
        if h is None:
            return None
    elif callable(getattr(e, "init", None)):
        h = e
    else:
        return None
    check = getattr(h, "check_options", None)
    if check is not None and not check(opts):
        return None
    return h, opts


def check_option(value: Any) -> bool:
    """Gun's ``gun_content_handler:check_option/1``: a non-empty list of handler
    names, handlers, or ``(name_or_handler, opts)`` pairs whose options the
    handler accepts."""
    return isinstance(value, list) and len(value) > 0 and all(_entry(e) is not None for e in value)


def resolve(value: list[Any]) -> Resolved | None:
    """The checked option as ``[(handler, opts)]``, or None when it is only the data
    handler (the protocol handlers then deliver ``gun_data`` themselves)."""
    chain = [r for r in (_entry(e) for e in value) if r is not None]
    if not chain or chain[0][0] is DataHandler:
        return None
    return chain


def init(
    chain: Resolved,
    conn: Any,
    reply_to: Any,
    ref: Any,
    status: int,
    headers: Headers,
) -> list[Any] | None:
    """Gun's ``gun_content_handler:init/5``: the instances for one response, or None
    when the data handler would get everything (the fast path)."""
    states: list[Any] = []
    for h, opts in chain:
        if h is DataHandler and not states:
            return None  # nothing before it took the response
        s = h.init(conn, reply_to, ref, status, headers, opts)
        if s is not None:
            states.append(s)
    return states


def error_parts(reason: Any) -> tuple[str, str]:
    """A handler's error reason as ``(kind, text)``: Gun's handlers give
    ``{limit_reached, Text}``; anything else is an ``internal_error``."""
    if (
        isinstance(reason, tuple)
        and len(reason) == 2
        and isinstance(reason[0], str)
        and isinstance(reason[1], str)
    ):
        return reason[0], reason[1]
    return "internal_error", f"The content handler failed: {reason!r}"


def handle(states: list[Any], is_fin: str, data: bytes, out: list[Any]) -> tuple[Any, ...]:
    """Gun's ``gun_content_handler:handle/3``: ``("ok", inc)`` or ``("error", reason)``.

    A handler's exception is an error of kind ``"internal_error"``: it must not take
    the connection process down.
    """
    inc = 0
    for s in states:
        try:
            r = s.handle(is_fin, data, out)
        except Exception as e:
            text = f"The content handler {type(s).__name__} failed: {e!r}"
            return ("error", ("internal_error", text))
        if r[0] == "done":
            return ("ok", inc + r[1])
        if r[0] == "ok":
            data = r[1]
            inc += r[2]
        else:
            return ("error", r[1])
    return ("ok", inc)
