"""File descriptors passed over a UNIX socket (``SCM_RIGHTS``), both ways, for every part that does.

Direct mode hands the client's socket to the UNIX server (:mod:`ouistiti_gw.backend.handover`), a reload
moves each session's two sockets to the successor (:mod:`ouistiti_gw.reload.migration`), and the CLI's
master and its workers pass the listening socket and the ends of the takeover channel
(:mod:`ouistiti_gw.reload.supervisor`). The rule for what arrives is kept here once: every descriptor
received is either returned, the caller's to close from then on, or closed here. A message that
brought more than the caller allowed comes back marked ``truncated`` with none at all (the
kernel closed those that did not fit, ``MSG_CTRUNC``; the others are closed here), so a peer
cannot make a process hold descriptors it did not ask for.

The standard library's ``socket.send_fds`` / ``socket.recv_fds`` are close, but ``recv_fds``
drops its ``flags`` argument (Python 3.11: no ``MSG_PEEK``) and leaves ``MSG_CTRUNC`` and the
closing to every caller. Standard library only, on any socket object with ``recvmsg``: a gevent
socket waits cooperatively, with its timeout; the supervisor's master, which loads no gevent,
uses plain sockets.
"""
from __future__ import annotations

import array
import os
import socket
from typing import Any, Iterable, Sequence

_FD_SIZE = array.array("i").itemsize


def send_fds(sock: Any, data: bytes, fds: Sequence[int] = ()) -> None:
    """Send all of ``data`` with copies of ``fds`` riding on its first byte (one packet on a
    ``SOCK_SEQPACKET`` socket). Raises OSError as ``sendmsg`` does; the descriptors stay ours."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sent = sock.sendmsg([data], ancillary)
    if sent < len(data):  # a stream socket took only part of it: the rest carries no descriptor
        sock.sendall(data[sent:])


def receive_fds(sock: Any, size: int, max_fds: int, flags: int = 0) -> tuple[bytes, list[int], bool]:
    """``(data, fds, truncated)``: up to ``size`` bytes and the descriptors that came with them,
    which are the caller's to close. ``truncated``: the message carried more than ``max_fds``
    descriptors; then ``fds`` is empty, every one of them closed. With ``MSG_PEEK`` in ``flags``
    the data stays queued, and the descriptors returned are copies (close them too)."""
    data, ancillary, message_flags, _ = sock.recvmsg(size, socket.CMSG_LEN(max_fds * _FD_SIZE), flags)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % _FD_SIZE])
    if message_flags & socket.MSG_CTRUNC:
        close_fds(fds)
        return data, [], True
    return data, list(fds), False


def close_fds(fds: Iterable[int]) -> None:
    """Close every descriptor of ``fds`` (received ones the caller does not keep)."""
    for fd in fds:
        os.close(fd)
