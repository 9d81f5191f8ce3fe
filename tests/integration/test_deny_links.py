"""``deny`` judges the socket that is finally connected, not only the name asked for.

With ``deny = internal/*, secret``, three roads led to ``internal/secret`` before: a symlink to it,
a symlinked directory, and a name that does not exist with the link as subprotocol (ouistiti's
fallback). Each is now a 403 with a log line, and the denied socket never sees a connection.
"""
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.sync.client import connect

from support import wait_until
from support.clients import handshake_status
from support.processes import fd_count, gateway_test_app

DENY = "deny=internal/*, secret"


@pytest.fixture
def linked_docroot(docroot, unix_servers):
    """``internal/secret`` (denied), ``echo`` (served), and links to each of them."""
    secret = unix_servers(f"{docroot}/internal/secret")
    echo = unix_servers(f"{docroot}/echo")
    os.symlink("internal/secret", f"{docroot}/alias")
    os.symlink("internal", f"{docroot}/pub")
    os.symlink("echo", f"{docroot}/also-echo")
    return secret, echo


@pytest.mark.parametrize("path, protocol", [
    ("/alias", None),                 # a link to a denied socket
    ("/pub/secret", None),            # a denied socket through a linked directory
    ("/nonexistent", "alias"),        # the subprotocol fallback onto the link
    ("/pub", "secret"),               # the fallback inside a linked directory
    ("/pub/nonexistent", None),       # a denied place, even where nothing listens
])
def test_links_do_not_lead_around_deny(docroot, linked_docroot, path, protocol):
    secret, _ = linked_docroot
    extra = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    with gateway_test_app(docroot, "--set", DENY) as gateway:
        status, _, body = handshake_status(gateway.port, path, extra=extra)
        assert status == 403 and b"internal" not in body  # the answer does not tell where the link leads
        assert f"refused WebSocket {path} from 127.0.0.1" in gateway.log()
        assert "name leads to a socket that is not served (403)" in gateway.log()
    assert secret.accepted == 0


def test_links_to_served_names_still_work_and_denied_names_still_pass_on(docroot, linked_docroot):
    secret, echo = linked_docroot
    with gateway_test_app(docroot, "--set", DENY) as gateway:
        for path, protocols in (("/also-echo", None), ("/nonexistent", ["also-echo"])):
            with connect(f"{gateway.url}{path}", subprotocols=protocols) as ws:
                ws.send("through a link")
                assert ws.recv() == "through a link"
        # the name asked for is denied: not the gateway's, the wrapped app answers (as before)
        assert handshake_status(gateway.port, "/internal/secret")[:3:2] == (200, b"app: /internal/secret")
    assert (echo.accepted, secret.accepted) == (2, 0)


def test_a_hard_link_to_a_denied_socket_is_refused(docroot, linked_docroot):
    """A socket is mode 0777, so anyone who may write docroot may hard-link it
    (``fs.protected_hardlinks`` asks for write access to the file, which everyone has): ``hard``
    is then the same file as ``internal/secret`` under a name ``deny`` does not cover. A socket
    with more than one name is refused, whatever its names."""
    secret, echo = linked_docroot
    os.link(f"{docroot}/internal/secret", f"{docroot}/hard")
    os.link(f"{docroot}/echo", f"{docroot}/echo-twin")  # even one whose names are all served
    with gateway_test_app(docroot, "--set", DENY) as gateway:
        for path, protocol in (("/hard", None), ("/nonexistent", "hard"), ("/echo-twin", None)):
            extra = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
            assert handshake_status(gateway.port, path, extra=extra)[0] == 403
        log = gateway.log()
    assert log.count("socket file has 2 names (hard links) (403)") == 3, log
    assert (secret.accepted, echo.accepted) == (0, 0)


#: Exchanges two names atomically (renameat2 RENAME_EXCHANGE), over and over, until killed.
SWAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
print("swapping", flush=True)
while True:
    if libc.renameat2(-100, b"pub", -100, b"pub.swap", 2) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
"""
RACING_HANDSHAKES = 3000


def test_swapping_a_directory_for_a_link_never_reaches_a_denied_socket(docroot, unix_servers):
    """``pub`` is a directory holding a served socket ``pub/secret`` one instant, a link to
    ``internal`` the next (another process exchanges them as fast as it can) while clients ask
    for ``/pub/secret``. Whatever the instant, the socket connected is the one checked: the
    served one (101), or a refusal (403 for the link, 404 if the name changed under the lookup),
    never the denied one, never a 500."""
    secret = unix_servers(f"{docroot}/internal/secret")
    served = unix_servers(f"{docroot}/pub/secret")
    os.symlink("internal", f"{docroot}/pub.swap")
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, docroot], stdout=subprocess.PIPE)
    try:
        assert swapper.stdout.readline() == b"swapping\n"
        with gateway_test_app(docroot, "--set", DENY) as gateway:
            idle = fd_count(gateway.serving_pid)
            with ThreadPoolExecutor(4) as pool:
                statuses = Counter(pool.map(lambda _: handshake_status(gateway.port, "/pub/secret")[0],
                                            range(RACING_HANDSHAKES)))
            wait_until(lambda: fd_count(gateway.serving_pid) <= idle, what="the gateway's descriptors back to idle")
            log = gateway.log()
    finally:
        swapper.kill()
        swapper.wait()
    reached = {"denied socket": secret.accepted, "served socket": served.accepted}
    assert set(statuses) <= {101, 403, 404}, (statuses, reached)
    assert secret.accepted == 0, (statuses, reached)
    assert "Traceback" not in log
