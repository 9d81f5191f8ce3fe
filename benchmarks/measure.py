"""What is measured, and how one figure is taken: rounds, medians, percentiles, idle memory.

Every throughput figure is ping-pong: each connection sends one message and reads all of its echo
back before sending the next, so a figure is bound by round-trip latency, as an interactive
client is (pipelining would hide a slow gateway behind deep socket buffers). ``MB/s`` counts the
payload once (10^6 bytes), not once each way.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Iterable

from clientpool import ClientFailed, client_processes, release, run_clients
from contenders import Contender
from procinfo import nofile_limit, process_tree, tree_memory

log = logging.getLogger(__name__)

#: Descriptors a server needs besides its connections (listener, logs, epoll, imports...).
DESCRIPTOR_RESERVE = 100
KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    size: int = 0
    connections: int = 1
    #: what the messages hold (``wsclient.payload_of``): ``ascii``, or ``json`` (compresses as chat does)
    payload: str = "ascii"


THROUGHPUT = [
    Metric("msgs_16B_c1", "16 B msg/s, 1 conn", "msg/s", True, 16, 1),
    Metric("msgs_16B_c16", "16 B msg/s, 16 conns", "msg/s", True, 16, 16),
    Metric("msgs_1KiB_c1", "1 KiB msg/s, 1 conn", "msg/s", True, KIB, 1),
    Metric("msgs_1KiB_c16", "1 KiB msg/s, 16 conns", "msg/s", True, KIB, 16),
    Metric("mbps_64KiB_c1", "64 KiB MB/s, 1 conn", "MB/s", True, 64 * KIB, 1),
    Metric("mbps_64KiB_c16", "64 KiB MB/s, 16 conns", "MB/s", True, 64 * KIB, 16),
    Metric("mbps_16MiB_c1", "16 MiB MB/s, 1 conn", "MB/s", True, 16 * MIB, 1),
    Metric("mbps_16MiB_c16", "16 MiB MB/s, 16 conns", "MB/s", True, 16 * MIB, 16),
    # chat-like JSON: what permessage-deflate is for (the ``gw-deflate`` contender against the others)
    Metric("msgs_json200B_c16", "200 B JSON msg/s, 16 conns", "msg/s", True, 200, 16, "json"),
    Metric("mbps_json64KiB_c1", "64 KiB JSON MB/s, 1 conn", "MB/s", True, 64 * KIB, 1, "json"),
]


def wire_metric(metric: Metric) -> Metric:
    """Bytes on the wire per message (both ways, headers included), taken with a JSON figure."""
    name = metric.key.split("_", 1)[1]
    return Metric(f"wire_{name}", f"{metric.title.split(' msg/s')[0].split(' MB/s')[0]}: wire B/msg", "B",
                  False, metric.size, metric.connections, metric.payload)


WIRE = [wire_metric(metric) for metric in THROUGHPUT if metric.payload == "json"]
LATENCY_SIZE = 100
LATENCY = [
    Metric("lat_100B_p50_us", "100 B RTT p50, 1 conn", "us", False, LATENCY_SIZE, 1),
    Metric("lat_100B_p99_us", "100 B RTT p99, 1 conn", "us", False, LATENCY_SIZE, 1),
]


def idle_metrics(counts: list[int]) -> list[Metric]:
    return [Metric(f"rss_idle_{count}", f"RSS, {count} idle conns", "MiB", False, 0, count) for count in counts]


#: Sessions in ping-pong while the server reloads: the longest round trip of each is the pause it saw.
RELOAD_CONNECTIONS = 16
#: How long they talk; the SIGHUP comes after the first second.
RELOAD_TRAFFIC_SECONDS = 3.0
RELOAD_WAIT_SECONDS = 120.0


def reload_metrics(idle: int) -> list[Metric]:
    return [Metric("reload_pause_p50_ms", f"reload: pause seen, p50 of {RELOAD_CONNECTIONS}", "ms", False,
                   LATENCY_SIZE, RELOAD_CONNECTIONS),
            Metric("reload_pause_p99_ms", f"reload: pause seen, p99 of {RELOAD_CONNECTIONS}", "ms", False,
                   LATENCY_SIZE, RELOAD_CONNECTIONS),
            Metric("reload_idle_s", f"reload of {idle} idle conns", "s", False, 0, idle)]


@dataclass
class Settings:
    rounds: int
    duration: float
    latency_messages: int
    idle_counts: list[int]
    client_processes: int
    #: globs of the throughput and latency metric keys to take (the others are recorded as skipped)
    selected: tuple[str, ...] = ("*",)
    #: idle sessions a reload moves (``reload_idle_s``)
    reload_idle: int = 10000

    def wants(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.selected)


def percentiles(values: list[float], fractions: Iterable[float]) -> list[float]:
    """The value at each fraction (0 to 1) of the sorted ``values``, nearest rank."""
    ordered = sorted(values)
    last = len(ordered) - 1
    return [ordered[min(last, max(0, round(fraction * last)))] for fraction in fractions]


@dataclass(frozen=True)
class Round:
    """One round's figure, and what it cost the whole machine (see ``wsclient.machine_cpu``)."""

    value: float
    #: busy CPU time of the whole machine per message (all processes, all cores), microseconds
    cpu_us_per_message: float
    #: share of the machine's CPU time left idle during the round
    idle_share: float
    #: bytes that crossed the client's sockets per message, both ways
    wire_per_message: float


