#!/usr/bin/env python3
"""Run hypercorn with ``asgi_echo:app`` on a socket bound here, a test peer.

  run_hypercorn.py [PORT] [--tls CERT KEY]     (0 or nothing = a free port)

Binds 127.0.0.1:PORT itself (so port 0 works and there is no race), hands the
socket to hypercorn as ``fd://N`` and prints ``LISTENING <port>``.  Without
``--tls``: HTTP/1.1, h2c (prior knowledge or Upgrade) and WebSocket.  With
``--tls``: h2 and http/1.1 by ALPN.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
app = importlib.import_module("asgi_echo").app


def main(args: list[str]) -> None:
    port = int(args[0]) if args and args[0].isdigit() else 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)  # connections queue from now on, before hypercorn accepts
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = "-"
    config.websocket_max_message_size = 64 << 20
    config.h11_max_incomplete_size = 64 * 1024
    if "--tls" in args:
        i = args.index("--tls")
        config.certfile, config.keyfile = args[i + 1], args[i + 2]
        config.alpn_protocols = ["h2", "http/1.1"]
    print("LISTENING", sock.getsockname()[1], flush=True)
    asyncio.run(serve(app, config))


if __name__ == "__main__":
    main(sys.argv[1:])
