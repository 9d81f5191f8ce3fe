"""Real parts for the tests: gateway processes on loopback ports, UNIX servers, raw HTTP clients,
the contrib sample servers and their clients. The one helper module of every test directory
(tox.ini's ``pythonpath`` puts ``tests/`` on ``sys.path``); fixtures live in the conftest.py files.

Every server here is real: the gateway runs in its own process (as users run it: the CLI,
gunicorn, an ini file), the sample servers too (``python -m ouistiti_gw_contrib.X``), and the
UNIX servers are threads of the test process listening on real sockets in a temporary docroot.
"""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from contextlib import closing
from pathlib import Path
from typing import Any, Callable

import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from ouistiti_gw.cli import unix_accepts  # noqa: F401  (the probe the demo uses)
from ouistiti_gw.core.frames import ProtocolViolation
from ouistiti_gw.green.unix import recv_packet

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
#: How long a helper waits for something that should take a fraction of a second.
TIMEOUT = 10.0
STOCK_WORKER = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
PROJECT_WORKER = "ouistiti_gw.worker.GatewayWorker"


def short_tempdir(prefix: str = "gw-") -> str:
    """A temp dir with a short path: a UNIX socket path must fit in 107 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


#: Where :func:`free_port` picks: below Linux's ephemeral range (32768-60999), so that no client
#: socket takes a port between its pick and the server's bind. Test runs side by side (.ci/run
#: runs two Pythons at once) each get their own range through this variable: a port one run
#: picked and released is then never picked by the other before its server binds it.
PORT_RANGE_VARIABLE = "OUISTITI_TEST_PORTS"
DEFAULT_PORT_RANGE = "20000-32767"


def free_port() -> int:
    """A loopback port nobody listens on, picked at random in this run's range."""
    low, high = (int(bound) for bound in os.environ.get(PORT_RANGE_VARIABLE, DEFAULT_PORT_RANGE).split("-"))
    for _ in range(100):
        port = random.randint(low, high)
        with closing(socket.socket()) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {low}-{high} ({PORT_RANGE_VARIABLE})")


def listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on ``port`` (any address), from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(int(fields[9]))
    return inodes


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    tree, index = [pid], 0
    while index < len(tree):
        try:
            for task in os.listdir(f"/proc/{tree[index]}/task"):
                with open(f"/proc/{tree[index]}/task/{task}/children") as children:
                    tree.extend(int(child) for child in children.read().split())
        except OSError:
            pass  # it just ended
        index += 1
    return tree


def listens_on(pid: int, port: int) -> bool:
    """Whether the process ``pid`` (or one it started) holds the socket listening on ``port``:
    a server counts as started only when *it* answers there, not whoever else got the port."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    for member in process_tree(pid) if wanted else []:
        try:
            if any(os.readlink(f"/proc/{member}/fd/{fd}") in wanted for fd in os.listdir(f"/proc/{member}/fd")):
                return True
        except OSError:
            continue  # it ended, or an fd closed while we looked
    return False


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


def live_greenlets(port: int) -> int:
    """Greenlets alive in a gateway process running ``tests/wrapped_app.py``, as it counts them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/greenlets", timeout=10) as response:
        return int(response.read())


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int) -> int:
    """The descriptors of an idle gateway, once the start-up probe's connection is closed too."""
    previous = -1
    while (count := fd_count(pid)) != previous:
        previous = count
        time.sleep(0.5)
    return count


class LoggedProcess:
    """A subprocess whose stdout and stderr go to a temporary file, read back with :meth:`log`.

    ``env`` adds to (or overrides) the test process's environment.
    """

    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | Path | None = None,
                 user: str | None = None) -> None:
        self.log_path = tempfile.mktemp(prefix="gw-log-", dir="/tmp")
        self.log_file = open(self.log_path, "wb")
        full_env = dict(os.environ, **(env or {}))
        self.process = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT, env=full_env,
                                        cwd=cwd, user=user)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """What the process wrote so far."""
        self.log_file.flush()
        return Path(self.log_path).read_text(errors="replace")

    def remove_log(self) -> None:
        self.log_file.close()
        if os.path.exists(self.log_path):
            os.unlink(self.log_path)


