"""Nothing is left behind: file descriptors and greenlets of the gateway process after many sessions."""
import socket
import struct

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from support import wait_until
from support.clients import handshake_request, handshake_status, raw_request
from support.processes import fd_count, live_greenlets
from support.unix_servers import say_bye_and_leave


def test_no_fd_left_after_200_sessions(gateway, docroot, unix_servers):
    echo = unix_servers(f"{docroot}/echo")
    bye = unix_servers(f"{docroot}/bye", say_bye_and_leave)
    with connect(f"{gateway.url}/echo") as ws:  # warm up: imports, logging, the listener
        ws.send("warm")
        ws.recv()
    wait_until(lambda: echo.closed_by_peer.is_set(), what="warm-up session end")
    baseline = fd_count(gateway.pid)
    greenlets = live_greenlets(gateway.port)
    for i in range(200):
        kind = i % 4
        if kind == 0:  # clean close
            with connect(f"{gateway.url}/echo") as ws:
                ws.send(f"message {i}")
                assert ws.recv() == f"message {i}"
        elif kind == 1:  # client vanishes with an RST mid-session
            status, _, sock, _ = raw_request(gateway.port, handshake_request("/echo", port=gateway.port))
            assert status == 101
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        elif kind == 2:  # refused before the upgrade
            assert handshake_status(gateway.port, "/missing")[0] == 404
        else:  # the server ends the session
            with connect(f"{gateway.url}/bye") as ws:
                ws.send("x")
                assert ws.recv() == "bye"
                with pytest.raises(ConnectionClosed):
                    ws.recv()
    assert (echo.accepted, bye.accepted) == (1 + 100, 50)
    # sessions end asynchronously after the client's last packet: wait for the count to settle
    wait_until(lambda: fd_count(gateway.pid) <= baseline, what=f"fd count back to {baseline}")
    assert live_greenlets(gateway.port) <= greenlets
