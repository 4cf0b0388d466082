"""HTTP/1.1 against a scripted origin: exact bytes in, exact messages out.

Every test drives a loopback origin (``gunpy.testing``'s ``scripted_origin``, Gun's
``gun_test:init_origin``) that records every byte gunpy sends and answers with
scripted bytes.  Each docstring names the RFC 9112 / RFC 9110 section, the
gun-reference section, or the Gun test suite case the test mirrors.  Nothing
sleeps: tests wait on messages (with timeouts), on Events, or on the origin's
reads (with timeouts).  Every test starts with an empty mailbox and must leave no
Gun message unread (``gun_mailbox``); the connections ``origin.open()`` made are
closed after the test.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import gunpy
from gunpy import ANY, TIMEOUT, OwnerActor
from gunpy.testing import (
    GunMailbox,
    OriginConn,
    OriginFactory,
    ScriptedOrigin,
    TLSPair,
    assert_receive,
    down,
    gun_conn_error,
    gun_data,
    gun_down,
    gun_error,
    gun_response,
    gun_up,
    refused_port,
    refute_receive,
)

# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _fresh_mailbox(gun_mailbox: GunMailbox) -> Iterator[None]:
    """An empty mailbox for each test; a Gun message left unread fails it."""
    yield


@pytest.fixture
def origin(scripted_origin: OriginFactory) -> ScriptedOrigin:
    return scripted_origin()


def listen(scripted_origin: OriginFactory, host: str, port: int, **kw: Any) -> ScriptedOrigin:
    """An origin on ``host``:``port`` (skips the test when it cannot be bound)."""
    try:
        return scripted_origin(host=host, port=port, **kw)
    except PermissionError:
        pytest.skip(f"binding {host} port {port} needs root or CAP_NET_BIND_SERVICE")
    except OSError as e:
        pytest.skip(f"cannot bind {host} port {port}: {e}")


def connect(origin: ScriptedOrigin, **opts: Any) -> tuple[gunpy.Pid, OriginConn]:
    """Open (``retry: 0`` unless given), wait for gun_up, and accept the connection on
    the origin's side.  The connection is closed after the test."""
    conn = origin.open(opts)
    assert gunpy.await_up(conn) == ("ok", "http")
    return conn, origin.accept()


def host(origin: ScriptedOrigin) -> bytes:
    return b"127.0.0.1:%d" % origin.port


def of(conn: gunpy.Pid) -> Callable[[Any], bool]:
    """A receive pattern: any Gun message from ``conn`` (not DOWNs)."""
    return lambda m: type(m) is tuple and len(m) > 1 and m[1] is conn


def of_stream(conn: gunpy.Pid, ref: Any) -> Callable[[Any], bool]:
    return lambda m: type(m) is tuple and len(m) > 2 and m[1] is conn and m[2] is ref


def next_msgs(conn: gunpy.Pid, n: int, after: int = 3000) -> list[Any]:
    """The next ``n`` messages from ``conn``, in arrival order."""
    out: list[Any] = []
    for _ in range(n):
        out.append(
            assert_receive(
                of(conn),
                after=after,
                message=f"expected {n} messages from the connection, got {out!r}",
            )
        )
    return out


def resp(body: bytes = b"ok", *headers: bytes, status: bytes = b"200 OK") -> bytes:
    """A content-length response."""
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 %s\r\n%scontent-length: %d\r\n\r\n%s" % (status, extra, len(body), body)


def get_head(path: bytes, hostport: bytes, *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    """The exact bytes of Gun's GET (peers README)."""
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"GET %s %s\r\ncontent-length: 0\r\nhost: %s\r\n%s\r\n" % (
        path,
        version,
        hostport,
        extra,
    )


def down_reason(mref: gunpy.Ref, after: int = 5000) -> Any:
    """The exit reason in the ``DOWN`` of monitor ``mref``."""
    return assert_receive(down(mref), after=after)[4]


# =========================================================================== wire format


def test_get_is_sent_byte_for_byte_as_gun_sends_it(origin: ScriptedOrigin) -> None:
    """Gun 2.4.1's capture (peers README): request line, content-length: 0, host, then
    the user's headers, lower-case names, no user-agent (RFC 9112 3, 9110 7.2)."""
    conn, server = connect(origin)
    gunpy.get(conn, "/index.html", [("x-user", "1")])
    assert server.recv_request() == (
        b"GET /index.html HTTP/1.1\r\ncontent-length: 0\r\nhost: 127.0.0.1:%d\r\n"
        b"x-user: 1\r\n\r\n" % origin.port
    )


@pytest.mark.parametrize(
    ("call", "method"),
    [
        (lambda c: gunpy.head(c, "/r"), b"HEAD"),
        (lambda c: gunpy.options(c, "/r"), b"OPTIONS"),
        (lambda c: gunpy.delete(c, "/r"), b"DELETE"),
        (lambda c: gunpy.request(c, "PROPFIND", "/r", [], b""), b"PROPFIND"),
    ],
    ids=["head", "options", "delete", "request"],
)
def test_bodyless_methods_send_content_length_0(
    origin: ScriptedOrigin, call: Callable[[gunpy.Pid], Any], method: bytes
) -> None:
    """Gun's get/head/options/delete are ``request(..., <<>>)``: content-length: 0."""
    conn, server = connect(origin)
    call(conn)
    assert server.recv_request() == (
        b"%s /r HTTP/1.1\r\ncontent-length: 0\r\nhost: %s\r\n\r\n" % (method, host(origin))
    )


@pytest.mark.parametrize("fun", [gunpy.post, gunpy.put, gunpy.patch])
def test_methods_with_a_full_body(origin: ScriptedOrigin, fun: Callable[..., Any]) -> None:
    """post/put/patch with a body: content-length set to its size (Gun 4.9)."""
    conn, server = connect(origin)
    fun(conn, "/r", [("content-type", "text/plain")], b"hello")
    method = fun.__name__.upper().encode()
    assert server.recv_until(b"hello") == (
        b"%s /r HTTP/1.1\r\ncontent-length: 5\r\nhost: %s\r\ncontent-type: text/plain\r\n\r\nhello"
        % (method, host(origin))
    )


@pytest.mark.parametrize(
    ("transport", "port", "expected"),
    [
        ("tcp", 80, b"127.0.0.80"),
        ("tls", 443, b"127.0.0.80"),
        ("tcp", 443, b"127.0.0.80:443"),
        ("tls", 80, b"127.0.0.80:80"),
    ],
)
def test_host_header_omits_the_default_port_of_the_transport(
    scripted_origin: OriginFactory, tls_pair: TLSPair, transport: str, port: int, expected: bytes
) -> None:
    """rfc7230_SUITE host_default_port_http/https and host_other_port_*: the port is
    left out only when it is the transport's default (RFC 9110 7.2, 4.2.1-4.2.2)."""
    opts: dict[str, Any] = {"transport": transport}
    tls = None
    if transport == "tls":
        tls = tls_pair.server_context(hostnames=["127.0.0.80"])
        opts["tls_opts"] = {"cacerts": tls_pair.ca_pem}
    origin = listen(scripted_origin, "127.0.0.80", port, tls=tls)
    conn = origin.open(opts)
    gunpy.get(conn, "/")
    assert origin.accept().recv_request() == get_head(b"/", expected)
    assert_receive(gun_up(conn, "http"))


def test_host_header_brackets_ipv6_addresses(scripted_origin: OriginFactory) -> None:
    """rfc7230_SUITE host_ipv6: an IPv6 literal is bracketed (RFC 9110 7.2, RFC 3986 3.2.2)."""
    origin = listen(scripted_origin, "::1", 0)  # skipped where there is no IPv6 loopback
    conn = origin.open()
    gunpy.get(conn, "/")
    assert origin.accept().recv_request() == get_head(b"/", b"[::1]:%d" % origin.port)
    assert_receive(gun_up(conn, "http"))


def test_host_header_is_localhost_over_a_unix_socket(scripted_origin: OriginFactory) -> None:
    """ws_SUITE unix_socket / gun:open_unix: the host header defaults to localhost."""
    origin = scripted_origin(unix=True)
    assert origin.path is not None
    conn = origin.open()  # gunpy.open_unix(origin.path, {"retry": 0})
    gunpy.get(conn, "/")
    assert origin.accept().recv_request() == get_head(b"/", b"localhost")
    assert_receive(gun_up(conn, "http"))


def test_user_host_header_is_kept(origin: ScriptedOrigin) -> None:
    """Gun adds host only if absent (4.9); the user's one stays where it was given."""
    conn, server = connect(origin)
    gunpy.get(conn, "/", [("x-a", "1"), ("Host", "example.org:8080")])
    assert server.recv_request() == (
        b"GET / HTTP/1.1\r\ncontent-length: 0\r\nx-a: 1\r\nhost: example.org:8080\r\n\r\n"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Upper": "Value", b"x-bytes": b"v\xe9"},
        [("X-Upper", "Value"), (b"X-BYTES", b"v\xe9")],
        ((b"x-upper", "Value"), ("x-bytes", b"v\xe9")),
    ],
    ids=["dict", "list", "tuple-of-bytes"],
)
def test_header_input_forms(origin: ScriptedOrigin, headers: Any) -> None:
    """gun:normalize_headers: a map or a list, names and values as str or bytes, names
    lower-cased in the caller, values untouched (bytes kept byte for byte)."""
    conn, server = connect(origin)
    gunpy.get(conn, "/", headers)
    assert server.recv_request() == get_head(
        b"/", host(origin), b"x-upper: Value", b"x-bytes: v\xe9"
    )


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\rb"])
def test_invalid_request_header_raises_at_the_call_and_nothing_is_sent(
    origin: ScriptedOrigin, value: str
) -> None:
    """Gun 2.4 invalid_request_headers => raise (default): a CR or LF in a value raises
    in the caller (``{invalid_request_header, Name, Msg}``); no byte leaves (RFC 9110 5.5)."""
    conn, server = connect(origin)
    for call in (
        lambda: gunpy.get(conn, "/bad", [("x-bad", value)]),
        lambda: gunpy.post(conn, "/bad", {"x-bad": value}, b"body"),
        lambda: gunpy.headers(conn, "PUT", "/bad", [("x-bad", value)]),
    ):
        with pytest.raises(gunpy.InvalidRequestHeader) as e:
            call()
        assert e.value.name == "x-bad"
    gunpy.get(conn, "/good")
    assert server.recv_request() == get_head(b"/good", host(origin))
    assert server.received == get_head(b"/good", host(origin))


