"""What the gateway refuses, and how: HTTP statuses before the 101, never a socket outside docroot."""
import os
import socket
import sys

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from support import TESTS, wait_until
from support.addresses import free_port, remove_tree, short_tempdir
from support.clients import handshake_request, handshake_status, raw_request
from support.processes import ServerProcess, gateway_cli, gateway_test_app


@pytest.fixture
def outside(unix_servers):
    """A live socket outside docroot that no request may ever reach."""
    directory = short_tempdir("gw-out-")
    secret = unix_servers(f"{directory}/secret")
    yield directory, secret
    remove_tree(directory)


def traversal_targets(docroot: str, outside_dir: str) -> tuple[list[str], list[str]]:
    """Request targets (sent byte for byte) that try to reach ``outside_dir/secret``.

    Returns ``(hostile, lookalikes)``: the first must get 403; the second are names that only
    look like traversal (unicode dots and slashes): literal names inside docroot, so 404.
    """
    out = os.path.basename(outside_dir)
    os.symlink(f"{outside_dir}/secret", f"{docroot}/link")
    os.symlink(outside_dir, f"{docroot}/linkdir")
    os.symlink("/", f"{docroot}/root")
    os.mkdir(f"{docroot}/sub")
    os.symlink("../link", f"{docroot}/sub/relative")
    absolute = outside_dir.lstrip("/")
    hostile = [
        # dot segments, plain and percent-encoded, once, twice, thrice
        f"/../{out}/secret", f"/sub/../../{out}/secret", f"/%2e%2e/{out}/secret", f"/%2E%2E%2F{out}%2Fsecret",
        f"/..%2f{out}%2fsecret", f"/%252e%252e/{out}/secret", f"/%25252e%25252e%25252f{out}/secret",
        f"/.%2e/{out}/secret", f"/%2e./{out}/secret", f"/sub%2f..%2f..%2f{out}%2fsecret",
        f"/sub/%2e%2e/%2e%2e/{out}/secret", f"/sub/..%252f..%252f{out}%252fsecret", "/..", "/.", "/sub/..",
        "/%2e", "/%2e%2e", f"/./{out}", "/sub/.", "/echo/..",
        # absolute names and empty segments
        f"/{outside_dir}/secret", f"//{absolute}/secret", f"/%2f{absolute}%2fsecret", f"/%252f{absolute}/secret",
        "/sub//echo", "/", "//", "/sub/",
        # backslashes
        f"/..\\{out}\\secret", f"/%5c..%5c{out}%5csecret", f"/sub\\..\\..\\{out}", "/%255c..",
        # NUL, newlines and other control characters
        "/link%00", "/echo%00/x", "/echo%00", "/echo%0a", "/echo%0d%0aX-Injected:%201", "/ec%09ho", "/%7f",
        "/echo%2500",
        # bytes that are not UTF-8 (overlong dots and slashes included)
        "/%c0%ae%c0%ae/secret", "/..%c0%af", "/%ff", "/%e0%80%ae",
        # symlinks out of docroot, direct, through a directory, relative, to /
        "/link", "/linkdir/secret", "/./link", "/sub/./../link", "/sub/relative", f"/root/{absolute}/secret",
        "/root/etc/passwd",
        # too long for a UNIX socket address
        "/" + "a" * 200, "/" + "/".join(["sub"] * 40),
    ]
    lookalikes = [f"/\u2024\u2024/{out}/secret".encode().decode("latin-1"), "/%e2%80%a4%e2%80%a4/x",
                  f"/%ef%bc%8e%ef%bc%8e%ef%bc%8f{out}", "/..;/x", "/.../x", "/%20../x", "/LINK"]
    return hostile, lookalikes


def test_traversal_never_reaches_outside(docroot, unix_servers, outside):
    outside_dir, secret = outside
    unix_servers(f"{docroot}/echo")
    hostile, lookalikes = traversal_targets(docroot, outside_dir)
    assert len(hostile) + len(lookalikes) >= 50
    with gateway_test_app(docroot) as gateway:
        statuses = {target: handshake_status(gateway.port, target)[0] for target in hostile + lookalikes}
    assert secret.accepted == 0
    assert {t: statuses[t] for t in hostile if statuses[t] != 403} == {}
    assert {t: statuses[t] for t in lookalikes if statuses[t] != 404} == {}


@pytest.mark.parametrize("name, status", [("missing", 404), ("sub/missing", 404), ("file", 403),
                                          ("fifo", 403), ("dir", 403), ("deaf", 503)])
