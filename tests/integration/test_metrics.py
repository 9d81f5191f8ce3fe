"""Prometheus metrics after known traffic, read back with prometheus_client's own parser."""
import http.client
import struct
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from support import wait_until
from support.addresses import free_port
from support.clients import (
    close_after_101,
    handshake_request,
    handshake_status,
    proxy_header_too_long_request,
    raw_request,
    scrape,
)
from support.processes import gateway_test_app, gunicorn
from support.unix_servers import proxied_echo_handler


def test_metrics_after_known_traffic(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    unix_servers(f"{docroot}/deaf", listen=False)
    with gateway_test_app(docroot, "--set", "metrics_path=/metrics", "--set", "max_connections=2") as gateway:
        for message in ("12345", "abc"):
            with connect(f"{gateway.url}/echo") as ws:
                ws.send(message)
                assert ws.recv() == message
        with connect(f"{gateway.url}/echo"), connect(f"{gateway.url}/echo"):
            assert handshake_status(gateway.port, "/echo")[0] == 503  # limit
            wait_until(lambda: scrape(gateway.port)[("ouistiti_gw_sessions_open", ())] == 2, what="2 open")
        assert handshake_status(gateway.port, "/missing")[0] == 404
        assert handshake_status(gateway.port, "/deaf")[0] == 503
        assert handshake_status(gateway.port, "/../x")[0] == 403
        assert handshake_status(gateway.port, "/echo", extra="Origin: http://evil.example\r\n")[0] == 403
        metrics = wait_until(lambda: (m := scrape(gateway.port))[("ouistiti_gw_sessions_open", ())] == 0 and m,
                             what="sessions closed")
        assert metrics[("ouistiti_gw_sessions_total", (("code", "1000"), ("name", "echo")))] == 4
        assert metrics[("ouistiti_gw_bytes_total", (("direction", "in"),))] == 8
        assert metrics[("ouistiti_gw_bytes_total", (("direction", "out"),))] == 8
        for reason in ("limit", "missing", "refused", "denied", "origin"):
            assert metrics[("ouistiti_gw_refusals_total", (("reason", reason),))] == 1, reason
        assert metrics[("ouistiti_gw_session_duration_seconds_count", ())] == 4
        # the metrics path is the gateway's; other paths still reach the wrapped app
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.port}/hello", timeout=10) as response:
            assert response.read() == b"app: /hello"


