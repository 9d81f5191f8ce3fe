"""Fixtures of the sample servers' tests: each server runs for real, as ``python -m
ouistiti_gw_contrib.X`` in a short temporary docroot (UNIX socket paths are limited to 107 bytes),
and is talked to with plain AF_UNIX sockets (helpers in tests/support/samples.py)."""
import subprocess
import tempfile

import pytest

from support.samples import start_servers


@pytest.fixture
def workdir():
    """A short temporary directory (socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="ogc")
    yield path
    subprocess.run(["rm", "-rf", path], check=False)


@pytest.fixture
def servers(workdir):
    """Start sample servers with ``servers(program, *args, name=...)``."""
    start, started = start_servers(workdir)
    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="module")
def module_servers():
    """Like :func:`servers`, shared by the tests of one module."""
    path = tempfile.mkdtemp(prefix="ogc")
    start, started = start_servers(path)
    yield start
    for server in started:
        server.kill()
    subprocess.run(["rm", "-rf", path], check=False)
