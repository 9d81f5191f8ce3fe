"""Who may see a page that is the gateway's own (the metrics, the admin endpoint).

Such a page tells what runs here (socket names, users, addresses), so it is served only to its
allow-list of networks, and only under this gateway's own names: the ``Host`` check of its
WebSockets, against DNS rebinding (a hostile page whose name resolves to this machine).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..core.logsafe import loggable
from .admission import HostPolicy, host_refusal
from .identity import Identity, Networks, arrival_address

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

log = logging.getLogger(__name__)


class PageGate:
    """The clients in the networks of the setting ``option`` (``allow``) whose ``Host`` ``hosts``
    accepts; ``what`` names the request in the log line of a refusal, ``refused`` is the answer's
    reason for a client outside the networks."""

    def __init__(self, allow: tuple[str, ...], option: str, identity: Identity, hosts: HostPolicy, *,
                 what: str, refused: str) -> None:
        self.allow = Networks(allow, option)
        self.option = option
        self.identity = identity
        self.hosts = hosts
        self.what = what
        self.refused = refused

    def refusal(self, environ: "WSGIEnvironment") -> str | None:
        """Why this request may not see the page (logged here), or None."""
        client = self.identity.client(environ).address[0]
        if client not in self.allow:
            log.warning("refused %s from %s: not in %s", self.what, loggable(client), self.option)
            return self.refused
        if not self.hosts.permits(environ.get("HTTP_HOST"), arrival_address(environ)):
            refusal = host_refusal(environ.get("HTTP_HOST"))
            log.warning("refused %s from %s: %s", self.what, loggable(client), refusal)
            return refusal
        return None