class ServerProcess(LoggedProcess):
    """A server subprocess listening on ``port``; stopped with SIGTERM (then SIGKILL) on exit."""

    def __init__(self, argv: list[str], port: int, env: dict | None = None, cwd: str | None = None,
                 user: str | None = None) -> None:
        self.port = port
        super().__init__(argv, env, cwd, user)
        try:
            wait_until(lambda: self.process.poll() is not None or listens_on(self.pid, port),
                       what=f"port {port} (pid {self.pid})")
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log()}")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def serving_pid(self) -> int:
        """The process that carries the sessions, whose memory and descriptors a test measures:
        the only child of a master (``ouistiti-gw serve``'s worker, gunicorn's single worker),
        else this process itself."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return int(children[0]) if len(children) == 1 else self.pid

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.remove_log()


def gateway_cli(docroot: str, *options: str, port: int | None = None, **kwargs) -> ServerProcess:
    """``ouistiti-gw serve --docroot DOCROOT`` on a free port."""
    port = port or free_port()
    argv = [str(BIN / "ouistiti-gw"), "serve", "--docroot", docroot, "--port", str(port), *options]
    return ServerProcess(argv, port, **kwargs)


def gateway_test_app(docroot: str, *options: str, port: int | None = None, **kwargs) -> ServerProcess:
    """The gateway in front of the test app of ``tests/wrapped_app.py`` (routes, streaming, close())."""
    port = port or free_port()
    argv = [sys.executable, str(TESTS / "wrapped_app.py"), "--docroot", docroot, "--port", str(port), *options]
    return ServerProcess(argv, port, **kwargs)


def gunicorn_argv(worker: str, port: int, *arguments: str) -> list[str]:
    """gunicorn's command line with ``worker`` on ``127.0.0.1:port``; the app is the last argument."""
    return [str(BIN / "gunicorn"), "-k", worker, "-b", f"127.0.0.1:{port}", "--graceful-timeout", "2", *arguments]


def gunicorn(worker: str, port: int, env: dict, *options: str) -> ServerProcess:
    """gunicorn serving ``ouistiti_gw:make_app()`` configured by ``env`` (``OUISTITI_GW_*``)."""
    return ServerProcess(gunicorn_argv(worker, port, *options, "ouistiti_gw:make_app()"), port, env=env)


# -- UNIX servers -----------------------------------------------------------------------------

class UnixServer:
    """A threaded UNIX server; ``handler(conn, server)`` runs per connection in its own thread.

    Records the connections it accepted, so a test can check that a socket was (never) reached.
    """

    def __init__(self, path: str, handler, sock_type: int = socket.SOCK_STREAM, listen: bool = True) -> None:
        self.path = path
        self.handler = handler
        self.accepted = 0
        self.closed_by_peer = threading.Event()
        self.received: list[bytes] = []
        self.connections: list[socket.socket] = []
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, sock_type)
        self.sock.bind(path)
        if listen:
            self.sock.listen(64)
            threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for conn in self.connections:
            try:
                conn.close()
            except OSError:
                pass
        if os.path.exists(self.path):
            os.unlink(self.path)


def echo_handler(conn: socket.socket, server: UnixServer) -> None:
    """Echo every read back (stream) or every packet back (seqpacket), recording what came in."""
    while True:
        data = conn.recv(8 * 1024 * 1024)
        if not data:
            server.closed_by_peer.set()
            return
        server.received.append(data)
        conn.sendall(data)


def say_bye_and_leave(conn: socket.socket, server: UnixServer) -> None:
    """Answer the first read with ``bye``, then close: the server ends the session."""
    conn.recv(100)
    conn.sendall(b"bye")


def read_until_eof(conn: socket.socket, server: UnixServer) -> None:
    """Record everything until the peer closes, then flag ``closed_by_peer``."""
    while True:
        data = conn.recv(65536)
        if not data:
            server.closed_by_peer.set()
            return
        server.received.append(data)


