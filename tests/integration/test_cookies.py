"""The ``cookie_store`` option against real servers (Gun's ``rfc6265bis_SUITE``).

Servers: aiohttp (HTTP/1.1) and hypercorn (h2c by prior knowledge, h2 and
HTTP/1.1 over TLS), both with ``/cookie-set?c=<set-cookie>`` (a 204 with those
``set-cookie`` headers) and ``/cookie-echo`` (the ``cookie`` header received, or
``UNDEF``), and a Websocket route ``/ws-cookie`` that sets ``ws_cookie=1`` in its
upgrade response and sends the upgrade's ``cookie`` header first.  A scripted
origin (``gunpy.testing``) gives the exact bytes for 1xx responses and
reconnections.  The engine's rules are unit-tested case by case in
tests/unit/test_cookies.py; these tests check the plumbing on every protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

import gunpy
from gunpy import TIMEOUT
from gunpy.cookies import ListStore
from gunpy.testing import Close, ExpectRequest, Respond, ScriptedOrigin, Send, assert_receive
from tests.peers import Peer, TLSFiles

WPT_HOST = "web-platform.test"

_opened: list[gunpy.Pid] = []


@pytest.fixture(autouse=True)
def _cleanup() -> Iterator[None]:
    _opened.clear()
    yield
    for conn in _opened:
        if conn.is_alive():
            gunpy.close(conn)
    while gunpy.receive(after=0) is not TIMEOUT:
        pass


class Server:
    """One server and protocol: ``open(store)`` gives a connection that is up."""

    def __init__(self, port: int, protocol: str, scheme: str, opts: dict[str, Any]) -> None:
        self.port = port
        self.protocol = protocol
        self.scheme = scheme
        self.opts = opts

    def open(self, store: Any, **opts: Any) -> gunpy.Pid:
        ok, conn = gunpy.open(
            "127.0.0.1", self.port, {"retry": 0, "cookie_store": store, **self.opts, **opts}
        )
        assert ok == "ok", conn
        _opened.append(conn)
        assert gunpy.await_up(conn) == ("ok", self.protocol)
        return conn


@pytest.fixture(params=["http", "h2c", "https", "h2"])
def server(request: pytest.FixtureRequest, trustme_ca: TLSFiles) -> Server:
    """Gun's groups: http (aiohttp), h2c, https and h2 (hypercorn)."""
    tls = {"transport": "tls", "tls_opts": {"cacertfile": str(trustme_ca.ca_file)}}
    if request.param == "http":
        peer: Peer = request.getfixturevalue("aiohttp_server")
        return Server(peer.port, "http", "http", {"protocols": ["http"]})
    if request.param == "h2c":
        peer = request.getfixturevalue("hypercorn_server")
        return Server(peer.port, "http2", "http", {"protocols": ["http2"]})
    peer = request.getfixturevalue("hypercorn_tls_server")
    proto = "http" if request.param == "https" else "http2"
    return Server(peer.port, proto, "https", {**tls, "protocols": [proto]})


def body(conn: gunpy.Pid, ref: Any) -> bytes:
    msg = gunpy.await_(conn, ref)
    assert msg[:3] == ("response", "nofin", 200), msg
    ok, data = gunpy.await_body(conn, ref)[:2]
    assert ok == "ok"
    assert isinstance(data, bytes)
    return data


def set_cookies(conn: gunpy.Pid, *values: str, headers: Any = ()) -> None:
    qs = "&".join("c=" + quote(v, safe="") for v in values)
    no_content(conn, gunpy.get(conn, "/cookie-set?" + qs, list(headers)))


def no_content(conn: gunpy.Pid, ref: Any) -> None:
    """A 204 (hypercorn ends it with an empty DATA frame on HTTP/2: then nofin)."""
    msg = gunpy.await_(conn, ref)
    assert msg[0] == "response" and msg[2] == 204, msg
    if msg[1] == "nofin":
        assert gunpy.await_body(conn, ref)[:2] == ("ok", b"")


def echo(conn: gunpy.Pid, headers: Any = ()) -> str:
    return body(conn, gunpy.get(conn, "/cookie-echo", list(headers))).decode("latin-1")


# --------------------------------------------------------------------------------------


def test_set_then_sent(server: Server) -> None:
    """Cookies from set-cookie go back in a cookie header on the next request."""
    store = ListStore()
    conn = server.open(store)
    assert echo(conn) == "UNDEF"
    set_cookies(conn, "a=b", "c=d; Path=/", "e=f; Path=/elsewhere")
    assert echo(conn) == "a=b; c=d"
    assert gunpy.info(conn)["cookie_store"] is store
    set_cookies(conn, "a=; Max-Age=0")  # expires it
    assert echo(conn) == "c=d"


def test_secure(server: Server) -> None:
    """WPT secure/set-from-http*: Secure cookies only from and to https."""
    conn = server.open(ListStore())
    set_cookies(conn, "secure_cookie=1; Secure; Path=/", "plain=1")
    expected = "secure_cookie=1; plain=1" if server.scheme == "https" else "plain=1"
    assert echo(conn) == expected


