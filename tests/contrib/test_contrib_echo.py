"""websocket_echo: every byte comes back to its sender, whatever the size."""
import os
import socket
import threading

import pytest


@pytest.fixture(scope="module")
def echo(module_servers):
    return module_servers("echo")


def echo_round_trip(sock, payload):
    """Send *payload* (from a thread, so that a large one cannot dead-lock
    against its own echo), close our side, and read everything back."""
    def send():
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    sender.join()
    return b"".join(chunks)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 4096, 65537, 1 << 20])
def test_echo_returns_every_byte(echo, size):
    payload = os.urandom(size)
    if size > 2:
        payload = b"\0" + payload[1:]  # no cut at a NUL, as echo.c did
    with echo.connect() as sock:
        assert echo_round_trip(sock, payload) == payload


def test_many_writes_come_back_in_order(echo):
    with echo.connect() as sock:
        for number in range(200):
            message = b"message %d;" % number
            sock.sendall(message)
            received = b""
            while len(received) < len(message):
                received += sock.recv(len(message) - len(received))
            assert received == message


def test_a_client_that_does_not_read_blocks_only_itself(echo):
    stuck = echo.connect()
    stuck.setblocking(False)
    sent = 0
    try:
        while True:  # until both the echo and our sending are blocked
            sent += stuck.send(b"x" * 65536)
    except BlockingIOError:
        pass
    assert sent > 0
    with echo.connect() as other:
        assert echo_round_trip(other, b"still served") == b"still served"
    stuck.close()


def test_concurrent_clients_get_their_own_data(echo):
    clients = [echo.connect() for _ in range(20)]
    for number, sock in enumerate(clients):
        sock.sendall(b"client %02d" % number)
    for number, sock in enumerate(reversed(clients)):
        assert sock.recv(100) == b"client %02d" % (len(clients) - 1 - number)
        sock.close()
