"""Header normalisation, done in the caller as Gun does (``gun:normalize_headers``).

Gun lower-cases header names in the calling process and, unless
``invalid_request_headers`` is ``ignore``, refuses values containing CR or LF
(Gun 2.4: ``error({invalid_request_header, Name, Msg})``) before anything is cast
to the connection.  gunpy does the same and also refuses names that are not RFC
9110 section 5.1 tokens, because h11 would refuse them later inside the actor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .exceptions import InvalidRequestHeader

Headers = list[tuple[str, str]]

# RFC 9110 section 5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+\Z")


def _to_str(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        # latin-1 maps every byte to one code point: nothing is lost (ARCHITECTURE 1).
        return bytes(value).decode("latin-1")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidRequestHeader(what, f"header {what} must be str or bytes, not {type(value).__name__}")


def normalize_headers(headers: Any, check: bool = True) -> Headers:
    """Return ``headers`` as a list of ``(lower-case name, value)`` str pairs.

    ``headers`` may be a list of pairs or a mapping; names and values may be
    ``str`` or ``bytes``.  With ``check`` (Gun's ``invalid_request_headers =>
    raise``, the default) a CR or LF in a value, or a name that is not a token,
    raises ``InvalidRequestHeader`` naming the header.
    """
    if headers is None:
        return []
    items: Iterable[Any]
    if isinstance(headers, Mapping):
        items = headers.items()
    elif isinstance(headers, (list, tuple)):
        items = headers
    else:
        raise InvalidRequestHeader(
            "", f"headers must be a list of pairs or a dict, not {type(headers).__name__}"
        )
    out: Headers = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise InvalidRequestHeader("", f"header {item!r} is not a (name, value) pair") from None
        n = _to_str(name, "name").lower()
        v = _to_str(value, f"value of {n!r}")
        if check:
            if not _TOKEN.match(n):
                raise InvalidRequestHeader(n, f"invalid header name {n!r}")
            if "\r" in v or "\n" in v:
                raise InvalidRequestHeader(
                    n, f"header {n!r} value contains a CR or LF character"
                )
        out.append((n, v))
    return out


def get_header(headers: Headers, name: str) -> str | None:
    """The first value of header ``name`` (lower-case), or None."""
    for n, v in headers:
        if n == name:
            return v
    return None
