"""Keep-alive (RFC 6455 section 5.5.2): real pings to quiet clients, and an idle timeout for clients
that stopped answering. A half-open client (gone without FIN or RST) looks exactly like one that
never answers: the gateway closes it and its UNIX connection within ``idle_timeout``."""
from __future__ import annotations

from rawclient import PING, PONG, RawClient, build_frame
from support.processes import gateway_test_app
from support.unix_servers import read_until_eof

KEEPALIVE = ["--set", "ping_interval=0.2", "--set", "idle_timeout=1"]


def test_quiet_client_gets_real_pings_and_stays_if_it_answers(docroot, unix_servers):
    backend = unix_servers(f"{docroot}/sink", read_until_eof)
    with gateway_test_app(docroot, *KEEPALIVE) as gateway:
        client = RawClient(gateway.port, "/sink")
        for _ in range(8):  # well past idle_timeout, kept alive by the pongs alone
            ping = client.expect_frame(PING)  # a ping, not an unsolicited pong
            client.send(build_frame(PONG, ping.payload))
        assert not backend.closed_by_peer.is_set()
        client.close_cleanly()
    assert backend.closed_by_peer.wait(5)


def test_client_that_stops_answering_is_closed_with_its_unix_connection(docroot, unix_servers):
    backend = unix_servers(f"{docroot}/sink", read_until_eof)
    with gateway_test_app(docroot, *KEEPALIVE) as gateway:
        client = RawClient(gateway.port, "/sink")
        client.expect_frame(PING)  # ignored: the client is as good as gone
        assert backend.closed_by_peer.wait(10)
        while (frame := client.recv_frame()).opcode == PING:
            pass
        assert frame.close_code == 1001
        assert "nothing heard" in gateway.log()
