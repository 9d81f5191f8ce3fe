"""Hostile request heads: the header budget (431), malformed field lines and bodies (400), and what
an idle session keeps of its handshake (nothing).

Every test runs the real CLI gateway and sends exact bytes from a raw socket.
"""
import socket
import time

import pytest

from rawclient import client_frame
from support import BIN, wait_until
from support.addresses import free_port
from support.clients import handshake_request, handshake_status, raw_request
from support.processes import PROJECT_WORKER, STOCK_WORKER, ServerProcess, gateway_cli, gunicorn

#: The default total budget of the request's header fields, and of one line (README, Security).
BUDGET = 32 * 1024
LINE = 8 * 1024


def header_lines(count: int, size: int) -> str:
    """``count`` header lines of exactly ``size`` bytes each, CRLF included."""
    return "".join(f"X-Fill-{i:03d}: ".ljust(size - 2, "a") + "\r\n" for i in range(count))


def warnings(gateway: ServerProcess) -> list[str]:
    return [line for line in gateway.log().splitlines() if "WARNING" in line]


@pytest.fixture
def echo_gateway(docroot, unix_servers):
    """``(gateway, echo)``: the CLI gateway with its defaults, and the UNIX server behind ``/echo``."""
    echo = unix_servers(f"{docroot}/echo")
    with gateway_cli(docroot) as gateway:
        yield gateway, echo


@pytest.mark.parametrize("extra", [
    header_lines(5, LINE - 100),  # few big lines, 40 KB in all
    header_lines(90, 400),  # many small ones, 36 KB
], ids=["big-lines", "many-small-lines"])
def test_headers_over_the_budget_get_431_before_any_unix_connection(echo_gateway, extra):
    gateway, echo = echo_gateway
    status, _, body = handshake_status(gateway.port, "/echo", extra=extra)
    assert status == 431 and b"bytes" in body
    assert echo.accepted == 0
    refusals = [line for line in warnings(gateway) if "431" in line]
    assert len(refusals) == 1 and f"over {BUDGET} bytes" in refusals[0]
    assert "Traceback" not in gateway.log()


def test_the_budget_is_enforced_while_reading(echo_gateway):
    """Past the budget the gateway answers at once: it does not wait for (or hold) the rest."""
    gateway, echo = echo_gateway
    head = handshake_request("/echo", port=gateway.port)[:-2]  # no blank line: the headers go on
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(head + header_lines(6, LINE - 100).encode())
        assert sock.recv(1000).startswith(b"HTTP/1.1 431 ")  # before the 10 s header timeout's 400
    assert echo.accepted == 0


def test_a_line_over_the_line_limit_gets_431(echo_gateway):
    gateway, echo = echo_gateway
    status, _, body = handshake_status(gateway.port, "/echo", extra=header_lines(1, LINE + 1))
    assert status == 431 and f"over {LINE} bytes".encode() in body
    assert echo.accepted == 0 and "Traceback" not in gateway.log()


def test_more_than_100_fields_get_431(echo_gateway):
    gateway, _ = echo_gateway  # the handshake itself has 5 fields
    assert handshake_status(gateway.port, "/echo", extra=header_lines(95, 30))[0] == 101
    assert handshake_status(gateway.port, "/echo", extra=header_lines(96, 30))[0] == 431


def test_a_plain_request_over_the_budget_gets_431_too(echo_gateway):
    gateway, _ = echo_gateway
    request = f"GET / HTTP/1.1\r\nHost: x\r\n{header_lines(5, LINE - 100)}\r\n".encode()
    status, _, sock, _ = raw_request(gateway.port, request)
    sock.close()
    assert status == 431


