"""SOCKS5 client protocol handler: Gun's ``gun_socks``, sans-IO.

Theory of operation
-------------------
SOCKS5 (RFC 1928) is configured as a protocol, first hop or inside a tunnel:
``protocols: [("socks", {"host": ..., "port": ..., "auth": [...], "protocols": [...],
"transport": "tcp" | "tls", "tls_opts": ..., "tls_handshake_timeout": ...})]``.  The
handler speaks the handshake and nothing else:

1. ``init`` sends the greeting: version 5 and the methods of ``auth`` in order
   (``"none"`` is 0, ``("username_password", user, password)`` is 2, RFC 1929);
2. the method the server picked: 0 goes straight to 4; 2 sends the username and
   password sub-negotiation;
3. the sub-negotiation's status: 0 goes on, anything else fails;
4. the CONNECT request for ``host:port`` (an IPv4 or IPv6 address as such, any
   other name as a domain name the proxy resolves), then its reply.

A successful reply gives the ``Tunnel`` command: the connection actor records the
proxy as a ``socks5`` intermediary, makes ``host:port`` the origin, runs the TLS
handshake when ``transport`` is ``"tls"`` and installs the protocol named in
``protocols``, then sends ``("gun_tunnel_up", conn, ref, protocol)`` (``ref`` None
at the top level, the CONNECT's ref inside a CONNECT tunnel).  Until then the
handler takes no user operation (``no_input``, Gun's ``connected_no_input``): the
actor queues them and plays them once the next protocol is up.

Replies may arrive in pieces: the handler buffers until a message is complete, and
the bytes that follow the CONNECT reply go to the next protocol.  A failure is
``Close(("error", ("socks5", reason)))``, so the owner gets ``("gun_down", conn,
"socks", ("error", ("socks5", reason)), [])`` and the retry rules apply.  Gun's
reasons: ``"username_password_auth_failure"`` and the RFC 1928 reply codes
(``"general_socks_server_failure"``, ``"connection_not_allowed_by_ruleset"``,
``"network_unreachable"``, ``"host_unreachable"``, ``"connection_refused"``,
``"ttl_expired"``, ``"command_not_supported"``, ``"address_type_not_supported"``,
``("unknown_error", code)``).  Where Gun crashes, gunpy names the fault:
``"no_acceptable_methods"`` (the server's ``05 FF``), ``("auth_method_not_offered",
method)``, ``("protocol_error", text)`` (a malformed reply), and ``"timeout"`` when
the whole handshake takes longer than ``handshake_timeout`` (a gunpy option,
default 15000 ms; Gun waits forever).
"""

from __future__ import annotations

import ipaddress
import ssl
import struct
from collections.abc import Callable
from typing import Any, ClassVar

from .._commands import CancelTimer, Close, Commands, ReplyTo, Send, StartTimer, Tunnel
from .base import BaseHandler, HandlerContext

__all__ = ["SocksHandler", "check_options"]

DEFAULT_HANDSHAKE_TIMEOUT = 15000

_REPLY_ERRORS = {
    1: "general_socks_server_failure",
    2: "connection_not_allowed_by_ruleset",
    3: "network_unreachable",
    4: "host_unreachable",
    5: "connection_refused",
    6: "ttl_expired",
    7: "command_not_supported",
    8: "address_type_not_supported",
}

# Handshake states.
_METHOD = 0  # greeting sent, waiting for the server's method choice
_AUTH = 1  # username/password sent, waiting for its status
_CONNECT = 2  # CONNECT sent, waiting for the reply
_DONE = 3  # tunnel given, or failed: input ignored

_TIMER = "socks"


# --------------------------------------------------------------------------------------
# Options


def _timeout(v: Any) -> bool:
    return v == "infinity" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)


def _cred(v: Any) -> bool:
    if isinstance(v, str):
        v = v.encode("utf-8")
    return isinstance(v, bytes) and len(v) <= 255


