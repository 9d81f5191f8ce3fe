"""websocket_echo: send every byte a client sends back to that same client.

A SOCK_STREAM server: unlike ouistiti's echo.c it has no 256-byte buffer and
does not cut at the first NUL, so any data, of any size, comes back unchanged.
Each client has its own greenlet; ``sendall`` only blocks the client that does
not read its echo.

Usage: ``websocket_echo [-R DIR] [-n NAME] [-u USER] [-m N] [-D]``
"""
from __future__ import annotations

import functools
import socket
import sys
from typing import Optional, Sequence

import gevent.socket

from ouistiti_gw.backend import DirectClient

from .server import Handler, adopted, build_parser, program_name, run, setup_logging

CHUNK = 65536


def echo(conn: gevent.socket.socket, expect_proxy_header: bool = False) -> None:
    """Echo *conn*'s data until it closes its side, then close ours (a PROXY
    header first with *expect_proxy_header*, the ``-P`` option)."""
    with adopted(conn, expect_proxy_header) as client:
        if isinstance(client, DirectClient):
            echo_messages(client)
            return
        while True:
            data = client.recv(CHUNK)
            if not data:
                return
            client.sendall(data)


def echo_messages(client: DirectClient) -> None:
    """Direct mode: send every message back as it arrives, each piece read
    as one fragment of the reply, so the echo of a 16 MiB message starts at
    once and the message is never held whole (the piping gateway does the
    same with a stream server's reads)."""

    def send_back(piece: bytes, is_text: bool, final: bool) -> None:
        client.send_piece(piece, text=is_text, final=final)

    while client.receive_streaming(send_back):
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the options and serve until SIGTERM or SIGINT."""
    prog = program_name("websocket_echo")
    parser = build_parser(prog, "Echo server for the ouistiti WebSocket gateway.")
    args = parser.parse_args(argv)
    setup_logging(prog)

    def start() -> Handler:
        return functools.partial(echo, expect_proxy_header=args.proxy_header)

    return run(args, socket.SOCK_STREAM, start)


if __name__ == "__main__":
    sys.exit(main())
