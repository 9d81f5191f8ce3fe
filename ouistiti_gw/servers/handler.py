"""The gevent handler that lets the gateway answer 403/404/503 *before* the 101.

gevent-websocket's ``WebSocketHandler`` sends ``101 Switching Protocols`` before it calls the WSGI
app, so an app can only refuse a WebSocket by closing it. :class:`GatewayHandler` validates the
handshake (RFC 6455 section 4.2.1), then calls the app as for any HTTP request with one extra key
in the environ, :data:`~ouistiti_gw.gateway.upgrade.UPGRADE_KEY`: an :class:`~ouistiti_gw.gateway.upgrade.Upgrade`
whose ``accept()`` the app calls once it has decided to accept. An app that does not call it
answers with an ordinary HTTP response. The contract itself (environ keys, handshake checks) is
:mod:`ouistiti_gw.gateway.upgrade`; this module is only the gevent server glue.

Used by the project's gunicorn worker (:mod:`ouistiti_gw.servers.worker`), the PasteDeploy server runner
and the CLI. Under the stock ``GeventWebSocketWorker`` the key is absent and the middleware falls
back to closing the already-open WebSocket with a close code (:mod:`ouistiti_gw.gateway.stock_handler`).
"""
from __future__ import annotations

import logging
from typing import BinaryIO, Iterator

import gevent
from geventwebsocket.handler import WebSocketHandler

from ..config import ServerConfig
from ..core.logsafe import loggable, wsgi_text
from ..gateway.upgrade import SOCKET_KEY, UPGRADE_KEY, accept_key, handshake_error, is_websocket_request
from ..green.handler_connection import HandlerConnection, has_pending_input, no_body_to_drain
from ..green.sockio import send_all
from .request_head import (
    MAX_HEADER_LINE,
    RequestHeaders,
    RequestRefused,
    buffered_header_section,
    end_of_section,
    framing_error,
    read_header_section,
)

log = logging.getLogger(__name__)

#: Characters of a request line (and of an environ value) an access line quotes: a whole line.
MAX_LOGGED_REQUEST_LINE = MAX_HEADER_LINE


