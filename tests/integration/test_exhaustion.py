"""Requests that used to get a 500 get the 4xx or 503 that says why, with no traceback.

- A PROXY v2 header cannot exceed 65 535 bytes after its fixed part (a 16-bit length). A huge
  ``Host`` plus a long query would not fit: the gateway refuses (431, or 1008 after the stock
  handler's 101) *before* connecting, so the server never sees a connection without its header.
- Out of file descriptors, an upgrade gets 503 (the UNIX socket cannot be made), not 500.
"""
import os
import resource
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.sync.client import connect

from support import wait_until
from support.clients import close_after_101, handshake_request, proxy_header_too_long_request, raw_request
from support.processes import fd_count, gateway_served_by, gateway_test_app, only_child, settled_fd_count
from support.unix_servers import proxied_echo_handler

CLIENTS = 30


def test_a_proxy_header_that_cannot_fit_refuses_before_any_connection(docroot, unix_servers):
    """Only gevent-websocket's own handler reads header lines that long (ours stops at 8 KiB a line,
    32 KiB in all): there the 101 is out already, so the refusal is a close frame."""
    server = unix_servers(f"{docroot}/echo", proxied_echo_handler)
    options = ("--stock", "--set", "proxy_protocol=v2", "--set", "allowed_hosts=*")
    with gateway_test_app(docroot, *options) as gateway:
        rest = close_after_101(gateway.port, proxy_header_too_long_request(gateway.port))
        assert rest[:1] == b"\x88" and rest[2:4] == struct.pack("!H", 1008)  # a close, 1008
        wait_until(lambda: "(431)" in gateway.log(), what="the refusal's log line")
        with connect(f"{gateway.url}/echo") as ws:  # an ordinary client is served as ever
            ws.send("fine")
            assert ws.recv() == "fine"
        log = gateway.log()
    assert server.accepted == 1 and server.headers[0].path == "/echo"
    assert log.count("PROXY v2 header too long") == 1 and "Traceback" not in log


def _free_slots(pid: int, limit: int) -> int:
    """File descriptor numbers below ``limit`` that ``pid`` has not in use (the next ones it gets)."""
    in_use = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    return limit - len([fd for fd in in_use if fd < limit])


def _upgrade_status(port: int) -> int:
    """The status of one handshake, however long it waits in the backlog (a guard, not a measure)."""
    status, _, sock, _ = raw_request(port, handshake_request("/echo", port=port), timeout=60)
    sock.close()
    return status


@pytest.mark.parametrize("server", ["cli", pytest.param("gunicorn", marks=pytest.mark.gunicorn)])
def test_out_of_file_descriptors_upgrades_get_503(docroot, unix_servers, server):
    echo = unix_servers(f"{docroot}/echo")
    with gateway_served_by(server, docroot) as gateway:
        pid = only_child(gateway.pid)  # the worker, under the CLI's master as under gunicorn
        idle = settled_fd_count(pid)
        # room for exactly two sessions (two descriptors each, and one more while a session is set
        # up: the socket file is held open until connected) and one more accepted client
        limit = next(n for n in range(1, 4096) if _free_slots(pid, n) == 6)
        _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
        with connect(f"{gateway.url}/echo") as first, connect(f"{gateway.url}/echo"):
            # many clients at once: one at a time is accepted with the last descriptor and cannot
            # reach the server (503); the others wait in the backlog meanwhile, accept() failing
            with ThreadPoolExecutor(CLIENTS) as pool:
                statuses = list(pool.map(lambda _: _upgrade_status(gateway.port), range(CLIENTS)))
            assert statuses == [503] * CLIENTS
            wait_until(lambda: fd_count(pid) == idle + 4, what="the refused clients' fds closed")
            first.send("still served")
            assert first.recv() == "still served"
        wait_until(lambda: fd_count(pid) == idle, what="the sessions' fds closed")
        with connect(f"{gateway.url}/echo") as again:  # descriptors are back: so is service
            again.send("again")
            assert again.recv() == "again"
        log = gateway.log()
    assert echo.accepted == 3  # the refused upgrades never reached it
    assert log.count("the gateway is out of file descriptors (503)") == CLIENTS
    assert "cannot accept connections: Too many open files" in log
    assert "Traceback" not in log and " 500 " not in log
