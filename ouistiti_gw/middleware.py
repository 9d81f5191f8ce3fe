"""``WebSocketGateway``: the WSGI middleware that sends WebSocket requests to UNIX servers.

It decides whether a request is the gateway's (a WebSocket handshake for a name that passes the
``allow``/``deny`` rules), connects to ``docroot/NAME`` *before* accepting the handshake, then
hands both ends to a :class:`~ouistiti_gw.bridge.Session`. Everything else goes to the wrapped app
untouched.

Two servers can carry it:

- the project's handler (:mod:`ouistiti_gw.handler`, used by ``GatewayWorker``, the CLI and the
  PasteDeploy runner) lets the gateway refuse with a real HTTP status: 403 for a hostile name, a
  non-socket or no permission, 404 for a missing socket, 503 when nobody listens;
- gevent-websocket's stock handler (``GeventWebSocketWorker``) has already sent the 101, so the
  same refusals become close frames: 1008 for a refused name, 1011 for an unreachable server.

Example::

    from ouistiti_gw import WebSocketGateway
    application = WebSocketGateway(application, docroot="/var/run/websocket", deny="internal/*")
"""
from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Iterable

from .bridge import BackendUnavailable, Session, connect_unix
from .addresses import format_address
from .frames import CloseCode
from .direct import hand_over
from .handler import UPGRADE_KEY, ClientConnection, is_websocket_request, pending_input
from .identity import PROXY_PROTOCOL_VERSIONS, TrustedProxies, proxy_header
from .names import NameRefused, NameRules, Target, find_target, parse_protocols, wsgi_path_to_name
from .policy import OriginPolicy, SessionCounter
from .websocket import DEFAULT_MAX_FRAME_RATE, DEFAULT_MAX_MESSAGE_SIZE, WebSocket

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

MODES = ("", "direct")
#: Sessions one process carries before new upgrades get 503 (each costs two file descriptors).
DEFAULT_MAX_CONNECTIONS = 10000
#: A quiet client is pinged this often (seconds), and closed after this long without a frame:
#: a live client answers pings, so only a vanished one (no FIN, no RST) reaches the timeout.
DEFAULT_PING_INTERVAL = 30.0
DEFAULT_IDLE_TIMEOUT = 90.0
_REASONS = {403: "403 Forbidden", 404: "404 Not Found", 503: "503 Service Unavailable"}
#: The metrics' refusal reason for each status a UNIX server's state leads to.
_REFUSAL_REASON = {403: "denied", 404: "missing", 503: "refused"}


