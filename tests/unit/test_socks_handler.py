"""Unit tests of the sans-IO SOCKS5 handler (``gunpy.protocols.socks``).

No sockets: bytes go in through ``handle``/``handle_eof``, timers through
``timeout``, and every test asserts on the commands that come out.  What the
handler writes is parsed by ``Rfc1928Server`` below, an independent server-side
reading of RFC 1928 / RFC 1929 written from the RFCs (not from the handler).
Reasons are Gun's (``gun_socks.erl``) where Gun has one.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gunpy._commands import CancelTimer, Close, Send, StartTimer, Tunnel
from gunpy.protocols import handler_class
from gunpy.protocols.base import HandlerContext
from gunpy.protocols.socks import DEFAULT_HANDSHAKE_TIMEOUT, SocksHandler, check_options

CONN = object()


class Rec:
    def __init__(self) -> None:
        self.msgs: list[Any] = []

    def send(self, msg: Any) -> None:
        self.msgs.append(msg)


OWNER = Rec()


def mk(**opts: Any) -> SocksHandler:
    o = {"host": "origin.example", "port": 8443, **opts}
    return SocksHandler(HandlerContext(conn=CONN, owner=OWNER), o)


def wire(cmds: list[Any]) -> bytes:
    return b"".join(c.data for c in cmds if isinstance(c, Send))


class Rfc1928Server:
    """The server's side of the handshake, parsed from the client's bytes."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data

    def take(self, n: int) -> bytes:
        assert len(self.buf) >= n, f"expected {n} bytes, have {self.buf!r}"
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def greeting(self) -> list[int]:
        ver, n = self.take(2)
        assert ver == 5
        return list(self.take(n))

    def userpass(self) -> tuple[bytes, bytes]:
        ver, ulen = self.take(2)
        assert ver == 1  # RFC 1929: sub-negotiation version 1
        user = self.take(ulen)
        (plen,) = self.take(1)
        return user, self.take(plen)

    def request(self) -> tuple[int, str, int]:
        ver, cmd, rsv, atyp = self.take(4)
        assert (ver, rsv) == (5, 0)
        if atyp == 1:
            host = str(ipaddress.IPv4Address(self.take(4)))
        elif atyp == 4:
            host = str(ipaddress.IPv6Address(self.take(16)))
        else:
            assert atyp == 3
            (n,) = self.take(1)
            host = self.take(n).decode()
        (port,) = struct.unpack("!H", self.take(2))
        assert not self.buf
        return cmd, host, port


OK_V4 = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90"  # bound to 127.0.0.1:8080


def tunnel_of(cmds: list[Any]) -> Tunnel:
    tunnels = [c for c in cmds if isinstance(c, Tunnel)]
    assert len(tunnels) == 1, cmds
    return tunnels[0]


# --------------------------------------------------------------------------- handshake


def test_registered_as_protocol_socks() -> None:
    assert handler_class("socks") is SocksHandler
    assert SocksHandler.name == "socks" and SocksHandler.no_input


def test_greeting_offers_no_auth_by_default_and_starts_the_timer() -> None:
    h = mk()
    cmds = h.init()
    srv = Rfc1928Server()
    srv.feed(wire(cmds))
    assert srv.greeting() == [0]
    assert StartTimer("socks", DEFAULT_HANDSHAKE_TIMEOUT) in cmds


def test_greeting_offers_methods_in_auth_order() -> None:
    h = mk(auth=[("username_password", "u", "p"), "none"], handshake_timeout=2000)
    cmds = h.init()
    srv = Rfc1928Server()
    srv.feed(wire(cmds))
    assert srv.greeting() == [2, 0]
    assert StartTimer("socks", 2000) in cmds


def test_handshake_timeout_infinity_starts_no_timer() -> None:
    cmds = mk(handshake_timeout="infinity").init()
    assert not [c for c in cmds if isinstance(c, StartTimer)]


