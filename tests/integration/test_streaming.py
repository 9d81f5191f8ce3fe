"""Big messages flow through as they arrive; small ones reach a stream server whole or not at all.

A raw client sends part of a frame, and the test looks at what has reached the other end before
the rest is sent: the UNIX server (piping mode), or the client itself (the direct-mode echo).
"""
import os
import socket
import ssl
import struct
import time

from ouistiti_gw.gateway.relay import STREAM_HOLD_SIZE
from rawclient import LengthForm, client_frame
from support import wait_until
from support.clients import handshake_request, raw_request, self_signed_certificate
from support.processes import gateway_cli
from support.unix_servers import read_until_eof

TEXT, BINARY, CONTINUATION = 0x1, 0x2, 0x0


def long_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A masked client frame in the 64-bit length form whatever the size (servers must accept it)."""
    return client_frame(opcode, payload, fin=fin, form=LengthForm.BITS_64)


def open_websocket(port: int, path: str) -> tuple[socket.socket, bytes]:
    status, _, sock, rest = raw_request(port, handshake_request(path, port=port))
    assert status == 101
    return sock, rest


def received_size(server) -> int:
    return sum(map(len, server.received))


def test_big_message_reaches_the_server_while_it_arrives(gateway, docroot, unix_servers):
    server = unix_servers(f"{docroot}/record", read_until_eof)
    sock, _ = open_websocket(gateway.port, "/record")
    payload = os.urandom(1 << 20)
    frame = long_frame(BINARY, payload)
    first_part = 14 + 300 * 1024
    sock.sendall(frame[:first_part])
    # the gateway holds none of it back: all 300 KiB are at the server, 724 KiB still unsent
    wait_until(lambda: received_size(server) == 300 * 1024, what="the message's beginning at the server")
    sock.sendall(frame[first_part:])
    wait_until(lambda: received_size(server) == len(payload), what="the whole message at the server")
    assert b"".join(server.received) == payload
    sock.close()


def test_small_message_reaches_the_server_whole(gateway, docroot, unix_servers):
    server = unix_servers(f"{docroot}/record", read_until_eof)
    sock, _ = open_websocket(gateway.port, "/record")
    payload = os.urandom(STREAM_HOLD_SIZE // 2)
    # in two frames, the second one late: the server gets nothing until the message is whole
    sock.sendall(long_frame(BINARY, payload[:1000], fin=False)
                 + long_frame(CONTINUATION, payload[1000:-1], fin=False))
    time.sleep(0.5)
    assert server.received == []
    sock.sendall(long_frame(CONTINUATION, payload[-1:]))
    wait_until(lambda: received_size(server) == len(payload), what="the message at the server")
    assert b"".join(server.received) == payload
    sock.close()


class FrameReader:
    """Server frames off a raw socket (unmasked, as servers send them)."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"") -> None:
        self.sock = sock
        self.buffer = buffered

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "connection closed"
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def frame(self) -> tuple[bool, int, bytes]:
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
        return bool(first & 0x80), first & 0x0F, self._take(length)


def test_direct_echo_starts_before_the_message_ends(docroot, sample):
    """The direct-mode echo relays each piece it reads as a fragment of its reply: the echo of a
    big text message starts while the client is still sending it, and comes back as one message
    of the same type, whose fragments may cut characters (only the whole must be valid UTF-8)."""
    sample("echo")
    with gateway_cli(docroot, "--mode", "direct") as gateway:
        sock, rest = open_websocket(gateway.port, "/echo")
        reader = FrameReader(sock, rest)
        payload = ("€uro " * 200_000).encode()  # 1.2 MB of 3-byte characters
        frame = long_frame(TEXT, payload)
        first_part = 14 + 100_001  # cuts a character
        sock.sendall(frame[:first_part])
        fin, opcode, echoed = reader.frame()
        assert (fin, opcode) == (False, TEXT)  # the reply has begun, unfinished
        sock.sendall(frame[first_part:])
        while not fin:
            fin, opcode, data = reader.frame()
            assert opcode == CONTINUATION
            echoed += data
        assert echoed == payload
        sock.close()


def test_wss_message_pipelined_behind_the_handshake(tmp_path, docroot, unix_servers):
    """Over TLS: a big message sent in the same write as the handshake. Its first bytes are read
    by the HTTP server with the request (taken over by the WebSocket), the rest through the TLS
    socket, and the whole of it is echoed."""
    unix_servers(f"{docroot}/echo")
    certfile, keyfile = self_signed_certificate(str(tmp_path))
    payload = os.urandom(1 << 20)
    with gateway_cli(docroot, "--certfile", certfile, "--keyfile", keyfile) as gateway:
        context = ssl.create_default_context(cafile=certfile)
        raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(handshake_request("/echo", port=gateway.port) + long_frame(BINARY, payload))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        reader = FrameReader(sock, rest)
        echoed = b""
        while len(echoed) < len(payload):  # a stream server's echo: one message per read
            _, _, data = reader.frame()
            echoed += data
        assert echoed == payload
        sock.close()
