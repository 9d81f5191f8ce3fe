"""Client processes started together: connections spread over a few processes, one start signal.

Why processes: a Python client in the gateway's process (or a single client process for 16
connections) would compete with what it measures for one interpreter lock. Each process connects
first, then all start on the same ``go`` line, so connection set-up is never timed.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

from procinfo import raise_nofile_limit

log = logging.getLogger(__name__)

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wsclient.py")
#: Connecting 10 000 idle connections through websockify (a fork each) takes a while.
CONNECT_TIMEOUT_SECONDS = 300.0


class ClientFailed(Exception):
    """A client process could not connect or could not finish: the figure is not available."""


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


@contextmanager
def client_processes(target: dict, connections: int, processes: int, **spec) -> Iterator[list[subprocess.Popen]]:
    """Start the clients and wait until every one has connected; they are gone after the block."""
    started: list[subprocess.Popen] = []
    try:
        for count in _split(connections, processes):
            arguments = json.dumps({"target": target, "connections": count, **spec})
            started.append(subprocess.Popen([sys.executable, CLIENT, arguments], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile_limit))
        for process in started:
            line = process.stdout.readline().strip()
            if line != "ready":
                raise ClientFailed(_error_of(line) or f"client exited with {process.wait()}")
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdin.close()
            process.stdout.close()


def _error_of(line: str) -> str | None:
    try:
        return json.loads(line).get("error")
    except (ValueError, AttributeError):
        return line or None


def start(processes: list[subprocess.Popen]) -> None:
    """Send every client its start line."""
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()


def collect(processes: list[subprocess.Popen], timeout: float) -> list[dict]:
    """Each client's JSON result; then the clients close their connections (all at once: a server's
    process tree read before this call still has every session open) and exit."""
    results = []
    for process in processes:
        line = process.stdout.readline()
        try:
            result = json.loads(line)
        except ValueError:
            raise ClientFailed(f"client printed {line[:200]!r}") from None
        if "error" in result:
            raise ClientFailed(result["error"])
        results.append(result)
    for process in processes:
        process.stdin.close()
        process.wait(timeout=timeout)
    return results


def release(processes: list[subprocess.Popen], timeout: float) -> list[dict]:
    """Start every client, then collect each one's JSON result."""
    start(processes)
    return collect(processes, timeout)


def run_clients(target: dict, connections: int, processes: int, *, timeout: float, **spec) -> list[dict]:
    """Connect, start together, and return one result per client process."""
    with client_processes(target, connections, processes, **spec) as started:
        return release(started, timeout)
