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

import dataclasses
import logging
import os
import time
from typing import TYPE_CHECKING, Iterable

from .bridge import Session
from .addresses import format_address
from .frames import CloseCode
from .direct import hand_over
from .identity import PROXY_PROTOCOL_VERSIONS, Networks, TrustedProxies, arrival_address, proxy_header
from .logs import follow_gunicorn_error_log
from .logsafe import loggable, wsgi_text
from .names import NameRefused, NameRules, Target, find_target, parse_protocols, wsgi_path_to_name
from .policy import HostPolicy, OriginPolicy, SessionCounter
from .proxy_protocol import HeaderTooLong
from .stock import adapt
from .unix import BackendUnavailable, connect_unix
from .upgrade import UPGRADE_KEY, ClientConnection, Upgrade, is_websocket_request
from .websocket import DEFAULT_MAX_FRAME_RATE, DEFAULT_MAX_MESSAGE_SIZE, WebSocket

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

#: ``pipe``, the default, may also be given as an empty string (the ini's and environment's "unset").
MODES = ("pipe", "direct")
#: Sessions one process carries before new upgrades get 503 (each costs two file descriptors).
DEFAULT_MAX_CONNECTIONS = 10000
#: A quiet client is pinged this often (seconds), and closed after this long without a frame:
#: a live client answers pings, so only a vanished one (no FIN, no RST) reaches the timeout.
DEFAULT_PING_INTERVAL = 30.0
DEFAULT_IDLE_TIMEOUT = 90.0
#: Who may scrape ``metrics_path`` by default: this machine only.
DEFAULT_METRICS_ALLOW = "127.0.0.0/8, ::1"
_REASONS = {403: "403 Forbidden", 404: "404 Not Found", 431: "431 Request Header Fields Too Large",
            503: "503 Service Unavailable"}
#: The metrics' refusal reason for each status a UNIX server's state leads to.
_REFUSAL_REASON = {403: "denied", 404: "missing", 503: "refused"}


