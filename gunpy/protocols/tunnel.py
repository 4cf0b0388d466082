"""A tunnel inside an HTTP/2 stream: Gun's ``gun_tunnel``, sans-IO.

Theory of operation
-------------------
An HTTP/2 proxy opens one tunnel per CONNECT stream (RFC 9113 8.5): the DATA
frames of the stream carry the bytes of the connection to the destination, and
many tunnels share one connection.  ``StreamTunnel`` is the virtual connection
that runs on one such stream.  It does for the stream what the connection actor
does for the socket:

* it holds the protocol handler inside (``http``, ``http2``, ``raw`` or
  ``socks``), with its own ``HandlerContext`` whose origin is the tunnel's
  destination and whose ``base_ref`` is the CONNECT's stream ref;
* it runs TLS inside the stream when the destination asks for it
  (``_tls.TlsLayer``: memory BIOs, so TLS over the proxy's TLS too), and more TLS
  for tunnels nested inside it;
* it carries out the inner handler's commands: ``Send`` is encrypted by its TLS
  layers and becomes a ``Send`` for the stream (the HTTP/2 handler turns it into
  DATA frames); deliveries, ``SetActive`` (the stream's window) and timers go up
  as they are; ``SwitchProtocol`` (an upgrade inside the tunnel) replaces the
  inner handler; ``Tunnel`` (a CONNECT or SOCKS inside) records an intermediary,
  moves the origin and goes on; ``Close`` ends the tunnel: the inner streams get
  their errors, the CONNECT's reply target ``("gun_error", conn, ref, ("closed",
  reason))`` (``"closed"`` when the far end closed; nothing after a graceful
  ``"normal"`` end), and ``Close`` goes up so the HTTP/2 handler ends the stream;
* user operations for the tunnel (``op``) are checked against its ``base_ref``
  like the actor's, and wait (queued) while the TLS handshake or a SOCKS
  handshake inside runs.

It never touches sockets or clocks, and is unit-tested by feeding bytes.
Differences from Gun: Gun's ``gun_tunnel`` neither propagates a tunnel's close
to its streams nor graceful shutdown (its "@todo"s); here both are done.
"""

from __future__ import annotations

import ssl
from typing import Any

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
    SwitchProtocol,
    Tunnel,
)
from .._tls import TlsLayer, client_context, negotiated, server_hostname, tls_read, tls_reason
from . import handler_class
from .base import BADSTATE_NOT_A_TUNNEL, HandlerContext, stream_op

BADSTATE_TUNNEL_REQUIRED = (
    "This stream goes through a CONNECT tunnel: pass the CONNECT's stream "
    "reference in the tunnel option."
)
_NEW_STREAM_OPS = frozenset({"$request", "$ws_upgrade", "$connect"})
_TLS_TIMER = "$tls"


def ref_chain(ref: Any) -> tuple[Any, ...]:
    """A stream ref as the tuple of refs it is made of (a plain ref: one)."""
    return ref if type(ref) is tuple else (ref,)


def _names(destination: dict[str, Any]) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in destination.get("protocols") or ["http"]]