def test_statuses_before_the_upgrade(gateway, docroot, unix_servers, name, status):
    open(f"{docroot}/file", "w").close()
    os.mkfifo(f"{docroot}/fifo")
    os.mkdir(f"{docroot}/dir")
    unix_servers(f"{docroot}/deaf", listen=False)  # bound, nobody listening: ECONNREFUSED
    got, headers, body = handshake_status(gateway.port, f"/{name}")
    assert got == status
    assert "sec-websocket-accept" not in headers and b"Traceback" not in body
    assert name in gateway.log() and f"({status})" in gateway.log()


def test_no_permission_is_403(docroot, unix_servers):
    """The socket is mode 000; the gateway runs without root's right to override file modes."""
    server = unix_servers(f"{docroot}/private")
    os.chmod(f"{docroot}/private", 0)
    port = free_port()
    argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--",
            sys.executable, str(TESTS / "wrapped_app.py"), "--docroot", docroot, "--port", str(port)]
    with ServerProcess(argv, port) as gateway:
        status, _, _ = handshake_status(port, "/private")
        assert status == 403 and "permission denied" in gateway.log()
    assert server.accepted == 0


def test_allow_and_deny(docroot, unix_servers):
    servers = {name: unix_servers(f"{docroot}/{name}") for name in ("ws_echo", "echo", "chat/room1", "chat/secret")}
    with gateway_test_app(docroot, "--set", "allow=ws_*, chat/*", "--set", "deny=chat/secret") as gateway:
        for name in ("ws_echo", "chat/room1"):
            with connect(f"{gateway.url}/{name}") as ws:
                ws.send(name)
                assert ws.recv() == name
        # not the gateway's: the wrapped app answers, the socket is never connected
        for name in ("echo", "chat/secret"):
            status, _, body = handshake_status(gateway.port, f"/{name}")
            assert (status, body) == (200, f"app: /{name}".encode())
        log = gateway.log()
    assert [servers[n].accepted for n in ("ws_echo", "chat/room1", "echo", "chat/secret")] == [1, 1, 0, 0]
    # each says why, naming the rule (it left no trace, even with -v)
    assert "WebSocket echo from 127.0.0.1:" in log and "name not allowed by allow = ws_*, chat/*" in log
    assert "goes to the wrapped app: name denied by deny = chat/secret" in log


def test_the_cli_answers_a_websocket_for_a_denied_name_as_one(docroot, unix_servers):
    """The CLI's own app is a 404 for everything: to a WebSocket request it says no WebSocket is
    served there (it said "this server only carries WebSockets")."""
    unix_servers(f"{docroot}/auth")
    with gateway_cli(docroot, "--deny", "auth") as gateway:
        status, _, body = handshake_status(gateway.port, "/auth")
        log = gateway.log()
    assert (status, body) == (404, b"404 Not Found: no WebSocket service at this path\n")
    assert "WebSocket auth from 127.0.0.1:" in log and "name denied by deny = auth" in log


@pytest.mark.parametrize("kwargs, status", [
    ({"version": "8"}, 426), ({"version": ""}, 426), ({"method": "POST"}, 405), ({"http": "HTTP/1.0"}, 400),
])
def test_malformed_handshakes(gateway, docroot, unix_servers, kwargs, status):
    server = unix_servers(f"{docroot}/echo")
    got, headers, body = handshake_status(gateway.port, "/echo", **kwargs)
    assert got == status and b"Traceback" not in body
    if status == 426:
        assert headers["sec-websocket-version"] == "13"
    assert server.accepted == 0


def test_bad_key_is_400(gateway, docroot, unix_servers):
    server = unix_servers(f"{docroot}/echo")
    request = handshake_request("/echo", port=gateway.port).replace(b"Sec-WebSocket-Key", b"X-Nothing")
    status, _, sock, _ = raw_request(gateway.port, request)
    sock.close()
    assert status == 400 and server.accepted == 0


