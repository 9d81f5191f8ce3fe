"""The crowd: many live sessions that each talk a little, as chat, dashboards and notifications do.

N sessions each send a 100-byte message about once a second (± 20 %, each starting at a random
point of the first second) to the echo behind the contender, for ``seconds``. What matters there
is the tail of the round trip, messages that never come back, and what the crowd costs the server
in CPU and memory; ping-pong cannot show any of it.

The load comes from a few client processes (:mod:`clientpool`, :func:`wsclient.crowd`), each
holding N / processes connections on one epoll loop; all connect and handshake first (in batches
of 64), so the handshake storm is not measured. The server's CPU and RSS are read from ``/proc``
over its process tree between the start signal and the end of the sending window; the clients
report their own CPU, so a reader can tell they were not the bottleneck, and the share of the
whole machine left idle says whether anything (other programs included) left the server short.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from clientpool import ClientFailed, client_processes, collect, start
from contenders import Contender
from measure import DESCRIPTOR_RESERVE, capacity, percentiles
from procinfo import cpu_spent, tree_cpu_seconds, tree_memory
from wsclient import machine_cpu

log = logging.getLogger(__name__)

MESSAGE_SIZE = 100
#: An echo later than this is late; one still missing this long after the last send is lost.
LATE_SECONDS = 5.0
#: Points of the latency distribution kept in the JSON and drawn: 0 %, then ten per "nine"
#: (90 %, 99 %, 99.9 %, 99.99 %); the 50th percentile falls on 1 - 10 ** -0.3 = 49.9 %.
CURVE_FRACTIONS = [1 - 10 ** (-step / 10) for step in range(41)]
#: Descriptors a session costs a single-process gateway: the client's TCP and the UNIX connection.
GATEWAY_FDS_PER_SESSION = 2


@dataclass(frozen=True)
class CrowdSettings:
    sizes: list[int]
    seconds: float
    client_processes: int


def parse_sizes(text: str, nofile: int) -> list[int]:
    """``"1000,5000,max"``: ``max`` is the most sessions a gateway process may hold within the
    descriptor limit ``nofile`` (two descriptors a session, and a reserve for everything else)."""
    most = (nofile - DESCRIPTOR_RESERVE) // GATEWAY_FDS_PER_SESSION
    sizes = {most if word.strip() == "max" else int(word) for word in text.split(",") if word.strip()}
    return sorted(sizes)


def measure_crowd(contender: Contender, target: dict, sessions: int, settings: CrowdSettings) -> dict:
    """One crowd of ``sessions`` through a freshly started contender: the figure, or why there is none."""
    reason = contender.skip_reason(MESSAGE_SIZE, sessions, idle=True)
    if reason is None and contender.pid is not None and sessions > capacity(contender, contender.pid):
        reason = f"the descriptor limit allows {capacity(contender, contender.pid)} sessions"
    if reason:
        return {"value": None, "skipped": f"not run: {reason}"}
    pid = contender.pid
    connecting = time.monotonic()
    try:
        with client_processes(target, sessions, settings.client_processes, mode="crowd", size=MESSAGE_SIZE,
                              duration=settings.seconds, late=LATE_SECONDS) as clients:
            connected = time.monotonic()
            before, machine_before = tree_cpu_seconds(pid) if pid else {}, machine_cpu()
            start(clients)
            time.sleep(settings.seconds)
            server_cpu = cpu_spent(before, tree_cpu_seconds(pid)) / settings.seconds if pid else None
            busy, idle = (end - begin for begin, end in zip(machine_before, machine_cpu()))
            memory = tree_memory(pid) if pid else None
            results = collect(clients, timeout=LATE_SECONDS + 60.0)
    except ClientFailed as failure:
        return {"value": None, "failed": str(failure)}
    latencies = sorted(value / 1000 for result in results for value in result["latencies_us"])
    if not latencies:
        return {"value": None, "failed": f"no echo came back ({sum(result['sent'] for result in results)} sent)"}
    p50, p99, p999 = percentiles(latencies, (0.5, 0.99, 0.999))
    client_cpu = [result["cpu_seconds"] / result["seconds"] for result in results]
    figure = {
        "value": p99, "sessions": sessions, "connect_seconds": connected - connecting,
        "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": latencies[-1],
        "curve_ms": [list(point) for point in zip(CURVE_FRACTIONS, percentiles(latencies, CURVE_FRACTIONS))],
        **{key: sum(result[key] for result in results) for key in ("sent", "answered", "lost", "late", "closed")},
        "server_cpu_cores": server_cpu, "server_rss_mib": memory and memory["rss_mib"],
        "server_processes": memory and memory["processes"],
        "clients_cpu_cores": sum(client_cpu), "busiest_client_cpu": max(client_cpu),
        "machine_idle_share": idle / max(busy + idle, 1e-9),
    }
    log.info("%s crowd %d: p50 %s p99 %s p99.9 %s ms, %d lost, %d late, server %s cores", contender.name,
             sessions, p50, p99, p999, figure["lost"], figure["late"], server_cpu)
    return figure