class StreamTunnel:
    """One tunnel on one HTTP/2 stream (see the module doc)."""

    def __init__(
        self,
        parent: HandlerContext,
        ref: Any,
        reply_to: ReplyTo,
        destination: dict[str, Any],
    ) -> None:
        self.ref = ref
        self.reply_to = reply_to
        self.conn = parent.conn
        self.ctx = HandlerContext(
            conn=parent.conn,
            owner=parent.owner,
            opts=parent.opts,
            base_ref=ref,
            events=parent.events,
        )
        self.base_ref: Any = ref
        self.intermediaries: list[dict[str, Any]] = []  # proxies passed inside the stream
        self.tunnel_refs: list[tuple[Any, Any] | None] = []
        self.layers: list[TlsLayer] = []
        self.handshake: TlsLayer | None = None
        self.pending: Tunnel | None = None  # waiting for its TLS handshake
        self.handler: Any = None
        self.protocol: str | None = None
        self.queue: list[tuple[Any, ...]] = []
        self.done = False
        self._first = Tunnel("connect", ref, reply_to, destination)

    # -- entry points (each returns the commands for the HTTP/2 stream) -----------------
    def start(self) -> Commands:
        out: Commands = []
        self._open(self._first, out)
        return out

    def handle(self, data: bytes) -> Commands:
        out: Commands = []
        if self.done or not data:
            return out
        try:
            plain = self._unwrap(data, len(self.layers), out)
        except ssl.SSLError as e:
            self._finish(("error", tls_reason(e)), out)
            return out
        if plain is None:  # the TLS peer inside closed (close_notify)
            self._eof(out)
            return out
        if self.handshake is not None:
            self._handshake_step(plain, out)
        elif plain and self.handler is not None:
            self._run(self.handler.handle(plain), out)
        return out

    def handle_eof(self) -> Commands:
        out: Commands = []
        self._eof(out)
        return out

    def timeout(self, name: str) -> Commands:
        out: Commands = []
        if self.done:
            return out
        if name == _TLS_TIMER:
            if self.handshake is not None:
                self._finish(("error", "timeout"), out)
        elif self.handler is not None:
            self._run(self.handler.timeout(name), out)
        return out

    def closing(self, reason: Any) -> Commands:
        out: Commands = []
        if self.done:
            return out
        if self.handler is None or self.handshake is not None:
            self._finish("normal", out)
        else:
            self._run(self.handler.closing(reason), out)
        return out

    def close(self, reason: Any) -> Commands:
        """The connection is gone: the inner streams' errors (no Close)."""
        if self.done:
            return []
        self.done = True
        if self.handler is None:
            return []
        return [c for c in self.handler.close(reason) if type(c) is Deliver]

    def down(self) -> list[Any]:
        """The inner streams killed with the connection (asked after ``close``)."""
        if self.handler is None:
            return []
        return list(self.handler.down())

    def active(self) -> bool:
        return self.handler is None or bool(self.handler.active())

    # -- user operations -----------------------------------------------------------
    def op(self, op: tuple[Any, ...]) -> Commands:
        """A user operation whose ref goes through this tunnel (Gun's dereference)."""
        out: Commands = []
        tag = op[0]
        if self.done:
            if tag in _NEW_STREAM_OPS or tag == "$data":
                out.append(Deliver(op[2], ("gun_error", self.conn, op[1], "closed")))
            return out
        if self.handler is None or self.handshake is not None or self.handler.no_input:
            self.queue.append(op)
            return out
        if tag in _NEW_STREAM_OPS and not self._check(op[1], op[2], out):
            return out
        h = self.handler
        cmds = stream_op(h, op)
        if cmds is None and tag == "$ws_upgrade":
            _, ref, reply_to, path, headers, ws_opts = op
            cmds = h.ws_upgrade(ref, reply_to, path, headers, ws_opts or {})
        elif cmds is None and tag == "$ping":
            _, ref, reply_to, tunnel = op
            if tunnel is not None and ref_chain(tunnel) != ref_chain(self.base_ref):
                if not getattr(h, "tunnels", False):
                    out.append(
                        Deliver(
                            reply_to,
                            ("gun_error", self.conn, ref, ("badstate", BADSTATE_NOT_A_TUNNEL)),
                        )
                    )
                    return out
                cmds = h.ping_tunnel(tunnel, ref, reply_to)
            else:
                cmds = h.ping(ref, reply_to)
        elif cmds is None:  # pragma: no cover
            return out
        self._run(cmds, out)
        return out

    def _check(self, ref: Any, reply_to: ReplyTo, out: Commands) -> bool:
        """The actor's ``_tunnel_check``, against this tunnel's ``base_ref``."""
        prefix = ref_chain(self.base_ref)
        if type(ref) is tuple and ref[: len(prefix)] == prefix and len(ref) > len(prefix):
            if len(ref) == len(prefix) + 1 or getattr(self.handler, "tunnels", False):
                return True
            text = BADSTATE_NOT_A_TUNNEL
        else:
            text = BADSTATE_TUNNEL_REQUIRED
        out.append(Deliver(reply_to, ("gun_error", self.conn, ref, ("badstate", text))))
        return False

    def stream_info(self, ref: Any) -> dict[str, Any] | None:
        """A nested CONNECT describes its tunnel; other refs ask the inner handler.

        The intermediaries inside this stream come first in the answer; the
        HTTP/2 handler puts the proxy of the stream in front of them.
        """
        for i, t in enumerate(self.tunnel_refs):
            if t is not None and t[0] == ref:
                return {
                    "ref": ref,
                    "reply_to": t[1],
                    "state": "running",
                    "intermediaries": [dict(x) for x in self.intermediaries[:i]],
                    "tunnel": self.describe(i + 1),
                }
        if self.handler is None or self.done:
            return None
        info = self.handler.stream_info(ref)
        if info is not None and self.intermediaries:
            info = {
                **info,
                "intermediaries": [dict(x) for x in self.intermediaries]
                + list(info.get("intermediaries") or []),
            }
        return info  # type: ignore[no-any-return]

    def describe(self, index: int = 0) -> dict[str, Any]:
        """What is at the far end of hop ``index``: the next intermediary inside,
        or the destination (tunnel_SUITE's ``tunnel`` maps)."""
        if index < len(self.intermediaries):
            nxt = self.intermediaries[index]
            return {
                "transport": nxt["transport"],
                "protocol": nxt["protocol"],
                "origin_scheme": "https" if nxt["transport"] == "tls" else "http",
                "origin_host": nxt["host"],
                "origin_port": nxt["port"],
            }
        ctx = self.ctx
        return {
            "transport": ctx.transport,
            "protocol": self.protocol,
            "origin_scheme": None if self.protocol == "raw" else ctx.origin_scheme,
            "origin_host": ctx.origin_host,
            "origin_port": ctx.origin_port,
        }

    # -- internals ----------------------------------------------------------------
    def _open(self, c: Tunnel, out: Commands) -> None:
        """The tunnel (or a tunnel inside it) is through: TLS, then the protocol."""
        dest = c.destination
        transport = "tls" if dest.get("transport") in ("tls", "ssl") else "tcp"
        ctx = self.ctx
        ctx.origin_host = str(dest["host"])
        ctx.origin_port = dest["port"]
        ctx.origin_scheme = "https" if transport == "tls" else "http"
        ctx.transport = transport
        if c.kind == "connect":
            self.base_ref = ctx.base_ref = c.ref
        self.pending = c
        if ctx.events:
            # Gun (gun_http2 / gun_tunnel): inside a stream, with its stream_ref.
            ev = {
                "stream_ref": c.ref,
                "type": c.kind,
                "origin_scheme": ctx.origin_scheme,
                "origin_host": ctx.origin_host,
                "origin_port": ctx.origin_port,
            }
            out.append(Event("origin_changed", ev))
        if transport == "tcp":
            self._up(_names(dest)[0], c.buffer, out)
            return
        tls_opts = dest.get("tls_opts") or {}
        try:
            sslctx = client_context(tls_opts, _names(dest))
            self.handshake = TlsLayer(sslctx, server_hostname(ctx.origin_host, tls_opts))
        except (ssl.SSLError, OSError, ValueError) as e:
            self._finish(("error", ("tls_opts", str(e))), out)
            return
        timeout = dest.get("tls_handshake_timeout", "infinity")
        if timeout != "infinity":
            out.append(StartTimer(_TLS_TIMER, timeout))
        if ctx.events:
            out.append(Event("tls_handshake_start", self._tls_event()))
        self._handshake_step(c.buffer, out)

    def _tls_event(self, **extra: Any) -> dict[str, Any]:
        c = self.pending
        assert c is not None
        dest = c.destination
        ev = {
            "stream_ref": c.ref,
            "reply_to": c.reply_to,
            "socket": None,  # Gun gives a process here; there is no socket of its own
            "tls_opts": dest.get("tls_opts") or {},
            "timeout": dest.get("tls_handshake_timeout", "infinity"),
        }
        ev.update(extra)
        return ev

    def _handshake_step(self, data: bytes, out: Commands) -> None:
        layer = self.handshake
        assert layer is not None
        if data:
            layer.incoming.write(data)
        try:
            layer.obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except (ssl.SSLError, OSError) as e:
            if self.ctx.events and self.pending is not None:
                out.append(Event("tls_handshake_end", self._tls_event(error=tls_reason(e))))
            self._finish(("error", tls_reason(e)), out)
            return
        pending = layer.outgoing.read()
        if pending:
            self._send(pending, out)  # through the layers below only
        if not done:
            return
        self.handshake = None
        self.layers.append(layer)
        out.append(CancelTimer(_TLS_TIMER))
        try:
            buffer = tls_read(layer)
        except ssl.SSLError as e:
            self._finish(("error", tls_reason(e)), out)
            return
        assert self.pending is not None
        proto = negotiated(layer.obj.selected_alpn_protocol(), _names(self.pending.destination))
        if self.ctx.events:
            out.append(Event("tls_handshake_end", self._tls_event(protocol=proto)))
        self._up(proto, buffer or b"", out)

    def _up(self, proto: str, buffer: bytes, out: Commands) -> None:
        c = self.pending
        assert c is not None
        self.pending = None
        opts = dict(self.ctx.opts.get(proto + "_opts") or {})
        for p in c.destination.get("protocols") or []:
            if isinstance(p, tuple) and p[0] == proto:
                opts.update(p[1])
        if proto == "socks" and ("host" not in opts or "port" not in opts):
            self._finish(("error", ("socks5", ("options", "host and port are required"))), out)
            return
        cls = handler_class(proto)
        args: dict[str, Any] = {}
        if proto in ("raw", "socks"):
            args = {"ref": c.ref, "reply_to": c.reply_to}
        self.handler = cls(self.ctx, opts, **args)
        self.protocol = proto
        if self.ctx.events:
            out.append(Event("protocol_changed", {"stream_ref": c.ref, "protocol": proto}))
        out.append(Deliver(c.reply_to, ("gun_tunnel_up", self.conn, c.ref, proto)))
        self._run(self.handler.init(), out)
        if buffer and not self.done and self.handler is not None:
            self._run(self.handler.handle(buffer), out)
        if not self.done and not self.handler.no_input and self.handshake is None:
            queued, self.queue = self.queue, []
            for op in queued:
                out.extend(self.op(op))

    def _run(self, cmds: Commands, out: Commands) -> None:
        """Carry out the inner handler's commands (see the module doc)."""
        for c in cmds:
            if self.done:
                return
            t = type(c)
            if t is Deliver or t is SetActive or t is StartTimer or t is CancelTimer or t is Event:
                out.append(c)
            elif t is Send:
                assert isinstance(c, Send)
                self._send(c.data, out)
            elif t is Close:
                assert isinstance(c, Close)
                self._finish(c.reason, out)
                return
            elif t is SwitchProtocol:
                assert isinstance(c, SwitchProtocol)
                self._switch(c, out)
            elif t is Tunnel:
                assert isinstance(c, Tunnel)
                self._nested(c, out)
                return
            elif t is Closing:
                pass  # the inner handler ends the tunnel with Close when it is done

    def _switch(self, c: SwitchProtocol, out: Commands) -> None:
        args = dict(c.args)
        opts = args.pop("opts", None)
        if opts is None:
            opts = dict(self.ctx.opts.get(c.protocol + "_opts") or {})
        cls = handler_class(c.protocol)
        self.handler = cls(self.ctx, opts, **args)
        self.protocol = c.protocol
        if self.ctx.events:
            out.append(
                Event("protocol_changed", {"stream_ref": args.get("ref"), "protocol": c.protocol})
            )
        self._run(self.handler.init(), out)
        if c.buffer and not self.done:
            self._run(self.handler.handle(c.buffer), out)

    def _nested(self, c: Tunnel, out: Commands) -> None:
        ctx = self.ctx
        self.intermediaries.append(
            {
                "type": c.kind,
                "host": ctx.origin_host,
                "port": ctx.origin_port,
                "transport": ctx.transport,
                "protocol": self.protocol,
            }
        )
        self.tunnel_refs.append((c.ref, c.reply_to) if c.kind == "connect" else None)
        self._open(c, out)

    def _send(self, data: bytes | bytearray, out: Commands) -> None:
        for layer in reversed(self.layers):
            obj = layer.obj
            view = memoryview(data)
            try:
                while view:
                    view = view[obj.write(view) :]
            except ssl.SSLError as e:
                self._finish(("error", tls_reason(e)), out)
                return
            data = layer.outgoing.read()
        if data:
            out.append(Send(data))

    def _unwrap(self, data: bytes, n: int, out: Commands) -> bytes | None:
        for i, layer in enumerate(self.layers[:n]):
            layer.incoming.write(data)
            plain = tls_read(layer)
            answer = layer.outgoing.read()
            if answer:  # the layer answers on its own (a TLS 1.3 key update)
                saved, self.layers = self.layers, self.layers[:i]
                self._send(answer, out)
                self.layers = saved
            if plain is None:
                return None
            data = plain
            if not data:
                return b""
        return data

    def _eof(self, out: Commands) -> None:
        if self.done:
            return
        if self.handler is not None and self.handshake is None:
            self._run(self.handler.handle_eof(), out)
        if not self.done:
            self._finish("closed", out)

    def _finish(self, reason: Any, out: Commands) -> None:
        """The tunnel is over (see the module doc)."""
        if self.done:
            return
        self.done = True
        if self.handler is not None:
            out.extend(c for c in self.handler.close(reason) if type(c) is Deliver)
        r = "closed" if reason == "closed" else ("closed", reason)
        if reason != "normal":
            out.append(Deliver(self.reply_to, ("gun_error", self.conn, self.ref, r)))
        for op in self.queue:
            if op[0] in _NEW_STREAM_OPS:
                out.append(Deliver(op[2], ("gun_error", self.conn, op[1], r)))
        self.queue = []
        out.append(CancelTimer(_TLS_TIMER))
        out.append(Close(reason))