def test_prefixes(server: Server) -> None:
    """WPT prefix/__host.header, prefix/__secure.header (a sample of them)."""
    conn = server.open(ListStore())
    set_cookies(
        conn,
        "__Host-ok=1; Secure; Path=/",
        "__Host-bad=1; Secure; Path=/x",
        "__Secure-ok=1; Secure",
        "__Secure-bad=1",
    )
    expected = "__Host-ok=1; __Secure-ok=1" if server.scheme == "https" else "UNDEF"
    assert echo(conn) == expected


def test_domains(server: Server) -> None:
    """WPT domain/*: host-only cookies stay on their host; a Domain attribute
    reaches subdomains; another site's domain is refused."""
    conn = server.open(ListStore())
    host = [("host", WPT_HOST)]
    sub = [("host", "sub." + WPT_HOST)]
    set_cookies(
        conn, "hostonly=1", f"a=b; Domain=.{WPT_HOST}", "x=1; Domain=example.org", headers=host
    )
    assert echo(conn, host) == "hostonly=1; a=b"
    assert echo(conn, sub) == "a=b"
    assert echo(conn) == "UNDEF"  # 127.0.0.1


def test_path_match(server: Server) -> None:
    """WPT path/match: a cookie path must be the request path or a parent
    directory of it (``/cookie-e`` is not one of ``/cookie-echo``)."""
    conn = server.open(ListStore())
    set_cookies(conn, "a=1; Path=/cookie-e", "b=1; Path=/cookie-echo/sub", "c=1; Path=/cookie-echo")
    assert echo(conn) == "c=1"


def test_ws_upgrade_sends_and_stores_cookies(server: Server) -> None:
    """WPT secure/set-from-ws*: the upgrade carries the cookies, and its response
    sets one (Gun skips HTTP/2; gunpy runs it over RFC 8441 too).  The store is
    taken from ``info`` to a second connection, as Gun's test does."""
    store = ListStore()
    conn = server.open(store)
    set_cookies(conn, "a=b")
    ref = gunpy.ws_upgrade(conn, "/ws-cookie")
    assert gunpy.await_(conn, ref)[:2] == ("upgrade", ["websocket"])
    assert gunpy.await_(conn, ref) == ("ws", ("text", "a=b"))
    assert gunpy.info(conn)["cookie_store"] is store
    gunpy.close(conn)
    conn2 = server.open(store)
    assert echo(conn2) == "a=b; ws_cookie=1"


def test_store_shared_by_connections(server: Server) -> None:
    """gunpy: a ListStore may serve several connections at once."""
    store = ListStore()
    conn1 = server.open(store)
    conn2 = server.open(store)
    set_cookies(conn1, "one=1")
    set_cookies(conn2, "two=2")
    assert echo(conn1) == "one=1; two=2"


def test_bad_cookie_store_is_refused() -> None:
    bad = object()
    assert gunpy.open("localhost", 1, {"cookie_store": bad}) == (
        "error",
        ("options", ("cookie_store", bad)),
    )


# --------------------------------------------------------------------------------------
# Exact bytes: 1xx responses and reconnections (HTTP/1.1)

INFORM = Send(
    b"HTTP/1.1 103 Early Hints\r\nset-cookie: informational=1\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\nset-cookie: final=1\r\n\r\n"
)


@pytest.mark.parametrize(
    ("ignore", "expected"), [(False, "informational=1; final=1"), (True, "final=1")]
)
def test_informational_set_cookie(ignore: bool, expected: str) -> None:
    """RFC 6265bis 3: user agents may accept, or ignore (``cookie_ignore_informational``),
    set-cookie in 1xx responses (Gun's (dont_)ignore_informational_set_cookie)."""
    script = [
        ExpectRequest("GET", "/informational"),
        INFORM,
        ExpectRequest("GET", "/echo"),
        Respond(204),
    ]
    with ScriptedOrigin(script) as origin:
        conn = origin.open(
            {"cookie_store": ListStore(), "http_opts": {"cookie_ignore_informational": ignore}}
        )
        ref = gunpy.get(conn, "/informational")
        assert gunpy.await_(conn, ref) == ("inform", 103, [("set-cookie", "informational=1")])
        assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 204)
        ref = gunpy.get(conn, "/echo", [("accept", "*/*")])
        assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 204)
        origin.wait()
        (req1, req2) = origin.conns[0].requests
        assert req1.header("cookie") is None
        assert req2.header("cookie") == expected
        # Appended last, after the user's headers and Gun's own.
        assert req2.headers[-1] == ("cookie", expected)


def test_cookies_survive_a_reconnection() -> None:
    """The store belongs to the connection process, not to one socket."""
    scripts = [
        [ExpectRequest("GET", "/set"), Respond(204, [("set-cookie", "sid=42")]), Close()],
        [ExpectRequest("GET", "/again", headers={"cookie": "sid=42"}), Respond(204)],
    ]
    with ScriptedOrigin(scripts=scripts) as origin:
        conn = origin.open({"cookie_store": ListStore(), "retry": 1, "retry_timeout": 10})
        ref = gunpy.get(conn, "/set")
        assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 204)
        assert_receive(("gun_down", conn, "http", gunpy.ANY, gunpy.ANY), after=5000)
        assert_receive(("gun_up", conn, "http"), after=5000)
        ref = gunpy.get(conn, "/again")
        assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 204)
        origin.wait()
