"""The server side of the gateway, for UNIX servers written in Python: what a connection is.

A connection accepted on the socket file is one of three things, and :func:`accept` /
:func:`adopt` tell them apart: in direct mode, the client's TCP socket handed over by the gateway
(:mod:`ouistiti_gw.backend.handover`), returned as a :class:`DirectClient` (a WebSocket, the
counterpart of ouistiti's libwebsocket, with the client's address); when piping, the plain
connection, or a :class:`PipedConnection` carrying the PROXY header
(:mod:`ouistiti_gw.core.proxy_protocol`) the gateway sends first when asked to.
:func:`client_address` says who the client is either way.

A :class:`DirectClient` speaks WebSocket through the same I/O shell and protocol core as the
gateway (:class:`~ouistiti_gw.green.websocket.WebSocket` over :class:`~ouistiti_gw.core.protocol.Protocol`):
its receive returns None (``recv``: ``b""``) once the client is gone, its send raises
BrokenPipeError, as a socket's would.
"""
from __future__ import annotations

import contextlib
import errno
import logging
from typing import Callable, Iterator

from gevent import socket
from gevent.socket import wait_read

from ..core.addresses import Address
from ..core.frames import CloseCode
from ..core.proxy_protocol import ProxyHeader
from ..core.utf8 import is_utf8
from ..green.websocket import Message, WebSocket, WebSocketClosed
from .handover import take_handover
from .proxy_header import read_proxy_header

log = logging.getLogger(__name__)

#: How long a server waits, after accepting, for a handover before it treats the connection as piped.
HANDOVER_WAIT_SECONDS = 0.5


class DirectClient:
    """A browser's WebSocket, handed over by the gateway in direct mode.

    Looks enough like a socket for simple servers: :meth:`recv` returns the next message's payload
    (``b""`` once the client has closed), :meth:`send` / :meth:`sendall` send one message (text
    when it is valid UTF-8, binary otherwise, as the gateway does when piping). Pings, pongs and
    the closing handshake are answered by the :class:`~ouistiti_gw.green.websocket.WebSocket` inside.
    """

    def __init__(self, sock: socket.socket, address: tuple[str, int] | None) -> None:
        self.sock = sock
        self.address = address
        self.websocket = WebSocket(sock)

    def receive(self) -> Message | None:
        return self.websocket.receive()

    def recv(self, bufsize: int = 0) -> bytes:
        message = self.websocket.receive()
        return message.data if message is not None else b""

    def receive_streaming(self, deliver: Callable[[bytes, bool, bool], None]) -> bool:
        """The next message, piece by piece as it arrives: see
        :meth:`~ouistiti_gw.green.websocket.WebSocket.receive_streaming`."""
        return self.websocket.receive_streaming(deliver)

    def send(self, data: bytes) -> int:
        with _broken_pipe():
            self.websocket.send(data, text=is_utf8(data))
        return len(data)

    def send_piece(self, data: bytes, *, text: bool, final: bool) -> None:
        """One piece of a message sent as it comes: see :meth:`~ouistiti_gw.green.websocket.WebSocket.send_piece`."""
        with _broken_pipe():
            self.websocket.send_piece(data, text=text, final=final)

    sendall = send

    def fileno(self) -> int:
        return self.sock.fileno()

    def shutdown(self, how: int) -> None:
        self.close(CloseCode.GOING_AWAY, "server shutting down")

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if self.sock.fileno() == -1:
            return
        self.websocket.close(code, reason)
        self.sock.close()


@contextlib.contextmanager
def _broken_pipe() -> Iterator[None]:
    """A closed WebSocket fails a send as a closed socket would: EPIPE."""
    try:
        yield
    except WebSocketClosed as closed:
        raise BrokenPipeError(errno.EPIPE, str(closed)) from None


class PipedConnection(socket.socket):
    """A piped connection that began with a PROXY header: the socket, and what the header said."""

    proxy_header: ProxyHeader | None = None


def _readable_within(conn: socket.socket, seconds: float) -> bool:
    """Whether ``conn`` has something to read within ``seconds``, waiting on gevent's loop
    (epoll): ``select(2)`` cannot watch a descriptor above 1023, which a server with a thousand
    clients has (its adopt() then failed, and the session with it)."""
    try:
        wait_read(conn.fileno(), timeout=seconds)
    except socket.timeout:
        return False
    return True


def adopt(conn: socket.socket, wait: float = HANDOVER_WAIT_SECONDS, *,
          proxy_header: bool = False) -> socket.socket | DirectClient:
    """Turn a freshly accepted UNIX connection into what the gateway means it to be.

    The one place a server tells the gateway's three kinds of connection apart:

    - direct mode: the gateway's handover message arrives at once; the client socket it carries
      becomes a :class:`DirectClient` and the UNIX connection is closed, as ouistiti's servers do;
    - piping with ``proxy_header`` (the gateway runs with ``proxy_protocol``): the connection must
      start with a PROXY header. It is read, and nothing past it; the connection comes back as
      a :class:`~ouistiti_gw.backend.direct.PipedConnection` (the same socket, which ``conn`` no
      longer is), whose source :func:`client_address` gives. A connection without one raises
      :class:`~ouistiti_gw.core.proxy_protocol.ProxyProtocolError`:
      a server that took the header when present would believe any client whose first message
      looks like one, so it is asked for, never guessed;
    - piping otherwise (data without a descriptor, or nothing within ``wait`` seconds): ``conn``
      is returned untouched, nothing read from it.
    """
    if _readable_within(conn, wait):
        handed = take_handover(conn)
        if handed is not None:
            client, address = handed
            log.debug("direct client %s handed over", address)
            return DirectClient(client, address)
    if proxy_header:
        header = read_proxy_header(conn)
        timeout = conn.gettimeout()
        piped = PipedConnection(conn.family, conn.type, conn.proto, fileno=conn.detach())
        piped.settimeout(timeout)
        piped.proxy_header = header
        return piped
    return conn


def proxy_header_of(conn: socket.socket | DirectClient) -> ProxyHeader | None:
    """The PROXY header :func:`adopt` read on ``conn`` (its TLVs: Host, path, user...), if any."""
    return conn.proxy_header if isinstance(conn, PipedConnection) else None


def client_address(conn: socket.socket | DirectClient) -> Address | None:
    """The browser's ``(host, port)`` as the gateway told it: the handover's sockaddr in direct
    mode, the PROXY header's source when piping with one; None when the gateway did not say."""
    if isinstance(conn, DirectClient):
        return conn.address
    header = proxy_header_of(conn)
    return header.source if header is not None else None


def client_user(conn: socket.socket | DirectClient) -> str | None:
    """The user the wrapped app's authorization let in (``auth_request``, ``authorize``), as the
    PROXY v2 header said (or ``REMOTE_USER``, set by an auth middleware in front); its groups are
    ``proxy_header_of(conn).groups``. None when the gateway did not say: no user, no v2 header,
    or direct mode, whose handover (ouistiti's wire format) has no room for one."""
    header = proxy_header_of(conn)
    return header.user if header is not None else None


def accept(listener: socket.socket, wait: float = HANDOVER_WAIT_SECONDS, *,
           proxy_header: bool = False) -> socket.socket | DirectClient:
    """``listener.accept()`` then :func:`adopt`. Call it where a slow client may wait: it may block
    up to ``wait`` seconds for a client that sends nothing."""
    conn, _ = listener.accept()
    return adopt(conn, wait, proxy_header=proxy_header)
