"""``WebSocketGateway``: the WSGI middleware that sends WebSocket requests to UNIX servers.

It decides whether a request is the gateway's (a WebSocket handshake for a name that passes the
``allow``/``deny`` rules), connects to ``docroot/NAME`` *before* accepting the handshake, then
hands both ends to a :class:`~ouistiti_gw.gateway.session.Session`. Everything else goes to the wrapped app
untouched.

Two servers can carry it:

- the project's handler (:mod:`ouistiti_gw.servers.handler`, used by ``GatewayWorker``, the CLI and the
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
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..backend.handover import hand_over
from ..config import ConfigurationError, GatewayConfig
from ..core.addresses import format_address
from ..core.deflate import DeflateParameters, PerMessageDeflate, negotiate
from ..core.frames import CloseCode, ProtocolViolation
from ..core.logsafe import loggable, wsgi_text
from ..core.proxy_protocol import HeaderTooLong
from ..green.unix import BackendUnavailable
from ..green.websocket import WebSocket
from ..reload.migration import register
from ..reload.session_state import Admission, SessionState, bounded
from .admission import HostPolicy, OriginPolicy, SessionCounter
from .gunicorn_log import follow_gunicorn_error_log
from .identity import Networks, TrustedProxies, arrival_address, proxy_header, socket_arrival
from .lookup import MAX_PROTOCOL_CANDIDATES, Target, hold_docroot, open_target
from .names import NameRefused, NameRules, parse_protocols, wsgi_path_to_name
from .session import Session
from .stock_handler import adapt
from .upgrade import UPGRADE_KEY, ClientConnection, Upgrade, is_websocket_request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

_REASONS = {403: "403 Forbidden", 404: "404 Not Found", 431: "431 Request Header Fields Too Large",
            503: "503 Service Unavailable"}
#: The metrics' refusal reason for each status a UNIX server's state leads to.
_REFUSAL_REASON = {403: "denied", 404: "missing", 503: "refused"}


class WebSocketGateway:
    """Wrap ``app`` so that WebSocket requests for ``/NAME`` reach the UNIX socket ``docroot/NAME``.

    :param app: the WSGI application that serves every other request.
    :param docroot: the directory of the UNIX sockets; nothing outside it is ever reached.
    :param config: a whole :class:`~ouistiti_gw.config.GatewayConfig`; ``docroot`` and keywords
        given too replace its fields.
    :param options: any other option of :class:`~ouistiti_gw.config.GatewayConfig` by name, as a
        value of its type or a string (``allow="ws_*, chat"``, ``max_connections=100``). Among
        them: ``allow``/``deny`` (a name not allowed, or denied, is not the gateway's: the
        request goes to ``app``), ``mode`` (``"direct"`` hands the client's socket itself to
        the server, :mod:`ouistiti_gw.backend.handover`), ``origins`` and ``allowed_hosts`` (403 for
        others), ``max_connections`` (503 past it), ``max_message_size``, ``max_message_rate``,
        ``max_frame_rate``, ``max_byte_rate``, ``ping_interval``, ``idle_timeout``, ``proxy_protocol``
        (:mod:`ouistiti_gw.core.proxy_protocol`), ``trusted_proxies`` (:mod:`ouistiti_gw.gateway.identity`),
        ``metrics_path`` and ``metrics_allow`` (:mod:`ouistiti_gw.gateway.metrics`). A missing docroot, an
        unknown option or a bad value raises :class:`~ouistiti_gw.config.ConfigurationError`.
    """

    def __init__(self, app: "WSGIApplication", docroot: str | None = None, *,
                 config: GatewayConfig | None = None, **options: Any) -> None:
        if docroot is not None:
            options["docroot"] = docroot
        config = GatewayConfig.load({**(dataclasses.asdict(config) if config else {}), **options})
        follow_gunicorn_error_log()  # under the stock gunicorn worker, nothing else would
        self.app = app
        self.config = config
        self.docroot = os.path.abspath(config.docroot)
        self.rules = NameRules.from_options(config.allow, config.deny)
        self.mode = config.mode
        self.origins = OriginPolicy(config.origins)
        self.hosts = HostPolicy(config.allowed_hosts)
        self.sessions = SessionCounter(config.max_connections)
        self.max_message_size = config.max_message_size
        self.max_message_rate = config.max_message_rate
        self.max_frame_rate = config.max_frame_rate
        self.max_byte_rate = config.max_byte_rate
        self.ping_interval = config.ping_interval
        self.idle_timeout = config.idle_timeout
        self.proxy_protocol = config.proxy_protocol
        self.trusted_proxies = TrustedProxies(config.trusted_proxies)
        self.metrics_path = config.metrics_path
        self.metrics = _make_metrics() if self.metrics_path else None
        self.metrics_allow = Networks(config.metrics_allow, "metrics_allow")
        if not os.path.isdir(self.docroot):
            log.warning("docroot %s does not exist (yet): every WebSocket name will be 404", self.docroot)
        else:
            hold_docroot(self.docroot)  # its descriptor taken now, not by the first client
        register(self.docroot, self._resume)  # sessions a reload moves here (ouistiti_gw.reload.migration)

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        if not is_websocket_request(environ):
            if self.metrics is not None and environ.get("PATH_INFO") == self.metrics_path:
                return self._serve_metrics(self.metrics, environ, start_response)
            return self.app(environ, start_response)
        upgrade = adapt(environ)
        if upgrade is None:
            log.warning("WebSocket request for %s on a server that cannot upgrade it "
                        "(use ouistiti_gw.servers.worker.GatewayWorker or GeventWebSocketWorker)",
                        wsgi_text(environ.get("PATH_INFO", "")))
            return self.app(environ, start_response)
        client = loggable(format_address(self.trusted_proxies.client(environ).address))
        try:
            name = wsgi_path_to_name(environ.get("PATH_INFO", ""))
        except NameRefused as refusal:
            return self._refuse(environ, start_response, 403, str(refusal), client, "denied")
        not_served = self.rules.refusal(name)
        if not_served is not None:
            log.info("WebSocket %s from %s goes to the wrapped app: name %s", loggable(name), client, not_served)
            return self._pass_on(environ, start_response, upgrade)
        # The cheap checks, before any look into docroot (a handshake may ask for thousands of names)
        refused = self._judge(environ.get("HTTP_HOST"), environ.get("HTTP_ORIGIN"),
                              environ.get("wsgi.url_scheme", "http"), arrival_address(environ))
        if refused is not None:
            category, reason = refused
            return self._refuse(environ, start_response, 403, reason, client, category)
        if not self.sessions.try_acquire():
            return self._refuse(environ, start_response, 503,
                                f"{self.sessions.maximum} sessions already open", client, "limit")
        try:
            return self._bridge(environ, start_response, name, client)
        finally:
            self.sessions.release()

    def _judge(self, host: str | None, origin: str | None, scheme: str, arrival: str) -> tuple[str, str] | None:
        """The metrics' category and the reason when a request's ``Host`` or ``Origin`` is not
        accepted (DNS rebinding, cross-site hijacking); None when both are. ``arrival``: the
        address its connection arrived at."""
        if not self.hosts.permits(host, arrival):
            return "host", _host_refusal(host)
        if not self.origins.permits(origin, host, scheme):
            return "origin", f"origin {loggable(origin)} not allowed"
        return None

    def _bridge(self, environ, start_response, name: str, client: str) -> Iterable[bytes]:
        """Find the server's socket, connect to it, then accept the handshake and run the session to its end."""
        # one more than the fallback tries: it says so when it ignores some
        protocols = parse_protocols(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL"), MAX_PROTOCOL_CANDIDATES + 1)
        try:
            target, socket_file = open_target(self.docroot, self.rules, name, protocols)
        except NameRefused as refusal:
            return self._refuse(environ, start_response, 403, str(refusal), client, "denied")
        except BackendUnavailable as unavailable:
            return self._unavailable(environ, start_response, loggable(name), unavailable, client)
        admission = Admission(name, target.name, socket_file.name, bounded(environ.get("HTTP_ORIGIN")),
                              bounded(environ.get("HTTP_HOST")), environ.get("wsgi.url_scheme", "http"))
        target = dataclasses.replace(target, name=loggable(target.name))  # for logs and metrics from here on
        with socket_file:  # the descriptor is closed once connected, or refused
            try:
                header = self._proxy_header(environ, target)
            except HeaderTooLong as too_long:
                return self._refuse(environ, start_response, 431, str(too_long), client, "too_large")
            try:
                backend = socket_file.connect()
            except BackendUnavailable as unavailable:
                return self._unavailable(environ, start_response, target.name, unavailable, client)
        if self.mode != "direct" and not self._introduce(backend, header, target):
            backend.close()
            return self._refuse(environ, start_response, 503, f"{target.name}: connection lost", client, "refused")
        upgrade = environ[UPGRADE_KEY]
        hand_over_client = self.mode == "direct" and self._can_hand_over(environ, upgrade, client)
        deflate = self._negotiate(environ, upgrade)
        try:
            connection = upgrade.accept(target.protocol, deflate.header() if deflate else None)
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
        session = self._session(self._websocket(connection, deflate), backend, target.name, client, admission)
        session.proxy_header_sent = bool(header)
        self._run(session)
        if session.reload_outcome == "moved":
            connection.detach()  # the client's socket is the successor's now
        return []

    def _unavailable(self, environ, start_response, name: str, unavailable: BackendUnavailable,
                     client: str) -> Iterable[bytes]:
        """Refuse a handshake whose UNIX server cannot be reached, with the status that says why."""
        return self._refuse(environ, start_response, unavailable.status, f"{name}: {unavailable.reason}", client,
                            _REFUSAL_REASON[unavailable.status])

    def _session(self, websocket: WebSocket, backend, name: str, client: str, admission: Admission) -> Session:
        """A session with this gateway's limits."""
        return Session(websocket, backend, name, client, max_message_rate=self.max_message_rate,
                       ping_interval=self.ping_interval, idle_timeout=self.idle_timeout, docroot=self.docroot,
                       on_end=partial(self._count_session, self.metrics) if self.metrics is not None else None,
                       admission=admission)

    def _run(self, session: Session, refusal: ProtocolViolation | None = None) -> None:
        if self.metrics is not None:
            self.metrics.session_opened()
        session.run(refusal)

    def _resume(self, state: SessionState, client_socket, backend) -> Callable[[], None]:
        """Build a session a reload moved here from the old process (:mod:`ouistiti_gw.reload.migration`)
        with this gateway's limits, and return what runs it to its end (StateError: the state
        cannot be restored). It counts against ``max_connections`` but is never refused. A
        session this configuration would not let in (allow/deny, ``allowed_hosts``,
        ``origins``) starts with its close, 1008; one inside a message already over
        ``max_message_size``, 1009."""
        websocket = self._wrap(client_socket, b"", state.protocol.deflate_parameters())
        session = self._session(websocket, backend, state.name, state.client, state.admission)
        session.restore(state)
        refusal = self._judge_again(state.admission, client_socket) or websocket.protocol.over_limit()
        return partial(self._run_resumed, session, refusal)

    def _judge_again(self, admission: Admission, client_socket) -> ProtocolViolation | None:
        """Why this configuration would not let a moved session in, as the close that ends it."""
        names = (admission.requested, admission.target, admission.resolved)
        if not all(self.rules.permits(name) for name in names):
            why = "name not served (allow/deny)"
        else:
            refused = self._judge(admission.host, admission.origin, admission.scheme,
                                  socket_arrival(client_socket) or "")
            if refused is None:
                return None
            why = refused[1]
        return ProtocolViolation(CloseCode.POLICY_VIOLATION, f"after a reload: {why}")

    def _run_resumed(self, session: Session, refusal: ProtocolViolation | None) -> None:
        self.sessions.active += 1
        try:
            self._run(session, refusal)
        finally:
            self.sessions.release()
            session.websocket.sock.close()

    @staticmethod
    def _count_session(metrics, session: Session) -> None:
        ws = session.websocket
        if session.reload_outcome == "moved":
            metrics.session_moved()
            return
        metrics.session_ended(session.name, session.close_code, ws.bytes_received, ws.bytes_sent,
                              time.monotonic() - session.started,
                              wire_in=ws.wire_bytes_received, wire_out=ws.wire_bytes_sent)
        if session.reload_outcome == "drained":
            metrics.session_drained()

    def _negotiate(self, environ: "WSGIEnvironment", upgrade: Upgrade) -> DeflateParameters | None:
        """permessage-deflate's parameters if the client offers it and we may answer: never in
        direct mode (the UNIX server gets the raw socket and knows nothing of it), never when the
        101 already went (gevent-websocket's stock handler answers without extensions)."""
        if self.config.compression == "off" or self.mode == "direct" or upgrade.already_accepted:
            return None
        return negotiate(environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS"),
                         client_context_takeover=self.config.compression_client_context == "on")

    def _host_permitted(self, environ: "WSGIEnvironment") -> bool:
        return self.hosts.permits(environ.get("HTTP_HOST"), arrival_address(environ))

    def _serve_metrics(self, metrics, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        """The scrape, for ``metrics_allow`` only, and under this gateway's names (DNS rebinding):
        the page lists every socket name in use."""
        client = self.trusted_proxies.client(environ).address[0]
        if client not in self.metrics_allow:
            log.warning("refused metrics scrape from %s: not in metrics_allow", loggable(client))
            return _plain_response(start_response, 403, "metrics are not served to this address")
        if not self._host_permitted(environ):
            refusal = _host_refusal(environ.get("HTTP_HOST"))
            log.warning("refused metrics scrape from %s: %s", loggable(client), refusal)
            return _plain_response(start_response, 403, refusal)
        body = metrics.exposition()
        start_response("200 OK", [("Content-Type", metrics.content_type), ("Content-Length", str(len(body)))])
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

    def _websocket(self, connection: ClientConnection, deflate: DeflateParameters | None = None) -> WebSocket:
        """The WebSocket we trust, over the client connection (compressed as ``deflate`` says)."""
        return self._wrap(connection.sock, connection.take_buffered(), deflate)

    def _wrap(self, sock, buffered: bytes, deflate: DeflateParameters | None) -> WebSocket:
        return WebSocket(sock, buffered, max_message_size=self.max_message_size, max_frame_rate=self.max_frame_rate,
                         max_byte_rate=self.max_byte_rate,
                         deflate=PerMessageDeflate(deflate, threshold=self.config.compression_threshold)
                         if deflate else None)

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


def _host_refusal(host: str | None) -> str:
    return f"Host {loggable(host)} is not one of this gateway's names (allowed_hosts)"


def _plain_response(start_response: "StartResponse", status: int, reason: str) -> Iterable[bytes]:
    body = f"{_REASONS[status]}: {reason}\n".encode("utf-8")
    start_response(_REASONS[status], [("Content-Type", "text/plain; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])
    return [body]


def _make_metrics():
    try:
        from .metrics import Metrics
    except ImportError as error:
        raise ConfigurationError(f"metrics_path needs prometheus_client "
                                 f"(pip install ouistiti_gw[metrics]): {error}", "metrics_path") from None
    return Metrics()


def _then_close(result: Iterable[bytes], finish) -> Iterable[bytes]:
    try:
        yield from result
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
        finish()
