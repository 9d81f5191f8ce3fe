"""Prometheus metrics after known traffic, read back with prometheus_client's own parser."""
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from support import free_port, gateway_test_app, gunicorn, handshake_status, wait_until


def scrape(port: int, path: str = "/metrics") -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape as ``{(name, sorted labels): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_after_known_traffic(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    unix_servers(f"{docroot}/deaf", listen=False)
    with gateway_test_app(docroot, "--set", "metrics_path=/metrics", "--set", "max_connections=2") as gateway:
        for message in ("12345", "abc"):
            with connect(f"{gateway.url}/echo") as ws:
                ws.send(message)
                assert ws.recv() == message
        with connect(f"{gateway.url}/echo") as one, connect(f"{gateway.url}/echo") as two:
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
        pids = {line.split("]")[1] for line in gateway.log().splitlines() if "session open" in line}
        assert len(pids) > 1  # sessions went to several workers...
        for _ in range(5):  # ...and whichever worker answers a scrape counts them all
            metrics = wait_until(lambda: (m := scrape(port)).get(
                ("ouistiti_gw_sessions_total", (("code", "1000"), ("name", "echo")))) == 30 and m,
                what="30 sessions in the scrape")
            assert metrics[("ouistiti_gw_bytes_total", (("direction", "in"),))] == 60
