"""Reach a handshake's UNIX server before the handshake is answered, so that a failure gets a real answer.

Its socket is found below docroot (:mod:`ouistiti_gw.gateway.lookup`, with ouistiti's subprotocol
fallback), the PROXY header is built before any connection (one that cannot be built refuses the
request: the server never sees a connection without its header), then the socket is connected
and, when the client is piped, the header sent. Each failure is a
:class:`~ouistiti_gw.gateway.refusals.Refusal` for the middleware to answer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.logsafe import loggable
from ..core.proxy_protocol import HeaderTooLong
from ..green.unix import BackendUnavailable
from ..reload.session_state import Admission, bounded
from .identity import Identity, introduce
from .lookup import MAX_PROTOCOL_CANDIDATES, Target, open_target
from .names import NameRefused, NameRules, parse_protocols
from .refusals import Refusal

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .authorization import User


@dataclass(frozen=True, slots=True)
class Reached:
    """A UNIX server connected for a handshake not answered yet."""

    #: The connected socket, the caller's to close.
    backend: Any
    #: The socket's name (escaped for logs and metrics from here on) and the subprotocol to answer.
    target: Target
    #: What the session is let in with, for a reload to judge again.
    admission: Admission
    #: The PROXY header (empty without ``proxy_protocol``); already sent unless ``send_header`` was False.
    header: bytes


def reach(environ: "WSGIEnvironment", name: str, docroot: str, rules: NameRules, identity: Identity, *,
          send_header: bool, user: "User | None" = None) -> Reached | Refusal:
    """Connect to the server of the name ``name`` below ``docroot``, or say why not.
    ``rules``: the names this client may reach (its user's, with ``{user}`` filled in);
    ``send_header``: False in direct mode, where the client may be handed over instead;
    ``user``: who the app's authorization says the client is, for the PROXY header."""
    # one more than the fallback tries: it says so when it ignores some
    protocols = parse_protocols(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL"), MAX_PROTOCOL_CANDIDATES + 1)
    try:
        target, socket_file = open_target(docroot, rules, name, protocols)
    except NameRefused as refused:
        return Refusal.denied(refused)
    except BackendUnavailable as unavailable:
        return Refusal.unreachable(loggable(name), unavailable)
    admission = Admission(name, target.name, socket_file.name, bounded(environ.get("HTTP_ORIGIN")),
                          bounded(environ.get("HTTP_HOST")), environ.get("wsgi.url_scheme", "http"))
    target = dataclasses.replace(target, name=loggable(target.name))  # for logs and metrics from here on
    with socket_file:  # the descriptor is closed once connected, or refused
        try:
            header = identity.proxy_header(environ, target.protocol, user)
        except HeaderTooLong as too_long:
            return Refusal(431, str(too_long), "too_large")
        try:
            backend = socket_file.connect()
        except BackendUnavailable as unavailable:
            return Refusal.unreachable(target.name, unavailable)
    if send_header and not introduce(backend, header, target.name):
        backend.close()
        return Refusal(503, f"{target.name}: connection lost", "refused")
    return Reached(backend, target, admission, header)
