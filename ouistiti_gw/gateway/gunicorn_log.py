"""Send the gateway's log lines where gunicorn's error log goes, under any gunicorn worker.

gunicorn configures its own loggers (``gunicorn.error``, ``gunicorn.access``) and leaves the root
logger bare, so without this the gateway's INFO lines (a session's end) are dropped and its
warnings reach Python's last-resort handler: a bare message with no time, pid or level.
``GatewayWorker`` calls :func:`follow_gunicorn_error_log` when a worker starts; under the stock
``GeventWebSocketWorker`` none of our code runs then, so the gateway calls it when it is built.
"""
from __future__ import annotations

import logging

#: gunicorn's error log (``gunicorn.glogging.Logger.error_log``).
GUNICORN_ERROR_LOG = "gunicorn.error"


def follow_gunicorn_error_log(error_log: logging.Logger | None = None) -> None:
    """Give the ``ouistiti_gw`` loggers the handlers and level of gunicorn's error log.

    Only where nothing is configured for them: not when the application (or a ``--log-config``)
    set up the root logger or ``ouistiti_gw``, and not outside gunicorn (its error log then has no
    handler). Calling it again changes nothing.
    """
    error_log = error_log or logging.getLogger(GUNICORN_ERROR_LOG)
    gateway_log = logging.getLogger("ouistiti_gw")
    if gateway_log.handlers or logging.getLogger().handlers or not error_log.handlers:
        return
    for handler in error_log.handlers:
        gateway_log.addHandler(handler)
    gateway_log.setLevel(error_log.level)
