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

import email.parser
import logging
import re
from typing import BinaryIO

import gevent
from gevent.pywsgi import OldMessage
from geventwebsocket.handler import WebSocketHandler

from ..config import ServerConfig
from ..core.logsafe import loggable, wsgi_text
from ..errors import GatewayError
from ..gateway.upgrade import SOCKET_KEY, UPGRADE_KEY, accept_key, handshake_error, is_websocket_request
from ..green.handler_connection import HandlerConnection, has_pending_input, no_body_to_drain

log = logging.getLogger(__name__)

#: Bytes of one header line (CRLF included): nginx's buffer size.
MAX_HEADER_LINE = 8 * 1024
#: Header fields of one request: ``http.client``'s and HAProxy's bound.
MAX_HEADER_FIELDS = 100
#: Characters of a request line (and of an environ value) an access line quotes: a whole line.
MAX_LOGGED_REQUEST_LINE = MAX_HEADER_LINE


class RequestRefused(GatewayError):
    """A request head the handler answers itself, before any app sees it.

    gevent hands whatever ``read_request`` raises to :meth:`GatewayHandler._handle_client_error`,
    which answers this one with its own status (a ``ValueError`` there is gevent's 400).
    """

    def __init__(self, status: str, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.code = status.split()[0]
        self.why = why

    def response(self) -> bytes:
        body = (self.why + "\n").encode("latin-1", "replace")
        head = (f"HTTP/1.1 {self.status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        return head.encode("latin-1") + body


def _field_line_error(line: bytes) -> str | None:
    """Why a header line is malformed (RFC 9112 sections 5.1 and 5.2), or None."""
    if line[:1] in (b" ", b"\t"):
        # A continuation would glue CR LF into the previous field's value.
        return "obsolete line folding (RFC 9112 section 5.2)"
    content = line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\n")
    if b"\r" in content or b"\0" in content:
        # The parser behind us ends a line at a bare CR: one field would become two.
        return "a bare CR or NUL in a header line (RFC 9112 section 2.2)"
    name, colon, _ = line.partition(b":")
    if not colon or not name:
        return "a header line without a field name and colon"
    if name[-1:] in (b" ", b"\t"):
        return "whitespace between a field name and its colon"
    return None


#: A Content-Length value (RFC 9112 section 8.6: ``1*DIGIT``; not Python's ``int()``, which takes
#: ``+5``, `` 5`` and ``1_0``).
_DECIMAL = re.compile(r"[0-9]+")


def framing_error(headers: OldMessage) -> str | None:
    """Why the length of a request's body is ambiguous (RFC 9112 section 6.3), or None.

    Two parsers in a chain that read different lengths from one request are how requests are
    smuggled past a front proxy. gevent takes the first ``Content-Length`` and lets a
    ``Transfer-Encoding`` that is not ``chunked`` stand beside one; the RFC says a server "MUST
    respond with a 400 (Bad Request) status code and then close the connection" for an invalid
    Content-Length or a final transfer coding other than chunked, and calls both headers
    together an error a server ought to treat as one.
    """
    lengths = headers.get_all("Content-Length") or []
    encodings = headers.get_all("Transfer-Encoding") or []
    if lengths and encodings:
        return "both Content-Length and Transfer-Encoding (RFC 9112 section 6.3)"
    values = {value.strip() for value in lengths}  # a list (``5, 5``) is no decimal number either
    if not all(_DECIMAL.fullmatch(value) for value in values):
        return "a Content-Length that is not a decimal number (RFC 9112 section 8.6)"
    if len(values) > 1:
        return "conflicting Content-Length values (RFC 9112 section 6.3)"
    codings = [coding.strip().lower() for field in encodings for coding in field.split(",")]
    if codings and codings[-1] != "chunked":
        return "a Transfer-Encoding whose last coding is not chunked (RFC 9112 section 6.3)"
    return None


def read_header_section(rfile: BinaryIO, budget: int) -> bytes:
    """The request's header lines up to the blank one, read line by line within ``budget`` bytes.

    Past the budget, a line over :data:`MAX_HEADER_LINE` or more than :data:`MAX_HEADER_FIELDS`
    fields: :class:`RequestRefused` with 431, as soon as the excess is seen, so the gateway never
    reads (nor holds) more than the budget. A malformed line: 400.
    """
    lines: list[bytes] = []
    left = budget
    while True:
        limit = min(MAX_HEADER_LINE, left)
        line = rfile.readline(limit + 1)
        if len(line) > limit:
            why = (f"request header fields over {budget} bytes" if limit == left
                   else f"a header line over {MAX_HEADER_LINE} bytes")
            raise RequestRefused("431 Request Header Fields Too Large", why)
        if line in (b"\r\n", b"\n", b""):
            return b"".join(lines)
        left -= len(line)
        malformed = _field_line_error(line)
        if malformed is not None:
            raise RequestRefused("400 Bad Request", malformed)
        lines.append(line)
        if len(lines) > MAX_HEADER_FIELDS:
            raise RequestRefused("431 Request Header Fields Too Large", f"more than {MAX_HEADER_FIELDS} header fields")


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
    :func:`read_header_section`), a request line over 8 KiB a 414 (gevent's).
    """

    #: gevent's: the request line, and the request's headers (escaped once logged: :meth:`log_request`).
    requestline: str | None
    headers: "OldMessage | _LoggedHeaders"

    # The server options' defaults; :func:`ouistiti_gw.servers.wsgi_server.handler_class` sets others.
    #: Seconds a connection may wait before its request line (keep-alive idle time included).
    keepalive_timeout = ServerConfig.keepalive_timeout
    #: Seconds the request headers may take once the request line has arrived.
    header_timeout = ServerConfig.header_timeout
    #: Bytes of the request's header section.
    max_header_size = ServerConfig.max_header_size

    @property
    def logger(self) -> logging.Logger:
        # gevent-websocket's logger replaces the handlers of its logger; ours stays standard.
        return log

    def read_requestline(self):
        # A new request: nothing of the previous one is kept while waiting for it.
        self.environ = None
        with gevent.Timeout(self.keepalive_timeout, False):
            return super().read_requestline()
        log.debug("closing idle connection from %s", self.client_address)
        return None

    def read_request(self, raw_requestline):
        timeout = gevent.Timeout(self.header_timeout)
        timeout.start()
        try:
            return super().read_request(raw_requestline)
        except gevent.Timeout as expired:
            if expired is not timeout:
                raise
            # gevent's contract: a ValueError is the client's fault, answered 400 and logged in one line
            raise ValueError(f"request headers took more than {self.header_timeout:g} s") from None
        finally:
            timeout.close()

    def MessageClass(self, rfile: BinaryIO, *args) -> OldMessage:
        """The request's headers, parsed as gevent's own factory does, read within the budget, and
        refused (400, then the connection closes) when they make the body's length ambiguous."""
        section = read_header_section(rfile, self.max_header_size)
        headers = email.parser.Parser(_class=OldMessage).parsestr(section.decode("iso-8859-1"))
        ambiguous = framing_error(headers)
        if ambiguous is not None:
            raise RequestRefused("400 Bad Request", ambiguous)
        return headers

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
