"""The contrib sample servers, run as ``python -m ouistiti_gw_contrib.X``, and their clients:
JSON-RPC calls, chat members."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any, Callable

from ouistiti_gw.green.unix import recv_packet
from support import ROOT, TESTS, TIMEOUT, wait_until
from support.clients import listens, unix_client
from support.processes import LoggedProcess

#: The methods websocket_jsonrpc loads with ``-L`` in the tests (a path, or ``rpc_plugin`` on PYTHONPATH).
PLUGIN = TESTS / "contrib" / "rpc_plugin.py"

SOCK_TYPES = {
    "echo": socket.SOCK_STREAM,
    "chat": socket.SOCK_SEQPACKET,
    "jsonrpc": socket.SOCK_SEQPACKET,
}


def command(program: str, *args: str) -> list[str]:
    """The command line running the sample *program* (echo, chat, jsonrpc)."""
    return [sys.executable, "-m", f"ouistiti_gw_contrib.{program}", *args]


def run(program: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a sample to completion (for option errors, --help, -D)."""
    return subprocess.run(command(program, *args), capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=ROOT, **kwargs)


def admin_command(database: str, *args: str, password: str) -> subprocess.CompletedProcess:
    """authrpc's administration command (``python -m ouistiti_gw_contrib.authrpc DB ...``), the
    password on its stdin."""
    return subprocess.run([sys.executable, "-m", "ouistiti_gw_contrib.authrpc", database, *args],
                          input=password + "\n", capture_output=True, text=True, timeout=30)


class SampleServer(LoggedProcess):
    """A sample server started in the foreground, run from the project's root."""

    def __init__(self, program: str, path: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.program = program
        self.path = path
        self.sock_type = SOCK_TYPES[program]
        super().__init__(argv, env, cwd=ROOT)

    def wait_ready(self) -> "SampleServer":
        """Wait until the socket accepts clients."""
        wait_until(lambda: self.process.poll() is not None or listens(self.path, self.sock_type),
                   f"{self.program} to listen on {self.path}")
        assert self.process.poll() is None, f"{self.program} exited: {self.log()}"
        return self

    def connect(self) -> socket.socket:
        """A new client."""
        return unix_client(self.path, self.sock_type)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop it; check the clean exit and that the socket file is gone."""
        self.process.send_signal(signum)
        assert self.process.wait(TIMEOUT) == 0, self.log()
        assert not os.path.lexists(self.path)

    def kill(self) -> None:
        """Last resort at the end of a test."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        self.remove_log()


def start_servers(directory: str) -> tuple[Callable[..., SampleServer], list[SampleServer]]:
    """A factory of started servers, and the list of those (to kill at the end).

    ``start(program, *args, name="ws", docroot=DIR/run, argv0=None)`` runs
    ``python -m ouistiti_gw_contrib.PROGRAM -R DOCROOT -n NAME ARGS`` (without
    -n when *name* is None; as the command *argv0* when given) and waits until
    it listens (unless ``ready=False``).
    """
    started: list[SampleServer] = []

    def start(program: str, *args: str, name: str | None = "ws", docroot: str | None = None,
              argv0: str | None = None, env: dict[str, str] | None = None,
              ready: bool = True) -> SampleServer:
        docroot = docroot or os.path.join(directory, "run")
        argv = ([argv0] if argv0 else command(program)) + ["-R", docroot]
        if name is not None:
            argv += ["-n", name]
        default_name = os.path.basename(argv0) if argv0 else f"websocket_{program}"
        server = SampleServer(program, os.path.join(docroot, name or default_name), argv + list(args), env)
        started.append(server)
        return server.wait_ready() if ready else server

    return start, started


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

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        """Send a request and return the whole response object."""
        self.next_id += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self.next_id}
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

    def error(self, method: str, params: Any = None) -> dict[str, Any]:
        """The error object of a call that must fail."""
        response = self.call(method, params)
        assert "result" not in response, response
        return response["error"]

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


def join(server: SampleServer, name: bytes) -> socket.socket:
    """A chat client that said hello (so the server has registered it)."""
    sock = server.connect()
    sock.send(b"WSHello " + name)
    welcome = recv_packet(sock)
    assert welcome.startswith(b"WSWelcome " + name)
    return sock


def next_after(marker_from: socket.socket, receiver: socket.socket) -> list[bytes]:
    """Make *marker_from* broadcast a marker; return what *receiver* got
    before it (nothing, when the server sent it nothing else)."""
    marker = b"marker %d" % id(receiver)
    marker_from.send(marker)
    before = []
    while (packet := recv_packet(receiver)) != marker:
        before.append(packet)
    return before
