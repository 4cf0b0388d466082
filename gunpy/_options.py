"""Connection options: Gun's keys, checked before anything starts.

``gun:open/3`` refuses unknown or ill-typed options with ``{error, {options, Opt}}``
and each protocol checks its own (``{error, {options, {http, Opt}}}``); gunpy
returns the same shapes, with ``Opt`` the ``(key, value)`` pair at fault, and
fills in Gun's defaults so the rest of the code never guesses.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

# Gun 2.4 defaults (gun-reference 3.1).
DEFAULT_RETRY = 5
DEFAULT_RETRY_TIMEOUT = 5000
DEFAULT_SEND_TIMEOUT = 15000

# Protocols this version implements; Gun's others are refused by name.
SUPPORTED_PROTOCOLS = ("http", "http2", "raw", "socks")
KNOWN_PROTOCOLS = ("http", "http2", "raw", "socks")

Bad = tuple[Any, ...]


def is_timeout(v: Any, allow_zero: bool = True) -> bool:
    """Gun's ``timeout()``: non-negative integer milliseconds or ``"infinity"``."""
    if v == "infinity":
        return True
    if isinstance(v, bool) or not isinstance(v, int):
        return False
    return v >= 0 if allow_zero else v > 0


def _non_neg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


_TCP_OPTS: dict[str, Callable[[Any], bool]] = {
    "send_timeout": lambda v: is_timeout(v),
    "send_timeout_close": lambda v: isinstance(v, bool),
    "nodelay": lambda v: isinstance(v, bool),
    "inet6": lambda v: isinstance(v, bool),
    "sndbuf": lambda v: _non_neg_int(v) and v > 0,
    "recbuf": lambda v: _non_neg_int(v) and v > 0,
}

_TLS_OPTS: dict[str, Callable[[Any], bool]] = {
    "verify": lambda v: v in ("verify_peer", "verify_none"),
    "cacertfile": lambda v: isinstance(v, str),
    "cacerts": lambda v: isinstance(v, (str, bytes)),
    "certfile": lambda v: isinstance(v, str),
    "keyfile": lambda v: isinstance(v, str),
    "password": lambda v: isinstance(v, (str, bytes)),
    "server_name_indication": lambda v: isinstance(v, str),  # a name, or "disable"
    "alpn_advertised_protocols": lambda v: isinstance(v, list)
    and all(isinstance(x, str) for x in v),
    "versions": lambda v: isinstance(v, list)
    and all(x in ("tlsv1.2", "tlsv1.3") for x in v),
    "ciphers": lambda v: isinstance(v, str),
    "check_hostname": lambda v: isinstance(v, bool),
}

_RAW_OPTS: dict[str, Callable[[Any], bool]] = {
    "flow": lambda v: _non_neg_int(v) and v > 0,
}


def _check_map(
    opts: Any, checks: dict[str, Callable[[Any], bool]], what: str
) -> Bad | None:
    if not isinstance(opts, dict):
        return (what, opts)
    for k, v in opts.items():
        check = checks.get(k)
        if check is None or not check(v):
            return (k, v)
    return None


def check_tls_opts(opts: Any) -> Bad | None:
    """The first bad ``(key, value)`` of a ``tls_opts`` dict, or None."""
    return _check_map(opts, _TLS_OPTS, "tls_opts")


def _protocol_checker(name: str) -> Callable[[dict[str, Any]], Bad | None]:
    if name == "socks":
        from .protocols import socks

        return socks.check_options
    if name == "http":
        from .protocols import http

        return http.check_options
    if name == "ws":
        from .protocols import ws

        return ws.check_options
    if name == "http2":
        from .protocols import http2

        return http2.check_options
    from .protocols import raw

    return raw.check_options


def check_protocol_opts(name: str, opts: Any) -> Bad | None:
    """Check a protocol's option dict; the bad ``(key, value)`` or None."""
    if not isinstance(opts, dict):
        return (name + "_opts", opts)
    if name == "socks":
        from .protocols import socks

        # Required keys are checked once merged with socks_opts (_check_socks_target).
        return socks.check_options(opts, require=False)
    result: Bad | None = _protocol_checker(name)(opts)
    return result


def _check_protocols(v: Any, transport: str) -> bool:
    if not isinstance(v, list) or not v:
        return False
    names = []
    for p in v:
        if isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], dict):
            name = p[0]
        else:
            name = p
        if name not in SUPPORTED_PROTOCOLS:
            return False
        names.append(name)
    if len(set(names)) != len(names):
        return False  # Gun rejects duplicates
    # Over TCP there is no negotiation: exactly one protocol (Gun 3.1).
    return not (transport != "tls" and len(names) != 1)