class _LoggedHeaders:
    """Request headers as an access log reads them (``items()``), their values escaped."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = [(name, wsgi_text(value)) for name, value in items]

    def items(self) -> list[tuple[str, str]]:
        return self._items


class _HandshakePending:
    """The :class:`~ouistiti_gw.gateway.upgrade.Upgrade` of a request this handler has not answered yet."""

    already_accepted = False

    def __init__(self, handler: "GatewayHandler") -> None:
        self._handler = handler

    def accept(self, protocol: str | None = None, extensions: str | None = None) -> HandlerConnection:
        return self._handler._accept_upgrade(protocol, extensions)

    def pending_input(self) -> bool:
        # for an upgrade request pywsgi's wsgi.input is the connection's reader itself
        return has_pending_input(self._handler.socket, self._handler.environ["wsgi.input"])

    def still_open(self) -> bool:
        return False  # nothing is open before accept()


class GatewayHandler(WebSocketHandler):
    """A ``WebSocketHandler`` whose app decides on the upgrade before the 101 goes out.

    It also bounds what a client may send before any app runs: an idle keep-alive connection is
    closed after :attr:`keepalive_timeout`, headers slower than :attr:`header_timeout` get a 400
    (slowloris), a header section over :attr:`max_header_size` bytes gets a 431 (see
    :mod:`~ouistiti_gw.servers.request_head`), a request line over 8 KiB a 414 (gevent's).
    """

    #: gevent's: the request line, and the request's headers (escaped once logged: :meth:`log_request`).
    requestline: str | None
    headers: "RequestHeaders | _LoggedHeaders"
    #: gevent's: the response's status code (None before ``start_response``).
    code: int | None

    # The server options' defaults; :func:`ouistiti_gw.servers.wsgi_server.handler_class` sets others.
    #: Seconds a connection may wait before its request line (keep-alive idle time included).
    keepalive_timeout = ServerConfig.keepalive_timeout
    #: Seconds the request headers may take once the request line has arrived.
    header_timeout = ServerConfig.header_timeout
    #: Bytes of the request's header section.
    max_header_size = ServerConfig.max_header_size
    #: Whether the reader held the request's whole head (line and header section) when its line was read.
    _head_buffered = False

    @property
    def logger(self) -> logging.Logger:
        # gevent-websocket's logger replaces the handlers of its logger; ours stays standard.
        return log

    def read_requestline(self):
        # A new request: nothing of the previous one is kept while waiting for it.
        self.environ = None
        self._head_buffered = False
        if has_pending_input(self.socket, self.rfile):
            buffered = self.rfile.peek()
            line_end = buffered.find(b"\n") + 1
            if line_end:  # the line is all there: reading it cannot wait, so no timer
                self._head_buffered = end_of_section(buffered, line_end) >= 0
                return super().read_requestline()
        with gevent.Timeout(self.keepalive_timeout, False):
            return super().read_requestline()
        log.debug("closing idle connection from %s", self.client_address)
        return None

    def MessageClass(self, rfile: BinaryIO, *args) -> RequestHeaders:
        """The request's headers (:mod:`ouistiti_gw.servers.request_head`), read within the budget
        and :attr:`header_timeout`, and refused (400, then the connection closes) when they make
        the body's length ambiguous."""
        headers = None
        if self._head_buffered:  # as nearly always: taken from the reader's buffer, no wait, no timer
            headers = buffered_header_section(rfile, self.max_header_size)
        if headers is None:
            headers = self._read_header_section_in_time(rfile)
        ambiguous = framing_error(headers)
        if ambiguous is not None:
            raise RequestRefused("400 Bad Request", ambiguous)
        return headers

    def _read_header_section_in_time(self, rfile: BinaryIO) -> RequestHeaders:
        timeout = gevent.Timeout(self.header_timeout)
        timeout.start()
        try:
            return read_header_section(rfile, self.max_header_size)
        except gevent.Timeout as expired:
            if expired is not timeout:
                raise
            # gevent's contract: a ValueError is the client's fault, answered 400 and logged in one line
            raise ValueError(f"request headers took more than {self.header_timeout:g} s") from None
        finally:
            timeout.close()

    def _headers(self) -> Iterator[tuple[str, str]]:
        """pywsgi's ``HTTP_*`` environ keys, taken from the parsed fields (pywsgi formats each
        field as a line, then splits the line again): a name with ``_`` is left out, as there."""
        for name, value in self.headers.items():
            if "_" not in name:
                key = name.replace("-", "_").upper()
                if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):  # pywsgi's own keys, without HTTP_
                    yield "HTTP_" + key, value.strip()

    def _sendall(self, data: bytes | bytearray) -> None:
        """pywsgi's, in one ``send`` when the socket takes it all, as it nearly always does:
        gevent's ``sendall`` asks the kernel for ``SO_SNDBUF`` first (one more system call per
        response, a 101 included)."""
        try:
            send_all(self.socket, data)
        except OSError as error:
            self.status = f"socket error: {error}"  # as pywsgi: the access line says why
            if self.code is not None and self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def _handle_client_error(self, ex: Exception):
        """gevent's hook for a request it cannot parse: ours get their own status, and a warning."""
        if not isinstance(ex, RequestRefused):
            return super()._handle_client_error(ex)
        log.warning("refused request from %s: %s (%s)", self.client_address, ex.why, ex.code)
        return ex.code, ex.response()

    def run_application(self) -> None:
        if is_websocket_request(self.environ):
            error = handshake_error(self.environ, self.request_version)
            if error is not None:
                self._refuse(*error)
                return
            self.environ[UPGRADE_KEY] = _HandshakePending(self)
            self.environ[SOCKET_KEY] = self.socket
        # The plain WSGI path: the app answers, or calls the upgrade callable and pipes.
        super(WebSocketHandler, self).run_application()

    def _refuse(self, status: str, headers: list[tuple[str, str]], why: str) -> None:
        log.warning("refused WebSocket handshake from %s for %s: %s", self.client_address,
                    wsgi_text(self.environ.get("PATH_INFO", "")), loggable(why))
        body = (why + "\n").encode("utf-8")
        self.close_connection = True
        no_body_to_drain(self)
        self.start_response(status, headers + [("Content-Type", "text/plain; charset=utf-8"),
                                               ("Content-Length", str(len(body))), ("Connection", "close")])
        self.write(body)

    def _accept_upgrade(self, protocol: str | None, extensions: str | None = None) -> HandlerConnection:
        """Send the 101 and hand the connection over.

        After this the HTTP layer must not write to the connection again, nor reuse it.
        """
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Accept", accept_key(self.environ["HTTP_SEC_WEBSOCKET_KEY"].strip()))]
        if protocol:
            headers.append(("Sec-WebSocket-Protocol", protocol))
        if extensions:
            headers.append(("Sec-WebSocket-Extensions", extensions))
        self.start_response("101 Switching Protocols", headers)
        self.provided_date = True  # no Date header,
        self.provided_content_length = True  # no Content-Length or chunked body on a 101
        self.close_connection = True
        self.write(b"")
        return HandlerConnection(self)

    def log_request(self) -> None:
        """The access line, every client-controlled value in it escaped.

        The 101 is logged by the session itself (open/close lines with byte counts). A request
        refused before it had an environ (400, 414, 431 on its head) was logged with why; an
        access line would need the environ (gunicorn's access log reads it).
        """
        if self.code == 101 or self.environ is None:
            return
        # The request is answered: from here on its request line, environ and headers are only
        # logged: gevent's access line reads the first, gunicorn's format any of the three.
        self.requestline = wsgi_text(self.requestline or "", MAX_LOGGED_REQUEST_LINE)
        self.environ = {key: wsgi_text(value, MAX_LOGGED_REQUEST_LINE) if isinstance(value, str) else value
                        for key, value in self.environ.items()}
        self.headers = _LoggedHeaders(self.headers.items())
        super(WebSocketHandler, self).log_request()