def throughput_round(target: dict, metric: Metric, settings: Settings) -> Round:
    """One round: msg/s or MB/s summed over the client processes (they run at the same time).

    The machine's CPU is read by the first client process around its own run; the processes
    start on one signal and run for the same duration, so its window stands for the round's.
    """
    results = run_clients(target, metric.connections, settings.client_processes, timeout=120.0,
                          mode="pingpong", size=metric.size, duration=settings.duration, payload=metric.payload)
    if metric.unit == "msg/s":
        value = sum(result["messages"] / result["seconds"] for result in results)
    else:
        value = sum(result["bytes"] / result["seconds"] for result in results) / 1e6
    busy, idle = results[0]["machine_cpu"]
    messages = sum(result["messages"] for result in results)
    wire = sum(result["wire_bytes"] for result in results)
    return Round(value, busy * 1e6 / max(messages, 1), idle / max(busy + idle, 1e-9), wire / max(messages, 1))


def latency_round(target: dict, settings: Settings) -> tuple[float, float]:
    (result,) = run_clients(target, 1, 1, timeout=120.0, mode="pingpong", size=LATENCY_SIZE,
                            duration=3600.0, latency=True, max_messages=settings.latency_messages)
    p50, p99 = percentiles(result["latencies"], (0.50, 0.99))
    return p50 * 1e6, p99 * 1e6


def _figure(rounds: list[float]) -> dict:
    return {"value": statistics.median(rounds), "rounds": rounds}


def measure_traffic(contender: Contender, target: dict, settings: Settings) -> dict[str, dict]:
    """Every throughput and latency figure of one running contender."""
    figures: dict[str, dict] = {}
    for metric in THROUGHPUT:
        reason = contender.skip_reason(metric.size, metric.connections)
        if not settings.wants(metric.key):
            reason = "not selected (--metrics)"
        if reason:
            figures[metric.key] = {"value": None, "skipped": reason}
            continue
        try:
            rounds = [throughput_round(target, metric, settings) for _ in range(settings.rounds)]
        except ClientFailed as failure:
            log.warning("%s %s: %s", contender.name, metric.key, failure)
            figures[metric.key] = {"value": None, "failed": str(failure)}
            continue
        figures[metric.key] = {**_figure([r.value for r in rounds]),
                               "cpu_us_per_message": statistics.median(r.cpu_us_per_message for r in rounds),
                               "idle_share": statistics.median(r.idle_share for r in rounds)}
        if metric.payload == "json":
            figures[wire_metric(metric).key] = _figure([r.wire_per_message for r in rounds])
        log.info("%s %s = %.1f %s", contender.name, metric.key, figures[metric.key]["value"], metric.unit)
    if not any(settings.wants(metric.key) for metric in LATENCY):
        for metric in LATENCY:
            figures[metric.key] = {"value": None, "skipped": "not selected (--metrics)"}
        return figures
    try:
        pairs = [latency_round(target, settings) for _ in range(settings.rounds)]
    except ClientFailed as failure:
        log.warning("%s latency: %s", contender.name, failure)
        for metric in LATENCY:
            figures[metric.key] = {"value": None, "failed": str(failure)}
        return figures
    figures["lat_100B_p50_us"] = _figure([p50 for p50, _ in pairs])
    figures["lat_100B_p99_us"] = _figure([p99 for _, p99 in pairs])
    log.info("%s latency p50 %.0f us p99 %.0f us", contender.name, figures["lat_100B_p50_us"]["value"],
             figures["lat_100B_p99_us"]["value"])
    return figures


