"""Fixtures of the unit tests: no process, no network; real sockets only where the unit is one."""
from __future__ import annotations

import shutil
from typing import Iterator

import pytest

from support import short_tempdir


@pytest.fixture
def socket_dir() -> Iterator[str]:
    """A directory with a path short enough for UNIX socket addresses (107 bytes)."""
    directory = short_tempdir("gwu-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