@pytest.mark.gunicorn
def test_a_scrape_sums_all_gunicorn_workers(tmp_path, docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    port = free_port()
    env = {"OUISTITI_GW_DOCROOT": docroot, "OUISTITI_GW_METRICS_PATH": "/metrics",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with gunicorn("ouistiti_gw.worker.GatewayWorker", port, env, "-w", "3", "--log-level", "info") as gateway:
        for i in range(30):
            with connect(f"ws://127.0.0.1:{port}/echo") as ws:
                ws.send(f"{i:02d}")
                ws.recv()
        pids = {line.split("]")[1] for line in gateway.log().splitlines() if "session closed" in line}
        assert len(pids) > 1  # sessions went to several workers...
        for _ in range(5):  # ...and whichever worker answers a scrape counts them all
            metrics = wait_until(lambda: (m := scrape(port)).get(
                ("ouistiti_gw_sessions_total", (("code", "1000"), ("name", "echo")))) == 30 and m,
                what="30 sessions in the scrape")
            assert metrics[("ouistiti_gw_bytes_total", (("direction", "in"),))] == 60


def test_application_close_codes_fold_into_one_series_per_range(docroot, unix_servers):
    """Codes 3000-4999 are the client's choice: each range is one label value, however many are used."""
    unix_servers(f"{docroot}/echo")
    with gateway_test_app(docroot, "--set", "metrics_path=/metrics") as gateway:
        for code in (1000, 1001, 3000, 3001, 3999, 4000, 4321, 4999):
            with connect(f"{gateway.url}/echo") as ws:
                ws.close(code)
        metrics = wait_until(lambda: (m := scrape(gateway.port))[("ouistiti_gw_sessions_open", ())] == 0 and m,
                             what="sessions closed")
    codes = {dict(labels)["code"]: value for (name, labels), value in metrics.items()
             if name == "ouistiti_gw_sessions_total"}
    assert codes == {"1000": 1, "1001": 1, "3xxx": 3, "4xxx": 3}


def scrape_status(port: int, source: str, headers: dict | None = None) -> int:
    """The status of a scrape sent from the local address ``source``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", "/metrics", headers=headers or {})
        return connection.getresponse().status
    finally:
        connection.close()


def test_only_metrics_allow_may_scrape(docroot):
    options = ("--set", "metrics_path=/metrics")
    with gateway_test_app(docroot, *options) as gateway:  # default: loopback only, every 127.x
        assert scrape_status(gateway.port, "127.0.0.1") == scrape_status(gateway.port, "127.0.0.2") == 200
    with gateway_test_app(docroot, *options, "--set", "metrics_allow=127.0.0.2/32") as gateway:
        assert scrape_status(gateway.port, "127.0.0.2") == 200
        assert scrape_status(gateway.port, "127.0.0.1") == 403
        assert scrape_status(gateway.port, "127.0.0.1", {"X-Forwarded-For": "127.0.0.2"}) == 403  # untrusted peer
        assert "refused metrics scrape from 127.0.0.1: not in metrics_allow" in gateway.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.port}/hello", timeout=10) as response:
            assert response.read() == b"app: /hello"  # the rest is the wrapped app's, as ever
    # behind a trusted proxy, the client it names is judged, not the proxy
    with gateway_test_app(docroot, *options, "--set", "trusted_proxies=127.0.0.1",
                          "--set", "metrics_allow=127.0.0.1, 10.0.0.0/8") as gateway:
        assert scrape_status(gateway.port, "127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}) == 403
        assert scrape_status(gateway.port, "127.0.0.1", {"X-Forwarded-For": "10.1.2.3"}) == 200
        assert scrape_status(gateway.port, "127.0.0.1") == 200
        assert "refused metrics scrape from 203.0.113.9" in gateway.log()


def test_wire_and_payload_bytes_show_the_compression_ratio(docroot, unix_servers):
    """permessage-deflate: ``ouistiti_gw_bytes`` counts the messages as the server sees them,
    ``ouistiti_gw_wire_bytes`` their frames' payloads as they crossed the network."""
    unix_servers(f"{docroot}/echo")
    messages = [f'{{"type": "message", "from": "alice", "text": "hello number {i}, anyone here?"}}' * 3
                for i in range(20)]
    with gateway_test_app(docroot, "--set", "metrics_path=/metrics") as gateway:
        with connect(f"{gateway.url}/echo") as ws:
            assert ws.protocol.extensions, "permessage-deflate was not negotiated"
            for message in messages:
                ws.send(message)
                assert ws.recv() == message
        metrics = wait_until(lambda: (m := scrape(gateway.port))[("ouistiti_gw_sessions_open", ())] == 0 and m,
                             what="session closed")
    payload = sum(map(len, messages))
    for direction in ("in", "out"):
        assert metrics[("ouistiti_gw_bytes_total", (("direction", direction),))] == payload
        wire = metrics[("ouistiti_gw_wire_bytes_total", (("direction", direction),))]
        assert 0 < wire < payload / 2, (direction, wire, payload)


def test_handovers_and_refused_hosts_are_counted(docroot, sample):
    """Direct mode: a handed-over session is one session ended with the code ``handover`` and
    nothing left open; a ``Host`` that is not the gateway's is a refusal of its own reason."""
    sample("echo")
    with gateway_test_app(docroot, "--set", "metrics_path=/metrics", "--set", "mode=direct") as gateway:
        with connect(f"{gateway.url}/echo") as ws:
            ws.send("handed over")
            assert ws.recv() == "handed over"
        own = f"Host: 127.0.0.1:{gateway.port}".encode()
        request = handshake_request("/echo", port=gateway.port).replace(own, b"Host: rebind.attacker.example")
        status, _, sock, _ = raw_request(gateway.port, request)
        sock.close()
        assert status == 403
        metrics = wait_until(lambda: (m := scrape(gateway.port)).get(
            ("ouistiti_gw_sessions_total", (("code", "handover"), ("name", "echo")))) == 1 and m,
            what="the handover counted")
    assert metrics[("ouistiti_gw_sessions_open", ())] == 0
    assert metrics[("ouistiti_gw_refusals_total", (("reason", "host"),))] == 1


def test_refusals_after_the_stock_handlers_101_are_counted_too(docroot, unix_servers):
    """Under gevent-websocket's handler a refusal is a close frame, counted as a refusal all the
    same: here a PROXY header too long to build (``too_large``, 1008) and a foreign Origin (1008)."""
    unix_servers(f"{docroot}/echo", proxied_echo_handler)
    options = ("--stock", "--set", "metrics_path=/metrics", "--set", "proxy_protocol=v2", "--set", "allowed_hosts=*")
    with gateway_test_app(docroot, *options) as gateway:
        rest = close_after_101(gateway.port, proxy_header_too_long_request(gateway.port))
        assert rest[:1] == b"\x88" and rest[2:4] == struct.pack("!H", 1008)
        with connect(f"{gateway.url}/echo", origin="http://evil.example") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008
        metrics = scrape(gateway.port)
    for reason in ("too_large", "origin"):
        assert metrics[("ouistiti_gw_refusals_total", (("reason", reason),))] == 1, reason
