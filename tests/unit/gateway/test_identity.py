"""Who the client is and where it arrived (ouistiti_gw.gateway.identity), without a socket."""
import pytest

from ouistiti_gw.gateway.identity import arrival_address, listener_address, local_address
from ouistiti_gw.gateway.upgrade import LOCAL_ADDRESS_KEY


@pytest.mark.parametrize(("bound", "known"), [
    (("127.0.0.1", 8080), ("127.0.0.1", 8080)),
    (("192.0.2.7", 443), ("192.0.2.7", 443)),
    (("::1", 8080, 0, 0), ("::1", 8080)),
    (("::ffff:127.0.0.1", 8080, 0, 0), ("127.0.0.1", 8080)),
    (("0.0.0.0", 8080), None),            # a wildcard: each connection arrives at its own address
    (("::", 8080, 0, 0), None),
    (("::ffff:0.0.0.0", 8080, 0, 0), None),
    ("/run/gw.sock", None),               # not IP
])
def test_the_listeners_address_is_every_connections_unless_a_wildcard(bound, known):
    assert listener_address(bound) == known


def test_the_address_the_server_gives_is_taken_over_the_peers():
    environ = {LOCAL_ADDRESS_KEY: ("192.0.2.7", 443), "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "x"}
    assert arrival_address(environ) == "192.0.2.7"
    assert local_address(environ) == ("192.0.2.7", 443)
    environ = {"REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "192.0.2.9", "SERVER_PORT": "80"}  # no socket, no key
    assert arrival_address(environ) == "127.0.0.1"
    assert local_address(environ) == ("192.0.2.9", 80)
