"""Serve a WSGI app with :class:`~ouistiti_gw.handler.GatewayHandler` on gevent's ``pywsgi``.

The one place where a listening socket is made, for the CLI and the PasteDeploy server runner.
"""
from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIServer

from .accepting import QuietAccept
from .bridge import process_sessions
from .greenlets import LightGreenlet
from .handler import GatewayHandler

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)
access_log = logging.getLogger("ouistiti_gw.access")

class GatewayServer(QuietAccept, WSGIServer):
    """gevent's WSGI server, quiet when out of file descriptors (:mod:`ouistiti_gw.accepting`)."""


#: How long a stop waits for open sessions before they are cut.
STOP_TIMEOUT_SECONDS = 5.0


def make_server(app: "WSGIApplication", host: str = "127.0.0.1", port: int = 8080,
                certfile: str | None = None, keyfile: str | None = None,
                header_timeout: float | None = None, max_header_size: int | None = None) -> WSGIServer:
    """A ``WSGIServer`` with the gateway's handler, TLS (wss://) when ``certfile`` is given.

    ``header_timeout`` overrides :attr:`GatewayHandler.header_timeout` (slow request headers get
    400), ``max_header_size`` :attr:`GatewayHandler.max_header_size` (larger headers get 431).
    """
    if keyfile and not certfile:
        raise ValueError("keyfile given without certfile")
    tls = {"certfile": certfile, "keyfile": keyfile or certfile} if certfile else {}
    overrides = {}
    if header_timeout is not None:
        overrides["header_timeout"] = float(header_timeout)
    if max_header_size is not None:
        overrides["max_header_size"] = int(max_header_size)
        if overrides["max_header_size"] <= 0:
            raise ValueError(f"max_header_size must be positive, not {max_header_size}")
    handler = type("GatewayHandler", (GatewayHandler,), overrides) if overrides else GatewayHandler
    return GatewayServer((host, int(port)), app, handler_class=handler, log=access_log, error_log=log,
                      spawn=LightGreenlet.spawn, **tls)


def server_url(server: WSGIServer) -> str:
    host, port = server.address[:2]
    scheme = "https" if server.ssl_enabled else "http"
    return f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}/"


def serve_until_stopped(server: WSGIServer) -> None:
    """Run until SIGINT or SIGTERM; then stop accepting, close open sessions with 1001 and give
    their clients :data:`STOP_TIMEOUT_SECONDS` to answer before the connections are cut."""
    server.start()
    log.info("ouistiti-gw listening on %s", server_url(server))
    stopping = Event()
    handlers = [gevent.signal_handler(sig, stopping.set) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        stopping.wait()
        log.info("stopping: closing %d open session(s) with 1001", process_sessions.close_all())
    finally:
        for handler in handlers:
            handler.cancel()
        server.stop(timeout=STOP_TIMEOUT_SECONDS)
