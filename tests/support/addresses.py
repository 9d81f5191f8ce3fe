"""Where a test's servers listen: a free loopback port in this run's range, a short temporary
directory for UNIX sockets."""
from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
from contextlib import closing


def short_tempdir(prefix: str = "gw-") -> str:
    """A temp dir with a short path: a UNIX socket path must fit in 107 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


#: Where :func:`free_port` picks: below Linux's ephemeral range (32768-60999), so that no client
#: socket takes a port between its pick and the server's bind. Test runs side by side (.ci/run
#: runs two Pythons at once) each get their own range through this variable: a port one run
#: picked and released is then never picked by the other before its server binds it.
PORT_RANGE_VARIABLE = "OUISTITI_TEST_PORTS"
DEFAULT_PORT_RANGE = "20000-32767"


def free_port() -> int:
    """A loopback port nobody listens on, picked at random in this run's range."""
    low, high = (int(bound) for bound in os.environ.get(PORT_RANGE_VARIABLE, DEFAULT_PORT_RANGE).split("-"))
    for _ in range(100):
        port = random.randint(low, high)
        with closing(socket.socket()) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {low}-{high} ({PORT_RANGE_VARIABLE})")


def other_local_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the one its default route leaves
    from; no packet is sent), or None when it has none."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: only the route is looked up
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address
