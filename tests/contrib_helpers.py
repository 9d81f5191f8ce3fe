"""Helpers for the tests of the sample servers in contrib/.

Each server runs for real, as ``python -m ouistiti_gw_contrib.X`` in a short
temporary docroot (UNIX socket paths are limited to 107 bytes), and is talked
to with plain AF_UNIX sockets.  Import the fixtures into a test module with
``from contrib_helpers import servers, workdir  # noqa: F401``.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

# One whole SOCK_SEQPACKET packet (b"" at the end of the connection); the tests import it from here too.
from ouistiti_gw.unix import recv_packet

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
PLUGIN = TESTS / "contrib_rpc_plugin.py"
TIMEOUT = 10.0

SOCK_TYPES = {
    "echo": socket.SOCK_STREAM,
    "chat": socket.SOCK_SEQPACKET,
    "jsonrpc": socket.SOCK_SEQPACKET,
}


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll *predicate* until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def command(program: str, *args: str) -> List[str]:
    """The command line running the sample *program* (echo, chat, jsonrpc)."""
    return [sys.executable, "-m", f"ouistiti_gw_contrib.{program}", *args]


def run(program: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a sample to completion (for option errors, --help, -D)."""
    return subprocess.run(command(program, *args), capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=ROOT, **kwargs)


def connect(path: str, sock_type: int) -> socket.socket:
    """A client connected to *path*, with a timeout so a test cannot hang."""
    sock = socket.socket(socket.AF_UNIX, sock_type)
    sock.settimeout(TIMEOUT)
    try:
        # With a timeout, a UNIX connect fails (EAGAIN) instead of waiting
        # while the backlog is full.
        wait_until(lambda: _try_connect(sock, path), f"room in the backlog of {path}")
    except BaseException:
        sock.close()
        raise
    return sock


def _try_connect(sock: socket.socket, path: str) -> bool:
    try:
        sock.connect(path)
    except BlockingIOError:
        return False
    return True


def accepts(path: str, sock_type: int) -> bool:
    """Whether a server listens on *path*."""
    try:
        connect(path, sock_type).close()
    except OSError:
        return False
    return True


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process that made the server socket listen."""
    pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid


def proc_status(pid: int) -> Dict[str, str]:
    """/proc/PID/status as a dict."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def wait_exit(pid: int) -> None:
    """Wait for a process that is not our child (a daemon) to end."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], TIMEOUT)
        assert ready, f"process {pid} did not end"
    finally:
        os.close(fd)


class Server:
    """A sample server started in the foreground."""

    def __init__(self, program: str, path: str, argv: List[str],
                 env: Optional[Dict[str, str]] = None) -> None:
        self.program = program
        self.path = path
        self.sock_type = SOCK_TYPES[program]
        self._log_file = tempfile.TemporaryFile()
        self.process = subprocess.Popen(argv, stdout=self._log_file, stderr=subprocess.STDOUT,
                                        cwd=ROOT, env=env)

    def wait_ready(self) -> "Server":
        """Wait until the socket accepts clients."""
        wait_until(lambda: self.process.poll() is not None or accepts(self.path, self.sock_type),
                   f"{self.program} to listen on {self.path}")
        assert self.process.poll() is None, f"{self.program} exited: {self.output()}"
        return self

    def connect(self) -> socket.socket:
        """A new client."""
        return connect(self.path, self.sock_type)

    def output(self) -> str:
        """What the server logged so far."""
        self._log_file.seek(0)
        return self._log_file.read().decode(errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop it; check the clean exit and that the socket file is gone."""
        self.process.send_signal(signum)
        assert self.process.wait(TIMEOUT) == 0, self.output()
        assert not os.path.lexists(self.path)

    def kill(self) -> None:
        """Last resort at the end of a test."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        self._log_file.close()


@pytest.fixture
def workdir():
    """A short temporary directory (socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="ogc")
    yield path
    subprocess.run(["rm", "-rf", path], check=False)


def start_servers(directory: str):
    """A factory of started servers, and the list of those (to kill at the end).

    ``start(program, *args, name="ws", docroot=DIR/run, argv0=None)`` runs
    ``python -m ouistiti_gw_contrib.PROGRAM -R DOCROOT -n NAME ARGS`` (without
    -n when *name* is None; as the command *argv0* when given) and waits until
    it listens (unless ``ready=False``).
    """
    started: List[Server] = []

    def start(program: str, *args: str, name: Optional[str] = "ws", docroot: Optional[str] = None,
              argv0: Optional[str] = None, env: Optional[Dict[str, str]] = None,
              ready: bool = True) -> Server:
        docroot = docroot or os.path.join(directory, "run")
        argv = ([argv0] if argv0 else command(program)) + ["-R", docroot]
        if name is not None:
            argv += ["-n", name]
        default_name = os.path.basename(argv0) if argv0 else f"websocket_{program}"
        server = Server(program, os.path.join(docroot, name or default_name), argv + list(args), env)
        started.append(server)
        return server.wait_ready() if ready else server

    return start, started


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


class RPCClient:
    """A JSON-RPC client on a SOCK_SEQPACKET connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.next_id = 0

    def send(self, payload: Any) -> None:
        """Send a JSON value (or raw bytes) as one packet."""
        self.sock.send(payload if isinstance(payload, bytes) else json.dumps(payload).encode())

    def receive(self) -> Any:
        """The next reply, decoded."""
        packet = recv_packet(self.sock)
        assert packet, "connection closed"
        return json.loads(packet)

    def call(self, method: str, params: Any = None) -> Dict[str, Any]:
        """Send a request and return the whole response object."""
        self.next_id += 1
        request: Dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self.next_id}
        if params is not None:
            request["params"] = params
        self.send(request)
        response = self.receive()
        assert response["id"] == self.next_id
        return response

    def result(self, method: str, params: Any = None) -> Any:
        """The result of a call that must succeed."""
        response = self.call(method, params)
        assert "error" not in response, response
        return response["result"]

    def error(self, method: str, params: Any = None) -> Dict[str, Any]:
        """The error object of a call that must fail."""
        response = self.call(method, params)
        assert "result" not in response, response
        return response["error"]

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()
