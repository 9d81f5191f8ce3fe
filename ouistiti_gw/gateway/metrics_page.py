"""The metrics a gateway keeps when ``metrics_path`` is set, and their page at that path.

The page lists every socket name in use, so it is served to ``metrics_allow`` only, and under
this gateway's own names (the ``Host`` check of its WebSockets: DNS rebinding). prometheus_client
is imported only for a gateway that has a ``metrics_path`` (the ``metrics`` extra).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable

from ..config import ConfigurationError, GatewayConfig
from ..core.logsafe import loggable
from .admission import HostPolicy, host_refusal
from .identity import Identity, Networks, arrival_address
from .refusals import plain_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .metrics import Metrics

log = logging.getLogger(__name__)


def make_metrics(config: GatewayConfig) -> "Metrics | None":
    """The metrics of a gateway with a ``metrics_path`` (None without one); without
    prometheus_client installed, a :class:`~ouistiti_gw.config.ConfigurationError` that says so."""
    if not config.metrics_path:
        return None
    try:
        from .metrics import Metrics
    except ImportError as error:
        raise ConfigurationError(f"metrics_path needs prometheus_client "
                                 f"(pip install ouistiti_gw[metrics]): {error}", "metrics_path") from None
    return Metrics()


class MetricsPage:
    """The scrape: ``metrics``' text for a client in ``metrics_allow`` whose ``Host`` ``hosts``
    accepts, a 403 for any other."""

    def __init__(self, metrics: "Metrics", config: GatewayConfig, identity: Identity, hosts: HostPolicy) -> None:
        self.metrics = metrics
        self.identity = identity
        self.hosts = hosts
        self.allow = Networks(config.metrics_allow, "metrics_allow")

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        client = self.identity.client(environ).address[0]
        if client not in self.allow:
            log.warning("refused metrics scrape from %s: not in metrics_allow", loggable(client))
            return plain_response(start_response, 403, "metrics are not served to this address")
        if not self.hosts.permits(environ.get("HTTP_HOST"), arrival_address(environ)):
            refusal = host_refusal(environ.get("HTTP_HOST"))
            log.warning("refused metrics scrape from %s: %s", loggable(client), refusal)
            return plain_response(start_response, 403, refusal)
        body = self.metrics.exposition()
        start_response("200 OK", [("Content-Type", self.metrics.content_type), ("Content-Length", str(len(body)))])
        return [body]
