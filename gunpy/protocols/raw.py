"""The raw protocol: bytes in as ``gun_data``, bytes out with ``gunpy.data``.

Gun's ``gun_raw`` (the smallest handler; read it first).  Used directly
(``protocols: ["raw"]``) and after an HTTP/1.1 ``Upgrade`` to a protocol other than
Websocket.  There are no streams: the connection is the stream, so incoming data is
``("gun_data", conn, ref, "nofin", data)`` with ``ref`` None when the raw protocol
owns the whole connection, or the upgrade's ref.  No keepalive.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._commands import Commands, Deliver, ReplyTo, Send, SetActive
from .base import BADSTATE_DATA_ONLY, BaseHandler, HandlerContext, Headers


def check_options(opts: dict[str, Any]) -> tuple[str, Any] | None:
    for k, v in opts.items():
        if k != "flow" or isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            return (k, v)
    return None


class RawHandler(BaseHandler):
    name: ClassVar[str] = "raw"

    def __init__(
        self,
        ctx: HandlerContext,
        opts: dict[str, Any] | None = None,
        ref: Any = None,
        reply_to: ReplyTo | None = None,
        **_: Any,
    ) -> None:
        super().__init__(ctx)
        opts = opts or {}
        self.ref = ref
        self.reply_to: ReplyTo = reply_to if reply_to is not None else ctx.owner
        # Gun 4.5: each delivered message costs 1; None = no flow control.
        self.flow: int | None = opts.get("flow")

    def handle(self, data: bytes) -> Commands:
        cmds: Commands = [Deliver(self.reply_to, ("gun_data", self.ctx.conn, self.ref, "nofin", data))]
        if self.flow is not None:
            self.flow -= 1
            if self.flow <= 0:
                cmds.append(SetActive(False))
        return cmds

    # Gun's connected_data_only state refuses requests, upgrades and frames.
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
        return self.conn_error(reply_to, ("badstate", BADSTATE_DATA_ONLY))

    def ws_upgrade(
        self, ref: Any, reply_to: ReplyTo, path: str, headers: Headers, ws_opts: dict[str, Any]
    ) -> Commands:
        return self.conn_error(reply_to, ("badstate", BADSTATE_DATA_ONLY))

    def ws_send(self, ref: Any, reply_to: ReplyTo, frames: list[Any]) -> Commands:
        return self.conn_error(reply_to, ("badstate", BADSTATE_DATA_ONLY))

    def ping(self, ref: Any, reply_to: ReplyTo) -> Commands:
        return []  # Gun never handles a ping in connected_data_only (postponed)

    def data(self, ref: Any, reply_to: ReplyTo, fin: str, data: bytes) -> Commands:
        # Gun's gun_raw:data ignores the ref and the fin flag: it just writes.
        return [Send(data)] if data else []

    def update_flow(self, ref: Any, inc: int) -> Commands:
        if self.flow is None:
            return []
        self.flow += inc
        return [SetActive(self.flow > 0)]

    def active(self) -> bool:
        return self.flow is None or self.flow > 0

    def stream_info(self, ref: Any) -> dict[str, Any] | None:
        if ref is None or ref != self.ref:
            return None
        return {
            "ref": ref,
            "reply_to": self.reply_to,
            "state": "running",
            "intermediaries": [],
            "tunnel": None,
        }
