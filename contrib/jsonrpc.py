"""websocket_jsonrpc: a JSON-RPC 2.0 server running the methods of a library.

The library (``-L``, a file path or a dotted module name) and its interface
are described in :mod:`ouistiti_gw_contrib.rpc`; ``-C STRING`` is handed to its
``init``.  The library is loaded and initialised at start: if that fails, the
server says why and exits 1 instead of failing every request.

Socket type: SOCK_SEQPACKET, so that one WebSocket message is one packet both
ways, as with ouistiti's C server: each packet is parsed as one JSON-RPC
request or batch and answered with exactly one reply packet (none when it
holds only notifications); a packet that is not one JSON text (``not json``,
``{bad``, ``{"a":1} junk``) gets one -32700 Parse error, and the connection
goes on.  Trailing NUL bytes are ignored (clients written for the C server
end each request with one).  In direct mode the server reads WebSocket
messages itself, one at a time, with the same rules.

A batch holds at most :data:`~ouistiti_gw_contrib.rpc.MAX_BATCH` requests; a
longer one is answered with a single -32600 error saying so.  Each connection
has its own greenlet, so while one client's batch runs, the others are served
(as long as the methods do not hold the loop: see
:func:`ouistiti_gw_contrib.rpc.call_in_thread`).

Largest reply: a reply must fit in one packet.  Each connection's SO_SNDBUF is
raised to net.core.wmem_max (reported doubled by the kernel); Linux then
accepts a packet of at most min(SO_SNDBUF - 32, what it can allocate in one
piece: 4 MiB + 17 pages - 320 bytes = 4 263 616 bytes with 4 KiB pages).
With the default wmem_max of 212992 that is 425 952 bytes; with wmem_max of
4 MiB or more, 4 263 616 bytes.  The server measures the exact figure at start
(logged as "replies up to N bytes") and answers a longer reply with a -32603
Internal error whose data gives both sizes, never dropping it silently.

Usage: ``websocket_jsonrpc -L LIB [-C STRING] [-R DIR] [-n NAME] [-u USER]
[-m N] [-D]``
"""
from __future__ import annotations

import errno
import logging
import socket
import sys
from typing import Any, Optional, Sequence

import gevent.socket

from .rpc import INTERNAL_ERROR, Dispatcher, Library, LibraryError, RPCError, error_response, load_library
from .server import (
    Connection,
    Handler,
    StartupError,
    adopted,
    build_parser,
    enlarge_send_buffer,
    max_packet_size,
    peer_address,
    peer_user,
    program_name,
    recv_packet,
    run,
    setup_logging,
)

log = logging.getLogger(__name__)


class RPCServer:
    """Hands each message of a connection to the dispatcher, sends its reply."""

    def __init__(self, dispatcher: Dispatcher, limit: int, expect_proxy_header: bool = False) -> None:
        self.dispatcher = dispatcher
        self.limit = limit
        #: ``-P``: a piped connection starts with a PROXY header.
        self.expect_proxy_header = expect_proxy_header

    def handle(self, conn: gevent.socket.socket) -> None:
        """Serve one client until it leaves (a :data:`Handler`)."""
        with adopted(conn, self.expect_proxy_header) as client:
            self.serve(client)

    def serve(self, conn: Connection) -> None:
        """One message in, at most one reply out, until the client leaves."""
        enlarge_send_buffer(conn)
        session = self.dispatcher.new_session()
        session.peer = peer_address(conn)
        session.user = peer_user(conn)
        while True:
            message = recv_packet(conn)
            if not message:
                return
            reply = self.dispatcher.handle(message.rstrip(b"\0"), session, self.limit)
            if reply is not None:
                self.send(conn, reply)

    def send(self, conn: Connection, reply: bytes) -> None:
        """Send *reply* as one packet, or an error if the kernel refuses it."""
        try:
            conn.send(reply)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            log.error("cannot send a reply of %d bytes: %s", len(reply), exc)
            error = RPCError(INTERNAL_ERROR, data=f"reply of {len(reply)} bytes refused: {exc.strerror}")
            conn.send(self.dispatcher.encode(error_response(None, error)))


class LibraryRunner:
    """The library's life: loaded before binding, initialised as the final
    user, released at shutdown (the three hooks of :func:`server.run`)."""

    def __init__(self, spec: str, config: Optional[str], expect_proxy_header: bool = False) -> None:
        self.spec = spec
        self.config = config
        self.expect_proxy_header = expect_proxy_header
        self.library: Optional[Library] = None
        self.context: Any = None

    def prepare(self) -> None:
        try:
            self.library = load_library(self.spec)
        except LibraryError as exc:
            raise StartupError(str(exc)) from None

    def start(self) -> Handler:
        assert self.library is not None
        try:
            self.context = self.library.init(self.config)
        except Exception as exc:
            raise StartupError(f"{self.spec}: init failed: {type(exc).__name__}: {exc}") from None
        limit = max_packet_size()
        log.info("replies up to %d bytes", limit)
        return RPCServer(Dispatcher(self.library.methods, self.context), limit, self.expect_proxy_header).handle

    def release(self) -> None:
        assert self.library is not None
        try:
            self.library.release(self.context)
        except Exception:
            log.exception("%s: release failed", self.spec)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the options, load the library and serve until SIGTERM or SIGINT."""
    prog = program_name("websocket_jsonrpc")
    parser = build_parser(prog, "JSON-RPC 2.0 server for the ouistiti WebSocket gateway.")
    parser.add_argument("-L", dest="library", metavar="LIB", required=True,
                        help="RPC library: a Python file path or a dotted module name")
    parser.add_argument("-C", dest="config", metavar="STRING",
                        help="configuration string handed to the library's init()")
    args = parser.parse_args(argv)
    setup_logging(prog)
    runner = LibraryRunner(args.library, args.config, args.proxy_header)
    return run(args, socket.SOCK_SEQPACKET, runner.start, runner.prepare, runner.release)


if __name__ == "__main__":
    sys.exit(main())
