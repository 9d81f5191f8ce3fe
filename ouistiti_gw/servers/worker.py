"""``GatewayWorker``: gunicorn's gevent worker with the handler that can refuse before the 101.

    gunicorn -k ouistiti_gw.worker.GatewayWorker ouistiti_gw:make_app

It builds the gateway as the worker boots, so a wrong configuration stops gunicorn with one line
("App failed to load" and why) instead of failing every request. Its handler's request limits
come from the environment (``OUISTITI_GW_HEADER_TIMEOUT``, ``OUISTITI_GW_MAX_HEADER_SIZE``,
``OUISTITI_GW_KEEPALIVE_TIMEOUT``: :class:`~ouistiti_gw.config.ServerConfig`); gunicorn's own ``-b``,
``--backlog`` and ``--certfile`` say where and how it listens.

The stock ``geventwebsocket.gunicorn.workers.GeventWebSocketWorker`` works too, but there a
refused WebSocket can only be closed (1008/1011), not answered with 403/404/503.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import gevent

try:
    from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
    from gunicorn.workers.ggevent import PyWSGIHandler, PyWSGIServer
except ImportError as missing:
    # gunicorn turns any error importing a worker class into a 20-line traceback; a SystemExit
    # is the one thing it lets through, as one line. gunicorn's gevent worker needs `packaging`
    # without declaring it (gunicorn[gevent] does), hence the extra.
    raise SystemExit(f"ouistiti_gw.worker needs gunicorn's gevent worker: pip install 'ouistiti_gw[gunicorn]' "
                     f"({missing})") from None  # named by the path users give to gunicorn -k

from ..config import ConfigurationError, ServerConfig
from ..gateway.gunicorn_log import follow_gunicorn_error_log
from ..reload.admin_channel import AdminPoint
from ..reload.live_sessions import process_sessions
from ..reload.rendezvous import TakeoverPoint, is_private, migrate, rendezvous_directory
from .accept_pacing import PacedAccept
from .handler import GatewayHandler
from .inifile import IniFile
from .paste import app_load_error, environment_gateway, make_app
from .tls import TimedHandshake
from .wsgi_server import handler_class

log = logging.getLogger(__name__)


class GunicornGatewayHandler(GatewayHandler, PyWSGIHandler):
    """The gateway's handler, with gunicorn's access log and environ keys."""


class GunicornGatewayServer(PacedAccept, TimedHandshake, PyWSGIServer):
    """gunicorn's gevent server, accepting a few connections per loop turn and quiet when out of
    file descriptors (:mod:`ouistiti_gw.servers.accept_pacing`), with gunicorn's ``--certfile``
    handshake bounded by ``OUISTITI_GW_HEADER_TIMEOUT`` (:mod:`ouistiti_gw.servers.tls`)."""


class GatewayWorker(GeventWebSocketWorker):
    """gunicorn's gevent worker with :class:`GunicornGatewayHandler`; on SIGTERM it stops accepting
    (as gunicorn does), hands its sessions to the new workers when a reload (``kill -HUP`` on the
    master) started some (:mod:`ouistiti_gw.reload.rendezvous`), and closes the others with 1001,
    within ``--graceful-timeout``."""

    wsgi_handler = GunicornGatewayHandler
    server_class = GunicornGatewayServer
    #: The app gunicorn loaded (set by ``load_wsgi``).
    wsgi: Any
    #: The request limits and drain_timeout, from the environment (set by ``load_wsgi``).
    server_config: ServerConfig
    #: The directory of the takeover sockets, picked by the master (None: it could make none).
    rendezvous: str | None = None
    #: Where sessions of older workers come in (None: no safe directory).
    takeover: TakeoverPoint | None = None
    #: Where the other workers ask about this one's sessions, for the admin endpoint (None: no safe directory).
    admin: AdminPoint | None = None
    #: The greenlet that hands the sessions over and closes the others, once SIGTERM came.
    leaving: gevent.Greenlet | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # gunicorn builds each worker object in its master, before the fork: the one place
        # where the master can make a directory all its workers, a HUP's new ones too, share.
        super().__init__(*args, **kwargs)
        self.rendezvous = rendezvous_directory(self.cfg.uid, self.cfg.gid)

    def init_process(self) -> None:
        # The gateway logs through ``logging``; where nothing is configured for it, its lines go
        # where gunicorn's error log goes, at gunicorn's --log-level.
        follow_gunicorn_error_log(self.log.error_log)
        super().init_process()

    def load_wsgi(self) -> None:
        """Read the request limits, load the app and, for ``ouistiti_gw:make_app``, build the
        gateway now: a :class:`~ouistiti_gw.config.ConfigurationError` then stops gunicorn at
        boot with its one-line message (raised as gunicorn's ``AppImportError``), instead of
        failing every request."""
        try:
            self.server_config = ServerConfig.from_environment()
            if self.cfg.paste:  # a malformed file: one line, not PasteDeploy's traceback (exit 3)
                IniFile(os.path.abspath(self.cfg.paste.split("#", 1)[0]))
            self.wsgi_handler = handler_class(self.server_config, GunicornGatewayHandler)
            super().load_wsgi()
            if self.wsgi is make_app:
                self.wsgi = environment_gateway.get()
        except ConfigurationError as error:
            raise app_load_error(error) from error

    def run(self) -> None:
        # gunicorn's "Booting worker" line comes before the app is loaded; this one says the
        # worker is about to accept.
        log.info("gateway worker %d serving", self.pid)
        directory = self.rendezvous
        if directory is not None and not is_private(directory, os.getuid()):
            log.warning("reload: %s is not this user's own directory closed to others: sessions will not move",
                        directory)
            directory = None
        self.takeover = TakeoverPoint(directory) if directory else None
        self.admin = AdminPoint(directory) if directory else None
        try:
            super().run()
            # gunicorn waits for the requests it started; sessions an older worker handed us
            # are no request of ours: they end (move on, or close) before we do
            if self.leaving is not None:
                self.leaving.join(timeout=self.cfg.graceful_timeout)
        finally:
            if self.takeover is not None:
                self.takeover.close()
            if self.admin is not None:
                self.admin.close()
            _forget_live_gauges(self.pid)

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        if self.leaving is None:
            self.leaving = gevent.spawn(self._leave)

    def _leave(self) -> None:
        """Sessions to the new workers if a reload started some, and what could not move
        (wss://) served on for ``drain_timeout`` (within ``--graceful-timeout``); then 1001 for
        the others, and a moment for their clients to answer."""
        if self.takeover is not None:
            self.takeover.close()  # no session comes in any more: we stop too
            migration = migrate(os.path.dirname(self.takeover.path), process_sessions,
                                 wait=max(1.0, self.cfg.graceful_timeout / 2))
            if migration.moved or migration.staying:
                process_sessions.wait_until_empty(min(self.server_config.drain_timeout, self.cfg.graceful_timeout / 2))
        process_sessions.close_all()
        process_sessions.wait_until_empty(self.cfg.graceful_timeout)


def _forget_live_gauges(pid: int) -> None:
    """In prometheus_client's multiprocess mode, a worker's open-session gauge ends with it."""
    try:
        from ..gateway.metrics import process_exited
    except ImportError:
        return  # no prometheus_client: no metrics
    process_exited(pid)