class WebSocketGateway:
    """Wrap ``app`` so that WebSocket requests for ``/NAME`` reach the UNIX socket ``docroot/NAME``.

    :param app: the WSGI application that serves every other request.
    :param docroot: the directory of the UNIX sockets; nothing outside it is ever reached.
    :param allow: comma-separated globs of the names the gateway serves (default ``*``).
    :param deny: comma-separated globs of names it never serves (default none). A name that is
        not allowed, or denied, is not the gateway's: the request goes to ``app``.
    :param mode: ``""`` (pipe messages) or ``"direct"``: after the 101 the client's socket itself
        is handed to the server (:mod:`ouistiti_gw.direct`), plain HTTP only (wss:// is piped).
    :param origins: browser Origins allowed to connect: ``""`` only this same host (the
        default, against cross-site WebSocket hijacking), ``"*"`` any, or a comma-separated list
        of origins with globs (``"https://app.example.com, https://*.example.org"``). 403 otherwise.
    :param max_connections: sessions at once in this process; past it, 503 (0: no limit).
    :param max_message_size: client messages larger than this close the session with 1009.
    :param max_message_rate: client messages per second per session, as a token bucket with one
        second of burst; a client over it is closed with 1008 (0, the default: no limit).
    :param max_frame_rate: client frames of every kind (data, continuation, ping, pong) per second
        per session, with one second of burst; over it: 1008 (default 100 000, 0: no limit).
    :param ping_interval: seconds of client silence before the gateway sends a ping (0: never).
    :param idle_timeout: seconds without any frame from the client (pongs included) before the
        session is closed with 1001 and its UNIX connection too (0: never).
    :param proxy_protocol: ``"v1"`` or ``"v2"``: each new UNIX connection starts with a PROXY
        header saying who the client is (:mod:`ouistiti_gw.proxy`); ``""`` (default): none. Not
        before a direct-mode handover, which carries the client's address itself.
    :param trusted_proxies: comma-separated IPs/CIDRs of front proxies whose ``Forwarded`` /
        ``X-Forwarded-For`` headers name the client (:mod:`ouistiti_gw.identity`); default none.
    :param metrics_path: a path (``/metrics``) where Prometheus metrics are served
        (:mod:`ouistiti_gw.metrics`); default none.
    """

    def __init__(self, app: "WSGIApplication", docroot: str, allow: str = "*", deny: str = "",
                 mode: str = "", *, origins: str = "", max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, max_message_rate: float = 0,
                 max_frame_rate: float = DEFAULT_MAX_FRAME_RATE, ping_interval: float = DEFAULT_PING_INTERVAL,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 proxy_protocol: str = "", trusted_proxies: str = "", metrics_path: str = "") -> None:
        if not docroot:
            raise ValueError("ouistiti_gw: a docroot (the directory of the UNIX sockets) is required")
        mode = (mode or "").strip()
        if mode not in MODES:
            raise ValueError(f"ouistiti_gw: unknown mode {mode!r} (expected one of {MODES})")
        self.app = app
        self.docroot = os.path.abspath(docroot)
        self.rules = NameRules.from_options(allow, deny)
        self.mode = mode
        self.origins = OriginPolicy(origins)
        self.sessions = SessionCounter(int(max_connections))
        self.max_message_size = int(max_message_size)
        self.max_message_rate = float(max_message_rate)
        self.max_frame_rate = float(max_frame_rate)
        self.ping_interval = float(ping_interval)
        self.idle_timeout = float(idle_timeout)
        self.proxy_protocol = (proxy_protocol or "").strip().lower()
        if self.proxy_protocol not in PROXY_PROTOCOL_VERSIONS:
            raise ValueError(f"ouistiti_gw: unknown proxy_protocol {proxy_protocol!r} (expected v1 or v2)")
        self.trusted_proxies = TrustedProxies(trusted_proxies)
        self.metrics_path = metrics_path or ""
        self.metrics = _make_metrics() if self.metrics_path else None
        if not os.path.isdir(self.docroot):
            log.warning("docroot %s does not exist (yet): every WebSocket name will be 404", self.docroot)

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        if not is_websocket_request(environ):
            if self.metrics is not None and environ.get("PATH_INFO") == self.metrics_path:
                return self._serve_metrics(start_response)
            return self.app(environ, start_response)
        stock_websocket = environ.get("wsgi.websocket")
        if stock_websocket is None and UPGRADE_KEY not in environ:
            log.warning("WebSocket request for %s on a server that cannot upgrade it "
                        "(use ouistiti_gw.worker.GatewayWorker or GeventWebSocketWorker)",
                        environ.get("PATH_INFO"))
            return self.app(environ, start_response)
        client = format_address(self.trusted_proxies.client(environ).address)
        try:
            name = wsgi_path_to_name(environ.get("PATH_INFO", ""))
            protocols = parse_protocols(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL"))
            target = find_target(self.docroot, self.rules, name, protocols)
        except NameRefused as refusal:
            return self._refuse(environ, start_response, 403, str(refusal), client, "denied")
        if target is None:
            return self._pass_on(environ, start_response, stock_websocket)
        origin = environ.get("HTTP_ORIGIN")
        if not self.origins.permits(origin, environ.get("HTTP_HOST"), environ.get("wsgi.url_scheme", "http")):
            return self._refuse(environ, start_response, 403, f"origin {origin!r} not allowed", client, "origin")
        if not self.sessions.try_acquire():
            return self._refuse(environ, start_response, 503,
                                f"{self.sessions.maximum} sessions already open", client, "limit")
        try:
            return self._bridge(environ, start_response, target, client)
        finally:
            self.sessions.release()

    def _bridge(self, environ, start_response, target: Target, client: str) -> Iterable[bytes]:
        """Connect to the server, then accept the handshake and run the session to its end."""
        try:
            backend = connect_unix(target.path)
        except BackendUnavailable as unavailable:
            return self._refuse(environ, start_response, unavailable.status,
                                f"{target.name}: {unavailable.reason}", client, _REFUSAL_REASON[unavailable.status])
        if self.mode != "direct" and not self._introduce(backend, environ, target):
            backend.close()
            return self._refuse(environ, start_response, 503, f"{target.name}: connection lost", client, "refused")
        hand_over_client = self.mode == "direct" and self._can_hand_over(environ, client)
        try:
            connection = self._upgrade(environ, target.protocol)
        except BaseException:
            backend.close()
            raise
        if hand_over_client:
            self._hand_over(connection, backend, target, client)
            return []
        if self.mode == "direct":
            self._introduce(backend, environ, target)  # piped after all; if it fails, so does the session
        websocket = self._websocket(connection)
        if self.metrics is not None:
            self.metrics.session_opened()
        Session(websocket, backend, target.name, client, max_message_rate=self.max_message_rate,
                ping_interval=self.ping_interval, idle_timeout=self.idle_timeout,
                on_end=self._count_session if self.metrics is not None else None).run()
        return []

    def _count_session(self, session: Session) -> None:
        ws = session.websocket
        self.metrics.session_ended(session.name, session.close_code, ws.bytes_received, ws.bytes_sent,
                                   time.monotonic() - session.started)

    def _serve_metrics(self, start_response: "StartResponse") -> Iterable[bytes]:
        body = self.metrics.exposition()
        start_response("200 OK", [("Content-Type", self.metrics.content_type), ("Content-Length", str(len(body)))])
        return [body]

    def _introduce(self, backend, environ: "WSGIEnvironment", target: Target) -> bool:
        """PROXY protocol: the header goes out first, alone; False if the server is already gone."""
        if not self.proxy_protocol:
            return True
        header = proxy_header(self.proxy_protocol, environ, self.trusted_proxies.client(environ), target.protocol)
        try:
            backend.sendall(header)
            return True
        except OSError as error:
            log.warning("PROXY header to %s failed: %s", target.name, error)
            return False

    def _upgrade(self, environ: "WSGIEnvironment", protocol: str | None) -> ClientConnection:
        """Complete the handshake (or take over the one gevent-websocket completed)."""
        stock_websocket = environ.get("wsgi.websocket")
        if stock_websocket is None:
            return environ[UPGRADE_KEY](protocol)
        return _take_over(stock_websocket)

    def _websocket(self, connection: ClientConnection) -> WebSocket:
        """The WebSocket we trust, over the client connection."""
        return WebSocket(connection.sock, connection.take_buffered(), max_message_size=self.max_message_size,
                         max_frame_rate=self.max_frame_rate)

    @staticmethod
    def _can_hand_over(environ: "WSGIEnvironment", client: str) -> bool:
        """Checked before the 101: afterwards the client's first message may be on its way."""
        if environ.get("wsgi.url_scheme") == "https":
            log.info("direct mode is for plain HTTP only: piping %s's TLS connection instead", client)
            return False
        if pending_input(environ):
            log.debug("%s sent data right after its handshake: piping instead of handing over", client)
            return False
        return True

    def _hand_over(self, connection: ClientConnection, backend, target: Target, client: str) -> None:
        """Direct mode: the server gets the client's socket; we keep nothing of it."""
        try:
            taken = hand_over(backend, connection.sock)
        except OSError as error:
            log.warning("handover of %s to %s failed: %s", client, target.name, error)
            taken = False
        finally:
            backend.close()
        if taken:
            log.info("session handed over name=%s client=%s", target.name, client)
            if self.metrics is not None:
                self.metrics.session_opened()
                self.metrics.session_ended(target.name, "handover", 0, 0, 0.0)
        else:
            log.warning("%s did not take the connection of %s", target.name, client)
            self._websocket(connection).close(CloseCode.INTERNAL_ERROR, "server did not take the connection")
        connection.detach()

    def _refuse(self, environ, start_response, status: int, reason: str, client: str,
                category: str) -> Iterable[bytes]:
        """Answer a refused handshake; ``category`` is the metrics' reason label."""
        log.warning("refused WebSocket %s from %s: %s (%d)", environ.get("PATH_INFO"), client, reason, status)
        if self.metrics is not None:
            self.metrics.refused(category)
        stock_websocket = environ.get("wsgi.websocket")
        if stock_websocket is not None:
            code = CloseCode.POLICY_VIOLATION if status == 403 else CloseCode.INTERNAL_ERROR
            websocket = self._websocket(self._upgrade(environ, None))
            websocket.close(code, reason)
            websocket.linger()
            return []
        body = f"{_REASONS[status]}: {reason}\n".encode("utf-8")
        start_response(_REASONS[status], [("Content-Type", "text/plain; charset=utf-8"),
                                          ("Content-Length", str(len(body)))])
        return [body]

    def _pass_on(self, environ, start_response, stock_websocket) -> Iterable[bytes]:
        """Hand a WebSocket request that is not the gateway's to the wrapped app.

        Under the stock handler the WebSocket is already open; if the app leaves it open, we end
        it with a well-formed 1008 (gevent-websocket's own close would carry no status code).
        """
        result = self.app(environ, start_response)
        if stock_websocket is None:
            return result

        def close_if_left_open() -> None:
            if not stock_websocket.closed:
                self._websocket(self._upgrade(environ, None)).close(
                    CloseCode.POLICY_VIOLATION, "no WebSocket service here")

        return _then_close(result, close_if_left_open)


def _make_metrics():
    try:
        from .metrics import Metrics
    except ImportError as error:
        raise ValueError(f"ouistiti_gw: metrics_path needs prometheus_client "
                         f"(pip install ouistiti_gw[metrics]): {error}") from None
    return Metrics()


def _take_over(stock_websocket) -> ClientConnection:
    """Take the connection from gevent-websocket's ``WebSocket`` and mute it for good."""
    stock_websocket.closed = True  # its close() (run after the app) would write a codeless close frame
    return ClientConnection(stock_websocket.stream.handler)


def _then_close(result: Iterable[bytes], finish) -> Iterable[bytes]:
    try:
        yield from result
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
        finish()
