"""ouistiti_gw.green.unix on real UNIX sockets: why a connection fails, whole packets, packet sizes."""
from __future__ import annotations

import errno
import os
import socket

import pytest

from ouistiti_gw.errors import GatewayError
from ouistiti_gw.green.unix import PACKET_OVERHEAD, BackendUnavailable, connect_unix, largest_packet, recv_packet


def listening(path: str, sock_type: int = socket.SOCK_STREAM, backlog: int = 8) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, sock_type)
    server.bind(path)
    server.listen(backlog)
    return server


def refusal(path: str, **options) -> BackendUnavailable:
    with pytest.raises(BackendUnavailable) as raised:
        connect_unix(path, **options).close()
    return raised.value


def test_a_missing_socket_is_404(docroot):
    unavailable = refusal(os.path.join(docroot, "nobody"))
    assert (unavailable.status, unavailable.errno) == (404, errno.ENOENT)
    assert isinstance(unavailable, GatewayError)


def test_a_file_that_is_not_a_socket_is_403(docroot):
    path = os.path.join(docroot, "file")
    open(path, "w").close()
    assert refusal(path).status == 403


def test_a_socket_nobody_listens_on_is_503_refused(docroot):
    path = os.path.join(docroot, "stale")
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind(path)  # bound, closed: the file stays
    unavailable = refusal(path)
    assert (unavailable.status, unavailable.errno) == (503, errno.ECONNREFUSED)


@pytest.mark.parametrize("sock_type", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET], ids=["stream", "seqpacket"])
def test_connects_with_the_servers_socket_type(docroot, sock_type):
    path = os.path.join(docroot, "server")
    with listening(path, sock_type):
        for socket_class in (socket.socket, None):  # a plain socket (samples) or gevent's (the gateway)
            options = {"socket_class": socket_class} if socket_class else {}
            with connect_unix(path, **options) as sock:
                assert sock.type == sock_type
                assert sock.gettimeout() is None  # the connect timeout does not outlive the connect


def test_a_full_backlog_is_503_not_a_hang(docroot):
    path = os.path.join(docroot, "busy")
    clients = []
    with listening(path, backlog=0):
        try:
            with pytest.raises(BackendUnavailable) as raised:
                for _ in range(16):  # nobody accepts: the backlog fills within a few
                    clients.append(connect_unix(path, timeout=1.0))
        finally:
            for client in clients:
                client.close()
    assert raised.value.status == 503


def test_a_packet_is_read_whole_whatever_its_size():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with left, right:
        big = os.urandom(largest_packet(left))
        left.send(b"x")
        left.send(big)
        assert recv_packet(right) == b"x"
        assert recv_packet(right) == big
        left.close()
        assert recv_packet(right) == b""


def test_the_largest_packet_is_the_kernels_limit():
    """One byte more than :func:`largest_packet` is refused (EMSGSIZE): the limit is exact."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with left, right:
        left.setblocking(False)
        limit = largest_packet(left)
        assert limit == left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - PACKET_OVERHEAD
        with pytest.raises(OSError) as too_big:
            left.send(bytes(limit + 1))
        assert too_big.value.errno == errno.EMSGSIZE
        assert left.send(bytes(limit)) == limit
