"""Real parts for the tests: gateway processes on loopback ports, UNIX servers, raw HTTP clients.

Every server here is real: the gateway runs in its own process (as users run it: the CLI,
gunicorn, an ini file) and the UNIX servers are threads of the test process listening on real
sockets in a temporary docroot.
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import closing
from pathlib import Path

from ouistiti_gw.cli import unix_accepts  # noqa: F401  (the probe the demo uses)

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def short_tempdir(prefix: str = "gw-") -> str:
    """A temp dir with a short path: a UNIX socket path must fit in 107 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def port_accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def live_greenlets(port: int) -> int:
    """Greenlets alive in a gateway process running ``tests/wrapped_app.py``, as it counts them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/greenlets", timeout=10) as response:
        return int(response.read())


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class ServerProcess:
    """A server subprocess listening on ``port``; stopped with SIGTERM (then SIGKILL) on exit."""

    def __init__(self, argv: list[str], port: int, env: dict | None = None, cwd: str | None = None,
                 user: str | None = None) -> None:
        self.port = port
        self.log_path = tempfile.mktemp(prefix="gw-log-", dir="/tmp")
        self.log_file = open(self.log_path, "wb")
        full_env = dict(os.environ, **(env or {}))
        self.process = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT, env=full_env,
                                        cwd=cwd, user=user)
        try:
            wait_until(lambda: self.process.poll() is not None or port_accepts(port), what=f"port {port}")
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log()}")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        self.log_file.flush()
        return Path(self.log_path).read_text(errors="replace")

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
        os.unlink(self.log_path)


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


def gunicorn(worker: str, port: int, env: dict, *options: str) -> ServerProcess:
    argv = [str(BIN / "gunicorn"), "-k", worker, "-b", f"127.0.0.1:{port}", "--graceful-timeout", "2",
            *options, "ouistiti_gw:make_app()"]
    return ServerProcess(argv, port, env=env)


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

def handshake_request(path: str, *, port: int, extra: str = "", version: str = "13",
                      method: str = "GET", http: str = "HTTP/1.1") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
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


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


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
    from ouistiti_gw.proxy_protocol import parse
    from ouistiti_gw.unix import read_proxy_header

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
