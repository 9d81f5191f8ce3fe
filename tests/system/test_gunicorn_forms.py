"""gunicorn as users type it: ``ouistiti_gw:make_app`` with or without parentheses, under both
workers, ``--paste`` an ini file; a wrong configuration; the gateway's lines in gunicorn's error log."""
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from support import BIN, ROOT, wait_until
from support.addresses import free_port
from support.clients import close_of, echo_round_trip, handshake_status, http_get
from support.processes import PROJECT_WORKER, STOCK_WORKER, ServerProcess, gunicorn_argv

pytestmark = pytest.mark.gunicorn

BARE, CALL = "ouistiti_gw:make_app", "ouistiti_gw:make_app()"
#: A line of gunicorn's error log: ``[2026-01-01 12:00:00 +0000] [1234] [INFO] message``.
ERROR_LOG_LINE = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[{level}\] {message}"


def without_gateway_environment() -> dict:
    return {key: value for key, value in os.environ.items() if not key.startswith("OUISTITI_GW_")}


def gunicorn_app(worker: str, app: str, env: dict, *options: str) -> ServerProcess:
    port = free_port()
    return ServerProcess(gunicorn_argv(worker, port, *options, app), port, env=env)


def log_lines(log: str, level: str, message: str) -> list[str]:
    pattern = ERROR_LOG_LINE.replace("{level}", level).replace("{message}", message)
    return re.findall(pattern, log, re.MULTILINE)


@pytest.mark.parametrize("app", [BARE, CALL])
@pytest.mark.parametrize("worker", [STOCK_WORKER, PROJECT_WORKER])
def test_make_app_with_or_without_parentheses_serves_under_both_workers(docroot, unix_servers, worker, app):
    """A WebSocket echo and a plain request; the session's line (its end: its opening is DEBUG)
    and a refusal's line reach gunicorn's error log in its format under either worker."""
    unix_servers(f"{docroot}/echo")
    with gunicorn_app(worker, app, {"OUISTITI_GW_DOCROOT": docroot}) as gunicorn:
        echo_round_trip(f"ws://127.0.0.1:{gunicorn.port}/echo")
        assert http_get(gunicorn.port, "/") == (404, b"404 Not Found: this server only carries WebSockets\n")
        handshake_status(gunicorn.port, "/missing")  # 404, or (stock worker) 101 then close 1011
        refusal = r"refused WebSocket /missing from 127\.0\.0\.1:\d+: missing: no such socket"
        wait_until(lambda: log_lines(gunicorn.log(), "INFO", "session closed name=echo ")
                   and log_lines(gunicorn.log(), "WARNING", refusal), what="the close and refusal lines")
        log = gunicorn.log()
    assert len(log_lines(log, "INFO", r"session closed name=echo client=127\.0\.0\.1:\d+ ")) == 1
    assert "session open" not in log
    assert len(log_lines(log, "WARNING", refusal)) == 1
    assert "Traceback" not in log