def test_invalid_request_headers_ignore_sends_the_value_as_given(origin: ScriptedOrigin) -> None:
    """invalid_request_headers => ignore (req_opts, Gun 2.4): no check; the value is
    written as given (the caller's responsibility)."""
    conn, server = connect(origin)
    gunpy.get(conn, "/", [("x-a", "b\r\nx-injected: 1")], {"invalid_request_headers": "ignore"})
    assert server.recv_request() == get_head(b"/", host(origin), b"x-a: b", b"x-injected: 1")


def test_transform_header_name_recases_outgoing_names_only(origin: ScriptedOrigin) -> None:
    """http_opts transform_header_name (Gun #115, #240): host and user names go through
    it; the content-length/transfer-encoding gunpy adds stay lower-case, as Gun's code
    (gun_http:request) adds them after transforming; response names stay lower-case."""
    conn, server = connect(origin, http_opts={"transform_header_name": lambda n: n.title()})
    ref = gunpy.get(conn, "/", [("x-user", "1")])
    assert server.recv_request() == (
        b"GET / HTTP/1.1\r\ncontent-length: 0\r\nHost: %s\r\nX-User: 1\r\n\r\n" % host(origin)
    )
    server.send(resp(b"", b"X-Resp: A"))
    assert gunpy.await_(conn, ref) == (
        "response",
        "fin",
        200,
        [("x-resp", "A"), ("content-length", "0")],
    )


# =========================================================================== request framing


def test_full_body_replaces_content_length_and_strips_transfer_encoding(
    origin: ScriptedOrigin,
) -> None:
    """Gun 4.9: with a full body the user's content-length is replaced by the real size
    and any user transfer-encoding is dropped (RFC 9112 6.1-6.2); iodata is flattened."""
    conn, server = connect(origin)
    gunpy.post(
        conn,
        "/p",
        [("content-length", "999"), ("transfer-encoding", "chunked"), ("x-a", "1")],
        [b"hel", "lo"],
    )
    assert server.recv_until(b"hello") == (
        b"POST /p HTTP/1.1\r\ncontent-length: 5\r\nhost: %s\r\nx-a: 1\r\n\r\nhello" % host(origin)
    )


def test_streamed_body_is_chunked(origin: ScriptedOrigin) -> None:
    """post/3 then data/4: no content-length, so ``transfer-encoding: chunked`` (RFC 9112
    7.1); each data is one chunk, fin adds the last-chunk."""
    conn, server = connect(origin)
    ref = gunpy.post(conn, "/p", [("content-type", "text/plain")])
    assert server.recv_request() == (
        b"POST /p HTTP/1.1\r\ntransfer-encoding: chunked\r\nhost: %s\r\n"
        b"content-type: text/plain\r\n\r\n" % host(origin)
    )
    gunpy.data(conn, ref, "nofin", b"hello")
    assert server.recv_exact(10) == b"5\r\nhello\r\n"
    gunpy.data(conn, ref, "fin", b"world!")
    assert server.recv_exact(16) == b"6\r\nworld!\r\n0\r\n\r\n"
    server.send(resp(b"done"))
    assert gunpy.await_(conn, ref) == ("response", "nofin", 200, [("content-length", "4")])
    assert gunpy.await_body(conn, ref) == ("ok", b"done")


def test_streamed_body_strips_user_transfer_encoding(origin: ScriptedOrigin) -> None:
    """Gun 4.9: the framing is Gun's: a user ``transfer-encoding`` is dropped."""
    conn, server = connect(origin)
    gunpy.headers(conn, "PUT", "/p", [("transfer-encoding", "gzip, chunked")])
    assert server.recv_request() == (
        b"PUT /p HTTP/1.1\r\ntransfer-encoding: chunked\r\nhost: %s\r\n\r\n" % host(origin)
    )


def test_streamed_body_with_user_content_length_is_sent_raw(origin: ScriptedOrigin) -> None:
    """A user content-length with data/4: the body goes as is, no chunking (RFC 9112 6.2)."""
    conn, server = connect(origin)
    ref = gunpy.post(conn, "/p", [("content-length", "10")])
    assert server.recv_request() == (
        b"POST /p HTTP/1.1\r\nhost: %s\r\ncontent-length: 10\r\n\r\n" % host(origin)
    )
    gunpy.data(conn, ref, "nofin", b"hello")
    gunpy.data(conn, ref, "fin", b"world")
    assert server.recv_exact(10) == b"helloworld"
    gunpy.get(conn, "/next")  # the next bytes on the wire are the next request
    assert server.recv_request() == get_head(b"/next", host(origin))


def test_streamed_body_longer_than_content_length_is_refused(origin: ScriptedOrigin) -> None:
    """gunpy decision (Gun 2.4.1 crashes here): data that would overrun the user's
    content-length is refused with a badstate and not sent; the stream goes on."""
    conn, server = connect(origin)
    ref = gunpy.post(conn, "/p", [("content-length", "3")])
    server.recv_request()
    gunpy.data(conn, ref, "nofin", b"abcd")
    assert assert_receive(of_stream(conn, ref), after=3000) == (
        "gun_error",
        conn,
        ref,
        ("badstate", "The request body would be larger than its content-length header."),
    )
    gunpy.data(conn, ref, "fin", b"abc")
    assert server.recv_exact(3) == b"abc"
    server.send(resp(b"ok"))
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    assert gunpy.await_(conn, ref) == ("data", "fin", b"ok")


def test_streamed_body_shorter_than_content_length_closes_the_connection(
    origin: ScriptedOrigin,
) -> None:
    """gunpy decision: a fin before the announced content-length leaves the server
    waiting for bytes that never come: the stream gets a badstate, then the connection
    is closed (the stream killed) rather than reused."""
    conn, server = connect(origin)
    ref = gunpy.post(conn, "/p", [("content-length", "3")])
    server.recv_request()
    gunpy.data(conn, ref, "fin", b"ab")
    text = "The request body is shorter than its content-length header."
    assert next_msgs(conn, 3) == [
        ("gun_error", conn, ref, ("badstate", text)),
        ("gun_error", conn, ref, ("closed", ("error", ("badstate", text)))),
        ("gun_down", conn, "http", ("error", ("badstate", text)), [ref]),
    ]
    assert server.wait_closed() == b"ab"


def test_empty_nofin_data_is_dropped_and_empty_fin_is_the_last_chunk(
    origin: ScriptedOrigin,
) -> None:
    """gun:data/4: empty nofin data is dropped client-side (an empty chunk would end the
    body); empty fin data sends the last-chunk ``0\\r\\n\\r\\n`` (RFC 9112 7.1)."""
    conn, server = connect(origin)
    ref = gunpy.post(conn, "/p", [])
    head = server.recv_request()
    gunpy.data(conn, ref, "nofin", b"")
    gunpy.data(conn, ref, "nofin", b"abc")
    gunpy.data(conn, ref, "nofin", b"")
    gunpy.data(conn, ref, "fin", b"")
    gunpy.get(conn, "/next")
    expected = b"3\r\nabc\r\n0\r\n\r\n" + get_head(b"/next", host(origin))
    assert server.recv_exact(len(expected)) == expected
    assert server.received == head + expected


def test_request_made_during_a_streamed_body_is_written_after_it(origin: ScriptedOrigin) -> None:
    """gunpy decision (http.py docstring): Gun has no code path for a request made while
    a streamed body is unfinished; gunpy holds it and writes it after the fin."""
    conn, server = connect(origin)
    post = gunpy.post(conn, "/p", [])
    get = gunpy.get(conn, "/after")
    gunpy.data(conn, post, "nofin", b"abc")
    gunpy.data(conn, post, "fin", b"d")
    hp = host(origin)
    expected = (
        b"POST /p HTTP/1.1\r\ntransfer-encoding: chunked\r\nhost: %s\r\n\r\n" % hp
        + b"3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n"
        + get_head(b"/after", hp)
    )
    assert server.recv_exact(len(expected)) == expected
    server.send(resp(b"1") + resp(b"2"))
    assert gunpy.await_(conn, post)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, post) == ("ok", b"1")
    assert gunpy.await_(conn, get)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, get) == ("ok", b"2")


