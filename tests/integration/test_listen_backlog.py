"""The listening socket's backlog, as the kernel reports it (``ss``: a LISTEN socket's Send-Q),
under the CLI, the ini runner (a reload included) and gunicorn, whose own ``--backlog`` applies."""
import os
import signal
import subprocess

import pytest

from support import BIN, wait_until
from support.addresses import free_port
from support.processes import PROJECT_WORKER, ServerProcess, gateway_cli, gunicorn, only_child

GATEWAY_APP = "[app:main]\nuse = egg:ouistiti_gw#main\ndocroot = {docroot}\n"


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on ``port``: ``ss`` shows it as a LISTEN socket's Send-Q."""
    rows = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], check=True, capture_output=True,
                          text=True).stdout.splitlines()
    assert len(rows) == 1, rows
    return int(rows[0].split()[2])


def somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as value:
        return int(value.read())


def test_the_default_backlog_is_2048_within_somaxconn(docroot):
    with gateway_cli(docroot) as gateway:
        assert listen_backlog(gateway.port) == min(2048, somaxconn())


def test_backlog_flag(docroot):
    with gateway_cli(docroot, "--backlog", "300") as gateway:
        assert listen_backlog(gateway.port) == 300


def test_backlog_in_the_ini_server_section_and_its_reload(tmp_path, docroot):
    """A reload's worker listens on the socket it inherited: the backlog now on disk applies to it."""
    port = free_port()
    ini = tmp_path / "backlog.ini"

    def write(backlog: int) -> None:
        ini.write_text(GATEWAY_APP.format(docroot=docroot)
                       + f"[server:main]\nuse = egg:ouistiti_gw#gevent\nport = {port}\nbacklog = {backlog}\n")

    write(300)
    with ServerProcess([str(BIN / "ouistiti-gw"), "serve", str(ini)], port) as gateway:
        assert listen_backlog(port) == 300
        old = only_child(gateway.pid)
        write(500)
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(lambda: not os.path.exists(f"/proc/{old}"), what="the old worker to exit")
        assert listen_backlog(port) == 500


@pytest.mark.gunicorn
def test_gunicorn_backlog_is_gunicorns_own(docroot):
    port = free_port()
    with gunicorn(PROJECT_WORKER, port, {"OUISTITI_GW_DOCROOT": docroot}, "--backlog", "300"):
        assert listen_backlog(port) == 300
