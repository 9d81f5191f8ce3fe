"""Serve a WSGI app with :class:`~ouistiti_gw.servers.handler.GatewayHandler` on gevent's ``pywsgi``.

The one place where a listening socket is made, for the CLI and the PasteDeploy server runner.
Under a reloading master (:mod:`ouistiti_gw.reload.supervisor`) the server is a worker: a successor
serves on the listening socket it inherited, takes the sessions of the worker it replaces, and
in its turn migrates its own (:mod:`ouistiti_gw.reload.migration`).
"""
from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIServer

from ..config import ServerConfig, options
from ..core.frames import CloseCode
from ..gateway.identity import listener_address
from ..gateway.upgrade import LOCAL_ADDRESS_KEY
from ..green.light_greenlet import LightGreenlet
from ..reload.live_sessions import process_sessions
from ..reload.migration import Migration, SuccessorGone, give_sessions, take_sessions
from ..reload.supervisor import WorkerLink, worker_link
from .accept_pacing import PacedAccept
from .handler import GatewayHandler
from .tls import TimedHandshake, server_context

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)
access_log = logging.getLogger("ouistiti_gw.access")


class GatewayServer(PacedAccept, TimedHandshake, WSGIServer):
    """gevent's WSGI server, accepting a few connections per loop turn and quiet when out of file
    descriptors (:mod:`ouistiti_gw.servers.accept_pacing`), with a TLS handshake bounded in time
    (:mod:`ouistiti_gw.servers.tls`), counting the connections it serves (a worker migrating its
    sessions waits for those in progress)."""

    connections = 0
    drain_timeout = 0.0

    def update_environ(self) -> None:
        """The base environ of every request, with the listener's address when every connection
        arrives at it (no ``getsockname`` a connection for the Host check and the PROXY header)."""
        super().update_environ()
        known = listener_address(self.address)
        if known is not None:
            self.environ[LOCAL_ADDRESS_KEY] = known

    def handle(self, *args) -> None:
        self.connections += 1
        try:
            super().handle(*args)
        finally:
            self.connections -= 1


#: How long a stop waits for open sessions before they are cut.
STOP_TIMEOUT_SECONDS = 5.0
#: How long a worker handing over waits for handshakes in progress to become sessions it can move.
HANDSHAKES_TIMEOUT_SECONDS = 10.0


def handler_class(config: ServerConfig, base: type[GatewayHandler] = GatewayHandler) -> type[GatewayHandler]:
    """``base`` with the request limits of ``config``: each option the handler has as a class
    attribute (``header_timeout``, ``max_header_size``, ``keepalive_timeout``)."""
    limits = {item.name: getattr(config, item.name) for item in options(ServerConfig) if hasattr(base, item.name)}
    return type(base.__name__, (base,), limits)


def make_server(app: "WSGIApplication", config: ServerConfig = ServerConfig()) -> WSGIServer:
    """A ``WSGIServer`` with the gateway's handler, listening where ``config`` says with its
    ``backlog``, with TLS (wss://) when it has a ``certfile``: loaded now, once (a missing or bad
    one is a :class:`~ouistiti_gw.config.ConfigurationError`)."""
    tls = {"ssl_context": server_context(config.certfile, config.keyfile)} if config.certfile else {}
    link = worker_link()
    listener = link.inherited_listener() if link is not None else None
    if listener is not None:
        if config.port and listener.getsockname()[:2] != (config.host, config.port):
            host, port = listener.getsockname()[:2]
            log.warning("still listening on %s:%d: another host or port takes a restart, not a reload", host, port)
        listener.listen(config.backlog)  # a reload's backlog applies to the socket it inherited
    server = GatewayServer(listener or (config.host, config.port), app, handler_class=handler_class(config),
                           backlog=None if listener else config.backlog,
                           log=access_log, error_log=log, spawn=LightGreenlet.spawn, **tls)
    server.drain_timeout = config.drain_timeout
    return server


def server_url(server: WSGIServer) -> str:
    host, port = server.address[:2]
    scheme = "https" if server.ssl_enabled else "http"
    return f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}/"


def serve_until_stopped(server: WSGIServer) -> None:
    """Run until SIGINT or SIGTERM; then stop accepting, close open sessions with 1001 and give
    their clients :data:`STOP_TIMEOUT_SECONDS` to answer before the connections are cut."""
    link = worker_link()
    if link is not None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is the master's, whoever got the signal
    server.start()
    log.info("ouistiti-gw listening on %s", server_url(server))
    stopping = Event()
    handlers = [gevent.signal_handler(sig, stopping.set) for sig in (signal.SIGINT, signal.SIGTERM)]
    orders = LightGreenlet.spawn(_follow_orders, link, server, stopping) if link is not None else None
    try:
        stopping.wait()
        closed = process_sessions.close_all()
        if closed:
            log.info("stopping: closing %d open session(s) with 1001", closed)
        else:  # after a reload too: its sessions moved or drained (its lines said how many)
            log.info("stopping: no session open")
    finally:
        for handler in handlers:
            handler.cancel()
        if orders is not None:
            orders.kill()
        server.stop(timeout=STOP_TIMEOUT_SECONDS)


def _follow_orders(link: WorkerLink, server: GatewayServer, stopping: Event) -> None:
    """A worker under a master: say it serves, then take sessions, or hand them over and stop."""
    link.serving(server.socket)
    taking: list[LightGreenlet] = []
    while (order := link.next_order()) is not None:
        role, channel = order
        if role == "take":
            taking.append(LightGreenlet.spawn(_take, channel))
        else:
            gevent.joinall(taking)  # a quick second reload: what we were taking moves on too
            _migrate(server, channel)
            break
    stopping.set()  # migrated, or the master is gone


def _take(channel) -> None:
    with channel:
        log.info("reload: took %d session(s) from the old worker", take_sessions(channel))


def _migrate(server: GatewayServer, channel) -> None:
    """Stop accepting (the successor does), move every session that can move, then let the
    others (wss://) drain for ``drain_timeout`` before closing them with 1001."""
    server.close()  # our copy of the listening socket: the successor accepts on its own
    migration = Migration()
    deadline = time.monotonic() + server.drain_timeout
    handshakes_deadline = min(deadline, time.monotonic() + HANDSHAKES_TIMEOUT_SECONDS)
    with channel:
        # Connections accepted before the switch may still be handshaking: they become
        # sessions here, and move too.
        while True:
            try:
                give_sessions(channel, process_sessions, migration)
            except SuccessorGone:
                break  # the successor is gone: what did not move stays and drains
            outcomes = [session.reload_outcome for session in process_sessions]
            if (None not in outcomes and server.connections <= outcomes.count("drained")
                    or time.monotonic() > handshakes_deadline):
                break
            gevent.sleep(0.05)
    log.info("reload: %d session(s) moved to the new worker, %d left to drain for up to %g s",
             migration.moved, migration.staying, server.drain_timeout)
    process_sessions.wait_until_empty(max(0.0, deadline - time.monotonic()))
    if len(process_sessions):
        log.info("reload: drain time over: closing %d session(s) with 1001",
                 process_sessions.close_all(CloseCode.GOING_AWAY, "server reloading"))
        process_sessions.wait_until_empty(STOP_TIMEOUT_SECONDS)