def test_http10_request_line_and_close_delimited_body(origin: ScriptedOrigin) -> None:
    """http_opts version 'HTTP/1.0' (Gun 3.2, 4.9): an HTTP/1.0 request line; a streamed
    body has no chunked coding so it is sent as is (RFC 1945 7.2, RFC 9112 C.2.1); the
    connection closes after the response (no keep-alive)."""
    conn, server = connect(origin, http_opts={"version": "HTTP/1.0"})
    ref = gunpy.post(conn, "/p", [])
    later = gunpy.get(conn, "/later")
    gunpy.data(conn, ref, "nofin", b"hello")
    gunpy.data(conn, ref, "fin", b"world")
    assert server.recv_request() == b"POST /p HTTP/1.0\r\nhost: %s\r\n\r\n" % host(origin)
    assert server.recv_exact(10) == b"helloworld"
    server.send(resp(b"ok"))
    assert next_msgs(conn, 4) == [
        ("gun_response", conn, ref, "nofin", 200, [("content-length", "2")]),
        # The request behind it can never be answered on this connection.
        ("gun_error", conn, later, "closing"),
        ("gun_data", conn, ref, "fin", b"ok"),
        ("gun_down", conn, "http", "normal", []),
    ]
    assert server.wait_closed() == b""  # /later never went out; gunpy closed the socket


def test_http10_get_request_line(origin: ScriptedOrigin) -> None:
    """HTTP/1.0 get: same header block as 1.1 with the 1.0 version (Gun 3.2)."""
    conn, server = connect(origin, http_opts={"version": "HTTP/1.0"})
    gunpy.get(conn, "/x", [("x-a", "1")])
    assert server.recv_request() == get_head(b"/x", host(origin), b"x-a: 1", version=b"HTTP/1.0")


# =========================================================================== responses


def test_content_length_body_with_await_and_await_body(origin: ScriptedOrigin) -> None:
    """RFC 9112 6.3 item 6: content-length delimits the body; await_/await_body shapes
    ``("response", fin, status, headers)`` and ``("ok", body)`` (gun:await/await_body)."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nhello world"
    )
    assert gunpy.await_(conn, ref) == (
        "response",
        "nofin",
        200,
        [("content-type", "text/plain"), ("content-length", "11")],
    )
    assert gunpy.await_body(conn, ref) == ("ok", b"hello world")


def test_content_length_body_in_pieces_gives_data_nofin_then_fin(origin: ScriptedOrigin) -> None:
    """Each read of body bytes is one gun_data; the last one is fin (Gun 2)."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabc")
    assert next_msgs(conn, 2) == [
        ("gun_response", conn, ref, "nofin", 200, [("content-length", "6")]),
        ("gun_data", conn, ref, "nofin", b"abc"),
    ]
    server.send(b"def")
    assert gunpy.await_(conn, ref) == ("data", "fin", b"def")


def test_chunked_response_chunk_by_chunk(origin: ScriptedOrigin) -> None:
    """RFC 9112 7.1: chunked body; chunk extensions ignored (7.1.1); a last-chunk alone
    gives an empty gun_data fin (Gun)."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n")
    assert next_msgs(conn, 2) == [
        ("gun_response", conn, ref, "nofin", 200, [("transfer-encoding", "chunked")]),
        ("gun_data", conn, ref, "nofin", b"hello"),
    ]
    server.send(b"6\r\n world\r\n")
    assert gunpy.await_(conn, ref) == ("data", "nofin", b" world")
    server.send(b"0\r\n\r\n")
    assert gunpy.await_(conn, ref) == ("data", "fin", b"")


def test_chunks_arriving_in_one_read_are_merged_into_one_gun_data(origin: ScriptedOrigin) -> None:
    """gun-reference 7 (faithful detail): Gun merges every body chunk of one read."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    )
    assert next_msgs(conn, 2) == [
        ("gun_response", conn, ref, "nofin", 200, [("transfer-encoding", "chunked")]),
        ("gun_data", conn, ref, "fin", b"hello world"),
    ]


def test_trailers_end_the_response(origin: ScriptedOrigin) -> None:
    """RFC 9112 7.1.2 trailer section -> gun_trailers, which ends the response; the data
    before it is nofin (Gun 2); delivered without ``te: trailers`` (gun-reference 7);
    await_body returns ``("ok", body, trailers)``."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
        b"5\r\nhello\r\n0\r\nx-checksum: abc\r\nX-Two: 2\r\n\r\n"
    )
    assert gunpy.await_(conn, ref) == (
        "response",
        "nofin",
        200,
        [("transfer-encoding", "chunked"), ("trailer", "x-checksum")],
    )
    assert gunpy.await_body(conn, ref) == ("ok", b"hello", [("x-checksum", "abc"), ("x-two", "2")])

    ref2 = gunpy.get(conn, "/")
    server.recv_request()
    server.send(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n"
    )
    assert next_msgs(conn, 3) == [
        ("gun_response", conn, ref2, "nofin", 200, [("transfer-encoding", "chunked")]),
        ("gun_data", conn, ref2, "nofin", b"ok"),
        ("gun_trailers", conn, ref2, [("x-t", "1")]),
    ]


def test_responses_without_a_body_are_fin(origin: ScriptedOrigin) -> None:
    """RFC 9112 6.3 items 1-2 and 6: HEAD, 204, 304 and content-length 0 have no body:
    gun_response is fin (Gun 2), whatever content-length/transfer-encoding say, and
    the next response on the connection is parsed right after the head."""
    conn, server = connect(origin)
    refs = [
        gunpy.head(conn, "/"),
        gunpy.get(conn, "/204"),
        gunpy.get(conn, "/304"),
        gunpy.get(conn, "/cl0"),
        gunpy.head(conn, "/te"),
        gunpy.get(conn, "/last"),
    ]
    for _ in refs:
        server.recv_request()
    server.send(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nxyz"
    )
    assert next_msgs(conn, 7) == [
        ("gun_response", conn, refs[0], "fin", 200, [("content-length", "10")]),
        ("gun_response", conn, refs[1], "fin", 204, []),
        ("gun_response", conn, refs[2], "fin", 304, [("content-length", "10")]),
        ("gun_response", conn, refs[3], "fin", 200, [("content-length", "0")]),
        ("gun_response", conn, refs[4], "fin", 200, [("transfer-encoding", "chunked")]),
        ("gun_response", conn, refs[5], "nofin", 200, [("content-length", "3")]),
        ("gun_data", conn, refs[5], "fin", b"xyz"),
    ]


def test_informational_responses_come_before_the_final_one(origin: ScriptedOrigin) -> None:
    """RFC 9110 15.2: 1xx (not 101) -> gun_inform, always before gun_response (Gun 2);
    await_ shape ``("inform", status, headers)``."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n" + resp(b"ok")
    )
    assert gunpy.await_(conn, ref) == ("inform", 100, [])
    assert gunpy.await_(conn, ref) == ("inform", 103, [("link", "</style.css>; rel=preload")])
    assert gunpy.await_(conn, ref) == ("response", "nofin", 200, [("content-length", "2")])
    assert gunpy.await_(conn, ref) == ("data", "fin", b"ok")


def test_transfer_encoding_wins_over_content_length(origin: ScriptedOrigin) -> None:
    """rfc7230_SUITE te_overrides_cl / RFC 9112 6.3 item 3 (smuggling fix): chunked is
    used and content-length ignored, so the pipelined response after it parses cleanly."""
    conn, server = connect(origin)
    r1 = gunpy.get(conn, "/1")
    r2 = gunpy.get(conn, "/2")
    server.recv_request()
    server.recv_request()
    server.send(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 100\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n" + resp(b"two")
    )
    assert next_msgs(conn, 4) == [
        (
            "gun_response",
            conn,
            r1,
            "nofin",
            200,
            [("transfer-encoding", "chunked"), ("content-length", "100")],
        ),
        ("gun_data", conn, r1, "fin", b"abc"),
        ("gun_response", conn, r2, "nofin", 200, [("content-length", "3")]),
        ("gun_data", conn, r2, "fin", b"two"),
    ]


def test_body_read_until_close_is_complete_and_not_killed(origin: ScriptedOrigin) -> None:
    """RFC 9112 6.3 item 8: no content-length nor chunked: the body ends when the server
    closes: gun_data fin.  Better than Gun (gun-reference 7): that completed stream is
    not listed as killed in gun_down."""
    conn, server = connect(origin)
    mref = gunpy.monitor(conn)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nabc")
    assert next_msgs(conn, 2) == [
        ("gun_response", conn, ref, "nofin", 200, [("content-type", "text/plain")]),
        ("gun_data", conn, ref, "nofin", b"abc"),
    ]
    server.send(b"def")
    assert gunpy.await_(conn, ref) == ("data", "nofin", b"def")
    server.close()
    assert next_msgs(conn, 2) == [
        ("gun_data", conn, ref, "fin", b""),
        ("gun_down", conn, "http", "closed", []),
    ]
    assert down_reason(mref) == ("shutdown", "closed")  # retry 0


