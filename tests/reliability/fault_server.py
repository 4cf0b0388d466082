#!/usr/bin/env python3
"""A keep-alive HTTP/1.1 + Websocket server that injects faults, for the reliability
tests and the soak (asyncio, one process, thousands of connections).

  fault_server.py [PORT] [--faults P] [--seed N]

Prints ``LISTENING <port>`` once bound to 127.0.0.1.  Routes (any method):

* ``/hello``          200 ``Hello world!\\n``
* ``/echo``           200 with the request body (content-length or chunked bodies)
* ``/size/N``         200 with N bytes (content-length)
* ``/chunked/N``      200 with N bytes in 1000-byte chunks, then an ``x-n`` trailer
* ``/slow/MS``        waits MS ms, then as ``/hello``
* ``/ws``             Websocket echo (text and binary; pings answered; close echoed)

Faults: a request header ``x-fault: NAME`` forces one; with ``--faults P`` each
request (and each Websocket message) gets a random one with probability P:

* ``close`` / ``reset``: close (FIN) / reset (RST) instead of answering
* ``close_mid`` / ``reset_mid``: the head and half the body, then close / reset
* ``half_close``: the head and half the body, then shut down the sending side
* ``slow``: answer after 50-1000 ms
* ``dribble``: the answer in 7-byte pieces, 2 ms apart
* ``conn_close``: answer with ``connection: close``, then close
* ``malformed``: an invalid status line

Websocket faults: ``close``, ``reset``, ``close_frame`` (a 1001 close frame).
Every answer carries ``x-req: <the request's x-req header>`` so clients can check
which request a response belongs to.  SIGUSR1 prints ``FAULTS {json counts}``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import signal
import socket
import struct
import sys

HTTP_FAULTS = (
    "close",
    "reset",
    "close_mid",
    "reset_mid",
    "half_close",
    "slow",
    "dribble",
    "conn_close",
    "malformed",
)
WS_FAULTS = ("close", "reset", "close_frame")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Stop(Exception):
    """End this connection (the socket was closed or reset)."""


def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class Server:
    def __init__(self, p: float, seed: int) -> None:
        self.p = p
        self.rng = random.Random(seed)
        self.counts: dict[str, int] = {}

    def pick(self, forced: str | None, choices: tuple[str, ...]) -> str | None:
        if forced:
            return forced
        if self.p and self.rng.random() < self.p:
            f = self.rng.choice(choices)
            self.counts[f] = self.counts.get(f, 0) + 1
            return f
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    break
                # Clients may send empty lines between requests (keepalive).
                head = head.lstrip(b"\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = ([*lines[0].split(" "), "", ""])[:3]
                headers = {}
                for ln in lines[1:]:
                    if ln:
                        k, _, v = ln.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = await self.read_body(reader, headers)
                if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
                    await self.websocket(reader, writer, headers)
                    break
                if not await self.respond(reader, writer, method, path, headers, body):
                    break
        except (Stop, ConnectionError, OSError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.transport.close()

    async def read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    return b"".join(parts)
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
        n = int(headers.get("content-length") or 0)
        return await reader.readexactly(n) if n else b""

    async def respond(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> bool:
        """Answer one request; False when the connection is over."""
        fault = self.pick(headers.get("x-fault"), HTTP_FAULTS)
        xreq = headers.get("x-req", "")
        trailer = None
        if path == "/echo":
            payload = body
        elif path.startswith("/size/"):
            payload = b"x" * int(path[6:])
        elif path.startswith("/chunked/"):
            payload = b"c" * int(path[9:])
            trailer = str(len(payload))
        elif path.startswith("/slow/"):
            await asyncio.sleep(int(path[6:]) / 1000)
            payload = b"Hello world!\n"
        elif path == "/hello":
            payload = b"Hello world!\n"
        else:
            payload = b"not found\n"
        status = b"404 Not Found" if payload == b"not found\n" else b"200 OK"
        if fault == "close":
            writer.transport.close()
            return False
        if fault == "reset":
            reset(writer)
            return False
        if fault == "malformed":
            writer.write(b"HTTP/1.1 2x0 Bad\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return True  # the client must give up on its own
        if fault == "slow":
            await asyncio.sleep(self.rng.uniform(0.05, 1.0))
        extra = b"x-req: %s\r\n" % xreq.encode("latin-1")
        if fault == "conn_close":
            extra += b"connection: close\r\n"
        if method == "HEAD":
            payload_out = b""
        else:
            payload_out = payload
        if trailer is not None and method != "HEAD":
            head = b"HTTP/1.1 %s\r\ntransfer-encoding: chunked\r\ntrailer: x-n\r\n%s\r\n" % (status, extra)
            chunks = [payload_out[i : i + 1000] for i in range(0, len(payload_out), 1000)]
            wire = head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
            wire += b"0\r\nx-n: %s\r\n\r\n" % trailer.encode()
        else:
            head = b"HTTP/1.1 %s\r\ncontent-length: %d\r\n%s\r\n" % (status, len(payload), extra)
            wire = head + payload_out
        if fault in ("close_mid", "reset_mid", "half_close"):
            cut = len(head) + max(1, (len(wire) - len(head)) // 2)
            if len(wire) - len(head) < 2:
                # Nothing to cut in the body: cut the head instead.
                cut = len(head) // 2
            writer.write(wire[:cut])
            await writer.drain()
            if fault == "close_mid":
                writer.transport.close()
            elif fault == "reset_mid":
                reset(writer)
            else:
                writer.write_eof()
                # Keep reading until the client closes: it must end the connection.
                while await reader.read(65536):
                    pass
            return False
        if fault == "dribble":
            for i in range(0, len(wire), 7):
                writer.write(wire[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0.002)
        else:
            writer.write(wire)
            await writer.drain()
        if fault == "conn_close":
            writer.transport.close()
            return False
        return True

    # ------------------------------------------------------------------ Websocket

    async def websocket(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        fault = headers.get("x-fault")
        if fault in ("close", "reset"):
            # Refuse the upgrade by dying.
            (reset if fault == "reset" else lambda w: w.transport.close())(writer)
            return
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
            b"sec-websocket-accept: " + accept + b"\r\n\r\n"
        )
        await writer.drain()
        parts: list[bytes] = []
        first_op = 0
        while True:
            b0, b1 = await reader.readexactly(2)
            op = b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            data = bytearray(await reader.readexactly(n))
            for i in range(n):
                data[i] ^= mask[i % 4]
            if op == 0x8:  # close: echo it, then close
                writer.write(self.frame(0x8, bytes(data[:2]) if n >= 2 else b""))
                await writer.drain()
                writer.transport.close()
                return
            if op == 0x9:
                writer.write(self.frame(0xA, bytes(data)))
                await writer.drain()
                continue
            if op == 0xA:
                continue
            if op in (0x1, 0x2):
                first_op = op
                parts = [bytes(data)]
            else:
                parts.append(bytes(data))
            if not b0 & 0x80:
                continue
            msg = b"".join(parts)
            f = self.pick(None, WS_FAULTS)
            if f == "close":
                writer.transport.close()
                return
            if f == "reset":
                reset(writer)
                return
            if f == "close_frame":
                writer.write(self.frame(0x8, struct.pack("!H", 1001) + b"going away"))
                await writer.drain()
                # Wait for the client's close reply, then close.
                try:
                    await asyncio.wait_for(reader.read(65536), 5)
                except (asyncio.TimeoutError, ConnectionError):
                    pass
                writer.transport.close()
                return
            writer.write(self.frame(first_op, msg))
            await writer.drain()

    @staticmethod
    def frame(op: int, payload: bytes) -> bytes:
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | op, n])
        elif n < 65536:
            head = bytes([0x80 | op, 126]) + struct.pack("!H", n)
        else:
            head = bytes([0x80 | op, 127]) + struct.pack("!Q", n)
        return head + payload


async def main(args: list[str]) -> None:
    port = int(args[0]) if args and args[0].isdigit() else 0
    p = float(args[args.index("--faults") + 1]) if "--faults" in args else 0.0
    seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 1
    srv = Server(p, seed)
    server = await asyncio.start_server(
        srv.handle, "127.0.0.1", port, backlog=4096, limit=1 << 20
    )
    print("LISTENING", server.sockets[0].getsockname()[1], flush=True)
    # SIGUSR1: print the faults injected so far (the soak's report quotes them).
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1,
        lambda: print("FAULTS", json.dumps(srv.counts, sort_keys=True), flush=True),
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
