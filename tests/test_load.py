"""Load: 1 000 concurrent clients through one gateway process, nothing lost or reordered, nothing left."""
import asyncio
import resource
import subprocess

from websockets.asyncio.client import connect

from support import BIN, fd_count, live_greenlets, unix_accepts, wait_until

CLIENTS = 1000
MESSAGES = 100


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def numbered_echo(url: str, client: int, messages: int = MESSAGES) -> list[str]:
    """Send ``messages`` numbered lines at once; read back until all came, whatever the chunking."""
    async with connect(url, max_size=None, open_timeout=60, ping_interval=None) as ws:
        for i in range(messages):
            await ws.send(f"{client}:{i}\n")
        received = ""
        while received.count("\n") < messages:
            received += await ws.recv()
        return received.splitlines()


async def all_clients(url: str, clients: int = CLIENTS, messages: int = MESSAGES) -> list[list[str]]:
    return await asyncio.gather(*(numbered_echo(url, c, messages) for c in range(clients)))


def test_thousand_clients_hundred_messages_each(docroot, gateway):
    raise_fd_limit(4 * CLIENTS + 100)
    echo = subprocess.Popen([str(BIN / "websocket_echo"), "-R", docroot, "-n", "echo", "-m", "1024"])
    try:
        wait_until(lambda: unix_accepts(f"{docroot}/echo"), what="the echo server")
        baseline = fd_count(gateway.pid)
        greenlets = live_greenlets(gateway.port)
        results = asyncio.run(all_clients(f"{gateway.url}/echo"))
        for client, lines in enumerate(results):
            assert lines == [f"{client}:{i}" for i in range(MESSAGES)]
        wait_until(lambda: fd_count(gateway.pid) <= baseline, timeout=30, what="gateway fds back to baseline")
        assert gateway.log().count("session closed") == CLIENTS
        assert live_greenlets(gateway.port) <= greenlets
    finally:
        echo.terminate()
        echo.wait()