def test_transfer_encoding_not_ending_in_chunked_is_read_until_close(
    origin: ScriptedOrigin,
) -> None:
    """RFC 9112 6.3 item 4 (response): a transfer coding other than chunked last means
    the body runs until the server closes; with ``connection: close`` the close is the
    expected one: gun_down reason normal."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\nconnection: close\r\n\r\n\x1f\x8b")
    assert next_msgs(conn, 2) == [
        (
            "gun_response",
            conn,
            ref,
            "nofin",
            200,
            [("transfer-encoding", "gzip"), ("connection", "close")],
        ),
        ("gun_data", conn, ref, "nofin", b"\x1f\x8b"),
    ]
    server.close()
    assert next_msgs(conn, 2) == [
        ("gun_data", conn, ref, "fin", b""),
        ("gun_down", conn, "http", "normal", []),
    ]


def test_parser_tolerances(origin: ScriptedOrigin) -> None:
    """What RFC 9112 lets a recipient accept: a status line without reason phrase (4),
    bare LF line ends (2.2), obs-fold replaced by SP (5.2), empty lines before a status
    line (2.2), and a repeated identical content-length (RFC 9110 8.6)."""
    conn, server = connect(origin)
    r1 = gunpy.get(conn, "/1")
    r2 = gunpy.get(conn, "/2")
    r3 = gunpy.get(conn, "/3")
    for _ in range(3):
        server.recv_request()
    server.send(
        b"HTTP/1.1 200\r\ncontent-length: 5, 5\r\n\r\nabcde"
        b"\r\n\r\nHTTP/1.1 201 Created\nx-a: 1\n  folded\ncontent-length: 2\n\nok"
        b"HTTP/1.1 202 \r\ncontent-length: 0\r\n\r\n"
    )
    assert next_msgs(conn, 5) == [
        ("gun_response", conn, r1, "nofin", 200, [("content-length", "5, 5")]),
        ("gun_data", conn, r1, "fin", b"abcde"),
        ("gun_response", conn, r2, "nofin", 201, [("x-a", "1 folded"), ("content-length", "2")]),
        ("gun_data", conn, r2, "fin", b"ok"),
        ("gun_response", conn, r3, "fin", 202, [("content-length", "0")]),
    ]


# =========================================================================== await shapes


def test_await_shapes_timeout_and_stream_error(origin: ScriptedOrigin) -> None:
    """gun:await/3: ``("error", "timeout")`` when nothing comes; a stream gun_error is
    ``("error", ("stream_error", reason))`` (data on an unknown ref: Gun's badstate)."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    assert gunpy.await_(conn, ref, 100) == ("error", "timeout")
    assert gunpy.await_body(conn, ref, 100) == ("error", "timeout")
    unknown = gunpy.make_ref()
    gunpy.data(conn, unknown, "fin", b"x")
    assert gunpy.await_(conn, unknown) == (
        "error",
        ("stream_error", ("badstate", "The stream has already been closed.")),
    )


def test_await_shapes_connection_error_then_closed_stream(origin: ScriptedOrigin) -> None:
    """A connection-wide gun_error is ``("error", ("connection_error", reason))``; the
    stream's own ``("closed", ...)`` follows as a stream_error (gun:await/3)."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 abc OK\r\ncontent-length: 0\r\n\r\n")
    reason = ("connection_error", "protocol_error", "Invalid status line 'HTTP/1.1 abc OK'.")
    assert gunpy.await_(conn, ref) == ("error", ("connection_error", reason))
    assert gunpy.await_body(conn, ref) == ("error", ("stream_error", ("closed", ("error", reason))))
    assert_receive(gun_down(conn, "http", ("error", reason), [ref]))


def test_await_shapes_down_when_the_connection_dies(origin: ScriptedOrigin) -> None:
    """await_ and await_body ignore gun_down but see the process exit:
    ``("error", ("down", reason))`` (gun:await/3 with its temporary monitor)."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(resp(b"ok"))
    assert gunpy.await_(conn, ref)[0] == "response"
    assert gunpy.await_body(conn, ref) == ("ok", b"ok")
    server.close()  # retry 0: gun_down, then the process exits
    assert gunpy.await_(conn, ref) == ("error", ("down", ("shutdown", "closed")))
    assert gunpy.await_body(conn, ref) == ("error", ("down", ("shutdown", "closed")))
    assert_receive(gun_down(conn, "http", "closed", []), after=0)


# =========================================================================== pipelining


def test_pipelined_requests_are_written_at_once_and_answered_in_order(
    origin: ScriptedOrigin,
) -> None:
    """Gun 4.9 pipelining (RFC 9112 9.3.2): three requests written before any response;
    responses matched to streams in FIFO order."""
    conn, server = connect(origin)
    refs = [gunpy.get(conn, f"/{i}") for i in range(3)]
    hp = host(origin)
    heads = [server.recv_request() for _ in range(3)]
    assert heads == [get_head(b"/%d" % i, hp) for i in range(3)]
    server.send(resp(b"zero") + resp(b"one") + resp(b"two"))
    assert next_msgs(conn, 6) == [
        msg
        for ref, body in zip(refs, (b"zero", b"one", b"two"), strict=True)
        for msg in (
            ("gun_response", conn, ref, "nofin", 200, [("content-length", str(len(body)))]),
            ("gun_data", conn, ref, "fin", body),
        )
    ]


def test_requests_made_before_gun_up_are_queued_and_sent_in_order(origin: ScriptedOrigin) -> None:
    """gun_SUITE postpone_request_while_not_connected: requests (and body data) made
    before the connection is up are sent, in order, once it is."""
    conn = origin.open()
    r1 = gunpy.get(conn, "/1")
    r2 = gunpy.post(conn, "/2", [])
    gunpy.data(conn, r2, "fin", b"body")
    r3 = gunpy.get(conn, "/3")
    server = origin.accept()
    hp = host(origin)
    expected = (
        get_head(b"/1", hp)
        + b"POST /2 HTTP/1.1\r\ntransfer-encoding: chunked\r\nhost: %s\r\n\r\n" % hp
        + b"4\r\nbody\r\n0\r\n\r\n"
        + get_head(b"/3", hp)
    )
    assert server.recv_exact(len(expected)) == expected
    server.send(resp(b"1") + resp(b"2") + resp(b"3"))
    assert_receive(gun_up(conn, "http"), after=3000)
    for ref, body in ((r1, b"1"), (r2, b"2"), (r3, b"3")):
        assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
        assert gunpy.await_body(conn, ref) == ("ok", body)


# =========================================================================== keep-alive


def test_connection_close_response_errors_the_pipeline_then_reconnects(
    origin: ScriptedOrigin,
) -> None:
    """Gun 4.9 / gun-reference 7: after a ``connection: close`` response the pipelined
    streams get ``("gun_error", conn, ref, "closing")`` before the first stream's final
    gun_data; then gun_down(http, normal, []) and a reconnect (RFC 9112 9.6)."""
    conn, server = connect(origin, retry=1)
    refs = [gunpy.get(conn, f"/{i}") for i in range(3)]
    for _ in refs:
        server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhe")
    assert next_msgs(conn, 4) == [
        (
            "gun_response",
            conn,
            refs[0],
            "nofin",
            200,
            [("connection", "close"), ("content-length", "5")],
        ),
        ("gun_error", conn, refs[1], "closing"),
        ("gun_error", conn, refs[2], "closing"),
        ("gun_data", conn, refs[0], "nofin", b"he"),
    ]
    server.send(b"llo")
    assert next_msgs(conn, 3) == [
        ("gun_data", conn, refs[0], "fin", b"llo"),
        ("gun_down", conn, "http", "normal", []),
        ("gun_up", conn, "http"),
    ]
    assert server.wait_closed() == b""  # gunpy closed the socket itself
    second = origin.accept()
    gunpy.get(conn, "/again")
    assert second.recv_request() == get_head(b"/again", host(origin))


def test_requests_during_closing_go_to_the_next_connection(origin: ScriptedOrigin) -> None:
    """shutdown_SUITE http1_response_connection_close_delayed_body: a request made while
    the ``connection: close`` body is still arriving is postponed to the next connection."""
    conn, server = connect(origin, retry=1)
    r1 = gunpy.get(conn, "/1")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nab")
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, r1, "nofin", b"ab")
    r2 = gunpy.get(conn, "/2")  # the connection is closing now
    server.send(b"cd")
    assert next_msgs(conn, 3) == [
        ("gun_data", conn, r1, "fin", b"cd"),
        ("gun_down", conn, "http", "normal", []),
        ("gun_up", conn, "http"),
    ]
    assert server.wait_closed() == b""
    second = origin.accept()
    assert second.recv_request() == get_head(b"/2", host(origin))
    second.send(resp(b"two"))
    assert gunpy.await_(conn, r2)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(conn, r2) == ("ok", b"two")


def test_requests_during_closing_fail_with_closing_when_retry_is_0(origin: ScriptedOrigin) -> None:
    """gun-reference 4.9: during ``closing`` a new request fails with ``closing`` when
    the connection will not come back (retry 0)."""
    conn, server = connect(origin)
    r1 = gunpy.get(conn, "/1")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nab")
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, r1, "nofin", b"ab")
    r2 = gunpy.get(conn, "/2")
    assert assert_receive(of_stream(conn, r2), after=3000) == ("gun_error", conn, r2, "closing")
    server.send(b"cd")
    assert gunpy.await_(conn, r1) == ("data", "fin", b"cd")
    assert_receive(gun_down(conn, "http", "normal", []))


