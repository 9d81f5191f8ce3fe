"""The wheel as a user installs it: built from this tree, installed (not editable) in a fresh
virtualenv, and run from there: a sample server, the gateway, one WebSocket round trip."""
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from websockets.sync.client import connect

from support import wait_until
from support.addresses import free_port
from support.clients import listens
from support.processes import ServerProcess

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(PROJECT)],
                   check=True, timeout=300)
    return next(out.glob("ouistiti_gw-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The ``bin`` directory of a fresh virtualenv holding the wheel and its dependencies."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, timeout=600)
    return venv / "bin"


def test_the_wheel_carries_its_license_and_types(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "ouistiti_gw/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not any(name.startswith(("tests/", "contrib/")) for name in names)  # contrib is ouistiti_gw_contrib


def test_the_installed_wheel_serves_a_round_trip(installed, docroot):
    echo = subprocess.Popen([str(installed / "websocket_echo"), "-R", docroot, "-n", "echo"])
    try:
        wait_until(lambda: listens(f"{docroot}/echo", socket.SOCK_STREAM), what="the echo server")
        port = free_port()
        argv = [str(installed / "ouistiti-gw"), "serve", "--docroot", docroot, "--port", str(port)]
        with ServerProcess(argv, port, cwd="/"), connect(f"ws://127.0.0.1:{port}/echo") as ws:
            ws.send("from the wheel")
            assert ws.recv(timeout=10) == "from the wheel"
    finally:
        echo.terminate()
        echo.wait(timeout=10)
    version = subprocess.run([str(installed / "ouistiti-gw"), "--version"], capture_output=True, text=True,
                             check=True, cwd="/")
    assert version.stdout.startswith("ouistiti-gw ")


def test_gunicorn_without_packaging_says_which_extra_to_install(installed, docroot):
    """``pip install gunicorn`` alone, then ``-k ouistiti_gw.worker.GatewayWorker``: gunicorn's
    gevent worker imports ``packaging``, which only ``ouistiti_gw[gunicorn]`` brings."""
    subprocess.run([str(installed / "pip"), "install", "-q", "gunicorn"], check=True, timeout=600)
    subprocess.run([str(installed / "pip"), "uninstall", "-q", "-y", "packaging"], timeout=120)
    assert subprocess.run([str(installed / "python"), "-c", "import packaging"], capture_output=True).returncode
    result = subprocess.run([str(installed / "gunicorn"), "-k", "ouistiti_gw.worker.GatewayWorker", "-b",
                             f"127.0.0.1:{free_port()}", "ouistiti_gw:make_app()"], capture_output=True, text=True,
                            timeout=60, cwd="/", env={"OUISTITI_GW_DOCROOT": docroot, "PATH": str(installed)})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1:] == [
        "ouistiti_gw.worker needs gunicorn's gevent worker: pip install 'ouistiti_gw[gunicorn]' "
        "(No module named 'packaging')"]
    assert "Traceback" not in result.stderr
