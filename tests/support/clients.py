"""Clients of the gateway and of UNIX servers: WebSocket handshakes and plain HTTP sent byte for
byte, websockets' clients (one round trip, a refusal's close, many at once), a TCP connection from a
chosen local address, a certificate to trust, and UNIX clients that wait for room in a backlog."""
from __future__ import annotations

import asyncio
import base64
import http.client
import os
import resource
import socket
import struct
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from support import TIMEOUT, wait_until

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


def http_get(port: int, path: str, method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None, source: str | None = None) -> tuple[int, bytes]:
    """Status and body of a plain HTTP request (sent from the local address ``source``, if given)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                            source_address=(source, 0) if source else None)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def scrape(port: int, path: str = "/metrics") -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape as ``{(name, sorted labels): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def log_in(port: int, form: str) -> str:
    """``POST /login`` with ``form`` (url-encoded) to an app with a cookie login (the test app,
    the how-to's): the ``Cookie`` header value its ``Set-Cookie`` asks for."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/login", body=form.encode(),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = connection.getresponse()
        response.read()
        assert response.status in (200, 303), response.status
        return response.getheader("Set-Cookie").split(";", 1)[0]
    finally:
        connection.close()


# -- websockets' clients ----------------------------------------------------------------------

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


# -- TLS and the client's address (PROXY protocol, front proxies) -----------------------------

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


# -- UNIX clients -----------------------------------------------------------------------------

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
