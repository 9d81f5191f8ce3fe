"""The metrics a gateway keeps when ``metrics_path`` is set, and their page at that path.

The page lists every socket name in use, so it is served to ``metrics_allow`` only, and under
this gateway's own names (:class:`~ouistiti_gw.gateway.page_gate.PageGate`). prometheus_client
is imported only for a gateway that has a ``metrics_path`` (the ``metrics`` extra).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ..config import ConfigurationError, GatewayConfig
from .admission import HostPolicy
from .identity import Identity
from .page_gate import PageGate
from .refusals import plain_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .metrics import Metrics


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
        self.gate = PageGate(config.metrics_allow, "metrics_allow", identity, hosts, what="metrics scrape",
                             refused="metrics are not served to this address")

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        refusal = self.gate.refusal(environ)
        if refusal is not None:
            return plain_response(start_response, 403, refusal)
        body = self.metrics.exposition()
        start_response("200 OK", [("Content-Type", self.metrics.content_type), ("Content-Length", str(len(body)))])
        return [body]
