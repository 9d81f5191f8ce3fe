"""Direct mode: the gateway hands the client's TCP socket itself to the UNIX server.

ouistiti's ``WEBSOCKET_RT`` build option, with its wire format, so servers written for ouistiti
work behind us: after the 101, the gateway sends *one* message on the UNIX connection whose data is
the client's raw ``struct sockaddr`` (``sockaddr_in``, or ``sockaddr_in6`` for IPv6) and whose
ancillary data is the client socket's file descriptor (``SCM_RIGHTS``); the server then closes the
UNIX connection and speaks WebSocket on the client socket itself. (ouistiti's
``staging/websocket_clirt.c`` sends it, ``utils/utils.c`` ``ouistiti_recvaddr()`` receives it.)

Gateway side: :func:`hand_over`. Server side, the counterpart of ouistiti's libwebsocket:
:func:`accept` / :func:`adopt` return a :class:`DirectClient` (a WebSocket over the passed socket,
with the client's address) or the plain connection when the gateway is piping, after reading the
PROXY header (:mod:`ouistiti_gw.proxy_protocol`) the gateway sends first when asked to;
:func:`client_address` says who the client is either way.

No PROXY header precedes a handover: the handover message itself carries the client's sockaddr,
and ouistiti's servers (``ouistiti_recvaddr()``) expect that message first.
"""
from __future__ import annotations

import array
import contextlib
import errno
import logging
import socket as stdlib_socket
import struct
import weakref
from typing import Callable, Iterator

import gevent.select
from gevent import socket

from .addresses import Address, pack_ip, unpack_ip
from .frames import CloseCode
from .proxy_protocol import ProxyHeader
from .unix import read_proxy_header
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
    family, packed = pack_ip(host)
    if family == socket.AF_INET6:
        flowinfo, scope_id = (address[2], address[3]) if len(address) >= 4 else (0, 0)
        return struct.pack("=H", family) + struct.pack("!HI", port, flowinfo) + packed + struct.pack("=I", scope_id)
    return struct.pack("=H", family) + struct.pack("!H", port) + packed + bytes(8)


#: Where the packed address sits in a ``sockaddr_in`` / ``sockaddr_in6``.
_SOCKADDR_IP = {socket.AF_INET: slice(4, 8), socket.AF_INET6: slice(8, 24)}


def decode_sockaddr(data: bytes) -> Address | None:
    """``(host, port)`` from a raw ``sockaddr_in`` / ``sockaddr_in6``; None for anything else."""
    if len(data) < 4:
        return None
    (family,) = struct.unpack_from("=H", data)
    try:
        host = unpack_ip(family, data[_SOCKADDR_IP[family]])
    except (KeyError, ValueError):
        return None
    return host, struct.unpack_from("!H", data, 2)[0]


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
        self.websocket = WebSocket(sock)

    def receive(self) -> Message | None:
        return self.websocket.receive()

    def recv(self, bufsize: int = 0) -> bytes:
        message = self.websocket.receive()
        return message.data if message is not None else b""

    def receive_streaming(self, deliver: Callable[[bytes, bool, bool], None]) -> bool:
        """The next message, piece by piece as it arrives: see
        :meth:`~ouistiti_gw.websocket.WebSocket.receive_streaming`."""
        return self.websocket.receive_streaming(deliver)

    def send(self, data: bytes) -> int:
        with _broken_pipe():
            self.websocket.send(data, text=is_utf8(data))
        return len(data)

    def send_piece(self, data: bytes, *, text: bool, final: bool) -> None:
        """One piece of a message sent as it comes: see :meth:`~ouistiti_gw.websocket.WebSocket.send_piece`."""
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
    except ConnectionClosed as closed:
        raise BrokenPipeError(errno.EPIPE, str(closed)) from None


def adopt(conn: socket.socket, wait: float = HANDOVER_WAIT_SECONDS, *,
          proxy_header: bool = False) -> socket.socket | DirectClient:
    """Turn a freshly accepted UNIX connection into what the gateway means it to be.

    The one place a server tells the gateway's three kinds of connection apart:

    - direct mode: the gateway's handover message arrives at once; the client socket it carries
      becomes a :class:`DirectClient` and the UNIX connection is closed, as ouistiti's servers do;
    - piping with ``proxy_header`` (the gateway runs with ``proxy_protocol``): the connection must
      start with a PROXY header. It is read, and nothing past it; :func:`client_address` then
      gives its source. A connection without one raises :class:`~ouistiti_gw.proxy_protocol.ProxyProtocolError`:
      a server that took the header when present would believe any client whose first message
      looks like one, so it is asked for, never guessed;
    - piping otherwise (data without a descriptor, or nothing within ``wait`` seconds): ``conn``
      is returned untouched, nothing read from it.
    """
    if gevent.select.select([conn], [], [], wait)[0]:
        handed = _take_handover(conn)
        if handed is not None:
            return handed
    if proxy_header:
        _proxy_headers[conn] = read_proxy_header(conn)
    return conn


def _take_handover(conn: socket.socket) -> DirectClient | None:
    """The :class:`DirectClient` a pending handover message carries; None (nothing read) if the
    first message carries no descriptor."""
    try:
        peeked, ancillary, _, _ = conn.recvmsg(64, _ANCILLARY_SIZE, socket.MSG_PEEK)
    except OSError:
        return None
    peeked_fds = _descriptors(ancillary)
    if not peeked_fds:
        return None
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


#: PROXY headers read by :func:`adopt`, by connection (gone with it).
_proxy_headers: "weakref.WeakKeyDictionary[socket.socket, ProxyHeader]" = weakref.WeakKeyDictionary()


def proxy_header_of(conn: socket.socket | DirectClient) -> ProxyHeader | None:
    """The PROXY header :func:`adopt` read on ``conn`` (its TLVs: Host, path, user...), if any."""
    return _proxy_headers.get(conn) if not isinstance(conn, DirectClient) else None


def client_address(conn: socket.socket | DirectClient) -> Address | None:
    """The browser's ``(host, port)`` as the gateway told it: the handover's sockaddr in direct
    mode, the PROXY header's source when piping with one; None when the gateway did not say."""
    if isinstance(conn, DirectClient):
        return conn.address
    header = proxy_header_of(conn)
    return header.source if header is not None else None


def accept(listener: socket.socket, wait: float = HANDOVER_WAIT_SECONDS, *,
           proxy_header: bool = False) -> socket.socket | DirectClient:
    """``listener.accept()`` then :func:`adopt`. Call it where a slow client may wait: it may block
    up to ``wait`` seconds for a client that sends nothing."""
    conn, _ = listener.accept()
    return adopt(conn, wait, proxy_header=proxy_header)


def _descriptors(ancillary: list) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % _FD_SIZE])
    return list(fds)
