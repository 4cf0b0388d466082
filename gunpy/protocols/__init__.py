"""Protocol handlers, one module per protocol, all behind ``base.ProtocolHandler``."""

from __future__ import annotations

from typing import Any


def handler_class(name: str) -> Any:
    """The handler class of protocol ``name`` (imported on first use)."""
    if name == "http":
        from .http import HttpHandler

        return HttpHandler
    if name == "http2":
        from .http2 import Http2Handler

        return Http2Handler
    if name == "ws":
        from .ws import WsHandler

        return WsHandler
    if name == "raw":
        from .raw import RawHandler

        return RawHandler
    if name == "socks":
        from .socks import SocksHandler

        return SocksHandler
    raise ValueError(f"unknown protocol {name!r}")