class WebSocketGateway:
    """Wrap ``app`` so that WebSocket requests for ``/NAME`` reach the UNIX socket ``docroot/NAME``.

    :param app: the WSGI application that serves every other request.
    :param docroot: the directory of the UNIX sockets; nothing outside it is ever reached.
    :param allow: comma-separated globs of the names the gateway serves (default ``*``).
    :param deny: comma-separated globs of names it never serves (default none). A name that is
        not allowed, or denied, is not the gateway's: the request goes to ``app``.
    :param mode: ``"pipe"`` (the default, also ``""``: the gateway pipes messages) or ``"direct"``:
        after the 101 the client's socket itself is handed to the server (:mod:`ouistiti_gw.direct`),
        plain HTTP only (wss:// is piped).
    :param origins: browser Origins allowed to connect: ``""`` only this same host (the
        default, against cross-site WebSocket hijacking), ``"*"`` any, or a comma-separated list
        of origins with globs (``"https://app.example.com, https://*.example.org"``). 403 otherwise.
    :param allowed_hosts: the ``Host`` names WebSocket handshakes may carry, against DNS
        rebinding: ``""`` (default) only loopback names (``localhost``, ``127.0.0.1``, ``[::1]``, any
        port) when the connection arrived at a loopback address, any name otherwise; ``"*"`` any;
        or a comma-separated list of names with globs, without port. 403 otherwise.
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
        header saying who the client is (:mod:`ouistiti_gw.proxy_protocol`); ``""`` (default): none. Not
        before a direct-mode handover, which carries the client's address itself.
    :param trusted_proxies: comma-separated IPs/CIDRs of front proxies whose ``Forwarded`` /
        ``X-Forwarded-For`` headers name the client (:mod:`ouistiti_gw.identity`); default none.
    :param metrics_path: a path (``/metrics``) where Prometheus metrics are served
        (:mod:`ouistiti_gw.metrics`); default none.
    :param metrics_allow: comma-separated IPs/CIDRs that may scrape ``metrics_path`` (default
        loopback only); judged on the peer, or on the client a trusted proxy names. 403 otherwise.
    """

    def __init__(self, app: "WSGIApplication", docroot: str, allow: str = "*", deny: str = "",
                 mode: str = "", *, origins: str = "", max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, max_message_rate: float = 0,
                 max_frame_rate: float = DEFAULT_MAX_FRAME_RATE, ping_interval: float = DEFAULT_PING_INTERVAL,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 proxy_protocol: str = "", trusted_proxies: str = "", metrics_path: str = "",
                 allowed_hosts: str = "", metrics_allow: str = DEFAULT_METRICS_ALLOW) -> None:
        if not docroot:
            raise ValueError("ouistiti_gw: a docroot (the directory of the UNIX sockets) is required")
        mode = (mode or "").strip() or "pipe"
        if mode not in MODES:
            raise ValueError(f"ouistiti_gw: unknown mode {mode!r} (expected one of {MODES})")
        follow_gunicorn_error_log()  # under the stock gunicorn worker, nothing else would
        self.app = app
        self.docroot = os.path.abspath(docroot)
        self.rules = NameRules.from_options(allow, deny)
        self.mode = mode
        self.origins = OriginPolicy(origins)
        self.hosts = HostPolicy(allowed_hosts)
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
        self.metrics_allow = Networks(metrics_allow, "metrics_allow")
        if not os.path.isdir(self.docroot):
            log.warning("docroot %s does not exist (yet): every WebSocket name will be 404", self.docroot)

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        if not is_websocket_request(environ):
            if self.metrics is not None and environ.get("PATH_INFO") == self.metrics_path:
                return self._serve_metrics(environ, start_response)
            return self.app(environ, start_response)
        upgrade = adapt(environ)
        if upgrade is None:
            log.warning("WebSocket request for %s on a server that cannot upgrade it "
                        "(use ouistiti_gw.worker.GatewayWorker or GeventWebSocketWorker)",
                        wsgi_text(environ.get("PATH_INFO", "")))
            return self.app(environ, start_response)
        client = loggable(format_address(self.trusted_proxies.client(environ).address))
        try:
            name = wsgi_path_to_name(environ.get("PATH_INFO", ""))
            protocols = parse_protocols(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL"))
            target = find_target(self.docroot, self.rules, name, protocols)
        except NameRefused as refusal:
            return self._refuse(environ, start_response, 403, str(refusal), client, "denied")
        if target is None:
            return self._pass_on(environ, start_response, upgrade)
        target = dataclasses.replace(target, name=loggable(target.name))  # for logs and metrics from here on
        if not self._host_permitted(environ):
            return self._refuse(environ, start_response, 403, _host_refusal(environ), client, "host")
        origin = environ.get("HTTP_ORIGIN")
        if not self.origins.permits(origin, environ.get("HTTP_HOST"), environ.get("wsgi.url_scheme", "http")):
            return self._refuse(environ, start_response, 403, f"origin {loggable(origin)} not allowed",
                                client, "origin")
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
            header = self._proxy_header(environ, target)
        except HeaderTooLong as too_long:
            return self._refuse(environ, start_response, 431, str(too_long), client, "too_large")
        try:
            backend = connect_unix(target.path)
        except BackendUnavailable as unavailable:
            return self._refuse(environ, start_response, unavailable.status,
                                f"{target.name}: {unavailable.reason}", client, _REFUSAL_REASON[unavailable.status])
        if self.mode != "direct" and not self._introduce(backend, header, target):
            backend.close()
            return self._refuse(environ, start_response, 503, f"{target.name}: connection lost", client, "refused")
        upgrade = environ[UPGRADE_KEY]
        hand_over_client = self.mode == "direct" and self._can_hand_over(environ, upgrade, client)
        try:
            connection = upgrade.accept(target.protocol)
        except BaseException:
            backend.close()
            raise
        if hand_over_client:
            self._hand_over(connection, backend, target, client)
            return []
        if self.mode == "direct":
            self._introduce(backend, header, target)  # piped after all; if it fails, so does the session
        # The request is over: an idle session keeps none of it (its headers may weigh up to the
        # server's budget). Frames up the stack still hold this dict, so it is emptied, as
        # PEP 3333 lets an app do; everything the session needs was copied out above.
        environ.clear()
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

    def _host_permitted(self, environ: "WSGIEnvironment") -> bool:
        return self.hosts.permits(environ.get("HTTP_HOST"), arrival_address(environ))

    def _serve_metrics(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        """The scrape, for ``metrics_allow`` only, and under this gateway's names (DNS rebinding):
        the page lists every socket name in use."""
        client = self.trusted_proxies.client(environ).address[0]
        if client not in self.metrics_allow:
            log.warning("refused metrics scrape from %s: not in metrics_allow", loggable(client))
            return _plain_response(start_response, 403, "metrics are not served to this address")
        if not self._host_permitted(environ):
            log.warning("refused metrics scrape from %s: %s", loggable(client), _host_refusal(environ))
            return _plain_response(start_response, 403, _host_refusal(environ))
        body = self.metrics.exposition()
        start_response("200 OK", [("Content-Type", self.metrics.content_type), ("Content-Length", str(len(body)))])
        return [body]

    def _proxy_header(self, environ: "WSGIEnvironment", target: Target) -> bytes:
        """The PROXY header for this client (empty without ``proxy_protocol``), built before any
        connection: one that cannot be built (:class:`HeaderTooLong`) refuses the request, and the
        server never sees a connection without its header."""
        if not self.proxy_protocol:
            return b""
        return proxy_header(self.proxy_protocol, environ, self.trusted_proxies.client(environ), target.protocol)

    def _introduce(self, backend, header: bytes, target: Target) -> bool:
        """PROXY protocol: the header goes out first, alone; False if the server is already gone."""
        if not header:
            return True
        try:
            backend.sendall(header)
            return True
        except OSError as error:
            log.warning("PROXY header to %s failed: %s", target.name, error)
            return False

    def _websocket(self, connection: ClientConnection) -> WebSocket:
        """The WebSocket we trust, over the client connection."""
        return WebSocket(connection.sock, connection.take_buffered(), max_message_size=self.max_message_size,
                         max_frame_rate=self.max_frame_rate)

    @staticmethod
    def _can_hand_over(environ: "WSGIEnvironment", upgrade: Upgrade, client: str) -> bool:
        """Checked before the 101: afterwards the client's first message may be on its way."""
        if environ.get("wsgi.url_scheme") == "https":
            log.info("direct mode is for plain HTTP only: piping %s's TLS connection instead", client)
            return False
        if upgrade.pending_input():
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
        log.warning("refused WebSocket %s from %s: %s (%d)", wsgi_text(environ.get("PATH_INFO", "")), client,
                    reason, status)
        if self.metrics is not None:
            self.metrics.refused(category)
        upgrade = environ[UPGRADE_KEY]
        if upgrade.already_accepted:
            code = CloseCode.INTERNAL_ERROR if status in (404, 503) else CloseCode.POLICY_VIOLATION
            websocket = self._websocket(upgrade.accept())
            websocket.close(code, reason)
            websocket.linger()
            return []
        return _plain_response(start_response, status, reason)

    def _pass_on(self, environ, start_response, upgrade: Upgrade) -> Iterable[bytes]:
        """Hand a WebSocket request that is not the gateway's to the wrapped app.

        Under the stock handler the WebSocket is already open; if the app leaves it open, we end
        it with a well-formed 1008 (gevent-websocket's own close would carry no status code).
        """
        result = self.app(environ, start_response)
        if not upgrade.already_accepted:
            return result

        def close_if_left_open() -> None:
            if upgrade.still_open():
                self._websocket(upgrade.accept()).close(
                    CloseCode.POLICY_VIOLATION, "no WebSocket service here")

        return _then_close(result, close_if_left_open)


def _host_refusal(environ: "WSGIEnvironment") -> str:
    return f"Host {loggable(environ.get('HTTP_HOST'))} is not one of this gateway's names (allowed_hosts)"


def _plain_response(start_response: "StartResponse", status: int, reason: str) -> Iterable[bytes]:
    body = f"{_REASONS[status]}: {reason}\n".encode("utf-8")
    start_response(_REASONS[status], [("Content-Type", "text/plain; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])
    return [body]


def _make_metrics():
    try:
        from .metrics import Metrics
    except ImportError as error:
        raise ValueError(f"ouistiti_gw: metrics_path needs prometheus_client "
                         f"(pip install ouistiti_gw[metrics]): {error}") from None
    return Metrics()


def _then_close(result: Iterable[bytes], finish) -> Iterable[bytes]:
    try:
        yield from result
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
        finish()
