"""The PROXY header a UNIX connection from the gateway starts with, read on the server's side
without consuming a byte past it (the codec is :mod:`ouistiti_gw.core.proxy_protocol`)."""
from __future__ import annotations

import struct
from typing import Any

from gevent import socket

from ..core.proxy_protocol import (
    MIN_V1_LENGTH,
    SIGNATURE_V1,
    V2_FIXED_LENGTH,
    IncompleteHeader,
    ProxyHeader,
    ProxyProtocolError,
    could_be_header,
    parse,
)
from ..green.sockio import StreamEnded, recv_exactly
from ..green.unix import packet_size

#: How much of a stream :func:`read_proxy_header` peeks at first: a whole header, usually.
_PEEK_SIZE = 4096
#: How long :func:`read_proxy_header` waits for the rest of a header that has started.
HEADER_TIMEOUT_SECONDS = 5.0


def read_proxy_header(sock: Any, timeout: float = HEADER_TIMEOUT_SECONDS) -> ProxyHeader:
    """Read the PROXY header (:mod:`ouistiti_gw.core.proxy_protocol`) the connection starts with, and
    nothing after it: a stream socket is peeked first; on a SOCK_SEQPACKET socket the header must
    be a packet of its own.

    Raises :class:`~ouistiti_gw.core.proxy_protocol.ProxyProtocolError` (nothing consumed) if the
    connection does not start with one, and if it is malformed, cut short by the peer, or not
    complete within ``timeout``.
    """
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        if sock.type == socket.SOCK_SEQPACKET:
            return _read_header_packet(sock)
        return _read_header_stream(sock)
    except (socket.timeout, TimeoutError):
        raise ProxyProtocolError(f"PROXY header not complete within {timeout:g} s") from None
    except StreamEnded:
        raise ProxyProtocolError("connection closed inside the PROXY header") from None
    finally:
        sock.settimeout(previous)


def _read_header_packet(sock: Any) -> ProxyHeader:
    size = packet_size(sock)
    prefix = sock.recv(16, socket.MSG_PEEK)
    if not size or not could_be_header(prefix):
        raise ProxyProtocolError("connection does not start with a PROXY header")
    packet = sock.recv(size)
    try:
        header, used = parse(packet)
    except IncompleteHeader:
        raise ProxyProtocolError("PROXY header packet is incomplete") from None
    if used != len(packet):
        raise ProxyProtocolError("PROXY header packet carries other data too")
    return header


def _read_header_stream(sock: Any) -> ProxyHeader:
    peeked = sock.recv(_PEEK_SIZE, socket.MSG_PEEK)
    if not peeked or not could_be_header(peeked):
        raise ProxyProtocolError("connection does not start with a PROXY header")
    try:
        header, used = parse(peeked)  # the usual case: the whole header is there already
    except IncompleteHeader:
        header, used = _read_header_slowly(sock)
        return header
    recv_exactly(sock, used)
    return header


def _read_header_slowly(sock: Any) -> tuple[ProxyHeader, int]:
    """A header arriving in pieces: read only as far as the bytes so far prove it reaches."""
    data = recv_exactly(sock, min(MIN_V1_LENGTH, V2_FIXED_LENGTH))
    while True:
        try:
            return parse(data)
        except IncompleteHeader:
            pass
        if data.startswith(SIGNATURE_V1):
            data += recv_exactly(sock, 1)  # a v1 line ends at CRLF: no byte past it
        elif len(data) < V2_FIXED_LENGTH:
            data += recv_exactly(sock, V2_FIXED_LENGTH - len(data))
        else:
            (length,) = struct.unpack_from("!H", data, 14)
            data += recv_exactly(sock, V2_FIXED_LENGTH + length - len(data))