def _check_auth(v: Any) -> bool:
    if not isinstance(v, list):
        return False
    kinds = []
    for m in v:
        if m == "none":
            kinds.append("none")
        elif (
            isinstance(m, tuple)
            and len(m) == 3
            and m[0] == "username_password"
            and _cred(m[1])
            and _cred(m[2])
        ):
            kinds.append("username_password")
        else:
            return False
    # Gun: each method at most once.
    return len(set(kinds)) == len(kinds)


def _check_tls_opts(v: Any) -> bool:
    if isinstance(v, ssl.SSLContext):
        return True
    from .. import _options

    return isinstance(v, dict) and _options.check_tls_opts(v) is None


def _check_protocols(v: Any) -> bool:
    from .. import _options

    return _options.check_protocol_list(v) is None


def _host(v: Any) -> bool:
    if not isinstance(v, str) or not v:
        return False
    return len(_address(v)) <= 256


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "host": _host,
    "port": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536,
    "auth": _check_auth,
    "version": lambda v: v == 5,
    "protocols": _check_protocols,
    "transport": lambda v: v in ("tcp", "tls", "ssl"),
    "tls_opts": _check_tls_opts,
    "tls_handshake_timeout": _timeout,
    # gunpy addition: bound on the whole SOCKS handshake.
    "handshake_timeout": _timeout,
}


def check_options(opts: dict[str, Any], require: bool = True) -> tuple[str, Any] | None:
    """The first bad ``(key, value)`` of a ``socks_opts`` dict, or None.

    ``host`` and ``port`` are required (Gun's ``gun_socks:check_options``); a
    missing one is reported as ``(name, None)``.  ``require=False`` checks the
    keys present only (the connection-wide ``socks_opts``, completed by a
    ``("socks", opts)`` entry of ``protocols``).
    """
    for k, v in opts.items():
        check = _CHECKS.get(k)
        try:
            ok = check is not None and check(v)
        except (UnicodeError, ValueError):
            ok = False
        if not ok:
            return (k, v)
    if require:
        for k in ("host", "port"):
            if k not in opts:
                return (k, None)
    protocols = opts.get("protocols")
    if protocols is not None and opts.get("transport", "tcp") == "tcp" and len(protocols) != 1:
        # Over TCP there is no negotiation: exactly one protocol (Gun 3.1).
        return ("protocols", protocols)
    return None


def destination(opts: dict[str, Any]) -> dict[str, Any]:
    """The tunnel destination a successful handshake opens (defaults filled in)."""
    transport = "tls" if opts.get("transport") in ("tls", "ssl") else "tcp"
    return {
        "host": opts["host"],
        "port": opts["port"],
        "transport": transport,
        "protocols": list(
            opts.get("protocols") or (["http2", "http"] if transport == "tls" else ["http"])
        ),
        "tls_opts": opts.get("tls_opts", {}),
        "tls_handshake_timeout": opts.get("tls_handshake_timeout", "infinity"),
    }


def _bytes(v: str | bytes) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else v


