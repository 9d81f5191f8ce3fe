"""``BuiltOnce``: a WSGI app built on its first request, for a server that never calls a factory.

``gunicorn ouistiti_gw:make_app`` (no parentheses) takes ``make_app`` itself as the application:
gunicorn only calls what it loads when the app string is a call (``make_app()``). The gateway is
then built from the environment by the first request. ``GatewayWorker`` builds it when the worker
boots instead (:meth:`BuiltOnce.get`), so a bad configuration stops gunicorn at once; the stock
worker runs none of our code before a request, so there the first request finds out: one log
line per worker, then every request gets a 500 (a WebSocket: close 1011), without a traceback.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Iterable

from gevent.lock import Semaphore

from ..config import ConfigurationError
from ..core.frames import CloseCode
from ..gateway.gunicorn_log import follow_gunicorn_error_log
from ..gateway.stock_handler import take_over
from ..green.websocket import WebSocket

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

UNCONFIGURED_REASON = "gateway not configured"


class BuiltOnce:
    """The WSGI app ``build()`` returns, built by the first call, once, even when two requests
    arrive together (the second waits for the first's build). ``build`` raises
    :class:`~ouistiti_gw.config.ConfigurationError` when the configuration is wrong; that answer
    is kept, so it is not rebuilt on every request."""

    def __init__(self, build: Callable[[], "WSGIApplication"]) -> None:
        self._build = build
        self._lock = Semaphore()
        #: The app once built, or why it could not be (None: not tried yet).
        self._outcome: "WSGIApplication | ConfigurationError | None" = None
        self._error_logged = False

    def get(self) -> "WSGIApplication":
        """The app, built now if it is not yet; :class:`~ouistiti_gw.config.ConfigurationError` if it cannot be."""
        with self._lock:
            if self._outcome is None:
                follow_gunicorn_error_log()  # the stock worker's only chance to route our lines
                try:
                    self._outcome = self._build()
                except ConfigurationError as error:
                    self._outcome = error
            if isinstance(self._outcome, ConfigurationError):
                raise self._outcome.with_traceback(None)  # not one more traceback per request
            return self._outcome

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        try:
            app = self.get()
        except ConfigurationError as error:
            if not self._error_logged:
                self._error_logged = True
                log.error("%s: %s", UNCONFIGURED_REASON, error)
            return unconfigured(environ, start_response)
        return app(environ, start_response)


def unconfigured(environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
    """500 for a plain request; under the stock worker a WebSocket is already open: close 1011."""
    connection = take_over(environ)
    if connection is not None:
        websocket = WebSocket(connection.sock, connection.take_buffered())
        websocket.close(CloseCode.INTERNAL_ERROR, UNCONFIGURED_REASON)
        websocket.linger()
        return []
    body = f"500 Internal Server Error: {UNCONFIGURED_REASON} (see the server's log)\n".encode()
    start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8"),
                                                 ("Content-Length", str(len(body)))])
    return [body]
