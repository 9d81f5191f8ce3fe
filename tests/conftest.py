"""Fixtures shared by the tests: a short temporary docroot, UNIX servers in it, a gateway process."""
import subprocess

import pytest

from support import BIN, UnixServer, echo_handler, gateway_test_app, remove_tree, short_tempdir, unix_accepts, wait_until


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
