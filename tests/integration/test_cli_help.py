"""What a newcomer reads first: ``ouistiti-gw --help`` in plain words, and the mode it names works."""
import subprocess

import pytest
from websockets.sync.client import connect

import ouistiti_gw
from support import BIN
from support.processes import gateway_cli


def help_text(*command: str) -> str:
    completed = subprocess.run([str(BIN / "ouistiti-gw"), *command, "--help"], capture_output=True, text=True,
                               timeout=30)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.mark.parametrize("command", [(), ("serve",), ("demo",)])
def test_help_is_plain_text(command):
    text = help_text(*command)
    assert "usage: ouistiti-gw" in text
    assert "`" not in text  # no reStructuredText markup leaking from docstrings


def test_version_is_the_package_version():
    completed = subprocess.run([str(BIN / "ouistiti-gw"), "--version"], capture_output=True, text=True, timeout=30)
    assert (completed.returncode, completed.stdout) == (0, f"ouistiti-gw {ouistiti_gw.__version__}\n")


def test_serve_help_names_the_default_mode():
    assert "--mode {pipe,direct}" in help_text("serve")


def test_mode_pipe_serves(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with gateway_cli(docroot, "--mode", "pipe") as gateway:
        with connect(f"{gateway.url}/echo") as ws:
            ws.send("piped")
            assert ws.recv() == "piped"