def test_bodyless_connection_close_response_kills_no_stream(origin: ScriptedOrigin) -> None:
    """gun-reference 4.2 / Gun PR #374: a complete bodyless ``connection: close``
    response is not in gun_down's killed streams."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
    assert next_msgs(conn, 2) == [
        ("gun_response", conn, ref, "fin", 204, [("connection", "close")]),
        ("gun_down", conn, "http", "normal", []),
    ]


def test_http10_response_closes_the_connection(origin: ScriptedOrigin) -> None:
    """RFC 9112 9.3: an HTTP/1.0 response without keep-alive is the last one; Gun closes
    the socket itself (gun-reference 7) and the exit is normal (retry 0)."""
    conn, server = connect(origin)
    mref = gunpy.monitor(conn)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert next_msgs(conn, 3) == [
        ("gun_response", conn, ref, "nofin", 200, [("content-length", "2")]),
        ("gun_data", conn, ref, "fin", b"ok"),
        ("gun_down", conn, "http", "normal", []),
    ]
    assert server.wait_closed() == b""
    assert down_reason(mref) == "normal"


def test_http10_response_ignores_transfer_encoding_and_reads_until_close(
    origin: ScriptedOrigin,
) -> None:
    """Gun ignores transfer-encoding in HTTP/1.0 responses (RFC 9112 6.1: a 1.0 message
    with transfer-encoding must be treated as faulty framing; close after it)."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\nraw")
    assert next_msgs(conn, 2) == [
        ("gun_response", conn, ref, "nofin", 200, [("transfer-encoding", "chunked")]),
        ("gun_data", conn, ref, "nofin", b"raw"),
    ]
    server.close()
    assert next_msgs(conn, 2) == [
        ("gun_data", conn, ref, "fin", b""),
        ("gun_down", conn, "http", "normal", []),
    ]


def test_connection_close_request_is_the_last_one(origin: ScriptedOrigin) -> None:
    """RFC 9112 9.6: after a request with ``connection: close`` no further request is
    sent; the one made after it gets ``closing`` (what Gun users see, 4.9), and the
    connection closes after the response even though the server did not say close."""
    conn, server = connect(origin)
    r1 = gunpy.get(conn, "/1", [("connection", "close")])
    r2 = gunpy.get(conn, "/2")
    assert server.recv_request() == get_head(b"/1", host(origin), b"connection: close")
    server.send(resp(b"ok"))
    assert next_msgs(conn, 4) == [
        ("gun_response", conn, r1, "nofin", 200, [("content-length", "2")]),
        ("gun_error", conn, r2, "closing"),
        ("gun_data", conn, r1, "fin", b"ok"),
        ("gun_down", conn, "http", "normal", []),
    ]
    assert server.wait_closed() == b""  # /2 never went out


def test_keepalive_sends_crlf_between_requests(origin: ScriptedOrigin) -> None:
    """http_opts keepalive (Gun 4.6): an empty line every N ms when not inside a request
    body (RFC 9112 2.2 lets servers ignore it); never inside a streamed body."""
    conn, server = connect(origin, http_opts={"keepalive": 100})
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(resp(b"ok"))
    assert gunpy.await_(conn, ref)[0] == "response"
    assert gunpy.await_body(conn, ref) == ("ok", b"ok")
    assert server.recv_exact(2, timeout=3000) == b"\r\n"
    post = gunpy.post(conn, "/p", [])
    assert server.recv_until(b"POST /p HTTP/1.1\r\n").strip(b"\r\n") == b"POST /p HTTP/1.1"
    server.recv_request()
    gunpy.data(conn, post, "nofin", b"abc")
    assert server.recv_exact(8) == b"3\r\nabc\r\n"
    with pytest.raises(TimeoutError):  # three keepalive periods, no CRLF mid-body
        server.recv_exact(1, timeout=350)
    gunpy.data(conn, post, "fin", b"")
    assert server.recv_exact(5) == b"0\r\n\r\n"


# =========================================================================== errors


def test_eof_before_the_response_kills_the_stream(origin: ScriptedOrigin) -> None:
    """The server closes with a request outstanding: the stream gets ``closed`` and is
    listed in gun_down (Gun 4.1/4.2, close_reason(closed))."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.close()
    assert next_msgs(conn, 2) == [
        ("gun_error", conn, ref, "closed"),
        ("gun_down", conn, "http", "closed", [ref]),
    ]


def test_eof_in_the_middle_of_a_body(origin: ScriptedOrigin) -> None:
    """RFC 9112 8: a body shorter than its content-length is incomplete.  gunpy reports
    it as a connection-wide protocol_error, then the stream's ``("closed", ...)`` and a
    gun_down listing the stream (Gun 2.4.1 just says ``closed``)."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, ref, "nofin", b"hello")
    server.close()
    reason = (
        "connection_error",
        "protocol_error",
        "The server closed the connection before the end of the response body.",
    )
    assert next_msgs(conn, 3) == [
        ("gun_error", conn, reason),
        ("gun_error", conn, ref, ("closed", ("error", reason))),
        ("gun_down", conn, "http", ("error", reason), [ref]),
    ]


def test_malformed_status_line_is_a_protocol_error_not_a_crash(
    scripted_origin: OriginFactory,
) -> None:
    """gun-reference 7 (better than Gun, whose process crashes with function_clause):
    the stream gets a gun_error, the owner gun_down(("error", ("connection_error",
    "protocol_error", text))), then the usual retry rules.  Another connection is not
    affected."""
    origin, other_origin = scripted_origin(), scripted_origin()
    other, other_server = connect(other_origin)
    conn, server = connect(origin, retry=1)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 abc OK\r\ncontent-length: 0\r\n\r\n")
    reason = ("connection_error", "protocol_error", "Invalid status line 'HTTP/1.1 abc OK'.")
    assert next_msgs(conn, 4) == [
        ("gun_error", conn, reason),
        ("gun_error", conn, ref, ("closed", ("error", reason))),
        ("gun_down", conn, "http", ("error", reason), [ref]),
        ("gun_up", conn, "http"),  # retry 1: reconnected
    ]
    assert conn.is_alive()
    assert gunpy.info(conn)["state_name"] == "connected"
    origin.accept()
    # The unrelated connection still works.
    ref2 = gunpy.get(other, "/")
    other_server.recv_request()
    other_server.send(resp(b"fine"))
    assert gunpy.await_(other, ref2)[:3] == ("response", "nofin", 200)
    assert gunpy.await_body(other, ref2) == ("ok", b"fine")


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (b"HTTP/1.1 abc OK\r\n\r\n", "Invalid status line 'HTTP/1.1 abc OK'."),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "Invalid header line 'no colon here'."),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n", "Invalid content-length header '1x'."),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
            "Invalid content-length header '1, 2'.",
        ),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", None),
        (b"HTTP/1.1 099 Weird\r\n\r\n", "Invalid status code 99."),
    ],
    ids=["status", "header-line", "content-length", "content-lengths", "chunk-size", "status-99"],
)
def test_malformed_responses_exit_cleanly_with_retry_0(
    origin: ScriptedOrigin, reply: bytes, text: str | None
) -> None:
    """Malformed input never crashes the connection process (gun-reference 7): it exits
    with the protocol error as its reason, not an exception."""
    conn, server = connect(origin)
    mref = gunpy.monitor(conn)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(reply)
    err = assert_receive(gun_conn_error(conn), after=3000)
    kind, got_kind, got_text = err[2]
    assert (kind, got_kind) == ("connection_error", "protocol_error")
    if text is not None:
        assert got_text == text
    else:
        assert got_text.startswith("Invalid chunk size line")
    assert assert_receive(gun_error(conn, ref), after=3000) == (
        "gun_error",
        conn,
        ref,
        ("closed", ("error", err[2])),
    )
    assert down_reason(mref) == ("shutdown", ("error", err[2]))
    if b"chunked" in reply:  # the head was fine: its response came first
        assert_receive(gun_response(conn, ref, "nofin", 200, [("transfer-encoding", "chunked")]))
    assert_receive(gun_down(conn, "http", ("error", err[2]), [ref]), after=0)


def test_data_with_no_request_outstanding_is_a_protocol_error(origin: ScriptedOrigin) -> None:
    """RFC 9112 9.3.2: a response with no request outstanding cannot be matched; the
    owner gets the connection-wide error and gun_down with no killed stream."""
    conn, server = connect(origin)
    server.send(resp(b"surprise"))
    reason = (
        "connection_error",
        "protocol_error",
        "The server sent data while no request was outstanding.",
    )
    assert next_msgs(conn, 2) == [
        ("gun_error", conn, reason),
        ("gun_down", conn, "http", ("error", reason), []),
    ]


_LIMIT_TEXT = (
    "The response header block is larger than the max_header_block_size option (1000 bytes)."
)


@pytest.mark.parametrize("dribble", [False, True], ids=["one-read", "dribbled"])
def test_header_block_over_max_header_block_size(origin: ScriptedOrigin, dribble: bool) -> None:
    """http_opts max_header_block_size (Gun 2.4): connection-wide ``("connection_error",
    "limit_reached", text)``, the stream ``("closed", ...)``, gun_down.  Better than Gun
    (gun-reference 7): enforced however the bytes arrive, one read included."""
    conn, server = connect(origin, http_opts={"max_header_block_size": 1000})
    ref = gunpy.get(conn, "/")
    server.recv_request()
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-big: " + b"a" * 2000 + b"\r\n\r\n"
    if dribble:
        server.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(head), 50):
            try:
                server.send(head[i : i + 50])
            except OSError:  # gunpy closed the connection once over the limit
                break
    else:
        server.send(head)
    reason = ("connection_error", "limit_reached", _LIMIT_TEXT)
    assert next_msgs(conn, 3) == [
        ("gun_error", conn, reason),
        ("gun_error", conn, ref, ("closed", ("error", reason))),
        ("gun_down", conn, "http", ("error", reason), [ref]),
    ]