def test_first_requests_at_once_build_the_gateway_once(docroot):
    """Under the stock worker the first requests build the gateway: several at once build it once
    (its construction warns once that the docroot does not exist) and are all answered."""
    absent = f"{docroot}/absent"
    with gunicorn_app(STOCK_WORKER, BARE, {"OUISTITI_GW_DOCROOT": absent}) as gunicorn:
        codes = []

        def first_request() -> None:
            codes.append(close_of(f"ws://127.0.0.1:{gunicorn.port}/echo"))

        clients = [threading.Thread(target=first_request) for _ in range(8)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(15)
        assert codes == [(1011, "echo: no such socket")] * 8
        assert len(log_lines(gunicorn.log(), "WARNING", f"docroot {absent} does not exist")) == 1


@pytest.mark.parametrize("worker, app", [(PROJECT_WORKER, BARE), (PROJECT_WORKER, CALL), (STOCK_WORKER, CALL)])
def test_missing_docroot_stops_gunicorn_at_boot_in_one_line(worker, app):
    result = subprocess.run(gunicorn_argv(worker, free_port(), app), env=without_gateway_environment(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 4  # gunicorn's "App failed to load"
    assert "no docroot: set OUISTITI_GW_DOCROOT to the directory of the UNIX sockets\n" in result.stderr
    assert "App failed to load" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("variable, value, reason", [
    ("OUISTITI_GW_MAX_CONNECTIONS", "lots", "is not a valid int"),
    ("OUISTITI_GW_HEADER_TIMEOUT", "soon", "is not a valid float"),  # a server option: the worker's handler
    ("OUISTITI_GW_MAX_CONECTIONS", "5", "unknown setting"),
], ids=["gateway", "server", "typo"])
def test_bad_value_stops_gunicorn_at_boot_naming_the_variable(docroot, variable, value, reason):
    env = dict(without_gateway_environment(), OUISTITI_GW_DOCROOT=docroot, **{variable: value})
    result = subprocess.run(gunicorn_argv(PROJECT_WORKER, free_port(), BARE), env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 4
    expected = f"unknown setting {variable}" if reason == "unknown setting" else f"{variable} = {value!r} {reason}"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_stock_worker_without_docroot_refuses_every_request_after_one_log_line():
    """The stock worker runs none of our code at boot, so ``make_app`` (no parentheses) can only
    find out at the first request: one error line per worker, then 500s and 1011s."""
    with gunicorn_app(STOCK_WORKER, BARE, without_gateway_environment()) as gunicorn:
        for _ in range(2):
            status, body = http_get(gunicorn.port, "/")
            assert status == 500 and b"gateway not configured" in body and b"OUISTITI" not in body
            assert close_of(f"ws://127.0.0.1:{gunicorn.port}/echo") == (1011, "gateway not configured")
        log = gunicorn.log()
    assert len(log_lines(log, "ERROR", "gateway not configured: no docroot: set OUISTITI_GW_DOCROOT")) == 1
    assert "Traceback" not in log


def paste_ini(tmp_path, docroot: str) -> str:
    ini = (ROOT / "example.ini").read_text().replace("docroot = /tmp/ouistiti-gw", f"docroot = {docroot}")
    (tmp_path / "example.ini").write_text(ini)
    return str(tmp_path / "example.ini")


def test_gunicorn_paste_example_ini_with_the_gateway_worker(tmp_path, docroot, unix_servers):
    """The README's line: gunicorn binds its own -b (the ini's [server:main] is not used)."""
    unix_servers(f"{docroot}/echo")
    port = free_port()
    argv = gunicorn_argv(PROJECT_WORKER, port, "--paste", paste_ini(tmp_path, docroot))
    with ServerProcess(argv, port):
        status, page = http_get(port, "/")
        assert status == 200 and b"ouistiti-gw demo" in page
        echo_round_trip(f"ws://127.0.0.1:{port}/echo")


def test_gunicorn_conf_py_makes_dash_k_unnecessary(tmp_path, docroot, unix_servers):
    """The README's way to drop -k: gunicorn reads ./gunicorn.conf.py by default."""
    unix_servers(f"{docroot}/echo")
    (tmp_path / "gunicorn.conf.py").write_text(f'worker_class = "{PROJECT_WORKER}"\n')
    port = free_port()
    argv = [str(BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "--paste", paste_ini(tmp_path, docroot)]
    with ServerProcess(argv, port, cwd=str(tmp_path)):
        echo_round_trip(f"ws://127.0.0.1:{port}/echo")


@pytest.mark.parametrize("worker", [PROJECT_WORKER, STOCK_WORKER])
def test_gunicorn_paste_ini_with_a_bad_setting_stops_in_one_line(tmp_path, docroot, worker):
    ini = tmp_path / "example.ini"
    bad = Path(paste_ini(tmp_path, docroot)).read_text().replace("allow = *", "allow = *\nmax_connections = lots")
    ini.write_text(bad)
    result = subprocess.run(gunicorn_argv(worker, free_port(), "--paste", str(ini)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 4
    assert "max_connections = 'lots' is not a valid int" in result.stderr and "Traceback" not in result.stderr


def test_gunicorn_paste_ini_with_an_unclosed_section_stops_in_one_line(tmp_path, docroot):
    """Left to PasteDeploy: "pipeline section has extra settings", a traceback and exit 3."""
    ini = tmp_path / "example.ini"
    ini.write_text(Path(paste_ini(tmp_path, docroot)).read_text().replace("[filter:websocket]", "[filter:websocket"))
    result = subprocess.run(gunicorn_argv(PROJECT_WORKER, free_port(), "--paste", str(ini)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    number = ini.read_text().splitlines().index("[filter:websocket") + 1
    line = next(line for line in result.stderr.splitlines() if "opens a [section]" in line)
    assert line == f"{ini}: line {number}: '[filter:websocket' opens a [section] it does not close"