def capacity(contender: Contender, pid: int) -> int:
    """Idle connections the server can hold: a single-process gateway needs two descriptors each."""
    if not contender.fds_per_connection:
        return 1 << 30
    return (nofile_limit(pid) - DESCRIPTOR_RESERVE) // contender.fds_per_connection


def measure_idle(contender: Contender, target: dict, settings: Settings) -> dict[str, dict]:
    """Memory of a freshly started server holding ever more idle WebSockets (each echoed once).

    Connections are added in steps (100, then 900 more for 1 000, then 9 000 more) and held open
    by client processes; the server's tree is read ``settle_seconds`` after the last one connected
    (one second; for ``gw-deflate``, once its compressors' idle time is over).
    When the descriptor limit (a hard limit we may not raise) is below what a step needs, the
    step is measured at the most the limit allows and extrapolated linearly from the previous
    step; ``measured_connections`` and ``measured_rss_mib`` then say what was really seen.
    """
    figures: dict[str, dict] = {}
    pid = contender.pid
    if pid is None:
        keys = ["rss_idle_0", *(metric.key for metric in idle_metrics(settings.idle_counts))]
        return {key: {"value": None, "skipped": "no server process"} for key in keys}
    time.sleep(0.5)
    memory = tree_memory(pid)
    figures["rss_idle_0"] = {"value": memory["rss_mib"], **memory}
    most = capacity(contender, pid)
    opened, previous = 0, memory
    holders = []
    try:
        for metric in idle_metrics(settings.idle_counts):
            reason = contender.skip_reason(0, metric.connections, idle=True)
            if reason:
                figures[metric.key] = {"value": None, "skipped": reason}
                continue
            count = min(metric.connections, most)
            if count <= opened:
                figures[metric.key] = {"value": None, "skipped": f"descriptor limit allows {most} connections"}
                continue
            holder = client_processes(target, count - opened, 1, mode="idle", size=16, duration=0)
            try:
                holders.append((holder, holder.__enter__()))
            except ClientFailed as failure:
                log.warning("%s %s: %s", contender.name, metric.key, failure)
                figures[metric.key] = {"value": None, "failed": str(failure)}
                break
            time.sleep(contender.settle_seconds)
            memory = tree_memory(pid)
            figure = {"value": memory["rss_mib"], **memory}
            if count < metric.connections:
                scale = (metric.connections - opened) / (count - opened)
                figure = {"value": previous["rss_mib"] + (memory["rss_mib"] - previous["rss_mib"]) * scale,
                          "extrapolated": True, "measured_connections": count,
                          "measured_rss_mib": memory["rss_mib"], "measured_pss_mib": memory["pss_mib"],
                          "pss_mib": previous["pss_mib"] + (memory["pss_mib"] - previous["pss_mib"]) * scale,
                          "processes": memory["processes"]}
            figures[metric.key] = figure
            opened, previous = count, memory
            log.info("%s %s = %.1f MiB RSS (%.1f MiB PSS, %d processes, %d connections measured)",
                     contender.name, metric.key, figure["value"], figure["pss_mib"], memory["processes"], count)
    finally:
        for holder, processes in reversed(holders):
            try:
                release(processes, timeout=60.0)
            except ClientFailed:
                pass
            holder.__exit__(None, None, None)
    return figures