def check_protocol_list(v: Any, transport: str = "tls") -> Bad | None:
    """Check a ``protocols`` list (names or ``(name, opts)`` pairs, each protocol's
    options included); Gun's error reason or None.  A ``("socks", opts)`` entry
    must name its ``host`` and ``port``."""
    if not _check_protocols(v, transport):
        return ("options", ("protocols", v))
    for p in v:
        if isinstance(p, tuple):
            if p[0] == "socks":
                from .protocols import socks

                bad = socks.check_options(p[1])
            else:
                bad = check_protocol_opts(p[0], p[1])
            if bad is not None:
                return ("options", (p[0], bad))
    return None


def check_options(opts: Any) -> tuple[str, Any] | None:
    """Check ``gun:open/3`` options; Gun's error reason (``("options", ...)``) or None."""
    if not isinstance(opts, dict):
        return ("options", opts)
    transport = opts.get("transport", "tcp")
    for k, v in opts.items():
        bad: Bad | None = None
        if k == "transport":
            ok = v in ("tcp", "tls", "ssl")
        elif k == "protocols":
            ok = _check_protocols(v, "tls" if transport in ("tls", "ssl") else "tcp")
            if ok:
                for p in v:
                    if isinstance(p, tuple):
                        bad = check_protocol_opts(p[0], p[1])
                        if bad is not None:
                            return ("options", (p[0], bad))
        elif k in ("retry", "retry_timeout"):
            ok = _non_neg_int(v)
        elif k == "retry_fun":
            ok = callable(v)
        elif k in ("connect_timeout", "domain_lookup_timeout", "tls_handshake_timeout"):
            ok = is_timeout(v)
        elif k == "tcp_opts":
            bad = _check_map(v, _TCP_OPTS, "tcp_opts")
            if bad is not None:
                return ("options", ("tcp_opts", bad))
            ok = True
        elif k == "tls_opts":
            if isinstance(v, ssl.SSLContext):
                ok = True
            else:
                bad = _check_map(v, _TLS_OPTS, "tls_opts")
                if bad is not None:
                    return ("options", ("tls_opts", bad))
                ok = True
        elif k in ("http_opts", "http2_opts", "ws_opts", "raw_opts"):
            name = k[:-5]
            bad = check_protocol_opts(name, v)
            if bad is not None:
                return ("options", (name, bad))
            ok = True
        elif k == "socks_opts":
            from .protocols import socks

            # The connection-wide defaults: host and port may come from the
            # ("socks", opts) entry of protocols.
            bad = socks.check_options(v, require=False) if isinstance(v, dict) else ("socks_opts", v)
            if bad is not None:
                return ("options", ("socks", bad))
            ok = True
        elif k in ("supervise", "trace"):
            ok = isinstance(v, bool)
        elif k == "cookie_store":
            ok = _is_cookie_store(v)
        elif k == "event_handler":
            from .events import _check_event_handler

            ok = _check_event_handler(v)
        else:
            # Unknown keys: refused by name rather than silently ignored.
            ok = False
        if not ok:
            return ("options", (k, v))
    return _check_socks_target(opts)


def _check_socks_target(opts: dict[str, Any]) -> tuple[str, Any] | None:
    """A socks first hop needs a host and a port, in ``socks_opts`` or its entry."""
    for p in opts.get("protocols", ()):
        name = p[0] if isinstance(p, tuple) else p
        if name == "socks":
            merged = dict(opts.get("socks_opts") or {})
            if isinstance(p, tuple):
                merged.update(p[1])
            for k in ("host", "port"):
                if k not in merged:
                    return ("options", ("socks", (k, None)))
    return None


def _is_cookie_store(v: Any) -> bool:
    """A ``cookie_store``: an object with Gun's backend callbacks (gunpy.cookies)."""
    return all(
        callable(getattr(v, m, None))
        for m in (
            "query",
            "set_cookie_secure_match",
            "set_cookie_get_exact_match",
            "store",
            "gc",
            "session_gc",
        )
    )