def test_header_block_at_exactly_the_limit_is_accepted(origin: ScriptedOrigin) -> None:
    """The limit counts the whole block, final CRLF CRLF included: exactly at it is fine."""
    conn, server = connect(origin, http_opts={"max_header_block_size": 100})
    ref = gunpy.get(conn, "/")
    server.recv_request()
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-pad: "
    head += b"a" * (100 - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == 100
    server.send(head)
    assert gunpy.await_(conn, ref)[:3] == ("response", "fin", 200)


def test_trailer_block_over_max_trailer_block_size(origin: ScriptedOrigin) -> None:
    """http_opts max_trailer_block_size (Gun 2.4): same sequence as for the headers; the
    body read so far is delivered (nofin) first."""
    conn, server = connect(origin, http_opts={"max_trailer_block_size": 50})
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
        b"x-t: " + b"t" * 100 + b"\r\n\r\n"
    )
    reason = (
        "connection_error",
        "limit_reached",
        "The response trailer block is larger than the max_trailer_block_size option (50 bytes).",
    )
    assert next_msgs(conn, 5) == [
        ("gun_response", conn, ref, "nofin", 200, [("transfer-encoding", "chunked")]),
        ("gun_data", conn, ref, "nofin", b"ok"),
        ("gun_error", conn, reason),
        ("gun_error", conn, ref, ("closed", ("error", reason))),
        ("gun_down", conn, "http", ("error", reason), [ref]),
    ]


def test_unrequested_101_is_a_protocol_error(origin: ScriptedOrigin) -> None:
    """Gun 2.4 (raw_SUITE http11_upgrade_raw_unrequested / RFC 9110 15.2.2): a 101 nobody
    asked for is a connection error protocol_error."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    )
    reason = (
        "connection_error",
        "protocol_error",
        "Unexpected 101 response: no upgrade was requested.",
    )
    assert next_msgs(conn, 3) == [
        ("gun_error", conn, reason),
        ("gun_error", conn, ref, ("closed", ("error", reason))),
        ("gun_down", conn, "http", ("error", reason), [ref]),
    ]


# =========================================================================== cancel


def test_cancel_silences_the_stream_and_the_connection_stays_usable(origin: ScriptedOrigin) -> None:
    """gun:cancel/2 on HTTP/1.1 (Gun 4.9): the response is still read off the wire but no
    more messages come for it; the next request on the connection works."""
    conn, server = connect(origin)
    r1 = gunpy.get(conn, "/slow")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, r1, "nofin", b"abc")
    gunpy.cancel(conn, r1)
    r2 = gunpy.get(conn, "/next")
    assert server.recv_request() == get_head(b"/next", host(origin))
    server.send(b"3\r\ndef\r\n0\r\nx-t: 1\r\n\r\n" + resp(b"next"))
    assert gunpy.await_(conn, r2) == ("response", "nofin", 200, [("content-length", "4")])
    assert gunpy.await_body(conn, r2) == ("ok", b"next")
    refute_receive(of_stream(conn, r1), after=200)


def test_cancel_before_the_response_drains_it(origin: ScriptedOrigin) -> None:
    """Cancelled before any byte of its response: nothing at all for that stream."""
    conn, server = connect(origin)
    r1 = gunpy.get(conn, "/1")
    r2 = gunpy.get(conn, "/2")
    server.recv_request()
    server.recv_request()
    gunpy.cancel(conn, r1)
    assert gunpy.stream_info(conn, r1)[1]["state"] == "stopping"  # the cancel was handled
    server.send(b"HTTP/1.1 103 Early Hints\r\n\r\n" + resp(b"one") + resp(b"two"))
    assert next_msgs(conn, 2) == [
        ("gun_response", conn, r2, "nofin", 200, [("content-length", "3")]),
        ("gun_data", conn, r2, "fin", b"two"),
    ]
    refute_receive(of_stream(conn, r1), after=200)


def test_cancel_unknown_ref_is_badstate(origin: ScriptedOrigin) -> None:
    """gun:cancel/2 on an unknown ref: ``{badstate, "The stream cannot be found."}``."""
    conn, _ = connect(origin)
    ref = gunpy.make_ref()
    gunpy.cancel(conn, ref)
    assert assert_receive(of_stream(conn, ref), after=3000) == (
        "gun_error",
        conn,
        ref,
        ("badstate", "The stream cannot be found."),
    )


def test_data_on_unknown_ref_is_badstate(origin: ScriptedOrigin) -> None:
    """gun:data/4 on an unknown ref: ``"The stream has already been closed."`` (Gun 2.4.1,
    gun-reference 7)."""
    conn, _ = connect(origin)
    ref = gunpy.make_ref()
    gunpy.data(conn, ref, "nofin", b"x")
    assert assert_receive(of_stream(conn, ref), after=3000) == (
        "gun_error",
        conn,
        ref,
        ("badstate", "The stream has already been closed."),
    )


# =========================================================================== flow control


def test_flow_1_gives_one_data_then_update_flow_releases_more(origin: ScriptedOrigin) -> None:
    """flow_SUITE flow_http (gun-reference 4.5): flow 1 -> exactly one gun_data, then
    silence; update_flow 2 -> what was held comes (merged, gun-reference 7), then more
    up to the budget."""
    conn, server = connect(origin)
    ref = gunpy.get(conn, "/", [], {"flow": 1})
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert next_msgs(conn, 2) == [
        ("gun_response", conn, ref, "nofin", 200, [("transfer-encoding", "chunked")]),
        ("gun_data", conn, ref, "nofin", b"abc"),
    ]
    server.send(b"3\r\ndef\r\n")
    server.send(b"3\r\nghi\r\n")
    refute_receive(of_stream(conn, ref), after=300)
    gunpy.update_flow(conn, ref, 2)
    held = [gunpy.await_(conn, ref)]
    if held[0] != ("data", "nofin", b"defghi"):  # one read, or (rarely) two
        held.append(gunpy.await_(conn, ref))
        assert held == [("data", "nofin", b"def"), ("data", "nofin", b"ghi")]
    server.send(b"0\r\n\r\n")
    if len(held) == 1:  # one unit of budget left: the end comes too
        assert gunpy.await_(conn, ref) == ("data", "fin", b"")
    else:
        refute_receive(of_stream(conn, ref), after=100)
        gunpy.update_flow(conn, ref, 1)
        assert gunpy.await_(conn, ref) == ("data", "fin", b"")


def test_flow_from_http_opts_and_per_request_override(origin: ScriptedOrigin) -> None:
    """flow_SUITE: the default comes from http_opts flow, a request's flow overrides it;
    update_flow on a stream without flow control is ignored."""
    conn, server = connect(origin, http_opts={"flow": 1})
    r1 = gunpy.get(conn, "/1", [], {"flow": 2})
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc")
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, r1, "nofin", b"abc")
    server.send(b"def")
    assert gunpy.await_(conn, r1) == ("data", "nofin", b"def")  # budget 2
    server.send(b"ghi")
    refute_receive(of_stream(conn, r1), after=200)
    gunpy.update_flow(conn, r1, 1)
    assert gunpy.await_(conn, r1) == ("data", "fin", b"ghi")

    conn2, server2 = connect(origin)  # no flow control
    r2 = gunpy.get(conn2, "/2")
    server2.recv_request()
    gunpy.update_flow(conn2, r2, 5)  # ignored
    server2.send(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabc")
    assert next_msgs(conn2, 2)[1] == ("gun_data", conn2, r2, "nofin", b"abc")
    server2.send(b"def")
    assert gunpy.await_(conn2, r2) == ("data", "fin", b"def")


def test_flow_spent_stops_reading_the_socket(origin: ScriptedOrigin) -> None:
    """gun-reference 4.5: with the budget spent Gun stops reading the socket, so TCP
    pushes back on the server: its send of a big body does not complete until
    update_flow."""
    conn, server = connect(origin, tcp_opts={"recbuf": 16384})
    ref = gunpy.get(conn, "/big", [], {"flow": 1})
    server.recv_request()
    server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB: far more than both socket buffers
    sent = threading.Event()
    failed: list[BaseException] = []

    def push() -> None:
        try:
            server.send(
                b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body,
                timeout=30000,
            )
            sent.set()
        except BaseException as e:  # pragma: no cover - reported below
            failed.append(e)

    t = threading.Thread(target=push, daemon=True)
    t.start()
    assert gunpy.await_(conn, ref)[:3] == ("response", "nofin", 200)
    first = gunpy.await_(conn, ref)
    assert first[:2] == ("data", "nofin")
    refute_receive(of_stream(conn, ref), after=300)  # exactly one gun_data
    assert not sent.wait(0.2), "the server's send completed: gunpy kept reading"
    gunpy.update_flow(conn, ref, 1_000_000)
    chunks = [first[2]]
    while True:
        m = gunpy.await_(conn, ref)
        assert m[0] == "data", m
        chunks.append(m[2])
        if m[1] == "fin":
            break
    assert sent.wait(10) and not failed
    assert b"".join(chunks) == body
    t.join(5)


def test_cancel_while_flow_paused_drains_the_response(origin: ScriptedOrigin) -> None:
    """Cancelling a stream whose flow budget is spent resumes reading, so the response
    is drained and the next one delivered (Gun 4.9 cancel + 4.5 flow)."""
    conn, server = connect(origin)
    r1 = gunpy.get(conn, "/1", [], {"flow": 1})
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, r1, "nofin", b"abc")
    server.send(b"defghij")
    r2 = gunpy.get(conn, "/2")
    server.recv_request()
    gunpy.cancel(conn, r1)
    server.send(resp(b"ok"))
    assert next_msgs(conn, 2) == [
        ("gun_response", conn, r2, "nofin", 200, [("content-length", "2")]),
        ("gun_data", conn, r2, "fin", b"ok"),
    ]
    refute_receive(of_stream(conn, r1), after=100)


# =========================================================================== flush, stream_info


def test_flush_conn_drops_every_message_of_the_connection(origin: ScriptedOrigin) -> None:
    """gun:flush/1 with a pid: every gun_* message from it (gun_up included) is dropped,
    without waiting; other processes' messages stay."""
    conn = origin.open()
    server = origin.accept()
    r1 = gunpy.get(conn, "/1")
    r2 = gunpy.get(conn, "/2")
    server.recv_request()
    server.recv_request()
    server.send(resp(b"1") + resp(b"2"))
    # The last message is there, so everything before it is too.
    assert_receive(gun_data(conn, r2, "fin", b"2"), after=3000)
    gunpy.self().send(("unrelated", 1))
    assert gunpy.flush(conn) == "ok"
    refute_receive(of(conn), after=0)
    assert assert_receive(("unrelated", 1), after=0) == ("unrelated", 1)
    refute_receive(of_stream(conn, r1), after=0)


