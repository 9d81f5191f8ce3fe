"""UNIX-domain sockets as the gateway and the servers behind it use them; each rule once.

- :func:`connect_unix`: a stream socket, or a ``SOCK_SEQPACKET`` one when that is what the server
  listens on; why not as an HTTP status (:class:`BackendUnavailable`). The CLI and the sample
  servers probe with it; the gateway connects with :func:`connect_opened`, to the socket file
  :mod:`ouistiti_gw.gateway.lookup` opened.
- :func:`recv_packet`: one ``SOCK_SEQPACKET`` packet whole, whatever its size.
- :func:`largest_packet`, :func:`enlarge_send_buffer`, :func:`max_packet_size`: how big a packet
  may be (Linux decides it from the send buffer).

Works on plain and gevent sockets alike (the socket class is the caller's: a sample server probes
its path before gevent's hub exists).
"""
from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import stat
from typing import Any

from gevent import socket

from ..errors import GatewayError

#: ``sizeof(sockaddr_un.sun_path)`` on Linux, minus the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
#: Connecting to a UNIX socket whose backlog is full must not hang the handshake.
CONNECT_TIMEOUT_SECONDS = 5.0
#: Linux refuses a SOCK_SEQPACKET packet longer than the sender's SO_SNDBUF less this (EMSGSIZE).
PACKET_OVERHEAD = 32


def fits_sun_path(path: str) -> bool:
    """Whether ``path`` fits a UNIX socket address: ``bind`` and ``connect`` refuse a longer one
    (the sample servers check their own path with this rule too)."""
    return len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES


class BackendUnavailable(GatewayError):
    """The UNIX server cannot be reached; ``status`` is the HTTP answer, ``errno`` the system's
    (None when the cause is not an error of the system, such as a path that is not a socket)."""

    def __init__(self, status: int, reason: str, error_number: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.errno = error_number


_CONNECT_ERRORS = {
    errno.ENOENT: (404, "no such socket"),
    errno.ENOTDIR: (404, "no such socket"),
    errno.EACCES: (403, "permission denied"),
    errno.EPERM: (403, "permission denied"),
    errno.ECONNREFUSED: (503, "nobody is listening"),
    errno.EAGAIN: (503, "server backlog is full"),
    errno.EMFILE: (503, "the gateway is out of file descriptors"),
    errno.ENFILE: (503, "the system is out of file descriptors"),
}


def unavailable(error: OSError) -> BackendUnavailable:
    """The refusal an error of the system means (ENOENT: 404, EACCES: 403, EMFILE: 503...)."""
    if isinstance(error, stdlib_socket.timeout):
        return BackendUnavailable(503, "connection timed out", errno.ETIMEDOUT)
    status, reason = _CONNECT_ERRORS.get(error.errno or 0, (503, error.strerror or str(error)))
    return BackendUnavailable(status, reason, error.errno)


def connect_unix(path: str, timeout: float = CONNECT_TIMEOUT_SECONDS,
                 socket_class: Any = socket.socket) -> Any:
    """Connect to the UNIX server at ``path``, as a stream socket or, if it is one, a SEQPACKET socket.

    Raises :class:`BackendUnavailable` with the HTTP status that describes why not.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise unavailable(error) from None
    return _connect(path, mode, timeout, socket_class)


def connect_opened(fd: int, mode: int, timeout: float = CONNECT_TIMEOUT_SECONDS,
                   socket_class: Any = socket.socket) -> Any:
    """Connect to the socket file that ``fd`` holds open (``O_PATH``; ``mode`` from its
    ``fstat``), as :func:`connect_unix` does, whatever names the file has by now.

    ``/proc/self/fd/N`` is the file itself, not a path looked up again: the kernel follows it to
    the descriptor's inode and connects to the server bound to that inode.
    """
    return _connect(f"/proc/self/fd/{fd}", mode, timeout, socket_class)


def _connect(address: str, mode: int, timeout: float, socket_class: Any) -> Any:
    if not stat.S_ISSOCK(mode):
        raise BackendUnavailable(403, "not a socket")
    for sock_type in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
        sock = None
        try:
            sock = socket_class(socket.AF_UNIX, sock_type)  # out of file descriptors: EMFILE, 503
            _connect_now_or_wait(sock, address, timeout)
            return sock
        except OSError as error:
            if sock is not None:
                sock.close()
            if error.errno == errno.EPROTOTYPE:
                continue  # the server's socket is of the other type
            raise unavailable(error) from None
    raise BackendUnavailable(403, "socket type not supported (stream or seqpacket only)")


def _connect_now_or_wait(sock: Any, address: str, timeout: float) -> None:
    """Connect ``sock``, left blocking (timeout None). A UNIX connect completes or fails at once,
    so it is first tried as one non-blocking call, without gevent's connect loop and its timer;
    only a server whose backlog is full (EAGAIN) is waited for, up to ``timeout``."""
    sock.settimeout(0.0)
    try:
        sock.connect(address)
    except BlockingIOError:
        sock.settimeout(timeout)
        sock.connect(address)
    finally:
        sock.settimeout(None)


# -- SOCK_SEQPACKET packets ---------------------------------------------------------------------

#: What a peek writes is never read: one byte of buffer serves every caller.
_PEEK_BUFFER = bytearray(1)


def packet_size(sock: Any) -> int:
    """The length of the next packet on the SOCK_SEQPACKET ``sock`` (0: the peer closed), left
    unread. MSG_TRUNC makes recv report the packet's full length, however little it copies."""
    return sock.recv_into(_PEEK_BUFFER, 1, socket.MSG_PEEK | socket.MSG_TRUNC)


def recv_packet(sock: Any) -> bytes:
    """One whole SOCK_SEQPACKET packet, whatever its size, with no huge buffer up front;
    ``b""`` when the peer closed (an empty packet reads the same, and is consumed)."""
    return sock.recv(max(packet_size(sock), 1))


def largest_packet(sock: Any) -> int:
    """The largest packet the connected SOCK_SEQPACKET ``sock`` can send, as Linux decides:
    ``SO_SNDBUF`` - 32 (208 KiB with the default send buffer).

    Past about 4 MiB (a send buffer raised that far) the kernel may also fail to allocate a
    packet in one piece; such a message is still refused with 1009, once it is complete.
    """
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - PACKET_OVERHEAD


def enlarge_send_buffer(sock: Any) -> int:
    """Set SO_SNDBUF as large as allowed (the kernel caps it at net.core.wmem_max and reports
    twice the value set); return it."""
    try:
        with open("/proc/sys/net/core/wmem_max", "rb") as limit:
            wanted = int(limit.read())
    except (OSError, ValueError):
        wanted = 1 << 22
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wanted)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def max_packet_size(sock_type: int = socket.SOCK_SEQPACKET) -> int:
    """The largest packet a socket with :func:`enlarge_send_buffer` can send.

    Linux refuses a packet longer than SO_SNDBUF - 32 (EMSGSIZE) and, above about 4 MiB, one it
    cannot allocate in one piece (ENOBUFS), so the value is measured once on a socket pair rather
    than derived.
    """
    def fits(size: int) -> bool:
        left, right = stdlib_socket.socketpair(socket.AF_UNIX, sock_type)
        try:
            enlarge_send_buffer(left)
            left.setblocking(False)
            left.send(bytes(size))
            return True
        except OSError:
            return False
        finally:
            left.close()
            right.close()

    low, high = 1, 1 << 25
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low
