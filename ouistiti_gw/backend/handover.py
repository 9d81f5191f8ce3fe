"""Direct mode's wire format: the gateway hands the client's TCP socket itself to the UNIX server.

ouistiti's ``WEBSOCKET_RT`` build option, with its wire format, so servers written for ouistiti
work behind us: after the 101, the gateway sends *one* message on the UNIX connection whose data is
the client's raw ``struct sockaddr`` (``sockaddr_in``, or ``sockaddr_in6`` for IPv6) and whose
ancillary data is the client socket's file descriptor (``SCM_RIGHTS``); the server then closes the
UNIX connection and speaks WebSocket on the client socket itself. (ouistiti's
``staging/websocket_clirt.c`` sends it, ``utils/utils.c`` ``ouistiti_recvaddr()`` receives it.)

Both ends are here: :func:`hand_over` (the gateway's) and :func:`take_handover` (the server's,
behind :func:`ouistiti_gw.backend.direct.adopt`, the API servers import). No PROXY header precedes a
handover: the message itself carries the client's sockaddr, and ouistiti's servers expect it first.
"""
from __future__ import annotations

import errno
import logging
import socket as stdlib_socket
import struct

from gevent import socket

from ..core.addresses import Address, pack_ip, unpack_ip
from ..green.fdpass import close_fds, receive_fds, send_fds

log = logging.getLogger(__name__)

#: How long the gateway waits for the server to take the socket (it closes the UNIX connection).
HANDOVER_TIMEOUT_SECONDS = 5.0
#: Descriptors a handover message may carry (the gateway sends one; the others are closed).
_MAX_FDS = 4


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


def hand_over(backend: socket.socket, client: socket.socket, timeout: float = HANDOVER_TIMEOUT_SECONDS) -> bool:
    """Send ``client`` to the server over ``backend``; True once the server has taken it.

    The server takes the descriptor, then closes the UNIX connection (end of stream here). A
    server that closes without reading the message drops the descriptor with it: Linux then
    reports ECONNRESET, and the caller still owns the client. No answer within ``timeout`` counts
    as taken (the server holds the connection open, ouistiti's servers do not).
    """
    send_fds(backend, encode_sockaddr(client.getpeername()), [client.fileno()])
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


def take_handover(conn: socket.socket) -> tuple[socket.socket, Address | None] | None:
    """The client socket and address a pending handover message on ``conn`` carries (``conn`` is
    then closed, as ouistiti's servers do); None, nothing read, if the first message carries no
    descriptor (the gateway is piping), or more than a handover may (not the gateway's)."""
    try:
        _, peeked, _ = receive_fds(conn, 64, _MAX_FDS, socket.MSG_PEEK)
    except OSError:
        return None
    if not peeked:
        return None
    close_fds(peeked)  # peeking installed copies of the descriptors: drop them
    data, fds, _ = receive_fds(conn, 64, _MAX_FDS)
    close_fds(fds[1:])
    conn.close()
    return socket.socket(fileno=fds[0]), decode_sockaddr(data)