def not_reloaded(settings: Settings, why: str) -> dict[str, dict]:
    return {metric.key: {"value": None, "skipped": why} for metric in reload_metrics(settings.reload_idle)}


def _only_worker(master: int, timeout: float = RELOAD_WAIT_SECONDS) -> int:
    """The master's one worker, once a reload is over (the old worker gone)."""
    deadline = time.monotonic() + timeout
    while len(tree := process_tree(master)) != 2:
        if time.monotonic() > deadline:
            raise ClientFailed(f"the reload did not end in {timeout:g} s (processes: {tree})")
        time.sleep(0.01)
    return tree[1]


def _reload_and_wait(master: int) -> float:
    """SIGHUP the master; seconds until the old worker has handed everything over and exited."""
    old = _only_worker(master)
    started = time.monotonic()
    os.kill(master, signal.SIGHUP)
    while os.path.exists(f"/proc/{old}"):
        if time.monotonic() - started > RELOAD_WAIT_SECONDS:
            raise ClientFailed(f"the old worker still runs {RELOAD_WAIT_SECONDS:g} s after SIGHUP")
        time.sleep(0.005)
    seconds = time.monotonic() - started
    _only_worker(master)
    return seconds


def measure_reload(contender: Contender, target: dict, settings: Settings) -> dict[str, dict]:
    """What a reload (SIGHUP to the master) costs: the pause sessions in ping-pong see while they
    move (each one's longest round trip, p50 and p99 over the sessions), then how long the reload
    of ``settings.reload_idle`` idle sessions takes, from SIGHUP until the old worker exited
    (every session moved; the new worker's start included). The idle clients check afterwards
    that each of their sessions still echoes.

    Both workers hold every session's two descriptors for a moment: when the descriptor limit
    does not allow ``reload_idle`` twice over, the most that fits is measured and
    ``measured_connections`` says how many (no extrapolation: the time is not linear in memory).
    """
    master = contender.pid
    if master is None:
        return not_reloaded(settings, "no server process")
    figures: dict[str, dict] = {}
    *pauses, moving = reload_metrics(settings.reload_idle)
    _only_worker(master)
    reloading = threading.Timer(1.0, _reload_and_wait, (master,))
    try:
        reloading.start()
        results = run_clients(target, RELOAD_CONNECTIONS, settings.client_processes, timeout=120.0,
                              mode="pingpong", size=LATENCY_SIZE, duration=RELOAD_TRAFFIC_SECONDS, latency=True)
        reloading.join()
        longest = [seconds * 1e3 for result in results for seconds in result["longest"]]
        p50, p99 = percentiles(longest, (0.50, 0.99))
        figures[pauses[0].key] = {"value": p50, "longest_ms": longest}
        figures[pauses[1].key] = {"value": p99, "longest_ms": longest}
    except ClientFailed as failure:
        log.warning("%s reload pause: %s", contender.name, failure)
        figures.update({metric.key: {"value": None, "failed": str(failure)} for metric in pauses})
    count = min(settings.reload_idle, (nofile_limit(_only_worker(master)) - DESCRIPTOR_RESERVE) // 2)
    try:
        with client_processes(target, count, 1, mode="idle", size=16, duration=0) as holders:
            seconds = _reload_and_wait(master)
            release(holders, timeout=60.0)
        figures[moving.key] = {"value": seconds, "measured_connections": count}
        log.info("%s: reload pause p50 %s ms p99 %s ms; %d idle sessions moved in %.2f s", contender.name,
                 figures[pauses[0].key]["value"], figures[pauses[1].key]["value"], count, seconds)
    except ClientFailed as failure:
        log.warning("%s reload of idle sessions: %s", contender.name, failure)
        figures[moving.key] = {"value": None, "failed": str(failure)}
    return figures