def with_defaults(opts: dict[str, Any], port: int) -> dict[str, Any]:
    """A copy of validated ``opts`` with Gun's defaults filled in."""
    o = dict(opts)
    transport = o.get("transport")
    if transport is None:
        # Gun: tls when the port is 443, tcp otherwise.
        transport = "tls" if port == 443 else "tcp"
    if transport == "ssl":
        transport = "tls"
    o["transport"] = transport
    # Gun 3.1: [http2, http] over TLS (ALPN decides), [http] over TCP.
    o.setdefault("protocols", ["http2", "http"] if transport == "tls" else ["http"])
    o.setdefault("retry", DEFAULT_RETRY)
    o.setdefault("retry_timeout", DEFAULT_RETRY_TIMEOUT)
    o.setdefault("connect_timeout", "infinity")
    o.setdefault("domain_lookup_timeout", "infinity")
    o.setdefault("tls_handshake_timeout", "infinity")
    tcp = {"send_timeout": DEFAULT_SEND_TIMEOUT, "send_timeout_close": True, "nodelay": True}
    tcp.update(o.get("tcp_opts") or {})
    o["tcp_opts"] = tcp
    o.setdefault("tls_opts", {})
    o.setdefault("http_opts", {})
    o.setdefault("http2_opts", {})
    o.setdefault("ws_opts", {})
    o.setdefault("raw_opts", {})
    return o


def protocol_opts(opts: dict[str, Any], name: str) -> dict[str, Any]:
    """The options for protocol ``name``: ``{name}_opts`` overridden by a
    ``(name, opts)`` entry in ``protocols`` (Gun 3.1)."""
    base: dict[str, Any] = dict(opts.get(name + "_opts") or {})
    for p in opts.get("protocols", ()):
        if isinstance(p, tuple) and p[0] == name:
            base.update(p[1])
    return base


def protocol_names(opts: dict[str, Any]) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in opts.get("protocols", ["http"])]


def connect_destination(dest: Any) -> dict[str, Any]:
    """Check a ``gunpy.connect`` destination (Gun's ``connect_destination()``) and
    return a copy with the defaults filled in; raises ``OptionsError`` naming the
    key at fault (``("options", ("destination", (key, value)))``).

    ``host`` and ``port`` are required; ``username``/``password`` (both, or
    neither), ``protocols`` (default ``["http2", "http"]`` over TLS, ``["http"]``
    over TCP, where exactly one is allowed), ``transport`` (``"tcp"``),
    ``tls_opts`` and ``tls_handshake_timeout`` (``"infinity"``) are optional.
    """
    import ipaddress

    from .exceptions import OptionsError

    def bad(k: str, v: Any, why: str) -> OptionsError:
        return OptionsError(("options", ("destination", (k, v))), f"connect destination: {why}")

    if not isinstance(dest, dict):
        raise OptionsError(("options", ("destination", dest)), "a connect destination is a dict")
    out = dict(dest)
    for k, v in dest.items():
        if k == "host":
            if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                out[k] = str(v)
            elif not isinstance(v, str) or not v or any(c in v for c in " \r\n/@"):
                raise bad(k, v, f"host must be a host name or an IP address, not {v!r}")
        elif k == "port":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
                raise bad(k, v, f"port must be an integer in 1..65535, not {v!r}")
        elif k in ("username", "password"):
            if not isinstance(v, (str, bytes)):
                raise bad(k, v, f"{k} must be str or bytes")
        elif k == "transport":
            if v not in ("tcp", "tls", "ssl"):
                raise bad(k, v, "transport must be 'tcp' or 'tls'")
            out[k] = "tls" if v == "ssl" else v
        elif k == "tls_opts":
            if not isinstance(v, ssl.SSLContext):
                tls_bad = check_tls_opts(v)
                if tls_bad is not None:
                    raise bad(k, v, f"invalid tls_opts entry {tls_bad!r}")
        elif k == "tls_handshake_timeout":
            if not is_timeout(v):
                raise bad(k, v, "tls_handshake_timeout must be milliseconds or 'infinity'")
        elif k != "protocols":
            raise bad(k, v, f"unknown key {k!r}")
    for k in ("host", "port"):
        if k not in dest:
            raise bad(k, None, f"{k} is required")
    transport = out.setdefault("transport", "tcp")
    protocols = out.setdefault("protocols", ["http2", "http"] if transport == "tls" else ["http"])
    proto_bad = check_protocol_list(protocols, transport)
    if proto_bad is not None:
        raise bad("protocols", protocols, f"invalid protocols: {proto_bad!r}")
    out["protocols"] = list(protocols)
    out.setdefault("tls_opts", {})
    out.setdefault("tls_handshake_timeout", "infinity")
    return out
