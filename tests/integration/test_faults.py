"""Faults injected for real: a backend dying mid-session, and clients that do not read."""
import signal
import socket
import subprocess
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ouistiti_gw.cli import unix_accepts
from support import BIN, wait_until
from support.clients import handshake_request, raw_request


def start_echo(docroot: str) -> subprocess.Popen:
    process = subprocess.Popen([str(BIN / "websocket_echo"), "-R", docroot, "-n", "echo"])
    wait_until(lambda: unix_accepts(f"{docroot}/echo"), what="the echo server")
    return process


def test_backend_killed_mid_session_then_restarted(gateway, docroot):
    echo = start_echo(docroot)
    with connect(f"{gateway.url}/echo") as ws:
        ws.send("alive")
        assert ws.recv() == "alive"
        echo.send_signal(signal.SIGSTOP)  # it stops reading...
        ws.send("never read")
        # the gateway must have written it to the echo's socket, or the death is a clean EOF
        wait_until(lambda: unread_bytes(f"{docroot}/echo"), what="the message in the echo's socket")
        echo.kill()  # ...and dies with that message unread: the connection is reset
        echo.wait()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd.code == 1011
    echo = start_echo(docroot)  # restarted: it replaces its stale socket, new sessions work
    try:
        with connect(f"{gateway.url}/echo") as ws:
            ws.send("back")
            assert ws.recv() == "back"
    finally:
        echo.terminate()
        echo.wait()


def unread_bytes(path: str) -> int:
    """Bytes waiting in the receive queues of the connections a UNIX server accepted on ``path``."""
    rows = subprocess.run(["ss", "-xnH", "src", path], capture_output=True, text=True, check=True).stdout
    return sum(int(row.split()[2]) for row in rows.splitlines())


def settled(read, polls: int = 3, interval: float = 0.2, most: int = 150) -> int:
    """The value ``read()`` stops changing at (the same for ``polls`` polls in a row), or its
    last value after ``most`` polls if it never does."""
    seen = [read()]
    while len(seen) < most and (len(seen) <= polls or len(set(seen[-polls:])) > 1):
        time.sleep(interval)
        seen.append(read())
    return seen[-1]


def flood(conn, server):
    """Write to a client that never reads; count what the gateway accepted."""
    server.written = 0
    chunk = b"x" * 65536
    try:
        while True:
            conn.sendall(chunk)
            server.written += len(chunk)
    except OSError:
        server.closed_by_peer.set()


def test_slow_client_does_not_make_the_gateway_buffer(gateway, docroot, unix_servers):
    """The gateway reads from the server only as fast as the client takes data."""
    server = unix_servers(f"{docroot}/flood", flood)
    status, _, client, _ = raw_request(gateway.port, handshake_request("/flood", port=gateway.port))
    assert status == 101
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    wait_until(lambda: getattr(server, "written", 0) > 0, what="the flood to start")
    # the writer stalls once the socket buffers on the way are full, and stays stalled
    assert settled(lambda: server.written) < 16 * 1024 * 1024  # kernel buffers, never the whole stream
    client.close()
    assert server.closed_by_peer.wait(10)


def test_server_not_reading_stalls_the_client_not_the_gateway(gateway, docroot, unix_servers):
    """The other way round: the gateway stops reading the client while the server does not read."""
    stuck = threading.Event()
    unix_servers(f"{docroot}/deaf", lambda conn, server: stuck.wait(30))
    status, _, client, _ = raw_request(gateway.port, handshake_request("/deaf", port=gateway.port))
    assert status == 101
    client.setblocking(False)
    frame = bytes([0x82, 0xFE, 0xFF, 0xFF, 0, 0, 0, 0]) + bytes(65535)  # masked with a zero key
    sent = 0
    try:
        while sent < 256 * 1024 * 1024:
            sent += client.send(frame)
    except BlockingIOError:
        pass
    stuck.set()
    client.close()
    assert sent < 64 * 1024 * 1024  # the client was made to wait: kernel buffers, not the gateway's
