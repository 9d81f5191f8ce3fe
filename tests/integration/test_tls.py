"""wss:// against hostile clients, under the CLI and under gunicorn's ``--certfile``.

A TLS handshake runs under ``header_timeout``: clients that send nothing, or half a ClientHello,
are closed once it is over, while real clients are served. A handshake that fails (a reset,
garbage, plain HTTP on the TLS port) is one DEBUG line and a count, never a traceback. The
certificate is read once, at start.
"""
import os
import socket
import ssl
import urllib.request
from contextlib import ExitStack

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import wait_until
from support.addresses import free_port
from support.clients import echo_round_trip, self_signed_certificate
from support.processes import (
    PROJECT_WORKER,
    ServerProcess,
    fd_count,
    gateway_cli,
    gunicorn,
    only_child,
    settled_fd_count,
)

SILENT, HALF_HELLO = 30, 30
SERVERS = ["cli", pytest.param("gunicorn", marks=pytest.mark.gunicorn)]


def tls_gateway(server: str, docroot: str, cert: str, key: str) -> ServerProcess:
    """The gateway on wss:// with a 1 s ``header_timeout``, metrics on, logging at DEBUG."""
    if server == "cli":
        return gateway_cli(docroot, "-v", "--certfile", cert, "--keyfile", key, "--header-timeout", "1",
                           "--metrics-path", "/metrics")
    env = {"OUISTITI_GW_DOCROOT": docroot, "OUISTITI_GW_HEADER_TIMEOUT": "1", "OUISTITI_GW_METRICS_PATH": "/metrics"}
    return gunicorn(PROJECT_WORKER, free_port(), env, "--certfile", cert, "--keyfile", key, "--log-level", "debug")


def client_hello() -> bytes:
    """The first flight of a real TLS client: a whole ClientHello record."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server ended the connection (EOF, or a reset for bytes it left unread)."""
    sock.settimeout(10)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def tls_failures(port: int, context: ssl.SSLContext) -> dict[str, float]:
    """``ouistiti_gw_tls_handshake_failures_total`` by reason, from a scrape over https."""
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=context, timeout=10) as response:
        text = response.read().decode()
    return {sample.labels["reason"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "ouistiti_gw_tls_handshake_failures_total"}


@pytest.mark.parametrize("server", SERVERS)
def test_handshakes_that_never_finish_are_closed_after_header_timeout(tmp_path, docroot, unix_servers, server):
    unix_servers(f"{docroot}/echo")
    cert, key = self_signed_certificate(str(tmp_path))
    context = ssl.create_default_context(cafile=cert)
    half = client_hello()[:100]
    with tls_gateway(server, docroot, cert, key) as gateway, ExitStack() as hostile:
        pid = only_child(gateway.pid)  # the worker, under the CLI's master as under gunicorn
        url = f"wss://127.0.0.1:{gateway.port}/echo"
        echo_round_trip(url, ssl=context)
        idle = settled_fd_count(pid)
        clients = [hostile.enter_context(socket.create_connection(("127.0.0.1", gateway.port)))
                   for _ in range(SILENT + HALF_HELLO)]
        for sock in clients[SILENT:]:
            sock.sendall(half)
        wait_until(lambda: fd_count(pid) >= idle + len(clients), what="the hostile clients accepted")
        echo_round_trip(url, ssl=context)  # a real client meanwhile: served
        assert all(closed_by_server(sock) for sock in clients)
        wait_until(lambda: fd_count(pid) <= idle, what="the gateway's descriptors back to idle")
        assert tls_failures(gateway.port, context) == {"timeout": len(clients)}
        log = gateway.log()
    assert log.count("failed (timeout): not finished after 1 s") == len(clients)
    assert "Traceback" not in log


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # on, 0 s
    sock.close()


@pytest.mark.parametrize("server", SERVERS)
def test_aborted_handshakes_are_one_debug_line_each_never_a_traceback(tmp_path, docroot, unix_servers, server):
    unix_servers(f"{docroot}/echo")
    cert, key = self_signed_certificate(str(tmp_path))
    context = ssl.create_default_context(cafile=cert)
    hello = client_hello()
    aborts = {  # what each client sends before it goes, and how it goes
        "garbage": (os.urandom(600), socket.socket.close),
        "plain HTTP": (b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", socket.socket.close),
        "reset mid-hello": (hello[:50], _reset),
        "reset after a hello": (hello, _reset),
        "reset at once": (b"", _reset),
        "gone at once": (b"", socket.socket.close),
    }
    with tls_gateway(server, docroot, cert, key) as gateway:
        for data, leave in aborts.values():
            for _ in range(5):
                sock = socket.create_connection(("127.0.0.1", gateway.port))
                sock.sendall(data)
                leave(sock)
        failures = wait_until(lambda: (counted := tls_failures(gateway.port, context))
                              and sum(counted.values()) == 5 * len(aborts) and counted,
                              what="every aborted handshake counted")
        echo_round_trip(f"wss://127.0.0.1:{gateway.port}/echo", ssl=context)
        log = gateway.log()
    assert set(failures) <= {"closed", "protocol"} and failures["protocol"] >= 10  # garbage, plain HTTP
    assert log.count("TLS handshake from 127.0.0.1:") == 5 * len(aborts)
    assert "Traceback" not in log


def test_the_certificate_is_read_once_at_start(tmp_path, docroot, unix_servers):
    """gevent, given a certfile, read it for every connection: gone (or out of descriptors to
    open it), every client failed with a traceback."""
    unix_servers(f"{docroot}/echo")
    cert, key = self_signed_certificate(str(tmp_path))
    context = ssl.create_default_context(cafile=cert)
    with gateway_cli(docroot, "--certfile", cert, "--keyfile", key) as gateway:
        os.unlink(cert)
        os.unlink(key)
        for _ in range(3):
            echo_round_trip(f"wss://127.0.0.1:{gateway.port}/echo", ssl=context)
        log = gateway.log()
    assert "Traceback" not in log