def test_no_auth_connect_by_name_then_tunnel() -> None:
    reply_to = Rec()
    h = SocksHandler(
        HandlerContext(conn=CONN, owner=OWNER),
        {"host": "origin.example", "port": 8443, "protocols": ["raw"]},
        ref="tunnel-ref",
        reply_to=reply_to,
    )
    h.init()
    cmds = h.handle(b"\x05\x00")
    srv = Rfc1928Server()
    srv.feed(wire(cmds))
    assert srv.request() == (1, "origin.example", 8443)  # CONNECT, domain name
    cmds = h.handle(OK_V4)
    t = tunnel_of(cmds)
    assert CancelTimer("socks") in cmds
    assert cmds.index(CancelTimer("socks")) < cmds.index(t)
    assert (t.kind, t.ref, t.reply_to, t.buffer) == ("socks5", "tunnel-ref", reply_to, b"")
    assert t.destination == {
        "host": "origin.example",
        "port": 8443,
        "transport": "tcp",
        "protocols": ["raw"],
        "tls_opts": {},
        "tls_handshake_timeout": "infinity",
    }
    # Finished: anything more is the next protocol's, never the handler's.
    assert h.handle(b"more") == []
    assert h.timeout("socks") == []


def test_reply_to_defaults_to_the_owner_and_ref_to_none() -> None:
    h = mk()
    h.init()
    h.handle(b"\x05\x00")
    t = tunnel_of(h.handle(OK_V4))
    assert t.ref is None and t.reply_to is OWNER


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("10.1.2.3", "10.1.2.3"),
        ("::1", "::1"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("localhost", "localhost"),
    ],
)
def test_address_types(host: str, expected: str) -> None:
    h = mk(host=host, port=80)
    h.init()
    srv = Rfc1928Server()
    srv.feed(wire(h.handle(b"\x05\x00")))
    assert srv.request() == (1, expected, 80)


def test_idn_host_is_sent_as_its_ascii_form() -> None:
    h = mk(host="bücher.example", port=80)
    h.init()
    srv = Rfc1928Server()
    srv.feed(wire(h.handle(b"\x05\x00")))
    assert srv.request() == (1, "xn--bcher-kva.example", 80)


def test_tls_destination_defaults_to_http2_and_http() -> None:
    h = mk(transport="tls", tls_opts={"verify": "verify_none"}, tls_handshake_timeout=3000)
    h.init()
    h.handle(b"\x05\x00")
    t = tunnel_of(h.handle(OK_V4))
    assert t.destination["transport"] == "tls"
    assert t.destination["protocols"] == ["http2", "http"]
    assert t.destination["tls_opts"] == {"verify": "verify_none"}
    assert t.destination["tls_handshake_timeout"] == 3000


def test_username_password_rfc1929() -> None:
    h = mk(auth=[("username_password", "alice", b"s3cr\xc3\xa9t")])
    srv = Rfc1928Server()
    srv.feed(wire(h.init()))
    assert srv.greeting() == [2]
    srv.feed(wire(h.handle(b"\x05\x02")))
    assert srv.userpass() == (b"alice", b"s3cr\xc3\xa9t")
    srv.feed(wire(h.handle(b"\x01\x00")))
    assert srv.request() == (1, "origin.example", 8443)
    tunnel_of(h.handle(OK_V4))


def test_username_password_str_is_utf8() -> None:
    h = mk(auth=[("username_password", "zoë", "pässword")])
    h.init()
    srv = Rfc1928Server()
    srv.feed(wire(h.handle(b"\x05\x02")))
    assert srv.userpass() == ("zoë".encode(), "pässword".encode())


def test_server_may_pick_none_among_offered_methods() -> None:
    h = mk(auth=[("username_password", "u", "p"), "none"])
    h.init()
    srv = Rfc1928Server()
    srv.feed(wire(h.handle(b"\x05\x00")))
    assert srv.request()[1] == "origin.example"


