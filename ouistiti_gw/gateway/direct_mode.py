"""Direct mode, the gateway's end: the client's socket itself goes to the UNIX server.

The server takes the client's connection in ouistiti's wire format
(:mod:`ouistiti_gw.backend.handover`) and the gateway keeps nothing of it. Two clients are piped
instead, as in the default mode: one over TLS (the server would get encrypted bytes) and one that
sent data right after its handshake (those bytes are in the gateway's buffer already).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from ..backend.handover import hand_over
from ..core.frames import CloseCode
from .upgrade import ClientConnection, Upgrade

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from ..green.websocket import WebSocket
    from .metrics import Metrics

log = logging.getLogger(__name__)


class DirectMode:
    """Hand clients over to their UNIX servers (``mode = direct``).

    :param metrics: the :class:`~ouistiti_gw.gateway.metrics.Metrics` a handed-over session is
        counted in (None: no metrics).
    :param websocket: the WebSocket over a client connection, to close one the server did not take.
    """

    def __init__(self, metrics: "Metrics | None", websocket: Callable[[ClientConnection], "WebSocket"]) -> None:
        self.metrics = metrics
        self.websocket = websocket

    @staticmethod
    def can_hand_over(environ: "WSGIEnvironment", upgrade: Upgrade, client: str) -> bool:
        """Checked before the 101: afterwards the client's first message may be on its way."""
        if environ.get("wsgi.url_scheme") == "https":
            log.info("direct mode is for plain HTTP only: piping %s's TLS connection instead", client)
            return False
        if upgrade.pending_input():
            log.debug("%s sent data right after its handshake: piping instead of handing over", client)
            return False
        return True

    def hand_over(self, connection: ClientConnection, backend: Any, name: str, client: str) -> None:
        """The server ``name`` gets the client's socket; we keep nothing of it."""
        try:
            taken = hand_over(backend, connection.sock)
        except OSError as error:
            log.warning("handover of %s to %s failed: %s", client, name, error)
            taken = False
        finally:
            backend.close()
        if taken:
            log.info("session handed over name=%s client=%s", name, client)
            if self.metrics is not None:
                self.metrics.session_opened()
                self.metrics.session_ended(name, "handover", 0, 0, 0.0)
        else:
            log.warning("%s did not take the connection of %s", name, client)
            self.websocket(connection).close(CloseCode.INTERNAL_ERROR, "server did not take the connection")
        connection.detach()
