"""``WebSocketGateway``: the WSGI middleware that sends WebSocket requests to UNIX servers.

It decides whether a request is the gateway's (a WebSocket handshake for a name that passes the
``allow``/``deny`` rules), connects to ``docroot/NAME`` *before* accepting the handshake, then
hands both ends to a :class:`~ouistiti_gw.gateway.session.Session`. Everything else goes to the wrapped app
untouched.

Each step is a collaborator's, built from the one :class:`~ouistiti_gw.config.GatewayConfig`:
who may come in (:class:`~ouistiti_gw.gateway.admission.AdmissionPolicy`), who the client is
(:class:`~ouistiti_gw.gateway.identity.Identity`), what the wrapped app's authorization says of
it (:class:`~ouistiti_gw.gateway.authorization.Authorization`, between admission and any UNIX
connection), reaching the server
(:func:`~ouistiti_gw.gateway.reach.reach`), the answers to refusals
(:class:`~ouistiti_gw.gateway.refusals.Refusals`), direct mode's handover
(:class:`~ouistiti_gw.gateway.direct_mode.DirectMode`), the metrics' page
(:class:`~ouistiti_gw.gateway.metrics_page.MetricsPage`) and the admin endpoint
(:class:`~ouistiti_gw.gateway.admin_page.AdminPage`).

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

from ..config import GatewayConfig
from ..core.deflate import DeflateParameters, PerMessageDeflate, negotiate
from ..core.frames import CloseCode, ProtocolViolation
from ..core.logsafe import loggable, wsgi_text
from ..green.websocket import WebSocket
from ..reload.migration import register
from ..reload.session_state import Admission, SessionState
from .admin_page import AdminPage
from .admission import AdmissionPolicy, SessionCounter
from .authorization import Authorization, Authorized
from .direct_mode import DirectMode
from .gunicorn_log import follow_gunicorn_error_log
from .identity import Identity, introduce
from .lookup import hold_docroot
from .metrics_page import MetricsPage, make_metrics
from .names import NameRefused, wsgi_path_to_name
from .reach import reach
from .recheck import Rechecks
from .refusals import Refusal, Refusals
from .session import Session
from .stock_handler import adapt
from .upgrade import UPGRADE_KEY, ClientConnection, Upgrade, is_websocket_request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)


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
        ``metrics_path`` and ``metrics_allow`` (:mod:`ouistiti_gw.gateway.metrics`), ``admin_path`` and
        ``admin_allow`` (:mod:`ouistiti_gw.gateway.admin_page`), ``auth_request`` or
        ``authorize`` (:mod:`ouistiti_gw.gateway.authorization`), ``auth_recheck`` and
        ``auth_recheck_failure`` (:mod:`ouistiti_gw.gateway.recheck`). A missing docroot, an
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
        self.docroot = os.path.abspath(config.docroot)  # what every name is looked up below
        self.sessions = SessionCounter(config.max_connections)
        self.policy = AdmissionPolicy(config, self.sessions)
        self.identity = Identity(config)
        self.authorization = Authorization(config, app, self.policy.rules)
        self.metrics = make_metrics(config)
        self.metrics_page = (MetricsPage(self.metrics, config, self.identity, self.policy.hosts)
                             if self.metrics is not None else None)
        self.admin_page = (AdminPage(config, self.docroot, self.identity, self.policy.hosts)
                           if config.admin_path else None)
        self.refusals = Refusals(app, self.metrics, self._websocket)
        self.rechecks = (Rechecks(self.authorization, config.auth_recheck, config.auth_recheck_failure == "close",
                                  self.metrics) if self.authorization.ask is not None else None)
        self.direct_mode = DirectMode(self.metrics, self._websocket)
        if not os.path.isdir(self.docroot):
            log.warning("docroot %s does not exist (yet): every WebSocket name will be 404", self.docroot)
        else:
            hold_docroot(self.docroot)  # its descriptor taken now, not by the first client
        register(self.docroot, self._resume)  # sessions a reload moves here (ouistiti_gw.reload.migration)

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        if not is_websocket_request(environ):
            if self.metrics_page is not None and environ.get("PATH_INFO") == self.config.metrics_path:
                return self.metrics_page(environ, start_response)
            if self.admin_page is not None and self.admin_page.serves(environ.get("PATH_INFO", "")):
                return self.admin_page(environ, start_response)
            return self.app(environ, start_response)
        upgrade = adapt(environ)
        if upgrade is None:
            log.warning("WebSocket request for %s on a server that cannot upgrade it "
                        "(use ouistiti_gw.worker.GatewayWorker or GeventWebSocketWorker)",
                        wsgi_text(environ.get("PATH_INFO", "")))
            return self.app(environ, start_response)
        client = self.identity.for_logs(environ)
        try:
            name = wsgi_path_to_name(environ.get("PATH_INFO", ""))
        except NameRefused as refused:
            return self.refusals.refuse(environ, start_response, Refusal.denied(refused), client)
        not_served = self.policy.rules.refusal(name)
        if not_served is not None:
            log.info("WebSocket %s from %s goes to the wrapped app: name %s", loggable(name), client, not_served)
            return self.refusals.pass_on(environ, start_response, upgrade)
        # The cheap checks, before any look into docroot (a handshake may ask for thousands of names)
        refusal = self.policy.admit(environ)
        if refusal is not None:
            return self.refusals.refuse(environ, start_response, refusal, client)
        try:
            authorized = self.authorization.decide(environ, name)  # may wait on the app: a place is held
            if isinstance(authorized, Refusal):
                return self.refusals.refuse(environ, start_response, authorized, client)
            return self._bridge(environ, start_response, name, client, authorized)
        finally:
            self.sessions.release()

    def _bridge(self, environ, start_response, name: str, client: str, authorized: Authorized) -> Iterable[bytes]:
        """Reach the server, then accept the handshake and hand the client over or run the session to its end."""
        direct = self.config.mode == "direct"
        reached = reach(environ, name, self.docroot, authorized.rules, self.identity, send_header=not direct,
                        user=authorized.user)
        if isinstance(reached, Refusal):
            return self.refusals.refuse(environ, start_response, reached, client)
        backend, target, header = reached.backend, reached.target, reached.header
        upgrade = environ[UPGRADE_KEY]
        hand_over_client = direct and self.direct_mode.can_hand_over(environ, upgrade, client)
        deflate = self._negotiate(environ, upgrade)
        try:
            connection = upgrade.accept(target.protocol, deflate.header() if deflate else None)
        except BaseException:
            backend.close()
            raise
        if hand_over_client:
            self.direct_mode.hand_over(connection, backend, target.name, client)
            return []
        if direct:
            introduce(backend, header, target.name)  # piped after all; if it fails, so does the session
        # The request is over: an idle session keeps none of it (its headers may weigh up to the
        # server's budget). Frames up the stack still hold this dict, so it is emptied, as
        # PEP 3333 lets an app do; everything the session needs was copied out above.
        environ.clear()
        session = self._session(self._websocket(connection, deflate), backend, target.name, client,
                                reached.admission)
        session.proxy_header_sent = bool(header)
        session.authorized = authorized
        self._run(session)
        if session.reload_outcome == "moved":
            connection.detach()  # the client's socket is the successor's now
        return []

    def _session(self, websocket: WebSocket, backend, name: str, client: str, admission: Admission) -> Session:
        """A session with this gateway's limits."""
        config = self.config
        return Session(websocket, backend, name, client, max_message_rate=config.max_message_rate,
                       ping_interval=config.ping_interval, idle_timeout=config.idle_timeout, docroot=self.docroot,
                       on_end=partial(self._count_session, self.metrics) if self.metrics is not None else None,
                       admission=admission)

    def _run(self, session: Session, refusal: ProtocolViolation | None = None) -> None:
        """Run ``session`` to its end, under this gateway's rechecks and expiry when an
        authorization let it in (not when it starts with its close)."""
        if self.metrics is not None:
            self.metrics.session_opened()
        rechecks, authorized = self.rechecks, session.authorized
        watch = (rechecks.watch(session, authorized)
                 if rechecks is not None and authorized is not None and refusal is None else None)
        try:
            session.run(refusal)
        finally:
            if rechecks is not None and watch is not None:
                rechecks.unwatch(watch)

    def _resume(self, state: SessionState, client_socket, backend) -> Callable[[], None]:
        """Build a session a reload moved here from the old process (:mod:`ouistiti_gw.reload.migration`)
        with this gateway's limits, and return what runs it to its end (StateError: the state
        cannot be restored, its login included). It counts against ``max_connections`` but is
        never refused. A session this configuration would not let in (allow/deny, by its user's
        rules when it carried one, ``allowed_hosts``, ``origins``) starts with its close, 1008;
        one inside a message already over ``max_message_size``, 1009. One that carried its
        authorization is rechecked and expires here as it did there."""
        authorized = self.authorization.resumed(state.login)
        websocket = self._wrap(client_socket, b"", state.protocol.deflate_parameters())
        session = self._session(websocket, backend, state.name, state.client, state.admission)
        session.restore(state)
        session.authorized = authorized
        refusal = (self._judge_again(state.admission, client_socket, authorized)
                   or websocket.protocol.over_limit())
        return partial(self._run_resumed, session, refusal)

    def _judge_again(self, admission: Admission, client_socket,
                     authorized: Authorized | None) -> ProtocolViolation | None:
        """Why this configuration would not let a moved session in, as the close that ends it."""
        why = self.policy.judge_again(admission, client_socket, authorized.rules if authorized else None)
        return None if why is None else ProtocolViolation(CloseCode.POLICY_VIOLATION, f"after a reload: {why}")

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
        if self.config.compression == "off" or self.config.mode == "direct" or upgrade.already_accepted:
            return None
        return negotiate(environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS"),
                         client_context_takeover=self.config.compression_client_context == "on")

    def _websocket(self, connection: ClientConnection, deflate: DeflateParameters | None = None) -> WebSocket:
        """The WebSocket we trust, over the client connection (compressed as ``deflate`` says)."""
        return self._wrap(connection.sock, connection.take_buffered(), deflate)

    def _wrap(self, sock, buffered: bytes, deflate: DeflateParameters | None) -> WebSocket:
        config = self.config
        return WebSocket(sock, buffered, max_message_size=config.max_message_size, max_frame_rate=config.max_frame_rate,
                         max_byte_rate=config.max_byte_rate,
                         deflate=PerMessageDeflate(deflate, threshold=config.compression_threshold)
                         if deflate else None)