# --------------------------------------------------------------------------- failures


def failure(cmds: list[Any]) -> Any:
    closes = [c for c in cmds if isinstance(c, Close)]
    assert len(closes) == 1, cmds
    assert not [c for c in cmds if isinstance(c, Tunnel)]
    return closes[0].reason


def test_username_password_refused_is_gun_reason() -> None:
    h = mk(auth=[("username_password", "u", "bad")])
    h.init()
    h.handle(b"\x05\x02")
    cmds = h.handle(b"\x01\x01")
    assert failure(cmds) == ("error", ("socks5", "username_password_auth_failure"))
    assert CancelTimer("socks") in cmds
    assert h.handle(b"\x05\x00") == []  # failed: input ignored


def test_no_acceptable_methods() -> None:
    h = mk(auth=[("username_password", "u", "p")])
    h.init()
    assert failure(h.handle(b"\x05\xff")) == ("error", ("socks5", "no_acceptable_methods"))


def test_method_that_was_not_offered() -> None:
    h = mk()  # none only
    h.init()
    assert failure(h.handle(b"\x05\x02")) == ("error", ("socks5", ("auth_method_not_offered", 2)))
    h = mk()
    h.init()
    assert failure(h.handle(b"\x05\x01")) == ("error", ("socks5", ("auth_method_not_offered", 1)))


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1, "general_socks_server_failure"),
        (2, "connection_not_allowed_by_ruleset"),
        (3, "network_unreachable"),
        (4, "host_unreachable"),
        (5, "connection_refused"),
        (6, "ttl_expired"),
        (7, "command_not_supported"),
        (8, "address_type_not_supported"),
        (9, ("unknown_error", 9)),
        (255, ("unknown_error", 255)),
    ],
)
def test_connect_reply_errors(code: int, reason: Any) -> None:
    h = mk()
    h.init()
    h.handle(b"\x05\x00")
    # The error is known from the first two bytes: the rest need not arrive.
    assert failure(h.handle(bytes((5, code)))) == ("error", ("socks5", reason))


@pytest.mark.parametrize("reply", [b"\x04\x00", b"\x00\x5a"])
def test_wrong_version_in_method_reply(reply: bytes) -> None:
    h = mk()
    h.init()
    reason = failure(h.handle(reply))
    assert reason[1][0] == "socks5" and reason[1][1][0] == "protocol_error"


def test_wrong_version_in_connect_reply() -> None:
    h = mk()
    h.init()
    h.handle(b"\x05\x00")
    reason = failure(h.handle(b"\x04\x00\x00\x01" + bytes(6)))
    assert reason[1][1][0] == "protocol_error"


def test_unknown_address_type_in_reply() -> None:
    h = mk()
    h.init()
    h.handle(b"\x05\x00")
    reason = failure(h.handle(b"\x05\x00\x00\x07" + bytes(6)))
    assert reason[1][1][0] == "protocol_error" and "address type" in reason[1][1][1]


def test_eof_mid_handshake_is_closed() -> None:
    h = mk()
    h.init()
    h.handle(b"\x05")
    assert failure(h.handle_eof()) == "closed"


def test_timeout_fails_the_handshake() -> None:
    h = mk(handshake_timeout=100)
    h.init()
    h.handle(b"\x05\x00")
    assert failure(h.timeout("socks")) == ("error", ("socks5", "timeout"))
    assert h.timeout("socks") == []
    assert h.timeout("other") == []


def test_unsupported_operations_are_never_reached_but_safe() -> None:
    # The actor queues user operations while no_input is set; the handler has
    # nothing to say about streams.
    h = mk()
    assert h.stream_info("ref") is None and h.down() == [] and h.active()
    assert h.closing("shutdown") == [Close("normal")]


# --------------------------------------------------------------------------- framing


def _replies(auth: bool, reply: bytes, extra: bytes) -> bytes:
    return (b"\x05\x02" + b"\x01\x00" if auth else b"\x05\x00") + reply + extra


