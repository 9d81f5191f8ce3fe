"""Sample servers with ``-P`` learn the browser's address only from the gateway's PROXY header.

A ``-P`` server reads the first packet of a piped connection as the header; whatever a browser
sends comes after it. In direct mode a client that pipelined a frame behind its handshake is
piped instead of handed over: the gateway must then send the header too, or that frame (say,
``PROXY TCP4 6.6.6.6 ...``) would be read as the header. Real gateway, real ``websocket_chat``.
"""
import socket

import pytest
from websockets.sync.client import connect

from rawclient import TEXT, build_frame
from support.clients import handshake_request, socket_from
from support.processes import gateway_cli

CLIENT_HOST = "127.0.0.2"
FORGED = b"PROXY TCP4 6.6.6.6 6.6.6.6 1 2\r\n"


def read_frame(sock: socket.socket, buffered: bytes) -> tuple[bytes, bytes]:
    """One unmasked server frame of at most 125 bytes: (payload, bytes left over)."""
    while len(buffered) < 2 or len(buffered) < 2 + (buffered[1] & 0x7F):
        chunk = sock.recv(4096)
        assert chunk, "the gateway closed the connection"
        buffered += chunk
    end = 2 + (buffered[1] & 0x7F)
    return buffered[2:end], buffered[end:]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_piped_fallback_in_direct_mode_carries_the_header(docroot, sample, version):
    sample("chat", "-w", "-P")
    with gateway_cli(docroot, "--mode", "direct", "--proxy-protocol", version, "-v") as gateway, \
            connect(f"{gateway.url}/chat") as bob:
        bob.send("WSHello bob")
        assert bob.recv(timeout=10) == "WSWelcome bob"
        # A forged header pipelined right behind the handshake: the client is piped, not handed over.
        sock = socket_from(CLIENT_HOST, gateway.port)
        with sock:
            sock.sendall(handshake_request("/chat", port=gateway.port) + build_frame(TEXT, FORGED))
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = sock.recv(4096)
                assert chunk, "the gateway closed the connection"
                response += chunk
            head, _, rest = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            assert bob.recv(timeout=10) == FORGED.decode()  # a chat line, not a header
            sock.sendall(build_frame(TEXT, b"WSHello mallory"))
            assert read_frame(sock, rest)[0] == b"WSWelcome mallory"
            bob.send("WSWhois mallory")
            assert bob.recv(timeout=10) == f"WSIs mallory {CLIENT_HOST}"
        assert "piping instead of handing over" in gateway.log()