def test_flush_conn_drops_the_down_of_a_monitor(origin: ScriptedOrigin) -> None:
    """gun:flush/1: also the ``DOWN`` of a monitor on the connection."""
    conn, _ = connect(origin)
    mref = gunpy.monitor(conn)
    gunpy.close(conn)
    gunpy.flush(conn)
    refute_receive(("DOWN", mref, ANY, ANY, ANY), after=0)


def test_flush_ref_drops_only_that_streams_messages(origin: ScriptedOrigin) -> None:
    """gun:flush/1 with a stream ref (Gun #273: gun_inform included): only that stream."""
    conn, server = connect(origin)
    r1 = gunpy.get(conn, "/1")
    r2 = gunpy.get(conn, "/2")
    r3 = gunpy.get(conn, "/3")
    for _ in range(3):
        server.recv_request()
    server.send(b"HTTP/1.1 103 Early Hints\r\n\r\n" + resp(b"1") + resp(b"2") + resp(b"3"))
    assert_receive(gun_data(conn, r3, "fin", b"3"), after=3000)
    assert gunpy.flush(r1) == "ok"
    refute_receive(of_stream(conn, r1), after=0)
    assert next_msgs(conn, 3, after=0) == [
        ("gun_response", conn, r2, "nofin", 200, [("content-length", "1")]),
        ("gun_data", conn, r2, "fin", b"2"),
        ("gun_response", conn, r3, "nofin", 200, [("content-length", "1")]),
    ]


def test_stream_info(origin: ScriptedOrigin) -> None:
    """gun:stream_info/2: running while outstanding, stopping once cancelled, None once
    done or unknown (Gun's ``{ok, undefined}``)."""
    conn, server = connect(origin)
    r1 = gunpy.get(conn, "/1")
    r2 = gunpy.get(conn, "/2")
    ok, info = gunpy.stream_info(conn, r1)
    assert ok == "ok"
    assert (info["ref"], info["reply_to"], info["state"], info["intermediaries"]) == (
        r1,
        gunpy.self(),
        "running",
        [],
    )
    gunpy.cancel(conn, r2)
    assert gunpy.stream_info(conn, r2)[1]["state"] == "stopping"
    assert gunpy.stream_info(conn, gunpy.make_ref()) == ("ok", None)
    server.recv_request()
    server.recv_request()
    server.send(resp(b"1") + resp(b"2"))
    assert gunpy.await_(conn, r1)[0] == "response"
    assert gunpy.await_body(conn, r1) == ("ok", b"1")
    assert gunpy.stream_info(conn, r1) == ("ok", None)


def test_stream_info_when_not_connected() -> None:
    """gun:stream_info/2 while not connected: ``{error, not_connected}``."""
    ok, conn = gunpy.open("127.0.0.1", refused_port(), {"retry": 5, "retry_timeout": 60000})
    ref = gunpy.get(conn, "/")
    assert gunpy.stream_info(conn, ref) == ("error", "not_connected")
    gunpy.close(conn)
    gunpy.flush(conn)  # what closing caused (the queued stream's gun_error)


# =========================================================================== reply_to


def _expected(conn: gunpy.Pid, ref: Any, body: bytes = b"hi") -> list[Any]:
    return [
        ("gun_response", conn, ref, "nofin", 200, [("content-length", str(len(body)))]),
        ("gun_data", conn, ref, "fin", body),
    ]


def _is_fin(m: Any) -> bool:
    return m[0] == "gun_data" and m[3] == "fin"


def test_reply_to_another_thread(origin: ScriptedOrigin) -> None:
    """req_opts reply_to (Gun 3.5/4.8): the stream's messages go to that process only."""
    conn, server = connect(origin)
    box: list[gunpy.Pid] = []
    got: list[Any] = []
    ready = threading.Event()

    def worker() -> None:
        box.append(gunpy.self())
        ready.set()
        while True:
            m = gunpy.receive(after=5000)
            got.append(m)
            if m is TIMEOUT or _is_fin(m):
                return

    t = threading.Thread(target=worker)
    t.start()
    assert ready.wait(5)
    ref = gunpy.get(conn, "/", [], {"reply_to": box[0]})
    server.recv_request()
    server.send(resp(b"hi"))
    t.join(5)
    assert got == _expected(conn, ref)
    refute_receive(of_stream(conn, ref), after=50)


class _Collector(OwnerActor):
    def __init__(self, done: threading.Event) -> None:
        super().__init__()
        self.done = done
        self.got: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "got":
            return list(self.got)
        self.got.append(message)
        if _is_fin(message):
            self.done.set()
        return None


def test_reply_to_an_owner_actor(origin: ScriptedOrigin) -> None:
    """reply_to an OwnerActor (its ActorRef): messages reach its on_receive."""
    conn, server = connect(origin)
    done = threading.Event()
    actor = _Collector.start(done)
    try:
        ref = gunpy.get(conn, "/", [], {"reply_to": actor})
        server.recv_request()
        server.send(resp(b"hi"))
        assert done.wait(5)
        assert actor.ask("got") == _expected(conn, ref)
    finally:
        actor.stop()
    refute_receive(of_stream(conn, ref), after=50)


def test_reply_to_a_function_runs_in_the_connection_actor(origin: ScriptedOrigin) -> None:
    """reply_to fun/1 and {Fun, Args} (Gun 2.2+, 4.8): called with the message (args
    appended) inside the connection process."""
    conn, server = connect(origin)
    seen: list[Any] = []
    done = threading.Event()

    def fun(msg: Any, *args: Any) -> None:
        seen.append((msg, args, gunpy.self()))
        if _is_fin(msg):
            done.set()

    r1 = gunpy.get(conn, "/1", [], {"reply_to": fun})
    r2 = gunpy.get(conn, "/2", [], {"reply_to": (fun, ["extra", 2])})
    server.recv_request()
    server.recv_request()
    server.send(resp(b"hi") + resp(b"yo"))
    assert done.wait(5)
    if len(seen) < 4:  # the first fin set the Event; wait for the second stream's
        done.clear()
        assert done.wait(5)
    assert [m for m, _, _ in seen] == _expected(conn, r1) + _expected(conn, r2, b"yo")
    assert [a for _, a, _ in seen] == [(), (), ("extra", 2), ("extra", 2)]
    assert all(pid is conn for _, _, pid in seen)  # ran in the connection actor
    refute_receive(of(conn), after=50)


# =========================================================================== shutdown, owner


def test_shutdown_finishes_the_current_response_and_drops_the_pipeline(
    origin: ScriptedOrigin,
) -> None:
    """shutdown_SUITE http1_shutdown_pipelined (gun:shutdown/1): pipelined streams get
    ``("closing", "shutdown")``, the current response finishes, the process exits
    ``shutdown`` and no gun_down is sent (gun-reference 4.2)."""
    conn, server = connect(origin)
    mref = gunpy.monitor(conn)
    refs = [gunpy.get(conn, f"/{i}") for i in range(3)]
    for _ in refs:
        server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe")
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, refs[0], "nofin", b"he")
    gunpy.shutdown(conn)
    assert next_msgs(conn, 2) == [
        ("gun_error", conn, refs[1], ("closing", "shutdown")),
        ("gun_error", conn, refs[2], ("closing", "shutdown")),
    ]
    server.send(b"llo")
    assert gunpy.await_(conn, refs[0]) == ("data", "fin", b"llo")
    assert down_reason(mref) == "shutdown"
    refute_receive(gun_down(conn), after=0)
    assert server.wait_closed() == b""


def test_shutdown_with_no_stream_closes_at_once(origin: ScriptedOrigin) -> None:
    """shutdown_SUITE http1_shutdown_no_streams: exit ``shutdown`` right away."""
    conn, server = connect(origin)
    mref = gunpy.monitor(conn)
    gunpy.shutdown(conn)
    assert down_reason(mref) == "shutdown"
    assert server.wait_closed() == b""
    refute_receive(gun_down(conn), after=0)


