"""The gevent handler that lets the gateway answer 403/404/503 *before* the 101.

gevent-websocket's ``WebSocketHandler`` sends ``101 Switching Protocols`` before it calls the WSGI
app, so an app can only refuse a WebSocket by closing it. :class:`GatewayHandler` validates the
handshake (RFC 6455 section 4.2.1), then calls the app as for any HTTP request with one extra key
in the environ, :data:`UPGRADE_KEY`: a callable the app invokes once it has decided to accept.
An app that does not call it answers with an ordinary HTTP response.

Used by the project's gunicorn worker (:mod:`ouistiti_gw.worker`), the PasteDeploy server runner
and the CLI. Under the stock ``GeventWebSocketWorker`` the key is absent and the middleware falls
back to closing the already-open WebSocket with a close code.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import email.parser
import hashlib
import logging
import socket
from typing import BinaryIO, Iterator

import gevent
from gevent.pywsgi import Input, OldMessage, WSGIHandler
from geventwebsocket.handler import WebSocketHandler

from .config import ServerConfig
from .logsafe import loggable, wsgi_text

log = logging.getLogger(__name__)

#: environ key of the accept callable: ``environ[UPGRADE_KEY](protocol) -> ClientConnection``.
UPGRADE_KEY = "ouistiti_gw.upgrade"
#: environ key of the client's socket on a WebSocket request, for its local address and TLS
#: version (the PROXY header's destination and SSL TLV). Not to be read or written: the HTTP
#: layer owns it until the upgrade.
SOCKET_KEY = "ouistiti_gw.socket"
#: RFC 6455 section 1.3.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUPPORTED_VERSION = "13"
#: Bytes of one header line (CRLF included): nginx's buffer size.
MAX_HEADER_LINE = 8 * 1024
#: Header fields of one request: ``http.client``'s and HAProxy's bound.
MAX_HEADER_FIELDS = 100


class RequestRefused(ValueError):
    """A request head the handler answers itself, before any app sees it.

    A ``ValueError``, as gevent expects of ``read_request`` for a client's fault.
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


def read_header_section(rfile: BinaryIO, budget: int) -> bytes:
    """The request's header lines up to the blank one, read line by line within ``budget`` bytes.

    Past the budget, a line over :data:`MAX_HEADER_LINE` or more than :data:`MAX_HEADER_FIELDS`
    fields: :class:`RequestRefused` with 431, as soon as the excess is seen, so the gateway never
    reads (nor holds) more than the budget. A malformed line: 400.
    """
    lines = []
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
        why = _field_line_error(line)
        if why is not None:
            raise RequestRefused("400 Bad Request", why)
        lines.append(line)
        if len(lines) > MAX_HEADER_FIELDS:
            raise RequestRefused("431 Request Header Fields Too Large", f"more than {MAX_HEADER_FIELDS} header fields")


def _no_body_to_drain(handler: WSGIHandler) -> None:
    """gevent reads out a request's body after the app returns, to reach the next request on the
    connection. When there is no next request (the connection closes after a refusal, or was
    upgraded), that read would only wait on the client, or fail on a reader we closed."""
    handler.wsgi_input = Input(None, 0)


