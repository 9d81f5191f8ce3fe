"""Servers written for ouistiti work behind us unchanged: its own C samples, built from its source.

The samples' sources come from the ouistiti tarball (fixture ``ouistiti_tarball``: in
``$OUISTITI_REFERENCE_DIR``, by default ``../shared/reference``) and are compiled with the system C
compiler; the transcript below is the one ouistiti itself gives with the same servers.
"""
import subprocess

import pytest
from websockets.sync.client import connect

from ouistiti_gw.cli import unix_accepts
from support import wait_until

pytestmark = pytest.mark.cc


@pytest.fixture(scope="module")
def c_samples(tmp_path_factory, ouistiti_tarball):
    """``echo`` and ``chat`` compiled from ouistiti's ``utils/websocket`` sources."""
    build = tmp_path_factory.mktemp("ouistiti-c")
    binaries = {}
    for member in ouistiti_tarball.getmembers():
        if member.name.endswith(("utils/websocket/echo.c", "utils/websocket/chat.c")):
            source = build / member.name.rsplit("/", 1)[1]
            source.write_bytes(ouistiti_tarball.extractfile(member).read())
            binaries[source.stem] = build / source.stem
            subprocess.run(["cc", "-O2", "-o", str(binaries[source.stem]), str(source)], check=True)
    assert set(binaries) == {"echo", "chat"}
    return binaries


def test_ouistiti_c_echo_and_chat_behind_the_gateway(gateway, docroot, c_samples):
    servers = [subprocess.Popen([str(c_samples["echo"]), "-R", docroot, "-n", "echo"], stdout=subprocess.DEVNULL),
               subprocess.Popen([str(c_samples["chat"]), "-R", docroot, "-n", "chat", "-w"], stdout=subprocess.DEVNULL)]
    try:
        wait_until(lambda: all(unix_accepts(f"{docroot}/{n}") for n in ("echo", "chat")),
                   what="the C servers' sockets")
        with connect(f"{gateway.url}/echo") as ws:
            ws.send("hello C echo")
            assert ws.recv() == "hello C echo"
        with connect(f"{gateway.url}/chat") as alice, connect(f"{gateway.url}/chat") as bob:
            alice.send("WSHello alice")
            assert alice.recv() == "WSWelcome alice"
            bob.send("WSHello alice")
            assert bob.recv() == "WSWelcome alice001"
            alice.send("hi all")
            assert bob.recv() == "hi all"
            alice.send("WSPrivate alice001 psst")
            assert bob.recv() == "psst"
            bob.send("WSWhois alice")
            assert bob.recv() == "WSIs alice network error"  # ouistiti gives the same: no address here
    finally:
        for server in servers:
            server.terminate()
            server.wait()