class _Owner(OwnerActor):
    def __init__(self, origin: ScriptedOrigin) -> None:
        super().__init__()
        self.origin = origin

    def on_receive(self, message: Any) -> Any:
        if message == "open":
            conn = self.origin.open({"retry": 0})
            return gunpy.await_up(conn), conn
        if message == "die":
            raise gunpy.Exit("boom")
        return None


def test_owner_death_mid_response_finishes_it_then_exits(origin: ScriptedOrigin) -> None:
    """shutdown_SUITE http1_owner_down (gun-reference 4.3): the owner's death is a
    graceful close: pipelined streams get ``("closing", "owner_down")``, the current
    response finishes, the process exits ``{shutdown, {owner_down, boom}}``."""
    owner = _Owner.start(origin)
    up, conn = owner.ask("open")
    assert up == ("ok", "http")
    server = origin.accept()
    mref = gunpy.monitor(conn)
    r1 = gunpy.get(conn, "/1")  # reply_to: this thread, not the owner
    r2 = gunpy.get(conn, "/2")
    server.recv_request()
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe")
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, r1, "nofin", b"he")
    owner.tell("die")
    assert assert_receive(of_stream(conn, r2), after=3000) == (
        "gun_error",
        conn,
        r2,
        ("closing", "owner_down"),
    )
    server.send(b"llo")
    assert gunpy.await_(conn, r1) == ("data", "fin", b"llo")
    assert down_reason(mref) == ("shutdown", ("owner_down", "boom"))
    assert server.wait_closed() == b""


class _Dier(OwnerActor):
    """An owner that opens a connection, then exits with the reason it is told."""

    def __init__(self, origin: ScriptedOrigin, opts: dict[str, Any]) -> None:
        super().__init__()
        self.origin = origin
        self.opts = opts

    def on_receive(self, message: Any) -> Any:
        if message == "open":
            conn = self.origin.open({"retry": 0, **self.opts})
            return gunpy.await_up(conn), conn
        raise gunpy.Exit(message)


def _owned_conn_mid_response(
    origin: ScriptedOrigin, opts: dict[str, Any]
) -> tuple[Any, gunpy.Pid, OriginConn, gunpy.Ref, list[Any]]:
    """An OwnerActor-owned connection with one response in progress and one pipelined."""
    owner = _Dier.start(origin, opts)
    up, conn = owner.ask("open")
    assert up == ("ok", "http")
    server = origin.accept()
    mref = gunpy.monitor(conn)
    refs = [gunpy.get(conn, "/1"), gunpy.get(conn, "/2")]
    server.recv_request()
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe")
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, refs[0], "nofin", b"he")
    return owner, conn, server, mref, refs


def test_owner_exit_shutdown_still_closes_the_pipeline_with_owner_down(
    origin: ScriptedOrigin,
) -> None:
    """gun.erl handle_common DOWN: ``closing(status(State, {down, Reason}), owner_down)``
    whatever the owner's reason; the exit reason passes ``shutdown`` through (4.3)."""
    owner, conn, server, mref, refs = _owned_conn_mid_response(origin, {})
    owner.tell("shutdown")
    assert assert_receive(of_stream(conn, refs[1]), after=3000) == (
        "gun_error",
        conn,
        refs[1],
        ("closing", "owner_down"),
    )
    server.send(b"llo")
    assert gunpy.await_(conn, refs[0]) == ("data", "fin", b"llo")
    assert down_reason(mref) == "shutdown"


def test_closing_timeout_after_connection_close_response(origin: ScriptedOrigin) -> None:
    """http_opts closing_timeout (Gun 3.2, gun.erl closing state_timeout): a
    ``connection: close`` body that never ends is cut after closing_timeout: the stream
    gets ``("closed", "normal")`` and gun_down(normal) lists it."""
    conn, server = connect(origin, http_opts={"closing_timeout": 200})
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 10\r\n\r\nab")
    assert next_msgs(conn, 4) == [
        (
            "gun_response",
            conn,
            ref,
            "nofin",
            200,
            [("connection", "close"), ("content-length", "10")],
        ),
        ("gun_data", conn, ref, "nofin", b"ab"),
        ("gun_error", conn, ref, ("closed", "normal")),
        ("gun_down", conn, "http", "normal", [ref]),
    ]


def test_closing_timeout_after_shutdown_closes_the_stream_with_shutdown(
    origin: ScriptedOrigin,
) -> None:
    """shutdown_SUITE http1_shutdown_timeout / gun.erl ``closing(state_timeout,
    closing_timeout, ...)``: Reason = shutdown when the status is shutdown; the stream
    gets ``{closed, shutdown}`` (gun_http close_reason) and the process exits
    ``shutdown`` without gun_down."""
    conn, server = connect(origin, http_opts={"closing_timeout": 200})
    mref = gunpy.monitor(conn)
    ref = gunpy.get(conn, "/")
    server.recv_request()
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab")
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, ref, "nofin", b"ab")
    gunpy.shutdown(conn)
    assert assert_receive(of_stream(conn, ref), after=3000) == (
        "gun_error",
        conn,
        ref,
        ("closed", "shutdown"),
    )
    assert down_reason(mref) == "shutdown"
    refute_receive(gun_down(conn), after=0)


def test_closing_timeout_after_owner_death_closes_the_stream_with_owner_down(
    origin: ScriptedOrigin,
) -> None:
    """gun.erl closing state_timeout: Reason = owner_down when the status is
    ``{down, _}``: the stream gets ``{closed, owner_down}``."""
    owner, conn, server, mref, refs = _owned_conn_mid_response(
        origin, {"http_opts": {"closing_timeout": 200}}
    )
    owner.tell("boom")
    assert assert_receive(of_stream(conn, refs[1]), after=3000)[3] == ("closing", "owner_down")
    assert assert_receive(of_stream(conn, refs[0]), after=3000) == (
        "gun_error",
        conn,
        refs[0],
        ("closed", "owner_down"),
    )
    assert down_reason(mref) == ("shutdown", ("owner_down", "boom"))


def test_server_close_after_a_response_kills_only_the_pipelined_streams(
    origin: ScriptedOrigin,
) -> None:
    """gun_SUITE killed_streams_http / gun-reference 4.2: the server closes after a
    complete response (no ``connection: close``): the streams still waiting get
    ``closed`` and are the killed ones; the completed stream is not listed."""
    conn, server = connect(origin)
    r1 = gunpy.get(conn, "/1")
    r2 = gunpy.get(conn, "/2")
    r3 = gunpy.get(conn, "/3")
    for _ in range(3):
        server.recv_request()
    server.send(resp(b"one"))
    assert next_msgs(conn, 2)[1] == ("gun_data", conn, r1, "fin", b"one")
    server.close()
    assert next_msgs(conn, 3) == [
        ("gun_error", conn, r2, "closed"),
        ("gun_error", conn, r3, "closed"),
        ("gun_down", conn, "http", "closed", [r2, r3]),
    ]


def test_post_with_a_map_as_fourth_argument_sends_headers_only(origin: ScriptedOrigin) -> None:
    """gun:post/4 with a map as the 4th argument is post/3 plus req_opts: headers only,
    the body follows with data/4; an empty full body is content-length 0."""
    conn, server = connect(origin)
    ref = gunpy.post(conn, "/p", [], {"flow": 5})
    assert server.recv_request() == (
        b"POST /p HTTP/1.1\r\ntransfer-encoding: chunked\r\nhost: %s\r\n\r\n" % host(origin)
    )
    gunpy.data(conn, ref, "fin", b"x")
    assert server.recv_exact(11) == b"1\r\nx\r\n0\r\n\r\n"
    gunpy.put(conn, "/q", [], b"")
    assert server.recv_request() == (
        b"PUT /q HTTP/1.1\r\ncontent-length: 0\r\nhost: %s\r\n\r\n" % host(origin)
    )


def test_http_over_tls_with_flow_control(scripted_origin: OriginFactory, tls_pair: TLSPair) -> None:
    """HTTP/1.1 over TLS (Gun 3.1 transport tls): same bytes; flow control also holds
    back bytes TLS has already decrypted (a record larger than what was delivered)."""
    origin = scripted_origin(tls=tls_pair.server_context(hostnames=["127.0.0.1"]))
    conn = origin.open({"transport": "tls", "tls_opts": {"cacerts": tls_pair.ca_pem}})
    assert gunpy.await_up(conn) == ("ok", "http")
    server = origin.accept()
    ref = gunpy.get(conn, "/", [], {"flow": 1})
    assert server.recv_request() == get_head(b"/", host(origin))
    body = bytes(range(256)) * 400  # several TLS records
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    assert gunpy.await_(conn, ref) == ("response", "nofin", 200, [("content-length", "102400")])
    first = gunpy.await_(conn, ref)
    assert first[:2] == ("data", "nofin") and len(first[2]) < len(body)
    refute_receive(of_stream(conn, ref), after=300)
    gunpy.update_flow(conn, ref, 1000)
    chunks = [first[2]]
    while True:
        m = gunpy.await_(conn, ref)
        assert m[0] == "data", m
        chunks.append(m[2])
        if m[1] == "fin":
            break
    assert b"".join(chunks) == body