@contextlib.contextmanager
def _without_waiting(sock) -> Iterator[None]:
    """Reads of ``sock`` (and of a reader over it) inside return what is there, never wait."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        yield
    finally:
        sock.settimeout(timeout)


def has_pending_input(sock, rfile) -> bool:
    """True when bytes from the client sit in our reader, or in the kernel (they get pulled in).

    Call it before the 101 to learn whether a client pipelined data behind its handshake: after
    the 101 it would read the client's first message into our buffer.
    """
    with _without_waiting(sock):
        try:
            return bool(rfile.peek(1))
        except OSError:
            return False


def pending_input(environ: dict) -> bool:
    """:func:`has_pending_input` for the connection of a WebSocket request (either handler)."""
    stock_websocket = environ.get("wsgi.websocket")
    if stock_websocket is not None:
        handler = stock_websocket.stream.handler
        return has_pending_input(handler.socket, handler.rfile)
    # for an upgrade request pywsgi's wsgi.input is the connection's reader itself
    return has_pending_input(environ[SOCKET_KEY], environ["wsgi.input"])


class ClientConnection:
    """The client's connection once upgraded: its socket, the buffered reader the HTTP server
    parsed the handshake from (bytes sent right after the handshake may already sit in it), and
    the handler that served it, whichever server that was (ours, or gevent-websocket's)."""

    def __init__(self, handler: WSGIHandler) -> None:
        self.handler = handler
        self.sock = handler.socket
        self.rfile = handler.rfile
        _no_body_to_drain(handler)  # what follows the handshake is frames; the reader is ours now
        # Messages go out as soon as they are written: Nagle's algorithm would hold a small frame
        # back while the previous one is unacknowledged (round trips of 40 ms with delayed ACKs).
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def take_buffered(self) -> bytes:
        """What the HTTP server read past the handshake (a client may send its first frames right
        behind it), without waiting for more; then the reader is closed, its buffer freed: from
        here on the WebSocket reads the socket itself. The parsed request goes too (its headers,
        its request line): an idle session should keep nothing it will not use."""
        self.handler.headers = self.handler.requestline = self.handler.path = None
        try:
            with _without_waiting(self.sock):
                # read1 returns the buffered bytes; only when there are none does it try one
                # read, which may bring nothing.
                return self.rfile.read1(1 << 20) or b""
        except OSError:
            return b""  # the client is already gone: the WebSocket finds out on its first read
        finally:
            self.rfile.close()

    def detach(self) -> None:
        """Take the connection from the HTTP server for good, and close our copy of it.

        The handler must not touch it again: gevent's handler reads out and closes its socket
        after a request (that read would steal the client's bytes), and gunicorn closes it too.
        """
        self.handler.socket = None
        self.rfile.close()
        self.sock.close()


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _header_tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def handshake_error(environ: dict, request_version: str) -> tuple[str, list[tuple[str, str]], str] | None:
    """Check a request that asks for ``Upgrade: websocket``; return ``(status, headers, why)`` if invalid."""
    if environ.get("REQUEST_METHOD") != "GET":
        return "405 Method Not Allowed", [("Allow", "GET")], "WebSocket handshake must be a GET"
    if request_version != "HTTP/1.1":
        return "400 Bad Request", [], f"WebSocket handshake needs HTTP/1.1, not {request_version}"
    if "upgrade" not in _header_tokens(environ.get("HTTP_CONNECTION", "")):
        return "400 Bad Request", [], "Connection header lacks the upgrade token"
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != SUPPORTED_VERSION:
        return ("426 Upgrade Required", [("Sec-WebSocket-Version", SUPPORTED_VERSION)],
                "unsupported Sec-WebSocket-Version %r" % environ.get("HTTP_SEC_WEBSOCKET_VERSION"))
    if environ.get("CONTENT_LENGTH", "0").strip() != "0" or "HTTP_TRANSFER_ENCODING" in environ:
        # Nothing may follow the handshake but frames: a body would be read as the first one.
        return "400 Bad Request", [], "a WebSocket handshake has no body (Content-Length, Transfer-Encoding)"
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        return "400 Bad Request", [], "missing or invalid Sec-WebSocket-Key"
    return None


def is_websocket_request(environ: dict) -> bool:
    return "websocket" in _header_tokens(environ.get("HTTP_UPGRADE", ""))


class GatewayHandler(WebSocketHandler):
    """A ``WebSocketHandler`` whose app decides on the upgrade before the 101 goes out.

    It also bounds what a client may send before any app runs: an idle keep-alive connection is
    closed after :attr:`keepalive_timeout`, headers slower than :attr:`header_timeout` get a 400
    (slowloris), a header section over :attr:`max_header_size` bytes gets a 431 (see
    :func:`read_header_section`), a request line over 8 KiB a 414 (gevent's).
    """

    # The server options' defaults; :func:`ouistiti_gw.server.handler_class` sets others.
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
            raise ValueError(f"request headers took more than {self.header_timeout:g} s") from None
        finally:
            timeout.close()

    def MessageClass(self, rfile: BinaryIO, *args) -> OldMessage:
        """The request's headers, parsed as gevent's own factory does, read within the budget."""
        section = read_header_section(rfile, self.max_header_size)
        return email.parser.Parser(_class=OldMessage).parsestr(section.decode("iso-8859-1"))

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
            self.environ[UPGRADE_KEY] = self._accept_upgrade
            self.environ[SOCKET_KEY] = self.socket
        # The plain WSGI path: the app answers, or calls the upgrade callable and pipes.
        super(WebSocketHandler, self).run_application()

    def _refuse(self, status: str, headers: list[tuple[str, str]], why: str) -> None:
        log.warning("refused WebSocket handshake from %s for %s: %s", self.client_address,
                    wsgi_text(self.environ.get("PATH_INFO", "")), loggable(why))
        body = (why + "\n").encode("utf-8")
        self.close_connection = True
        _no_body_to_drain(self)
        self.start_response(status, headers + [("Content-Type", "text/plain; charset=utf-8"),
                                               ("Content-Length", str(len(body))), ("Connection", "close")])
        self.write(body)

    def _accept_upgrade(self, protocol: str | None = None) -> ClientConnection:
        """Send the 101 and hand the connection over.

        After this the HTTP layer must not write to the connection again, nor reuse it.
        """
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Accept", accept_key(self.environ["HTTP_SEC_WEBSOCKET_KEY"].strip()))]
        if protocol:
            headers.append(("Sec-WebSocket-Protocol", protocol))
        self.start_response("101 Switching Protocols", headers)
        self.provided_date = True  # no Date header,
        self.provided_content_length = True  # no Content-Length or chunked body on a 101
        self.close_connection = True
        self.write(b"")
        return ClientConnection(self)

    def log_request(self) -> None:
        # The 101 is logged by the session itself (open/close lines with byte counts). A request
        # refused before it had an environ (400, 414, 431 on its head) was logged with why; an
        # access line would need the environ (gunicorn's access log reads it).
        if self.code != 101 and self.environ is not None:
            super(WebSocketHandler, self).log_request()
