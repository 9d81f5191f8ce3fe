"""Prometheus metrics of the gateway, served by the middleware at ``metrics_path``.

Counting happens once per session (when it opens and when it ends) and once per refusal, never
per message: the data path pays nothing. So ``bytes`` of a session still open are counted when it
ends; ``sessions_open`` tells what is in flight.

Label values stay few whatever clients do: close codes 3000-3999 and 4000-4999 are the
application's and chosen by the client, so each range is one value (``3xxx``, ``4xxx``); the
names are sockets that exist, since only sessions that opened are counted.

A TLS handshake that did not finish is counted by the server (:mod:`ouistiti_gw.servers.tls`), which
knows no gateway: that count is the process's, :data:`TLS_HANDSHAKE_FAILURES`, shown by every
gateway's registry.

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
(prometheus_client's multiprocess mode): every worker writes its figures there and a scrape,
whichever worker answers it, sums them all.
"""
from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

#: Why a handshake was refused: the ``reason`` label of ``ouistiti_gw_refusals_total``.
REFUSAL_REASONS = ("denied", "missing", "refused", "origin", "host", "limit", "too_large", "unauthorized",
                   "auth_failed")
#: TLS handshakes the server gave up, by ``reason`` (:data:`ouistiti_gw.servers.tls.FAILURE_REASONS`).
TLS_HANDSHAKE_FAILURES = Counter("ouistiti_gw_tls_handshake_failures", "TLS handshakes that did not finish "
                                 "(timeout: not within header_timeout; closed: by the client; protocol: no TLS)",
                                 ["reason"], registry=None)
_DURATION_BUCKETS = (0.1, 1, 10, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600)


def code_label(code: int | str) -> str:
    """The ``code`` label of a session's end: the close code, the application ranges folded."""
    if isinstance(code, int) and 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return str(code)


class Metrics:
    """The gateway's metrics in a registry of their own (several gateways may share a process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions_open = Gauge("ouistiti_gw_sessions_open", "WebSocket sessions open now",
                                   registry=self.registry, multiprocess_mode="livesum")
        self.sessions = Counter("ouistiti_gw_sessions", "WebSocket sessions ended, by socket name and close code",
                                ["name", "code"], registry=self.registry)
        self.bytes = Counter("ouistiti_gw_bytes", "Payload bytes carried, by direction (in: from clients)",
                             ["direction"], registry=self.registry)
        self.wire_bytes = Counter("ouistiti_gw_wire_bytes", "Payload bytes of data frames as on the wire "
                                  "(compressed with permessage-deflate), by direction (in: from clients)",
                                  ["direction"], registry=self.registry)
        self.refusals = Counter("ouistiti_gw_refusals", "WebSocket handshakes refused, by reason",
                                ["reason"], registry=self.registry)
        self.reloads = Counter("ouistiti_gw_reload_sessions", "Sessions a reload found: moved to the new "
                               "process, or drained (they could not move: wss://)", ["outcome"],
                               registry=self.registry)
        self.rechecks = Counter("ouistiti_gw_auth_rechecks", "Sessions asked about again (auth_recheck) or "
                                "ended by their login's expiry, by result: allowed, revoked, expired, failed",
                                ["result"], registry=self.registry)
        self.duration = Histogram("ouistiti_gw_session_duration_seconds", "How long sessions last",
                                  registry=self.registry, buckets=_DURATION_BUCKETS)
        self.registry.register(TLS_HANDSHAKE_FAILURES)

    def session_opened(self) -> None:
        self.sessions_open.inc()

    def session_ended(self, name: str, code: int | str, bytes_in: int, bytes_out: int, duration: float, *,
                      wire_in: int = 0, wire_out: int = 0) -> None:
        self.sessions_open.dec()
        self.sessions.labels(name, code_label(code)).inc()
        self.bytes.labels("in").inc(bytes_in)
        self.bytes.labels("out").inc(bytes_out)
        self.wire_bytes.labels("in").inc(wire_in)
        self.wire_bytes.labels("out").inc(wire_out)
        self.duration.observe(duration)

    def session_moved(self) -> None:
        """A reload moved the session to the new process (which counts it as open there)."""
        self.sessions_open.dec()
        self.reloads.labels("moved").inc()

    def session_drained(self) -> None:
        """A session that could not move ended in the old process (after :meth:`session_ended`)."""
        self.reloads.labels("drained").inc()

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def rechecked(self, result: str) -> None:
        """A recheck's result (:mod:`ouistiti_gw.gateway.recheck`), or ``expired``."""
        self.rechecks.labels(result).inc()

    def exposition(self) -> bytes:
        """The text format for a scrape: this process's figures, or all workers' in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def tls_handshake_failed(reason: str) -> None:
    TLS_HANDSHAKE_FAILURES.labels(reason).inc()


def process_exited(pid: int) -> None:
    """Drop a finished worker's live gauges (``sessions_open``) from the multiprocess directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
