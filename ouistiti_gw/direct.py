"""Direct mode: the gateway hands the client's TCP socket itself to the UNIX server.

ouistiti's ``WEBSOCKET_RT`` build option, with its wire format, so servers written for ouistiti
work behind us: after the 101, the gateway sends *one* message on the UNIX connection whose data is
the client's raw ``struct sockaddr`` (``sockaddr_in``, or ``sockaddr_in6`` for IPv6) and whose
ancillary data is the client socket's file descriptor (``SCM_RIGHTS``); the server then closes the
UNIX connection and speaks WebSocket on the client socket itself. (ouistiti's
``staging/websocket_clirt.c`` sends it, ``utils/utils.c`` ``ouistiti_recvaddr()`` receives it.)

Gateway side: :func:`hand_over`. Server side, the counterpart of ouistiti's libwebsocket:
:func:`accept` / :func:`adopt` return a :class:`DirectClient` (a WebSocket over the passed socket,
with the client's address) or the plain connection when the gateway is piping.
"""
from __future__ import annotations

import array
import errno
import logging
import socket as stdlib_socket
import struct

import gevent.select
from gevent import socket

from .frames import CloseCode
from .utf8 import is_utf8
from .websocket import ConnectionClosed, Message, WebSocket

log = logging.getLogger(__name__)

#: How long the gateway waits for the server to take the socket (it closes the UNIX connection).
HANDOVER_TIMEOUT_SECONDS = 5.0
#: How long a server waits, after accepting, for a handover before it treats the connection as piped.
HANDOVER_WAIT_SECONDS = 0.5
_FD_SIZE = array.array("i").itemsize
_ANCILLARY_SIZE = stdlib_socket.CMSG_SPACE(4 * _FD_SIZE)


# -- the wire format ----------------------------------------------------------------------------

def encode_sockaddr(address: tuple) -> bytes:
    """The raw ``struct sockaddr_in`` / ``sockaddr_in6`` of a ``getpeername()`` address."""
    host, port = address[:2]
    if ":" in host:
        flowinfo, scope_id = (address[2], address[3]) if len(address) >= 4 else (0, 0)
        return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, flowinfo)
                + socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", scope_id))
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


def decode_sockaddr(data: bytes) -> tuple[str, int] | None:
    """``(host, port)`` from a raw ``sockaddr_in`` / ``sockaddr_in6``; None for anything else."""
    if len(data) < 2:
        return None
    (family,) = struct.unpack_from("=H", data)
    if family == socket.AF_INET and len(data) >= 8:
        return socket.inet_ntoa(data[4:8]), struct.unpack_from("!H", data, 2)[0]
    if family == socket.AF_INET6 and len(data) >= 24:
        return socket.inet_ntop(socket.AF_INET6, data[8:24]), struct.unpack_from("!H", data, 2)[0]
    return None


# -- gateway side -------------------------------------------------------------------------------

def hand_over(backend: socket.socket, client: socket.socket, timeout: float = HANDOVER_TIMEOUT_SECONDS) -> bool:
    """Send ``client`` to the server over ``backend``; True once the server has taken it.

    The server takes the descriptor, then closes the UNIX connection (end of stream here). A
    server that closes without reading the message drops the descriptor with it: Linux then
    reports ECONNRESET, and the caller still owns the client. No answer within ``timeout`` counts
    as taken (the server holds the connection open, ouistiti's servers do not).
    """
    fds = array.array("i", [client.fileno()])
    backend.sendmsg([encode_sockaddr(client.getpeername())], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    backend.settimeout(timeout)
    try:
        return backend.recv(1) == b""
    except stdlib_socket.timeout:
        log.warning("server kept the UNIX connection open after the handover")
        return True
    except OSError as error:
        if error.errno in (errno.ECONNRESET, errno.EPIPE):
            return False
        raise


# -- server side --------------------------------------------------------------------------------

class DirectClient:
    """A browser's WebSocket, handed over by the gateway in direct mode.

    Looks enough like a socket for simple servers: :meth:`recv` returns the next message's payload
    (``b""`` once the client has closed), :meth:`send` / :meth:`sendall` send one message (text
    when it is valid UTF-8, binary otherwise, as the gateway does when piping). Pings, pongs and
    the closing handshake are answered by the :class:`~ouistiti_gw.websocket.WebSocket` inside.
    """

    def __init__(self, sock: socket.socket, address: tuple[str, int] | None) -> None:
        self.sock = sock
        self.address = address
        self.websocket = WebSocket(sock, sock.makefile("rb", -1))

    def receive(self) -> Message | None:
        return self.websocket.receive()

    def recv(self, bufsize: int = 0) -> bytes:
        message = self.websocket.receive()
        return message.data if message is not None else b""

    def send(self, data: bytes) -> int:
        try:
            self.websocket.send(data, text=is_utf8(data))
        except ConnectionClosed as closed:
            raise BrokenPipeError(errno.EPIPE, str(closed)) from None
        return len(data)

    sendall = send

    def fileno(self) -> int:
        return self.sock.fileno()

    def shutdown(self, how: int) -> None:
        self.close(CloseCode.GOING_AWAY, "server shutting down")

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if self.sock.fileno() == -1:
            return
        self.websocket.close(code, reason)
        self.websocket.rfile.close()
        self.sock.close()


def adopt(conn: socket.socket, wait: float = HANDOVER_WAIT_SECONDS) -> socket.socket | DirectClient:
    """Turn a freshly accepted UNIX connection into what the gateway means it to be.

    In direct mode the gateway's handover message arrives at once: the client socket it carries
    becomes a :class:`DirectClient` and the UNIX connection is closed, as ouistiti's servers do.
    Otherwise (data without a descriptor, or nothing within ``wait`` seconds) ``conn`` is returned
    untouched, nothing read from it: the gateway is piping.
    """
    ready = gevent.select.select([conn], [], [], wait)[0]
    if not ready:
        return conn
    try:
        peeked, ancillary, _, _ = conn.recvmsg(64, _ANCILLARY_SIZE, socket.MSG_PEEK)
    except OSError:
        return conn
    peeked_fds = _descriptors(ancillary)
    if not peeked_fds:
        return conn
    for fd in peeked_fds:  # peeking installed copies of the descriptors: drop them
        stdlib_socket.close(fd)
    data, ancillary, _, _ = conn.recvmsg(64, _ANCILLARY_SIZE)
    fds = _descriptors(ancillary)
    for extra in fds[1:]:
        stdlib_socket.close(extra)
    conn.close()
    client = socket.socket(fileno=fds[0])
    address = decode_sockaddr(data)
    log.debug("direct client %s handed over", address)
    return DirectClient(client, address)


def accept(listener: socket.socket, wait: float = HANDOVER_WAIT_SECONDS) -> socket.socket | DirectClient:
    """``listener.accept()`` then :func:`adopt`. Call it where a slow client may wait: it may block
    up to ``wait`` seconds for a client that sends nothing."""
    conn, _ = listener.accept()
    return adopt(conn, wait)


def _descriptors(ancillary: list) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % _FD_SIZE])
    return list(fds)
