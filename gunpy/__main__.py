"""The ``gunpy`` command line: ``python -m gunpy`` (and the ``gunpy`` console script).

    gunpy get URL [-H name:value]... [--body]
    gunpy post URL -d DATA [-H name:value]...
    gunpy ws URL [--compress] [--protocol P]...
    (any command) --trace: the connection's event timeline on stderr

Every Gun message is printed as it arrives, as the tuple a program would receive
(``--body`` prints only the response body).  ``gunpy ws`` is an interactive
Websocket session: each line typed is sent as a text frame; ``/close``,
``/ping [data]`` and ``/binary HEX`` send those frames; end of input closes.

Exit codes: 0 the response (or the Websocket session) completed; 1 the connection
failed or went down; 2 bad usage or URL; 3 a TLS certificate was refused;
4 timeout; 5 the server answered an HTTP error status with ``--fail``.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

from . import _api
from ._process import ANY, TIMEOUT, receive
from ._process import self as _self

EXIT_OK, EXIT_DOWN, EXIT_USAGE, EXIT_TLS, EXIT_TIMEOUT, EXIT_HTTP = 0, 1, 2, 3, 4, 5

_METHODS = ("get", "head", "options", "delete", "post", "put", "patch")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class UsageError(Exception):
    pass


def parse_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path)`` of an http, https, ws or wss URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UsageError(f"unsupported URL scheme {parts.scheme!r} (use http, https, ws or wss)")
    if not parts.hostname:
        raise UsageError(f"no host in URL {url!r}")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as e:
        raise UsageError(f"bad port in URL {url!r}") from e
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname, port, path


def _headers(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for h in values:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"header {h!r} is not name:value")
        out.append((name.strip(), value.strip()))
    return out


def _conn_opts(args: argparse.Namespace, scheme: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"retry": 0}
    if scheme in ("https", "wss"):
        opts["transport"] = "tls"
        tls: dict[str, Any] = {}
        if args.insecure:
            tls["verify"] = "verify_none"
        if args.cacert:
            tls["cacertfile"] = args.cacert
        opts["tls_opts"] = tls
    else:
        opts["transport"] = "tcp"
    if getattr(args, "trace", False):
        from .events import Timeline, TimingEventHandler

        def show(line: str) -> None:
            print(f"trace {line}", file=sys.stderr, flush=True)

        # Gun's event handler: one stderr line per event, as it happens.
        opts["event_handler"] = (TimingEventHandler(), Timeline(on_event=show))
    if scheme in ("ws", "wss") or getattr(args, "http1", False):
        opts["protocols"] = ["http"]  # Websocket over HTTP/1.1 (RFC 6455)
    elif args.http2:
        opts["protocols"] = ["http2"]
    return opts


def _down_exit(reason: Any) -> int:
    text = repr(reason)
    if "tls_alert" in text:
        return EXIT_TLS
    if "timeout" in text:
        return EXIT_TIMEOUT
    return EXIT_DOWN


def _open(host: str, port: int, opts: dict[str, Any], timeout: int) -> tuple[Any, str]:
    ok, conn = _api.open(host, port, opts)
    if ok != "ok":
        raise UsageError(f"bad options: {conn!r}")
    up = _api.await_up(conn, timeout)
    if up[0] != "ok":
        print(f"gunpy: connection to {host}:{port} failed: {up[1]!r}", file=sys.stderr)
        raise SystemExit(EXIT_TIMEOUT if up == ("error", "timeout") else _down_exit(up[1]))
    return conn, up[1]


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def run_request(args: argparse.Namespace) -> int:
    scheme, host, port, path = parse_url(args.url)
    if scheme in ("ws", "wss"):
        raise UsageError("use 'gunpy ws' for ws:// and wss:// URLs")
    headers = _headers(args.header)
    conn, protocol = _open(host, port, _conn_opts(args, scheme), args.timeout)
    if not args.body:
        print(("gun_up", conn, protocol), flush=True)
    method = args.method.upper()
    body: bytes | None = None
    if args.data is not None:
        body = args.data.encode()
    elif args.data_file is not None:
        with open(args.data_file, "rb") as f:
            body = f.read()
    ref = _api.request(conn, method, path, headers, body if body is not None else b"")
    status = 0
    try:
        while True:
            msg = receive(
                ("gun_inform", conn, ref, ANY, ANY),
                ("gun_response", conn, ref, ANY, ANY, ANY),
                ("gun_data", conn, ref, ANY, ANY),
                ("gun_trailers", conn, ref, ANY),
                ("gun_error", conn, ref, ANY),
                ("gun_error", conn, ANY),
                ("gun_down", conn, ANY, ANY, ANY),
                after=args.timeout,
            )
            if msg is TIMEOUT:
                print(f"gunpy: no answer in {args.timeout} ms", file=sys.stderr)
                return EXIT_TIMEOUT
            if args.body:
                if msg[0] == "gun_data":
                    _write(msg[4])
            else:
                print(msg, flush=True)
            tag = msg[0]
            if tag == "gun_response":
                status = msg[4]
                if msg[3] == "fin":
                    break
            elif (tag == "gun_data" and msg[3] == "fin") or tag == "gun_trailers":
                break
            elif tag in ("gun_error", "gun_down"):
                if args.body:
                    print(f"gunpy: {msg!r}", file=sys.stderr)
                return EXIT_DOWN
    finally:
        _api.close(conn)
    if args.fail and status >= 400:
        return EXIT_HTTP
    return EXIT_OK


def _stdin_reader(me: Any) -> None:
    for line in sys.stdin:
        me.send(("stdin", line.rstrip("\r\n")))
    me.send(("stdin", None))


def _frame_of(line: str) -> Any:
    if line == "/close":
        return "close"
    if line == "/ping" or line.startswith("/ping "):
        data = line[6:]
        return ("ping", data.encode()) if data else "ping"
    if line.startswith("/binary "):
        return ("binary", bytes.fromhex(line[8:].replace(" ", "")))
    return ("text", line)


def run_ws(args: argparse.Namespace) -> int:
    scheme, host, port, path = parse_url(args.url)
    if scheme not in ("ws", "wss"):
        raise UsageError("gunpy ws needs a ws:// or wss:// URL")
    headers = _headers(args.header)
    conn, _protocol = _open(host, port, _conn_opts(args, scheme), args.timeout)
    ws_opts: dict[str, Any] = {"compress": args.compress, "silence_pings": False}
    if args.protocol:
        from .protocols.ws import WsDefaultProtocol

        ws_opts["protocols"] = [(p, WsDefaultProtocol) for p in args.protocol]
    ref = _api.ws_upgrade(conn, path, headers, ws_opts)
    msg = receive(
        ("gun_upgrade", conn, ref, ANY, ANY),
        ("gun_response", conn, ref, ANY, ANY, ANY),
        ("gun_error", conn, ref, ANY),
        ("gun_down", conn, ANY, ANY, ANY),
        after=args.timeout,
    )
    print(msg, flush=True)
    if msg is TIMEOUT or msg[0] != "gun_upgrade":
        _api.close(conn)
        return EXIT_TIMEOUT if msg is TIMEOUT else EXIT_DOWN
    me = _self()
    threading.Thread(target=_stdin_reader, args=(me,), name="gunpy-stdin", daemon=True).start()
    closing = False
    while True:
        msg = receive(
            ("gun_ws", conn, ref, ANY),
            ("gun_error", conn, ANY),
            ("gun_error", conn, ref, ANY),
            ("gun_down", conn, ANY, ANY, ANY),
            ("stdin", ANY),
            after=None if not closing else args.timeout,
        )
        if msg is TIMEOUT:
            _api.close(conn)
            return EXIT_OK
        if msg[0] == "stdin":
            line = msg[1]
            if line is None:
                if not closing:
                    _api.ws_send(conn, ref, "close")
                    closing = True
                continue
            try:
                frame = _frame_of(line)
            except ValueError as e:
                print(f"gunpy: {e}", file=sys.stderr)
                continue
            _api.ws_send(conn, ref, frame)
            if frame == "close":
                closing = True
            continue
        print(msg, flush=True)
        if msg[0] == "gun_down":
            _api.close(conn)
            return EXIT_OK if closing or msg[3] == "normal" else EXIT_DOWN
        if msg[0] == "gun_error":
            _api.close(conn)
            return EXIT_DOWN


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gunpy",
        description="Gun's HTTP and Websocket client from the command line: prints each "
        "Gun message as it arrives.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("url")
        sp.add_argument("-H", "--header", action="append", default=[], help="name:value")
        sp.add_argument("--timeout", type=int, default=10000, help="milliseconds (10000)")
        sp.add_argument("--insecure", action="store_true", help="do not verify certificates")
        sp.add_argument("--cacert", help="PEM file of the CAs to trust")
        sp.add_argument("--http2", action="store_true", help="HTTP/2 (prior knowledge on http://)")
        sp.add_argument("--trace", action="store_true", help="print the event timeline on stderr")

    for m in _METHODS:
        sp = sub.add_parser(m, help=f"{m.upper()} request")
        common(sp)
        sp.set_defaults(method=m, run=run_request)
        sp.add_argument("-d", "--data", help="request body")
        sp.add_argument("--data-file", help="read the request body from a file")
        sp.add_argument("--body", action="store_true", help="print the body only")
        sp.add_argument("--fail", action="store_true", help="exit 5 on a 4xx/5xx status")
        sp.add_argument("--http1", action="store_true", help="HTTP/1.1 only (no ALPN h2)")
    sp = sub.add_parser("ws", help="interactive Websocket session")
    common(sp)
    sp.set_defaults(run=run_ws)
    sp.add_argument("--compress", action="store_true", help="offer permessage-deflate")
    sp.add_argument("--protocol", action="append", default=[], help="subprotocol to offer")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except UsageError as e:
        print(f"gunpy: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