# -- raw HTTP ---------------------------------------------------------------------------------

def new_key() -> str:
    """A fresh Sec-WebSocket-Key (RFC 6455 section 4.1: 16 random bytes, base64)."""
    return base64.b64encode(os.urandom(16)).decode()


def handshake_request(path: str, *, port: int, extra: str = "", version: str = "13",
                      method: str = "GET", http: str = "HTTP/1.1", key: str | None = None) -> bytes:
    """An opening handshake for ``path``, byte for byte (``extra``: more header lines, each ending CRLF)."""
    key = key or new_key()
    return (f"{method} {path} {http}\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n"
            f"{extra}\r\n").encode("latin-1")


def raw_request(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], socket.socket, bytes]:
    """Send exact request bytes; return status, headers, the open socket and bytes read past the headers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, sock, rest


def handshake_status(port: int, path: str, **kwargs) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a WebSocket handshake for ``path`` (sent byte for byte)."""
    status, headers, sock, rest = raw_request(port, handshake_request(path, port=port, **kwargs))
    with sock:
        if status != 101:
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
    return status, headers, rest


def proxy_header_too_long_request(port: int) -> bytes:
    """A handshake for ``/echo`` whose PROXY v2 header cannot be built: a 65 000-byte ``Host`` and
    a long query pass its 16-bit length (only gevent-websocket's own handler reads such lines)."""
    return handshake_request("/echo?" + "q" * 7000, port=port).replace(
        f"Host: 127.0.0.1:{port}".encode(), b"Host: " + b"h" * 65000)


def close_after_101(port: int, request: bytes) -> bytes:
    """Send ``request``; the start of what follows its 101 (a close frame's is ``\\x88``, its length, its code)."""
    status, _, sock, rest = raw_request(port, request)
    with sock:
        while len(rest) < 4 and (chunk := sock.recv(1000)):
            rest += chunk
    assert status == 101, status
    return rest


# -- the protocol core -----------------------------------------------------------------------

def violation_of(protocol: Any, data: bytes) -> ProtocolViolation:
    """The :class:`~ouistiti_gw.core.frames.ProtocolViolation` a sans-I/O ``Protocol`` raises on
    ``data`` (fed at once, every event taken); after it, nothing more is parsed."""
    protocol.receive_data(data)
    with pytest.raises(ProtocolViolation) as raised:
        while protocol.next_event() is not None:
            pass
    assert not protocol.receiving
    return raised.value


# -- permessage-deflate ----------------------------------------------------------------------

def deflate(data: bytes, wbits: int = 15) -> bytes:
    """``data`` as a permessage-deflate payload (RFC 7692 section 7.2.1): raw deflate, sync flush,
    without the final ``00 00 ff ff``."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload: bytes, wbits: int = 15) -> bytes:
    """A permessage-deflate payload inflated with a fresh window of ``wbits``."""
    return zlib.decompressobj(-wbits).decompress(payload + b"\x00\x00\xff\xff")


#: Deflate's best ratio: a match of 258 bytes costs 2 bits, so each zero byte inside a block of
#: such matches is 1032 bytes inflated.
BOMB_RATIO = 1032


def deflate_bomb(size: int) -> bytes:
    """A permessage-deflate payload of about ``size`` bytes that inflates to about
    ``size * 1032`` zero bytes (1 MiB -> 1 GiB), built without deflating that much: the zero
    bytes in the middle of deflated zeros are matches of 258 zeros at distance 1, so more of
    them inflate to more zeros (:func:`inflated_size_of_bomb` says exactly how many)."""
    head = deflate(bytes(1 << 20))
    start = head.index(bytes(16))  # where the run of 2-bit matches begins
    return head[:start] + bytes(size) + head[start:]


def inflated_size_of_bomb(size: int) -> int:
    return (1 << 20) + BOMB_RATIO * size


# -- clients ----------------------------------------------------------------------------------

def http_get(port: int, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    """Status and body of a plain HTTP request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def echo_round_trip(url: str, **kwargs) -> None:
    """One message to an echo server at ``url`` and back (``kwargs`` go to websockets' ``connect``)."""
    with ws_connect(url, **kwargs) as ws:
        ws.send("round trip")
        assert ws.recv() == "round trip"


