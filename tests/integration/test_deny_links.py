"""``deny`` judges the socket that is finally connected, not only the name asked for.

With ``deny = internal/*, secret``, three roads led to ``internal/secret`` before: a symlink to it,
a symlinked directory, and a name that does not exist with the link as subprotocol (ouistiti's
fallback). Each is now a 403 with a log line, and the denied socket never sees a connection.
"""
import os

import pytest
from websockets.sync.client import connect

from support import gateway_test_app, handshake_status

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
