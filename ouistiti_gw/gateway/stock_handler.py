"""gevent-websocket's stock handler (``GeventWebSocketWorker``): the one module that reaches into it.

That handler sends the 101 before it calls the app and leaves an open ``geventwebsocket``
WebSocket under ``environ["wsgi.websocket"]``; the gateway wants the bare connection instead. What
it takes for that (the handler behind ``.stream.handler``, its socket and reader, the ``closed``
flag that mutes gevent-websocket's own close) is read here and nowhere else, so an upgrade of
gevent-websocket has one module to check. Nothing of gevent-websocket is imported.

It sits below the middleware, not beside the server glue: under the stock worker no code of ours
runs before the app, so the middleware itself calls :func:`adapt`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..green.handler_connection import HandlerConnection, has_pending_input
from .upgrade import SOCKET_KEY, UPGRADE_KEY, ClientConnection, Upgrade

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

#: Where gevent-websocket's handler puts the WebSocket it opened.
STOCK_WEBSOCKET_KEY = "wsgi.websocket"


class StockUpgrade:
    """The :class:`~ouistiti_gw.gateway.upgrade.Upgrade` of a request gevent-websocket already upgraded."""

    already_accepted = True

    def __init__(self, websocket: Any) -> None:
        self._websocket = websocket
        self._handler = websocket.stream.handler

    def accept(self, protocol: str | None = None, extensions: str | None = None) -> ClientConnection:
        """Take the connection from gevent-websocket's WebSocket and mute it for good (the 101,
        and its subprotocol, went out already: without ``Sec-WebSocket-Extensions``, so no
        compression is ever used here)."""
        self._websocket.closed = True  # its close() (run after the app) would write a codeless close frame
        return HandlerConnection(self._handler)

    def pending_input(self) -> bool:
        return has_pending_input(self._handler.socket, self._handler.rfile)

    def still_open(self) -> bool:
        return not self._websocket.closed


def adapt(environ: "WSGIEnvironment") -> Upgrade | None:
    """The request's :class:`~ouistiti_gw.gateway.upgrade.Upgrade`: the server's own, or one over the
    WebSocket gevent-websocket opened (its socket then goes under ``SOCKET_KEY`` too); None
    when the server cannot upgrade the request."""
    upgrade = environ.get(UPGRADE_KEY)
    websocket = environ.get(STOCK_WEBSOCKET_KEY)
    if upgrade is None and websocket is not None:
        upgrade = environ[UPGRADE_KEY] = StockUpgrade(websocket)
        environ[SOCKET_KEY] = websocket.stream.handler.socket
    return upgrade


def take_over(environ: "WSGIEnvironment") -> ClientConnection | None:
    """The connection of the WebSocket gevent-websocket opened for this request, taken from it;
    None when no WebSocket was opened before the app ran."""
    upgrade = adapt(environ)
    if upgrade is None or not upgrade.already_accepted:
        return None
    return upgrade.accept()
