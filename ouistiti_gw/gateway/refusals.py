"""Refused handshakes, and WebSocket requests that are not the gateway's: how each is answered.

A :class:`Refusal` says why a handshake is refused; :class:`Refusals` logs it, counts it and
answers it. Before the 101 (the project's handler) the answer is an HTTP status with the reason
as a one-line text body: 401 or 403 when the app's authorization refuses (its own headers and
body for ``auth_request``'s answer), 403 for a name, ``Host`` or ``Origin`` refused, a
non-socket or no permission; 404 for a missing socket; 431 for a PROXY header that cannot be
built; 503 when nobody listens, past ``max_connections``, or when the authorization failed.
After it (gevent-websocket's stock handler sends the 101 before the app runs) the same refusal
is a close frame: 1011 when the server is missing or unreachable or the authorization failed
(404, 503), 1008 otherwise (401 and 403 included).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from ..core.frames import CloseCode
from ..core.logsafe import wsgi_text
from .upgrade import UPGRADE_KEY, ClientConnection, Upgrade

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..green.unix import BackendUnavailable
    from ..green.websocket import WebSocket
    from .metrics import Metrics
    from .names import NameRefused

log = logging.getLogger(__name__)

_STATUS_LINES = {401: "401 Unauthorized", 403: "403 Forbidden", 404: "404 Not Found",
                 431: "431 Request Header Fields Too Large", 503: "503 Service Unavailable"}
#: The metrics' refusal reason for each status a UNIX server's state leads to.
_UNREACHABLE = {403: "denied", 404: "missing", 503: "refused"}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake is refused: its HTTP status, the reason (logged, and sent to the client),
    and the ``reason`` label it is counted under
    (:data:`~ouistiti_gw.gateway.metrics.REFUSAL_REASONS`); more headers of the answer, and its
    body when it is not the reason's line (the app's own 401 or 403); what the log line says
    instead of the reason when the client must not read it (an app's exception)."""

    status: int
    reason: str
    category: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    logged: str | None = None

    @classmethod
    def denied(cls, refused: NameRefused) -> Refusal:
        """A name that can never designate a socket below docroot: 403."""
        return cls(403, str(refused), "denied")

    @classmethod
    def unreachable(cls, name: str, unavailable: BackendUnavailable) -> Refusal:
        """A UNIX server that cannot be reached, with the status that says why."""
        return cls(unavailable.status, f"{name}: {unavailable.reason}", _UNREACHABLE[unavailable.status])


class Refusals:
    """Answer the handshakes the gateway refuses, and pass on the WebSocket requests that are not its own.

    :param app: the wrapped application.
    :param metrics: the :class:`~ouistiti_gw.gateway.metrics.Metrics` refusals are counted in
        (None: no metrics).
    :param websocket: the WebSocket over a client connection, to close one the stock handler opened.
    """

    def __init__(self, app: "WSGIApplication", metrics: "Metrics | None",
                 websocket: Callable[[ClientConnection], "WebSocket"]) -> None:
        self.app = app
        self.metrics = metrics
        self.websocket = websocket

    def refuse(self, environ: "WSGIEnvironment", start_response: "StartResponse", refusal: Refusal,
               client: str) -> Iterable[bytes]:
        """One warning line, one count, and the answer: the status, or the close after a 101."""
        log.warning("refused WebSocket %s from %s: %s (%d)", wsgi_text(environ.get("PATH_INFO", "")), client,
                    refusal.logged or refusal.reason, refusal.status)
        if self.metrics is not None:
            self.metrics.refused(refusal.category)
        upgrade = environ[UPGRADE_KEY]
        if upgrade.already_accepted:
            code = CloseCode.INTERNAL_ERROR if refusal.status in (404, 503) else CloseCode.POLICY_VIOLATION
            websocket = self.websocket(upgrade.accept())
            websocket.close(code, refusal.reason)
            websocket.linger()
            return []
        return plain_response(start_response, refusal.status, refusal.reason, refusal.headers, refusal.body)

    def pass_on(self, environ: "WSGIEnvironment", start_response: "StartResponse",
                upgrade: Upgrade) -> Iterable[bytes]:
        """Hand a WebSocket request that is not the gateway's to the wrapped app.

        Under the stock handler the WebSocket is already open; if the app leaves it open, we end
        it with a well-formed 1008 (gevent-websocket's own close would carry no status code).
        """
        result = self.app(environ, start_response)
        if not upgrade.already_accepted:
            return result

        def close_if_left_open() -> None:
            if upgrade.still_open():
                self.websocket(upgrade.accept()).close(CloseCode.POLICY_VIOLATION, "no WebSocket service here")

        return _then_close(result, close_if_left_open)


def plain_response(start_response: "StartResponse", status: int, reason: str,
                   headers: tuple[tuple[str, str], ...] = (), body: bytes | None = None) -> Iterable[bytes]:
    """Answer ``status`` (401, 403, 404, 431 or 503) with ``reason`` as a one-line text body, or
    with ``headers`` and ``body`` as given (an app's own answer)."""
    if body is None:
        body = f"{_STATUS_LINES[status]}: {reason}\n".encode("utf-8")
        headers = (("Content-Type", "text/plain; charset=utf-8"), *headers)
    start_response(_STATUS_LINES[status], [*headers, ("Content-Length", str(len(body)))])
    return [body]


def _then_close(result: Iterable[bytes], finish: Callable[[], None]) -> Iterable[bytes]:
    try:
        yield from result
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
        finish()