REPLIES = [
    OK_V4,
    b"\x05\x00\x00\x04" + ipaddress.IPv6Address("::1").packed + b"\x00\x50",
    b"\x05\x00\x00\x03\x0bexample.com\x00\x50",
    b"\x05\x00\x00\x03\x00\x00\x50",  # an empty name: still well-formed
]


@settings(max_examples=200, deadline=None)
@given(
    auth=st.booleans(),
    reply=st.sampled_from(REPLIES),
    extra=st.binary(max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=8),
)
def test_replies_in_any_pieces(auth: bool, reply: bytes, extra: bytes, cuts: list[int]) -> None:
    """However the proxy's bytes are cut, the same tunnel comes out, and the bytes
    after the CONNECT reply go to the next protocol: those of the same read in
    the tunnel's buffer, later reads (which the handler ignores) through the
    actor to the next handler."""
    h = mk(auth=[("username_password", "u", "p")] if auth else ["none"])
    h.init()
    data = _replies(auth, reply, extra)
    points = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    cmds: list[Any] = []
    later = b""
    for a, b in itertools.pairwise(points):
        if any(isinstance(c, Tunnel) for c in cmds):
            assert h.handle(data[a:b]) == []
            later += data[a:b]
        else:
            cmds += h.handle(data[a:b])
    srv = Rfc1928Server()
    srv.feed(wire(cmds))
    if auth:
        assert srv.userpass() == (b"u", b"p")
    assert srv.request() == (1, "origin.example", 8443)
    t = tunnel_of(cmds)
    assert t.buffer + later == extra


# --------------------------------------------------------------------------- options


def test_check_options() -> None:
    assert check_options({"host": "h", "port": 1080}) is None
    assert check_options({"port": 1080}) == ("host", None)
    assert check_options({"host": "h"}) == ("port", None)
    assert check_options({"host": "h", "port": 0}) == ("port", 0)
    assert check_options({"host": "h", "port": 1, "version": 4}) == ("version", 4)
    assert check_options({"host": "h", "port": 1, "auth": ["none", "none"]}) == (
        "auth",
        ["none", "none"],
    )
    assert (
        check_options({"host": "h", "port": 1, "auth": [("username_password", "u")]})[0] == "auth"
    )
    assert (
        check_options({"host": "h", "port": 1, "auth": [("username_password", "u" * 256, "p")]})[0]
        == "auth"
    )
    assert (
        check_options({"host": "h", "port": 1, "auth": ["none", ("username_password", b"u", "p")]})
        is None
    )
    assert check_options({"host": "h", "port": 1, "transport": "quic"}) == ("transport", "quic")
    # Over TCP exactly one protocol inside (no negotiation).
    assert check_options({"host": "h", "port": 1, "protocols": ["http2", "http"]})[0] == "protocols"
    assert (
        check_options({"host": "h", "port": 1, "transport": "tls", "protocols": ["http2", "http"]})
        is None
    )
    assert check_options({"host": "h", "port": 1, "protocols": ["spdy"]})[0] == "protocols"
    assert (
        check_options({"host": "h", "port": 1, "tls_opts": {"verify": "sometimes"}})[0]
        == "tls_opts"
    )
    assert (
        check_options({"host": "h", "port": 1, "handshake_timeout": -1})[0] == "handshake_timeout"
    )
    assert check_options({"host": "h", "port": 1, "unknown": 1}) == ("unknown", 1)
    assert check_options({"auth": ["none"]}, require=False) is None


def test_nested_socks_options_are_checked() -> None:
    inner = ("socks", {"host": "h2", "port": 2})
    assert check_options({"host": "h", "port": 1, "protocols": [inner]}) is None
    bad = ("socks", {"host": "h2"})  # no port
    assert check_options({"host": "h", "port": 1, "protocols": [bad]})[0] == "protocols"
