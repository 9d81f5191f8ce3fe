"""Fixtures shared by the tests: a short temporary docroot, UNIX servers in it, a gateway process."""
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from ouistiti_gw.cli import unix_accepts
from support import BIN, ROOT, wait_until
from support.addresses import remove_tree, short_tempdir
from support.processes import gateway_test_app
from support.unix_servers import UnixServer, echo_handler

#: Where ouistiti's C source tarball is found: CI has it at ``../shared/reference`` beside the clone.
REFERENCE_DIR_VARIABLE = "OUISTITI_REFERENCE_DIR"
OUISTITI_TARBALL_NAME = "ouistiti-56126a8.tar.gz"


@pytest.fixture(scope="session")
def ouistiti_tarball() -> Iterator[tarfile.TarFile]:
    """ouistiti's own source (the tests build its C samples from it); skipped when this clone has none."""
    reference = Path(os.environ.get(REFERENCE_DIR_VARIABLE) or ROOT.parent / "shared" / "reference")
    path = reference / OUISTITI_TARBALL_NAME
    if not path.is_file():
        pytest.skip(f"ouistiti's source {OUISTITI_TARBALL_NAME} is not in {reference}: "
                    f"set {REFERENCE_DIR_VARIABLE} to the directory that holds it to run this test")
    with tarfile.open(path) as tarball:
        yield tarball


@pytest.fixture
def docroot():
    path = short_tempdir()
    yield path
    remove_tree(path)


@pytest.fixture
def unix_servers():
    """Start UNIX servers with ``unix_servers(path, handler, sock_type)``; all closed after the test."""
    started = []

    def start(path, handler=echo_handler, sock_type=None, **kwargs):
        server = UnixServer(path, handler, **({"sock_type": sock_type} if sock_type else {}), **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def gateway(docroot):
    """The gateway (project handler) in front of tests/wrapped_app.py, serving ``docroot``."""
    with gateway_test_app(docroot) as process:
        yield process


@pytest.fixture
def sample(docroot):
    """Start a contrib sample server in docroot: ``sample("chat", "-w")``; each must exit 0 on SIGTERM."""
    started = []

    def start(program: str, *options: str) -> str:
        process = subprocess.Popen([str(BIN / f"websocket_{program}"), "-R", docroot, "-n", program, *options])
        started.append(process)
        wait_until(lambda: unix_accepts(f"{docroot}/{program}"), what=program)
        return program

    yield start
    for process in started:
        process.terminate()
        assert process.wait(10) == 0