@pytest.mark.parametrize("origins, origin, status", [
    (None, None, 101),  # not a browser: no Origin header, nothing to protect
    (None, "http://127.0.0.1:{port}", 101),  # same host
    (None, "http://evil.example", 403),
    (None, "http://127.0.0.1:1", 403),  # same host name, another port: another origin
    (None, "null", 403),
    ("*", "http://evil.example", 101),
    ("https://app.example.com, https://*.example.org", "https://app.example.com", 101),
    ("https://app.example.com, https://*.example.org", "https://a.example.org:443", 101),
    ("https://app.example.com, https://*.example.org", "http://app.example.com", 403),
])
def test_origin_policy(docroot, unix_servers, origins, origin, status):
    server = unix_servers(f"{docroot}/echo")
    options = ["--set", f"origins={origins}"] if origins else []
    with gateway_test_app(docroot, *options) as gateway:
        extra = f"Origin: {origin.format(port=gateway.port)}\r\n" if origin else ""
        got = handshake_status(gateway.port, "/echo", extra=extra)[0]
        if status == 403:
            assert "not allowed" in gateway.log()
    assert got == status
    assert server.accepted == (1 if status == 101 else 0)


def test_max_connections_gives_503_before_any_unix_connection(docroot, unix_servers):
    server = unix_servers(f"{docroot}/echo")
    with gateway_test_app(docroot, "--set", "max_connections=2") as gateway:
        with connect(f"{gateway.url}/echo") as first, connect(f"{gateway.url}/echo"):
            assert handshake_status(gateway.port, "/echo")[0] == 503
            first.send("still")
            assert first.recv() == "still"
            # the server's accepting thread may lag behind the kernel's connections: wait for
            # the two sessions' ones, then no third may follow (the 503 came before any)
            wait_until(lambda: server.accepted >= 2, what="the two sessions' UNIX connections")
            assert server.accepted == 2
        wait_until(lambda: gateway.log().count("session closed") == 2, what="both sessions closed")
        with connect(f"{gateway.url}/echo") as third:  # a slot is free again
            third.send("again")
            assert third.recv() == "again"


def test_message_rate_limit_closes_1008(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with gateway_test_app(docroot, "--set", "max_message_rate=5") as gateway:
        with connect(f"{gateway.url}/echo") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                for i in range(100):  # far more than 5/s with a burst of 5
                    ws.send(f"m{i}")
                while True:
                    ws.recv()
        assert closed.value.rcvd.code == 1008 and "rate" in closed.value.rcvd.reason
        assert "messages/s" in gateway.log()


def test_huge_headers_get_431_not_a_traceback(gateway, docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    many = "".join(f"X-Header-{i}: {i}\r\n" for i in range(200))
    long_line = "X-Long: " + "a" * 70000 + "\r\n"
    for extra in (many, long_line):
        status, _, body = handshake_status(gateway.port, "/echo", extra=extra)
        assert status == 431 and b"Traceback" not in body
    assert handshake_status(gateway.port, "/" + "a" * 9000)[0] == 414


def test_slowloris_gets_400_and_does_not_hold_up_others(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with gateway_cli(docroot, "--header-timeout", "1") as gateway:
        slow = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        slow.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # meanwhile, others are served
            with connect(f"{gateway.url}/echo") as ws:
                ws.send("not blocked")
                assert ws.recv() == "not blocked"
            slow.sendall(b"X-Slow: 1\r\n")
        answer = slow.recv(1000)
        slow.close()
        assert answer.startswith(b"HTTP/1.1 400")


def test_the_subprotocol_fallback_tries_the_first_8_subprotocols_only(docroot, unix_servers):
    """ouistiti's fallback: for a name that does not exist, each requested subprotocol is tried as
    a name in turn. A handshake may carry thousands (32 KiB of headers), each a lookup in docroot:
    only the first 8 are tried (browsers send a handful), the others are ignored, not refused."""
    ninth = unix_servers(f"{docroot}/p9")
    nine = f"Sec-WebSocket-Protocol: {', '.join(f'p{i}' for i in range(1, 10))}\r\n"
    with gateway_test_app(docroot) as gateway:
        assert handshake_status(gateway.port, "/missing", extra=nine)[0] == 404
        eighth = unix_servers(f"{docroot}/p8")
        status, headers, _ = handshake_status(gateway.port, "/missing", extra=nine)
        assert status == 101 and headers["sec-websocket-protocol"] == "p8"
        # a name that exists is served whatever the number of subprotocols; the first is answered
        many = f"Sec-WebSocket-Protocol: {','.join(f'q{i}' for i in range(1500))}\r\n"
        status, headers, _ = handshake_status(gateway.port, "/p9", extra=many)
        assert status == 101 and headers["sec-websocket-protocol"] == "q0"
        assert "missing: no such socket (404)" in gateway.log()
    wait_until(lambda: (eighth.accepted, ninth.accepted) == (1, 1), what="one connection to each server")
