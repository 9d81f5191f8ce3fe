"""The server side's adopt(): a handover, a piped connection with its PROXY header, or a plain one.

Real socket pairs in one process (no gateway): the handover through ``handover.hand_over``
itself, so both ends of the wire format meet.
"""
from __future__ import annotations

import os
import resource

import gevent
import pytest
from gevent import socket

from ouistiti_gw.backend.direct import DirectClient, PipedConnection, adopt, client_address, proxy_header_of
from ouistiti_gw.backend.handover import hand_over
from ouistiti_gw.core.proxy_protocol import ProxyProtocolError, encode_v1

SOURCE, DESTINATION = ("192.0.2.7", 40000), ("127.0.0.1", 8080)


def test_a_piped_connection_carries_its_proxy_header_and_nothing_past_it_is_read():
    server, gateway = socket.socketpair()
    with gateway:
        gateway.sendall(encode_v1(SOURCE, DESTINATION) + b"hello")
        server.settimeout(3)
        conn = adopt(server, wait=0.1, proxy_header=True)
        with conn:
            assert isinstance(conn, PipedConnection) and conn.gettimeout() == 3
            assert proxy_header_of(conn).destination == DESTINATION
            assert client_address(conn) == SOURCE
            assert conn.recv(100) == b"hello"


def test_without_proxy_header_the_connection_comes_back_untouched():
    server, gateway = socket.socketpair()
    with server, gateway:
        gateway.sendall(encode_v1(SOURCE, DESTINATION))
        assert adopt(server, wait=0.1) is server
        assert proxy_header_of(server) is None and client_address(server) is None
        assert server.recv(5) == b"PROXY"


def test_a_header_asked_for_and_missing_is_refused():
    server, gateway = socket.socketpair()
    with server, gateway:
        gateway.sendall(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(ProxyProtocolError):
            adopt(server, wait=0.1, proxy_header=True)


@pytest.fixture
def tcp_pair():
    """A browser's TCP connection and the gateway's end of it (the client socket handed over)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        browser = socket.create_connection(listener.getsockname())
        client, _ = listener.accept()
    with browser, client:
        yield browser, client


def test_a_handed_over_client_becomes_a_direct_client_with_its_address(tcp_pair):
    browser, client = tcp_pair
    server, gateway = socket.socketpair()
    with gateway:
        taken = gevent.spawn(hand_over, gateway, client)
        direct = adopt(server, wait=1)
        assert taken.get(timeout=3) is True
        assert isinstance(direct, DirectClient) and server.fileno() == -1
        assert client_address(direct) == browser.getsockname() and proxy_header_of(direct) is None
        direct.close()


@pytest.fixture
def descriptors_past_1023():
    """Hold descriptors up to 1100, so the next sockets get numbers ``select(2)`` cannot watch."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the descriptor limit ({hard}) is too low for descriptors past 1023")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    held = []
    while not held or held[-1] < 1100:
        held.append(os.dup(0))
    yield
    for fd in held:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_server_with_a_thousand_clients_still_adopts(descriptors_past_1023, tcp_pair):
    """A sample server with 1000 sessions has descriptors past 1023: the handover and the plain
    connection are told apart there too (select(2) raised "filedescriptor out of range")."""
    client = tcp_pair[1]
    server, gateway = socket.socketpair()
    quiet_server, quiet_gateway = socket.socketpair()
    with gateway, quiet_server, quiet_gateway:
        assert min(server.fileno(), quiet_server.fileno()) > 1023
        taken = gevent.spawn(hand_over, gateway, client)
        direct = adopt(server, wait=1)
        assert taken.get(timeout=3) is True and isinstance(direct, DirectClient)
        direct.close()
        assert adopt(quiet_server, wait=0.1) is quiet_server
