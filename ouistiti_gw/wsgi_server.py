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
from .config import ServerConfig, options
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


def handler_class(config: ServerConfig, base: type[GatewayHandler] = GatewayHandler) -> type[GatewayHandler]:
    """``base`` with the request limits of ``config``: each option the handler has as a class
    attribute (``header_timeout``, ``max_header_size``, ``keepalive_timeout``)."""
    limits = {item.name: getattr(config, item.name) for item in options(ServerConfig) if hasattr(base, item.name)}
    return type(base.__name__, (base,), limits)


def make_server(app: "WSGIApplication", config: ServerConfig = ServerConfig()) -> WSGIServer:
    """A ``WSGIServer`` with the gateway's handler, listening where ``config`` says, with TLS
    (wss://) when it has a ``certfile``."""
    tls = {"certfile": config.certfile, "keyfile": config.keyfile or config.certfile} if config.certfile else {}
    return GatewayServer((config.host, config.port), app, handler_class=handler_class(config), log=access_log,
                         error_log=log, spawn=LightGreenlet.spawn, **tls)


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
