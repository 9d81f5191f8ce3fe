"""Load: 1 000 concurrent clients through one gateway process, nothing lost or reordered, nothing left."""
import asyncio
import subprocess

from ouistiti_gw.cli import unix_accepts
from support import BIN, wait_until
from support.clients import all_clients, raise_fd_limit
from support.processes import fd_count, live_greenlets

CLIENTS = 1000
MESSAGES = 100


def test_thousand_clients_hundred_messages_each(docroot, gateway):
    raise_fd_limit(4 * CLIENTS + 100)
    echo = subprocess.Popen([str(BIN / "websocket_echo"), "-R", docroot, "-n", "echo", "-m", "1024"])
    try:
        wait_until(lambda: unix_accepts(f"{docroot}/echo"), what="the echo server")
        baseline = fd_count(gateway.pid)
        greenlets = live_greenlets(gateway.port)
        results = asyncio.run(all_clients(f"{gateway.url}/echo", CLIENTS, MESSAGES))
        for client, lines in enumerate(results):
            assert lines == [f"{client}:{i}" for i in range(MESSAGES)]
        wait_until(lambda: fd_count(gateway.pid) <= baseline, timeout=30, what="gateway fds back to baseline")
        assert gateway.log().count("session closed") == CLIENTS
        assert live_greenlets(gateway.port) <= greenlets
    finally:
        echo.terminate()
        echo.wait()
