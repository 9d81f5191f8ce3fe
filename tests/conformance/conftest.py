"""A gateway process and two echo servers for the whole conformance suite, and a raw client factory.

The cases are many and short, so they share a gateway (started once per handler, as
``tests/wrapped_app.py`` in front of a temporary docroot) instead of starting one per test. Behind it:

- ``/echo``: a SOCK_STREAM echo; its answer to one message may come back as several messages;
- ``/echo-seq``: a SOCK_SEQPACKET echo, one message back per message, for exact boundaries
  (messages up to the socket's send buffer, ~200 KiB).
"""
from __future__ import annotations

import socket
from typing import Callable, Iterator

import pytest

from rawclient import SEQPACKET_ECHO, STREAM_ECHO, RawClient
from support.addresses import remove_tree, short_tempdir
from support.processes import ServerProcess, gateway_test_app
from support.unix_servers import UnixServer, echo_handler


@pytest.fixture(scope="session")
def conformance_docroot() -> Iterator[str]:
    path = short_tempdir("gw-conf-")
    yield path
    remove_tree(path)


@pytest.fixture(scope="session")
def echo_servers(conformance_docroot: str) -> Iterator[dict[str, UnixServer]]:
    servers = {
        STREAM_ECHO: UnixServer(conformance_docroot + STREAM_ECHO, echo_handler),
        SEQPACKET_ECHO: UnixServer(conformance_docroot + SEQPACKET_ECHO, echo_handler,
                                   sock_type=socket.SOCK_SEQPACKET),
    }
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(scope="session", params=["gateway-handler", "stock-handler"])
def conformance_gateway(request: pytest.FixtureRequest, conformance_docroot: str,
                        echo_servers: dict[str, UnixServer]) -> Iterator[ServerProcess]:
    """The gateway under both handlers it supports, so every case runs twice.

    ``gateway-handler`` is the project's handler (CLI, ``GatewayWorker``, ini runner);
    ``stock-handler`` is gevent-websocket's own server, as under its ``GeventWebSocketWorker``:
    there gevent-websocket has done the handshake and its ``WebSocket`` object exists before
    the gateway takes the connection over, and nothing of that object may leak into the framing.
    """
    options = ("--stock",) if request.param == "stock-handler" else ()
    with gateway_test_app(conformance_docroot, *options) as process:
        yield process


@pytest.fixture(scope="session")
def deflate_gateway(conformance_docroot: str, echo_servers: dict[str, UnixServer]) -> Iterator[ServerProcess]:
    """The gateway under its own handler only, for permessage-deflate: gevent-websocket's stock
    handler answers the handshake before the gateway runs, without extensions (test_compression
    checks that under both)."""
    with gateway_test_app(conformance_docroot) as process:
        yield process


def _clients(gateway: ServerProcess, offer: str = "") -> Iterator[Callable[..., RawClient]]:
    """Open raw clients through ``gateway`` (each handshake with ``offer`` as its
    Sec-WebSocket-Extensions, if any); close them after the test, and check the gateway still runs."""
    clients: list[RawClient] = []

    def open_client(path: str = SEQPACKET_ECHO, *, offer: str = offer, extra_headers: str = "",
                    **kwargs) -> RawClient:
        if offer:
            extra_headers += f"Sec-WebSocket-Extensions: {offer}\r\n"
        client = RawClient(gateway.port, path, extra_headers=extra_headers, **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
    assert gateway.process.poll() is None, gateway.log()


@pytest.fixture
def connect(conformance_gateway: ServerProcess) -> Iterator[Callable[..., RawClient]]:
    """``connect(path=SEQPACKET_ECHO)`` opens a raw client through the shared gateway.

    After the test the clients are closed and the gateway must still be running: no case may
    crash it.
    """
    yield from _clients(conformance_gateway)


@pytest.fixture
def connect_deflate(deflate_gateway: ServerProcess) -> Iterator[Callable[..., RawClient]]:
    """``connect_deflate(path, offer="permessage-deflate")``: a raw client whose handshake offers
    permessage-deflate (``offer``: the Sec-WebSocket-Extensions sent), through the gateway's handler."""
    yield from _clients(deflate_gateway, "permessage-deflate")
