"""UNIX servers as threads of the test process, on real sockets, and the handlers they run per
connection (echo, answer once and leave, read to the end, read a PROXY header first)."""
from __future__ import annotations

import os
import socket
import threading


class UnixServer:
    """A threaded UNIX server; ``handler(conn, server)`` runs per connection in its own thread.

    Records the connections it accepted, so a test can check that a socket was (never) reached.
    """

    def __init__(self, path: str, handler, sock_type: int = socket.SOCK_STREAM, listen: bool = True) -> None:
        self.path = path
        self.handler = handler
        self.accepted = 0
        self.closed_by_peer = threading.Event()
        self.received: list[bytes] = []
        self.connections: list[socket.socket] = []
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, sock_type)
        self.sock.bind(path)
        if listen:
            self.sock.listen(64)
            threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for conn in self.connections:
            try:
                conn.close()
            except OSError:
                pass
        if os.path.exists(self.path):
            os.unlink(self.path)


def echo_handler(conn: socket.socket, server: UnixServer) -> None:
    """Echo every read back (stream) or every packet back (seqpacket), recording what came in."""
    while True:
        data = conn.recv(8 * 1024 * 1024)
        if not data:
            server.closed_by_peer.set()
            return
        server.received.append(data)
        conn.sendall(data)


def say_bye_and_leave(conn: socket.socket, server: UnixServer) -> None:
    """Answer the first read with ``bye``, then close: the server ends the session."""
    conn.recv(100)
    conn.sendall(b"bye")


def read_until_eof(conn: socket.socket, server: UnixServer) -> None:
    """Record everything until the peer closes, then flag ``closed_by_peer``."""
    while True:
        data = conn.recv(65536)
        if not data:
            server.closed_by_peer.set()
            return
        server.received.append(data)


def proxied_echo_handler(conn: socket.socket, server: UnixServer) -> None:
    """Read the PROXY header (recorded in ``server.headers``, raw bytes in ``server.raw_headers``),
    then echo as :func:`echo_handler` does."""
    from ouistiti_gw.backend import read_proxy_header
    from ouistiti_gw.core.proxy_protocol import parse

    peeked = conn.recv(65536 + 16, socket.MSG_PEEK)
    header = read_proxy_header(conn)
    vars(server).setdefault("headers", []).append(header)
    vars(server).setdefault("raw_headers", []).append(peeked[:parse(peeked)[1]])
    echo_handler(conn, server)
