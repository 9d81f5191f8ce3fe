"""DNS rebinding: a gateway reached on a loopback address answers WebSockets for loopback names only.

The attacker's page on ``rebind.attacker.example`` re-points its name at 127.0.0.1: the browser
then sends ``Host`` and ``Origin`` of that name, which agree, so the Origin check alone lets it
in. The clients here do what such a browser does: they connect to 127.0.0.1 and send the
attacker's name as ``Host`` and ``Origin``, under each server the gateway runs in.
"""
import os
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from support.addresses import free_port, other_local_address
from support.clients import handshake_request, handshake_status, raw_request
from support.processes import STOCK_WORKER, gateway_cli, gateway_served_by, gateway_test_app, gunicorn

REBOUND = "rebind.attacker.example"


def connect_as(host: str, port: int, path: str = "/echo", address: str = "127.0.0.1", **kwargs):
    """A WebSocket client on ``address``:``port`` whose ``Host`` and ``Origin`` name ``host``."""
    authority = f"{host}:{port}"
    sock = socket.create_connection((address, port), timeout=10)
    return connect(f"ws://{authority}{path}", sock=sock, origin=f"http://{authority}", **kwargs)


def round_trip(host: str, port: int, address: str = "127.0.0.1") -> None:
    with connect_as(host, port, address=address) as ws:
        ws.send("hello")
        assert ws.recv() == "hello"


@pytest.mark.parametrize("server", ["cli", pytest.param("gunicorn", marks=pytest.mark.gunicorn)])
def test_rebound_name_gets_403_loopback_names_pass(docroot, unix_servers, server):
    echo = unix_servers(f"{docroot}/echo")
    with gateway_served_by(server, docroot) as gateway:
        port = gateway.port
        with pytest.raises(InvalidStatus) as refused:
            connect_as(REBOUND, port)
        assert refused.value.response.status_code == 403
        assert f"Host {REBOUND}:{port} is not one of this gateway's names" in gateway.log()
        assert echo.accepted == 0
        for host in ("localhost", "127.0.0.1", "[::1]", "LocalHost"):
            round_trip(host, port)
    assert echo.accepted == 4


def test_a_wildcard_listener_judges_the_address_each_connection_arrived_at(docroot, unix_servers):
    """Listening on 0.0.0.0, a connection that arrived at 127.0.0.1 gets the loopback check and
    one that arrived at the machine's other address does not: the arrival address is each
    connection's own, never the listener's (which names no address)."""
    other = other_local_address()
    if other is None:
        pytest.skip("this machine has no address but loopback")
    unix_servers(f"{docroot}/echo")
    with gateway_cli(docroot, "--host", "0.0.0.0") as gateway:
        with pytest.raises(InvalidStatus) as refused:
            connect_as(REBOUND, gateway.port)
        assert refused.value.response.status_code == 403
        round_trip(REBOUND, gateway.port, address=other)
        round_trip("localhost", gateway.port)


@pytest.mark.gunicorn
def test_stock_worker_closes_a_rebound_name_with_1008(docroot, unix_servers):
    echo = unix_servers(f"{docroot}/echo")
    port = free_port()
    with gunicorn(STOCK_WORKER, port, {"OUISTITI_GW_DOCROOT": docroot}):
        with connect_as(REBOUND, port) as ws:  # the 101 comes before the gateway runs
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008 and "allowed_hosts" in closed.value.rcvd.reason
        round_trip("localhost", port)
    assert echo.accepted == 1


def test_allowed_hosts_names_the_hosts_whatever_the_address(docroot, unix_servers):
    unix_servers(f"{docroot}/echo")
    with gateway_test_app(docroot, "--set", "allowed_hosts=gw.example.com, *.example.org") as gateway:
        round_trip("gw.example.com", gateway.port)
        round_trip("a.b.example.org", gateway.port)
        for host in (REBOUND, "localhost", "example.org"):
            with pytest.raises(InvalidStatus) as refused:
                connect_as(host, gateway.port)
            assert refused.value.response.status_code == 403
    with gateway_test_app(docroot, "--set", "allowed_hosts=*") as gateway:
        round_trip(REBOUND, gateway.port)


def plain_get(port: int, path: str, host: str) -> bytes:
    """The whole answer to ``GET path`` sent to 127.0.0.1:``port`` with ``Host: host``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return sock.makefile("rb").read()


@pytest.mark.parametrize("stock", [False, True])
def test_the_metrics_page_answers_loopback_names_only(docroot, stock):
    """A rebound page would read the socket names: the gateway's own page is judged like its WebSockets."""
    with gateway_test_app(docroot, "--set", "metrics_path=/metrics", *(["--stock"] if stock else [])) as gateway:
        assert plain_get(gateway.port, "/metrics", f"localhost:{gateway.port}").startswith(b"HTTP/1.1 200")
        assert plain_get(gateway.port, "/metrics", f"{REBOUND}:{gateway.port}").startswith(b"HTTP/1.1 403")
        assert f"refused metrics scrape from 127.0.0.1: Host {REBOUND}:{gateway.port} is not one" in gateway.log()


def test_the_wrapped_apps_plain_http_is_not_judged(gateway):
    """Only WebSocket requests are the gateway's business; the app decides about its own pages."""
    answer = plain_get(gateway.port, "/page", REBOUND)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"app: /page")


def test_refused_hosts_origins_and_sessions_cost_no_filesystem_work(docroot, unix_servers):
    """The cheap checks come before any look into docroot: a handshake that Host, Origin or
    max_connections refuse does not resolve its name. The evidence: ``alias`` is a link to a
    denied socket, which the lookup reads (and refuses: 403, "not served"); reading a link sets
    its access time (relatime: once it is older than the link's change time), and a refused
    handshake leaves it as it was, and is refused for its Host, Origin or the limit instead."""
    unix_servers(f"{docroot}/echo")
    secret = unix_servers(f"{docroot}/internal/secret")
    alias = f"{docroot}/alias"
    os.symlink("internal/secret", alias)
    long_ago = int(time.time()) - 3600
    os.utime(alias, (long_ago, long_ago), follow_symlinks=False)
    with gateway_test_app(docroot, "--set", "deny=internal/*", "--set", "max_connections=1") as gateway:
        port = gateway.port
        own = f"127.0.0.1:{port}"
        for host, origin in ((f"{REBOUND}:{port}", None), (own, "http://evil.example")):
            request = handshake_request("/alias", port=port, extra=f"Origin: {origin}\r\n" if origin else "")
            status, _, sock, _ = raw_request(port, request.replace(f"Host: {own}".encode(), f"Host: {host}".encode()))
            sock.close()
            assert status == 403
        with connect(f"ws://{own}/echo"):  # the one session max_connections allows
            assert handshake_status(port, "/alias")[0] == 503
        assert os.lstat(alias).st_atime == long_ago, "a refused handshake read the link"
        log = gateway.log()
        assert "is not one of this gateway's names" in log and "origin http://evil.example not allowed" in log
        assert "1 sessions already open (503)" in log and "not served" not in log
        assert handshake_status(port, "/alias")[0] == 403  # admitted: the lookup reads the link
        assert os.lstat(alias).st_atime > long_ago
        assert "name leads to a socket that is not served (403)" in gateway.log()
    assert secret.accepted == 0
