"""Under gunicorn, the admin endpoint's reach into the other workers of the same master.

A request to ``admin_path`` reaches one worker, yet the sessions to list or close are every
worker's. So each ``GatewayWorker`` also listens on ``MASTERPID-WORKERPID.admin`` in the
directory of its takeover socket (:mod:`ouistiti_gw.reload.rendezvous`: only the workers' user
can enter it), and the worker that got the request asks its siblings there: one record with
the request, one with the answer (the records of :mod:`ouistiti_gw.reload.migration`, without
descriptors). A connection whose peer is not the workers' user is closed unread, and the asker
checks that the peer of each connection is the very worker it meant (``SO_PEERCRED``).

A sibling that does not answer within :data:`ASK_SECONDS` (busy, stopping, not listening yet)
is left out of the answer; the gateway says which workers answered. Outside gunicorn (the CLI,
the ini runner) there is no sibling, and nothing listens.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import gevent
from gevent import socket

from ..core.logsafe import loggable
from ..green.fdpass import close_fds
from ..green.light_greenlet import LightGreenlet
from .migration import RecordError, receive_record, send_record
from .rendezvous import WorkerPoint, peer, siblings

log = logging.getLogger(__name__)

#: How long a sibling worker has to answer one request.
ASK_SECONDS = 2.0
#: A gateway's answer to a sibling's request (the request and the answer: JSON objects).
Handler = Callable[[dict], dict]
#: The gateways of this process that answer siblings, by docroot.
_handlers: dict[str, Handler] = {}
#: The directory of this worker's admin point, and so of its siblings' (None: no siblings).
_directory: str | None = None


def register(docroot: str, handler: Handler) -> None:
    """Siblings' requests for ``docroot`` are answered by ``handler`` (the gateway serving it)."""
    _handlers[docroot] = handler


def admin_socket_path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"{os.getppid()}-{pid}.admin")


class AdminPoint(WorkerPoint):
    """This worker's admin socket, where its siblings ask about its sessions."""

    def __init__(self, directory: str) -> None:
        global _directory
        super().__init__(admin_socket_path(directory, os.getpid()), _answer)
        _directory = directory

    def close(self) -> None:
        global _directory
        _directory = None
        super().close()


def _answer(channel: socket.socket) -> None:
    with channel, gevent.Timeout(ASK_SECONDS, False):
        try:
            record = receive_record(channel)
            if record is None:
                return
            fields, fds = record
            close_fds(fds)
            handler = _handlers.get(str(fields.get("docroot")))
            request = fields.get("request")
            if handler is None or not isinstance(request, dict):
                send_record(channel, {"error": "no gateway here serves that docroot"})
                return
            send_record(channel, handler(request))
        except (OSError, RecordError) as error:
            log.warning("admin: a sibling's request failed: %s", loggable(error))


def ask_siblings(docroot: str, request: dict, only: int | None = None) -> dict[int, dict]:
    """The answers of this worker's siblings (or of the sibling ``only``) to ``request`` for the
    gateway serving ``docroot``, by PID; empty outside gunicorn."""
    directory = _directory
    if directory is None:
        return {}
    pids = [pid for pid in siblings() if only is None or pid == only]
    askers = {pid: LightGreenlet.spawn(_ask, directory, pid, {"docroot": docroot, "request": request})
              for pid in pids}
    gevent.joinall(list(askers.values()), timeout=ASK_SECONDS)
    return {pid: asker.value for pid, asker in askers.items() if asker.ready() and asker.value is not None}


def _ask(directory: str, pid: int, fields: dict) -> dict | None:
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with channel:
        try:
            channel.connect(admin_socket_path(directory, pid))
            if peer(channel) != (pid, os.getuid()):
                log.warning("admin: the socket of worker %d is not that worker's: not asked", pid)
                return None
            send_record(channel, fields)
            record = receive_record(channel)
        except (OSError, RecordError) as error:
            log.info("admin: worker %d did not answer: %s", pid, loggable(error))
            return None
    if record is None:
        return None
    answer, fds = record
    close_fds(fds)
    return answer
