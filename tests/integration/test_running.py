"""How people run the gateway: gunicorn (both workers), an ini pipeline, the CLI, wss://, the demo."""
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from support import BIN, ROOT, wait_until
from support.addresses import free_port
from support.clients import close_of, echo_round_trip, handshake_status, http_get
from support.processes import PROJECT_WORKER, STOCK_WORKER, ServerProcess, gateway_cli, gunicorn


@pytest.mark.gunicorn
def test_stock_gunicorn_worker_pipes_and_closes_refusals_with_codes(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    open(f"{docroot}/file", "w").close()
    unix_servers(f"{docroot}/deaf", listen=False)
    port = free_port()
    with gunicorn(STOCK_WORKER, port, {"OUISTITI_GW_DOCROOT": docroot, "OUISTITI_GW_DENY": "internal/*"}):
        echo_round_trip(f"ws://127.0.0.1:{port}/echo")
        assert close_of(f"ws://127.0.0.1:{port}/missing") == (1011, "missing: no such socket")
        assert close_of(f"ws://127.0.0.1:{port}/deaf") == (1011, "deaf: nobody is listening")
        assert close_of(f"ws://127.0.0.1:{port}/file") == (1008, "file: not a socket")
        assert close_of(f"ws://127.0.0.1:{port}/%2e%2e/etc") == (1008, ".. segment in name")
        # a denied name is the wrapped app's, which has no WebSocket: a well-formed 1008
        assert close_of(f"ws://127.0.0.1:{port}/internal/x") == (1008, "no WebSocket service here")


@pytest.mark.gunicorn
def test_project_gunicorn_worker_answers_http_statuses(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    unix_servers(f"{docroot}/deaf", listen=False)
    port = free_port()
    with gunicorn(PROJECT_WORKER, port, {"OUISTITI_GW_DOCROOT": docroot}, "--access-logfile", "-"):
        echo_round_trip(f"ws://127.0.0.1:{port}/echo")
        assert handshake_status(port, "/missing")[0] == 404
        assert handshake_status(port, "/deaf")[0] == 503
        assert handshake_status(port, "/../x")[0] == 403
        assert http_get(port, "/")[0] == 404  # make_app()'s default app


def test_make_app_without_docroot_fails_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUISTITI_GW_")}
    result = subprocess.run([sys.executable, "-c", "import ouistiti_gw; ouistiti_gw.make_app()"],
                            capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "no docroot" in result.stderr and "OUISTITI_GW_DOCROOT" in result.stderr


def test_wrapped_app_gets_plain_requests_untouched(gateway):
    assert http_get(gateway.port, "/hello") == (200, b"app: /hello")
    body = os.urandom(100000)
    assert http_get(gateway.port, "/echo-body", "POST", body) == (200, body)
    closed_before = int(http_get(gateway.port, "/closed")[1])
    assert http_get(gateway.port, "/stream") == (200, b"".join(b"chunk-%d\n" % i for i in range(5)))
    assert int(http_get(gateway.port, "/closed")[1]) == closed_before + 1


def test_example_ini_pipeline(tmp_path, docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    port = free_port()
    ini = (ROOT / "example.ini").read_text()
    ini = ini.replace("docroot = /tmp/ouistiti-gw", f"docroot = {docroot}").replace("port = 8080", f"port = {port}")
    (tmp_path / "example.ini").write_text(ini)
    with ServerProcess([str(BIN / "ouistiti-gw"), "serve", str(tmp_path / "example.ini")], port):
        status, page = http_get(port, "/")
        assert status == 200 and b"ouistiti-gw demo" in page
        echo_round_trip(f"ws://127.0.0.1:{port}/echo")
        # deny = internal/* in the ini: such a name is the static app's business (a 404 there)
        unix_servers(f"{docroot}/internal/x")
        assert handshake_status(port, "/internal/x")[0] == 404


def test_cli_serves_wss(tmp_path, docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with gateway_cli(docroot, "--certfile", str(cert), "--keyfile", str(key)) as gateway:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        echo_round_trip(f"wss://127.0.0.1:{gateway.port}/echo", ssl=context)
        wait_until(lambda: f"https://127.0.0.1:{gateway.port}/" in gateway.log(), what="the URL line")


def test_cli_prints_url_and_needs_a_docroot(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with gateway_cli(docroot) as gateway:
        wait_until(lambda: f"http://127.0.0.1:{gateway.port}/" in gateway.log(), what="the URL line")
        echo_round_trip(f"{gateway.url}/echo")
    result = subprocess.run([str(BIN / "ouistiti-gw"), "serve"], capture_output=True, text=True)
    assert result.returncode == 2 and "no docroot" in result.stderr and "Traceback" not in result.stderr


def test_python_dash_m_is_the_cli():
    result = subprocess.run([sys.executable, "-m", "ouistiti_gw", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "serve" in result.stdout and "demo" in result.stdout


def test_demo_runs_and_cleans_up():
    port = free_port()
    demo = ServerProcess([str(BIN / "ouistiti-gw"), "demo", "--port", str(port)], port)
    try:
        status, page = http_get(port, "/")
        assert status == 200 and b"new WebSocket(uri)" in page
        echo_round_trip(f"ws://127.0.0.1:{port}/echo")
        docroot = re.search(r"on (/\S+)/echo", demo.log()).group(1)
        assert os.path.isdir(docroot)
        children = Path(f"/proc/{demo.pid}/task/{demo.pid}/children").read_text().split()
        assert children
    finally:
        returncode = demo.stop(signal.SIGINT)
    assert returncode == 0
    assert not os.path.exists(docroot)
    assert all(not os.path.exists(f"/proc/{child}") or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
               for child in children)


@pytest.mark.parametrize("server", ["cli", pytest.param("gunicorn", marks=pytest.mark.gunicorn)])
def test_sigterm_closes_sessions_with_1001_and_removes_nothing(docroot, unix_servers, server):
    backend = unix_servers(f"{docroot}/echo")
    port = free_port()
    if server == "cli":
        process = gateway_cli(docroot, port=port)
    else:
        process = gunicorn(PROJECT_WORKER, port, {"OUISTITI_GW_DOCROOT": docroot})
    with process, connect(f"ws://127.0.0.1:{port}/echo") as ws:
        ws.send("before")
        assert ws.recv() == "before"
        process.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
        assert closed.value.rcvd.code == 1001
        assert process.process.wait(timeout=15) == 0
    assert backend.closed_by_peer.wait(5)
    assert os.path.exists(f"{docroot}/echo")
