"""The client's connection as gevent's ``pywsgi`` handler holds it: socket, reader, handler.

Both servers the gateway runs under keep a WebSocket request's connection in a pywsgi handler
(the project's :class:`~ouistiti_gw.servers.handler.GatewayHandler`, or gevent-websocket's stock one);
:class:`HandlerConnection` takes it from either, as the :class:`~ouistiti_gw.gateway.upgrade.ClientConnection`
the middleware expects.
"""
from __future__ import annotations

import contextlib
import socket
from typing import Any, BinaryIO, Iterator

from gevent.pywsgi import Input, WSGIHandler


def no_body_to_drain(handler: WSGIHandler) -> None:
    """gevent reads out a request's body after the app returns, to reach the next request on the
    connection. When there is no next request (the connection closes after a refusal, or was
    upgraded), that read would only wait on the client, or fail on a reader we closed."""
    handler.wsgi_input = Input(None, 0)


@contextlib.contextmanager
def _without_waiting(sock: Any) -> Iterator[None]:
    """Reads of ``sock`` (and of a reader over it) inside return what is there, never wait."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        yield
    finally:
        sock.settimeout(timeout)


def has_pending_input(sock: Any, rfile: BinaryIO) -> bool:
    """True when bytes from the client sit in our reader, or in the kernel (they get pulled in).

    Call it before the 101 to learn whether a client pipelined data behind its handshake: after
    the 101 it would read the client's first message into our buffer.
    """
    with _without_waiting(sock):
        try:
            return bool(rfile.peek(1))  # type: ignore[attr-defined]
        except OSError:
            return False


class HandlerConnection:
    """The client's connection once upgraded: its socket, the buffered reader the HTTP server
    parsed the handshake from (bytes sent right after the handshake may already sit in it), and
    the handler that served it, whichever server that was (ours, or gevent-websocket's)."""

    __slots__ = ("handler", "sock", "rfile")  # one per session, for its whole life

    def __init__(self, handler: WSGIHandler) -> None:
        self.handler = handler
        self.sock = handler.socket
        self.rfile = handler.rfile
        no_body_to_drain(handler)  # what follows the handshake is frames; the reader is ours now
        # Messages go out as soon as they are written: Nagle's algorithm would hold a small frame
        # back while the previous one is unacknowledged (round trips of 40 ms with delayed ACKs).
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def take_buffered(self) -> bytes:
        """What the HTTP server read past the handshake (a client may send its first frames right
        behind it), without waiting for more; then the reader is closed, its buffer freed: from
        here on the WebSocket reads the socket itself. The parsed request goes too (its headers,
        its request line): an idle session should keep nothing it will not use."""
        self.handler.headers = self.handler.requestline = self.handler.path = None
        try:
            with _without_waiting(self.sock):
                # read1 returns the buffered bytes; only when there are none does it try one
                # read, which may bring nothing.
                return self.rfile.read1(1 << 20) or b""
        except OSError:
            return b""  # the client is already gone: the WebSocket finds out on its first read
        finally:
            self.rfile.close()

    def detach(self) -> None:
        """Take the connection from the HTTP server for good, and close our copy of it.

        The handler must not touch it again: gevent's handler reads out and closes its socket
        after a request (that read would steal the client's bytes), and gunicorn closes it too.
        """
        self.handler.socket = None
        self.rfile.close()
        self.sock.close()
