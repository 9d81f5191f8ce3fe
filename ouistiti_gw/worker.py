"""``GatewayWorker``: gunicorn's gevent worker with the handler that can refuse before the 101.

    gunicorn -k ouistiti_gw.worker.GatewayWorker 'ouistiti_gw:make_app()'

The stock ``geventwebsocket.gunicorn.workers.GeventWebSocketWorker`` works too, but there a
refused WebSocket can only be closed (1008/1011), not answered with 403/404/503.
"""
from __future__ import annotations

import logging

import gevent
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from gunicorn.workers.ggevent import PyWSGIHandler, PyWSGIServer

from .accepting import QuietAccept
from .bridge import close_all_sessions
from .handler import GatewayHandler

log = logging.getLogger(__name__)


class GunicornGatewayHandler(GatewayHandler, PyWSGIHandler):
    """The gateway's handler, with gunicorn's access log and environ keys."""


class GunicornGatewayServer(QuietAccept, PyWSGIServer):
    """gunicorn's gevent server, quiet when out of file descriptors (:mod:`ouistiti_gw.accepting`)."""


class GatewayWorker(GeventWebSocketWorker):
    """gunicorn's gevent worker with :class:`GunicornGatewayHandler`; on SIGTERM it stops accepting
    (as gunicorn does) and closes open sessions with 1001, within ``--graceful-timeout``."""

    wsgi_handler = GunicornGatewayHandler
    server_class = GunicornGatewayServer

    def init_process(self) -> None:
        # The gateway logs through ``logging``; where nothing is configured for it, its lines go
        # where gunicorn's error log goes, at gunicorn's --log-level.
        gateway_log = logging.getLogger("ouistiti_gw")
        if not gateway_log.handlers and not logging.getLogger().handlers:
            for handler in self.log.error_log.handlers:
                gateway_log.addHandler(handler)
            gateway_log.setLevel(self.log.error_log.level)
        super().init_process()

    def run(self) -> None:
        # gunicorn's "Booting worker" line comes before the app is loaded; this one says the
        # worker is about to accept.
        log.info("gateway worker %d serving", self.pid)
        try:
            super().run()
        finally:
            _forget_live_gauges(self.pid)

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        gevent.spawn(close_all_sessions)


def _forget_live_gauges(pid: int) -> None:
    """In prometheus_client's multiprocess mode, a worker's open-session gauge ends with it."""
    try:
        from .metrics import process_exited
    except ImportError:
        return  # no prometheus_client: no metrics
    process_exited(pid)
