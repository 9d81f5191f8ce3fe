"""Real parts for the tests, one module per thing a test needs (tests/README.md lists them).

Every server here is real: the gateway runs in its own process (as users run it: the CLI,
gunicorn, an ini file), the sample servers too (``python -m ouistiti_gw_contrib.X``), and the
UNIX servers are threads of the test process listening on real sockets in a temporary docroot.
tox.ini's ``pythonpath`` puts ``tests/`` on ``sys.path``, so every test directory imports
``support.<module>``; fixtures live in the conftest.py files. This module holds what the others
stand on: the project's paths and the one way to wait.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: How long a helper waits for something that should take a fraction of a second.
TIMEOUT = 10.0


def wait_until(predicate: Callable[[], Any], what: str = "condition", *, timeout: float = TIMEOUT,
               interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