def close_of(url: str) -> tuple[int, str]:
    """The close code and reason a refused WebSocket ends with under the stock worker."""
    with ws_connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    return closed.value.rcvd.code, closed.value.rcvd.reason


def raise_fd_limit(wanted: int) -> None:
    """Room for ``wanted`` file descriptors in this process (many clients at once), up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def numbered_echo(url: str, client: int, messages: int) -> list[str]:
    """Send ``messages`` numbered lines at once; read back until all came, whatever the chunking."""
    async with async_connect(url, max_size=None, open_timeout=60, ping_interval=None) as ws:
        for i in range(messages):
            await ws.send(f"{client}:{i}\n")
        received = ""
        while received.count("\n") < messages:
            received += await ws.recv()
        return received.splitlines()


async def all_clients(url: str, clients: int, messages: int) -> list[list[str]]:
    """``clients`` concurrent :func:`numbered_echo` clients; their lines, by client number."""
    return await asyncio.gather(*(numbered_echo(url, c, messages) for c in range(clients)))


# -- client identity (PROXY protocol, front proxies) -------------------------------------------

def self_signed_certificate(directory: str, name: str = "127.0.0.1") -> tuple[str, str]:
    """``(cert.pem, key.pem)`` made by the openssl CLI in ``directory``, for ``name``."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    f"/CN={name}", "-addext", f"subjectAltName=IP:{name}", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def socket_from(source: str, port: int, host: str = "127.0.0.1") -> socket.socket:
    """A TCP connection to ``host:port`` sent from the local address ``source`` (e.g. 127.0.0.2),
    for a WebSocket client's ``sock=``: the gateway (or nginx) then sees that address."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((host, port))
    return sock


def proxied_echo_handler(conn: socket.socket, server: UnixServer) -> None:
    """Read the PROXY header (recorded in ``server.headers``, raw bytes in ``server.raw_headers``),
    then echo as :func:`echo_handler` does."""
    from ouistiti_gw.backend import read_proxy_header
    from ouistiti_gw.core.proxy_protocol import parse

    peeked = conn.recv(65536 + 16, socket.MSG_PEEK)
    header = read_proxy_header(conn)
    vars(server).setdefault("headers", []).append(header)
    vars(server).setdefault("raw_headers", []).append(peeked[:parse(peeked)[1]])
    echo_handler(conn, server)


def gateway_served_by(server: str, docroot: str) -> ServerProcess:
    """The gateway alone (``make_app()``'s) on a free port, served by ``"cli"`` (the project's
    handler) or ``"gunicorn"`` (the project's worker, logging at info)."""
    port = free_port()
    if server == "cli":
        return gateway_cli(docroot, port=port)
    return gunicorn("ouistiti_gw.worker.GatewayWorker", port, {"OUISTITI_GW_DOCROOT": docroot}, "--log-level", "info")



def only_child(pid: int) -> int:
    """The one child process of ``pid`` (gunicorn's worker, which carries the sessions)."""
    children = wait_until(lambda: Path(f"/proc/{pid}/task/{pid}/children").read_text().split(), what="a child")
    assert len(children) == 1, children
    return int(children[0])


# -- the contrib sample servers, run as ``python -m ouistiti_gw_contrib.X`` ---------------------

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


def unix_client(path: str, sock_type: int) -> socket.socket:
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


def listens(path: str, sock_type: int) -> bool:
    """Whether a server of ``sock_type`` listens on *path*."""
    try:
        unix_client(path, sock_type).close()
    except OSError:
        return False
    return True


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process that made the server socket listen."""
    pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid


def proc_status(pid: int) -> dict[str, str]:
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