def _address(host: str) -> bytes:
    """RFC 1928 section 4: ATYP and DST.ADDR."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        name = host.encode("ascii") if host.isascii() else host.encode("idna")
        return bytes((3, len(name))) + name
    if ip.version == 4:
        return b"\x01" + ip.packed
    return b"\x04" + ip.packed


# --------------------------------------------------------------------------------------
# The handler


class SocksHandler(BaseHandler):
    """Gun's ``gun_socks``: the SOCKS5 handshake, then a ``Tunnel``."""

    name: ClassVar[str] = "socks"
    no_input: ClassVar[bool] = True

    def __init__(
        self,
        ctx: HandlerContext,
        opts: dict[str, Any] | None = None,
        ref: Any = None,
        reply_to: ReplyTo | None = None,
        **_: Any,
    ) -> None:
        super().__init__(ctx)
        self.opts: dict[str, Any] = dict(opts or {})
        self.ref = ref
        self.reply_to: ReplyTo = reply_to if reply_to is not None else ctx.owner
        self.auth: list[Any] = self.opts.get("auth") or ["none"]
        self._state = _METHOD
        self._buf = b""
        timeout = self.opts.get("handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT)
        self._timeout: int | None = None if timeout == "infinity" else timeout

    # -- the handshake ------------------------------------------------------------
    def init(self) -> Commands:
        methods = bytes(2 if isinstance(a, tuple) else 0 for a in self.auth)
        cmds: Commands = [Send(b"\x05" + bytes((len(methods),)) + methods)]
        if self._timeout is not None:
            cmds.append(StartTimer(_TIMER, self._timeout))
        return cmds

    def _offered(self, kind: str) -> Any:
        for a in self.auth:
            if (a == "none" and kind == "none") or (isinstance(a, tuple) and a[0] == kind):
                return a
        return None

    def _connect_request(self) -> bytes:
        return (
            b"\x05\x01\x00"
            + _address(str(self.opts["host"]))
            + struct.pack("!H", self.opts["port"])
        )

    def _fail(self, reason: Any) -> Commands:
        self._state = _DONE
        self._buf = b""
        return [CancelTimer(_TIMER), Close(("error", ("socks5", reason)))]

    def handle(self, data: bytes) -> Commands:
        if self._state == _DONE:
            return []
        buf = self._buf + data if self._buf else data
        cmds: Commands = []
        while True:
            state = self._state
            if state == _METHOD:
                if len(buf) < 2:
                    break
                ver, method = buf[0], buf[1]
                buf = buf[2:]
                if ver != 5:
                    return self._fail(
                        ("protocol_error", f"The server replied with SOCKS version {ver}.")
                    )
                if method == 0xFF:
                    return self._fail("no_acceptable_methods")
                if method == 0 and self._offered("none") is not None:
                    cmds.append(Send(self._connect_request()))
                    self._state = _CONNECT
                elif method == 2 and (up := self._offered("username_password")) is not None:
                    user, password = _bytes(up[1]), _bytes(up[2])
                    cmds.append(
                        Send(bytes((1, len(user))) + user + bytes((len(password),)) + password)
                    )
                    self._state = _AUTH
                else:
                    return self._fail(("auth_method_not_offered", method))
            elif state == _AUTH:
                if len(buf) < 2:
                    break
                ver, status = buf[0], buf[1]
                buf = buf[2:]
                if ver != 1 or status != 0:
                    # RFC 1929: any status but 0 is a failure (Gun's reason).
                    return self._fail("username_password_auth_failure")
                cmds.append(Send(self._connect_request()))
                self._state = _CONNECT
            elif state == _CONNECT:
                if len(buf) < 2:
                    break
                if buf[0] != 5:
                    return self._fail(
                        ("protocol_error", f"The server replied with SOCKS version {buf[0]}.")
                    )
                if buf[1] != 0:
                    return self._fail(_REPLY_ERRORS.get(buf[1], ("unknown_error", buf[1])))
                if len(buf) < 5:
                    break
                atyp = buf[3]
                if atyp == 1:
                    size = 4 + 4 + 2
                elif atyp == 4:
                    size = 4 + 16 + 2
                elif atyp == 3:
                    size = 4 + 1 + buf[4] + 2
                else:
                    return self._fail(
                        ("protocol_error", f"Unknown address type {atyp} in the reply.")
                    )
                if len(buf) < size:
                    break
                # BND.ADDR and BND.PORT are not used (Gun ignores them too).
                rest = buf[size:]
                self._state = _DONE
                self._buf = b""
                cmds.append(CancelTimer(_TIMER))
                cmds.append(Tunnel("socks5", self.ref, self.reply_to, destination(self.opts), rest))
                return cmds
            else:  # pragma: no cover - _DONE returns above
                break
        self._buf = buf
        return cmds

    def handle_eof(self) -> Commands:
        # The proxy closed in the middle of the handshake: Gun's reason.
        self._state = _DONE
        return [CancelTimer(_TIMER), Close("closed")]

    def timeout(self, name: str) -> Commands:
        if name == _TIMER and self._state != _DONE:
            return self._fail("timeout")
        return []

    def active(self) -> bool:
        return True