def test_the_budget_is_a_serve_flag(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with gateway_cli(docroot, "--max-header-size", "4096") as gateway:
        assert handshake_status(gateway.port, "/echo", extra=header_lines(10, 300))[0] == 101
        assert handshake_status(gateway.port, "/echo", extra=header_lines(20, 300))[0] == 431


def test_the_budget_is_an_ini_key(tmp_path, docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    port = free_port()
    (tmp_path / "gw.ini").write_text(f"""
[app:main]
use = egg:ouistiti_gw#main
docroot = {docroot}

[server:main]
use = egg:ouistiti_gw#gevent
port = {port}
max_header_size = 4096
header_timeout = 5
""")
    with ServerProcess([str(BIN / "ouistiti-gw"), "serve", str(tmp_path / "gw.ini")], port) as gateway:
        assert handshake_status(gateway.port, "/echo", extra=header_lines(10, 300))[0] == 101
        assert handshake_status(gateway.port, "/echo", extra=header_lines(20, 300))[0] == 431


@pytest.mark.gunicorn
def test_the_budget_is_an_environment_variable_under_the_gunicorn_worker(docroot, unix_servers):
    """gunicorn listens itself; GatewayWorker's handler takes its limits from OUISTITI_GW_*."""
    unix_servers(f"{docroot}/echo")
    port = free_port()
    with gunicorn(PROJECT_WORKER, port, {"OUISTITI_GW_DOCROOT": docroot, "OUISTITI_GW_MAX_HEADER_SIZE": "4096"}):
        assert handshake_status(port, "/echo", extra=header_lines(10, 300))[0] == 101
        assert handshake_status(port, "/echo", extra=header_lines(20, 300))[0] == 431


def send_in_pieces(port: int, request: bytes, piece: int) -> socket.socket:
    """A connection that sends ``request`` ``piece`` bytes at a time, a moment apart (a segment
    each): the gateway sees the header section come in parts."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for start in range(0, len(request), piece):
        sock.sendall(request[start:start + piece])
        time.sleep(0.005)
    return sock


def status_of(sock: socket.socket) -> int:
    """The status of the response ``sock`` gets (read up to its blank line)."""
    head = b""
    while b"\r\n\r\n" not in head and (chunk := sock.recv(1)):
        head += chunk
    return int(head.split()[1])


def echoes(sock: socket.socket) -> bool:
    """A message comes back through the session (as a text frame: the gateway's default)."""
    sock.sendall(client_frame(0x2, b"ping"))
    return sock.recv(100) == b"\x81\x04ping"


@pytest.mark.parametrize("piece", [None, 7], ids=["one-segment", "many-segments"])
def test_a_handshake_in_many_segments_or_with_bare_lf_is_served(echo_gateway, piece):
    """A header section read in one piece (all of it in the first read) or line by line as it
    comes, with CRLF or bare LF line ends: the same session."""
    gateway, _ = echo_gateway
    request = handshake_request("/echo", port=gateway.port, extra="X-Note: a\r\n")
    for sent in (request, request.replace(b"\r\n", b"\n")):
        with send_in_pieces(gateway.port, sent, piece or len(sent)) as sock:
            assert status_of(sock) == 101 and echoes(sock)


@pytest.mark.parametrize("piece", [None, 50], ids=["one-segment", "many-segments"])
def test_the_budget_holds_to_the_byte_however_the_section_comes(docroot, unix_servers, piece):
    """A header section of exactly max_header_size bytes (its blank line included) is served;
    one byte more gets 431; a malformed line 400. Both in one segment and in pieces."""
    unix_servers(f"{docroot}/echo")
    with gateway_cli(docroot, "--max-header-size", "1024") as gateway:
        plain = handshake_request("/echo", port=gateway.port)
        fields = len(plain) - plain.index(b"\r\n") - 2  # the section, blank line included
        for extra, status in ((1024, 101), (1025, 431)):
            request = handshake_request("/echo", port=gateway.port, extra=header_lines(1, extra - fields))
            with send_in_pieces(gateway.port, request, piece or len(request)) as sock:
                assert status_of(sock) == status
        folded = handshake_request("/echo", port=gateway.port, extra="X-Note: a\r\n X-Injected: yes\r\n")
        with send_in_pieces(gateway.port, folded, piece or len(folded)) as sock:
            assert status_of(sock) == 400
        wait_until(lambda: [line.rsplit(" ", 1)[-1] for line in warnings(gateway)] == ["(431)", "(400)"],
                   what="one refusal line each")


@pytest.mark.parametrize("sent", [b"", b"GET /ec"], ids=["nothing", "half-a-request-line"])
def test_a_connection_without_a_request_line_is_closed_after_keepalive_timeout(docroot, sent):
    with gateway_cli(docroot, "--keepalive-timeout", "1") as gateway:
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=20)
        with sock:
            sock.sendall(sent)
            started = time.monotonic()
            assert sock.recv(100) == b""
            assert 0.5 < time.monotonic() - started < 10


def test_an_idle_keepalive_connection_is_closed_after_keepalive_timeout(docroot, unix_servers):
    """The wait for a next request on a kept-alive connection is the server's ``keepalive_timeout``
    (60 s by default), not the sessions' ``idle_timeout``."""
    with gateway_cli(docroot, "--keepalive-timeout", "1", "--idle-timeout", "30") as gateway:
        status, _, sock, _ = raw_request(gateway.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with sock:
            assert status == 404
            started = time.monotonic()
            sock.settimeout(20)
            while sock.recv(65536):  # the rest of the 404's body, then the server's FIN
                pass
            assert 0.5 < time.monotonic() - started < 10


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "plain"])
@pytest.mark.parametrize("line", [
    "Sec-WebSocket-Protocol: chat\r\n X-Injected: yes",  # obsolete line folding (space)
    "X-Note: a\r\n\tX-Injected: yes",  # obsolete line folding (tab)
    "X-No-Colon",
    "X-Space-Before-Colon : 1",
    "Origin: http://a\rX-Injected: yes",  # a bare CR would end the field for the parser behind
    "X-Note: a\0b",
    "Bad Name: x\r\nOrigin: http://hidden.example",  # a parser that ends the fields here sees no Origin
], ids=["fold-space", "fold-tab", "no-colon", "space-before-colon", "bare-cr", "nul", "name-not-a-token"])
def test_malformed_field_lines_get_400(echo_gateway, websocket, line):
    """RFC 9112 section 5.1 and 5.2: a server MUST reject these with 400 (no 500, no traceback)."""
    gateway, echo = echo_gateway
    if websocket:
        request = handshake_request("/echo", port=gateway.port, extra=line + "\r\n")
    else:
        request = f"GET / HTTP/1.1\r\nHost: x\r\n{line}\r\n\r\n".encode()
    status, _, sock, _ = raw_request(gateway.port, request)
    sock.close()
    assert status == 400
    assert echo.accepted == 0
    wait_until(lambda: any("400" in line for line in warnings(gateway)), what="the refusal's log line")
    assert "Traceback" not in gateway.log()


@pytest.mark.parametrize("body_headers, body", [
    ("Content-Length: 5\r\n", b"hello"),
    ("Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
], ids=["content-length", "chunked"])
def test_a_handshake_with_a_body_gets_400(echo_gateway, body_headers, body):
    """A WebSocket handshake has no body: refused before any UNIX connection, and nothing is
    left for the HTTP server to read after a session (that read used to fail on a closed file)."""
    gateway, echo = echo_gateway
    request = handshake_request("/echo", port=gateway.port, extra=body_headers) + body
    status, _, sock, _ = raw_request(gateway.port, request)
    sock.close()
    assert status == 400
    assert echo.accepted == 0
    time.sleep(0.5)  # the error used to come once the session had ended
    log = gateway.log()
    assert "Traceback" not in log and "ValueError" not in log and "body" in log


@pytest.mark.parametrize("framing", [
    "Content-Length: 0\r\nContent-Length: 45\r\n",  # two values: gevent took the first
    "Content-Length: 0, 45\r\n",
    "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip\r\nContent-Length: 0\r\n",
    "Transfer-Encoding: gzip\r\n",  # the last coding is not chunked: no length at all
    "Content-Length: +0\r\n",  # int() reads these three; RFC 9112 does not
    "Content-Length: 0_0\r\n",
    "Content-Length: \u00b2\r\n",  # a superscript two: str.isdigit() says yes
], ids=["two-lengths", "length-list", "length-and-chunked", "gzip-and-length", "gzip", "plus", "underscore",
        "superscript"])
def test_ambiguous_framing_gets_400_and_the_connection_closes(echo_gateway, framing):
    """RFC 9112 section 6.3: a request whose body length two parsers could read differently is a
    smuggling attempt: 400, then close. Here a pipelined handshake hides in what the first
    Content-Length calls a body; it used to get its 101 after the plain request's answer."""
    gateway, echo = echo_gateway
    hidden = handshake_request("/echo", port=gateway.port)
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\n".encode("latin-1") + hidden
    status, headers, sock, rest = raw_request(gateway.port, request, timeout=5)
    with sock:
        assert status == 400
        while len(rest) < int(headers["content-length"]):
            rest += sock.recv(1000)
        received = rest[int(headers["content-length"]):]
        while chunk := sock.recv(1000):  # until the gateway's FIN: no 101 after the 400
            received += chunk
    assert b"101" not in received
    assert echo.accepted == 0
    wait_until(lambda: any("RFC 9112" in line for line in warnings(gateway)), what="the refusal's log line")
    assert "Traceback" not in gateway.log()


def test_a_repeated_identical_content_length_is_one_length(echo_gateway):
    """The RFC lets a recipient read ``Content-Length: 0`` sent twice as one length."""
    gateway, _ = echo_gateway
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"
    status, _, sock, _ = raw_request(gateway.port, request)
    sock.close()
    assert status == 404  # the wrapped app's answer


def test_a_refused_handshake_does_not_wait_for_its_body(echo_gateway):
    """The connection closes after the 400: a client announcing a body it never sends holds nothing."""
    gateway, _ = echo_gateway
    request = handshake_request("/echo", port=gateway.port, extra="Content-Length: 100000\r\n")
    status, headers, sock, rest = raw_request(gateway.port, request, timeout=5)
    with sock:
        assert status == 400
        while len(rest) < int(headers["content-length"]):
            rest += sock.recv(1000)
        assert sock.recv(1000) == b""  # the gateway's FIN, not a wait for 100 000 bytes


def test_an_empty_content_length_is_no_body(echo_gateway):
    gateway, _ = echo_gateway
    assert handshake_status(gateway.port, "/echo", extra="Content-Length: 0\r\n")[0] == 101


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def open_idle_sessions(port: int, count: int, extra: str) -> list[socket.socket]:
    sessions = []
    for _ in range(count):
        status, _, sock, _ = raw_request(port, handshake_request("/echo", port=port, extra=extra))
        assert status == 101
        sessions.append(sock)
    return sessions


def test_idle_sessions_keep_nothing_of_their_headers(docroot, unix_servers):
    """40 sessions opened with 256 KB of headers each (allowed here by a raised budget) and held
    idle grow the gateway by far less than 40 x 256 KB: the request is let go after the 101."""
    unix_servers(f"{docroot}/echo")
    count, big = 40, header_lines(32, LINE - 8)  # 32 lines of 8 KiB - 8: 262 KB
    with gateway_cli(docroot, "--max-header-size", str(1 << 20)) as gateway:
        sessions = open_idle_sessions(gateway.port, 5, big)  # warm up: the allocator's first pools
        try:
            time.sleep(0.5)
            before = vm_rss_kib(gateway.serving_pid)
            sessions += open_idle_sessions(gateway.port, count, big)
            time.sleep(0.5)
            grown = vm_rss_kib(gateway.serving_pid) - before
        finally:
            for sock in sessions:
                sock.close()
    assert grown * 1024 < count * len(big) / 4, f"{grown} KiB for {count} idle sessions"


@pytest.mark.gunicorn
def test_project_gunicorn_worker_refuses_heads_with_one_line_each(docroot, unix_servers):
    """Under gunicorn (access log on) a refused head is logged once, with why, and no traceback
    (gunicorn's access log needs an environ such a request never had)."""
    echo = unix_servers(f"{docroot}/echo")
    port = free_port()
    with gunicorn(PROJECT_WORKER, port, {"OUISTITI_GW_DOCROOT": docroot}, "--access-logfile", "-") as gateway:
        assert handshake_status(port, "/echo", extra=header_lines(5, LINE - 100))[0] == 431
        assert handshake_status(port, "/echo", extra="X-Note: a\r\n X-Injected: yes\r\n")[0] == 400
        wait_until(lambda: len(warnings(gateway)) >= 2, what="the refusals' log lines")
        time.sleep(0.5)
        assert [line.rsplit(" ", 1)[-1] for line in warnings(gateway)] == ["(431)", "(400)"]
        assert "Traceback" not in gateway.log()
    assert echo.accepted == 0


@pytest.mark.gunicorn
def test_stock_worker_handshake_with_a_body_ends_without_a_traceback(docroot, unix_servers):
    """gevent-websocket's handler upgrades it anyway (the body reads as a bad frame: 1002); once
    the session is over, the HTTP server must not try to drain a body from the reader we closed."""
    unix_servers(f"{docroot}/echo")
    port = free_port()
    with gunicorn(STOCK_WORKER, port, {"OUISTITI_GW_DOCROOT": docroot}) as gateway:
        request = handshake_request("/echo", port=port, extra="Content-Length: 5\r\n") + b"hello"
        status, _, sock, rest = raw_request(port, request)
        with sock:
            assert status == 101
            while sock.recv(1000):  # the close frame, then the gateway's FIN
                pass
        time.sleep(1)  # the error came right after the session
        log = gateway.log()
    assert "Traceback" not in log and "ValueError" not in log
