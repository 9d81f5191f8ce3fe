"""Fixtures shared by the tests: a short temporary docroot, UNIX servers in it, a gateway process."""
import pytest

from support import UnixServer, echo_handler, gateway_test_app, remove_tree, short_tempdir


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
