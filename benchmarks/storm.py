"""The connect storm: what a whole session costs a server, and whether sessions already open feel it.

Page reloads, mobile clients changing networks, a deploy behind a load balancer or a front proxy
restarting make every client reconnect at once. Two loads run against one freshly started
contender:

- ``established`` sessions (their own client process, :func:`wsclient.crowd`) each send a 100-byte
  message about every 100 ms: first ``quiet`` seconds alone (the reference), then through the
  ``seconds`` of storm, then ``quiet`` seconds more (the recovery, on the chart);
- the storm: ``churners`` (client processes x loops, :mod:`churn`) open a session, handshake, echo
  one 100-byte message and close, as fast as they can, for ``seconds``.

Per contender: new sessions a second, the server's CPU per session (its process tree's run time,
``/proc/*/task/*/schedstat``, over the storm, less what the established sessions cost at the quiet
window's rate, plus the CPU of forked children it reaped), the established sessions' round trip
(p50, p99) without and during the storm, and every failure. Rounds are interleaved (every contender
once, then again), so a change of load on the machine falls on all of them alike.
"""
from __future__ import annotations

import logging
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass

from churn import FAILURE_OF
from clientpool import ClientFailed, client_processes, collect, start
from contenders import Contender
from crowd import MESSAGE_SIZE
from measure import percentiles
from procinfo import cpu_spent, reaped_cpu_seconds, tree_cpu_seconds

log = logging.getLogger(__name__)

#: Seconds between two messages of an established session (± 20 %).
INTERVAL = 0.1
#: An established session's echo still missing this long after its send is lost.
LATE_SECONDS = 5.0
#: The width of a point of the p99-over-time chart.
BUCKET_SECONDS = 0.25
#: The figures taken in each round, and of which the report gives the median.
FIGURES = ("sessions_per_s", "cpu_us_per_session", "storm_p50_ms", "storm_p99_ms", "quiet_p50_ms",
           "quiet_p99_ms")
#: Failures, summed over the rounds: the churners' by stage, the established sessions' lost
#: echoes and sessions the server closed.
CHURN_FAILURES = tuple(FAILURE_OF.values())
FAILURES = (*CHURN_FAILURES, "established_lost", "established_closed")


@dataclass(frozen=True)
class StormSettings:
    rounds: int
    #: seconds the storm lasts
    seconds: float
    #: seconds the established sessions talk alone first (the reference)
    quiet: float
    established: int
    churn_processes: int
    #: concurrent loops in each churning process
    churn_loops: int


def parse_churn(text: str) -> tuple[int, int]:
    """``"2x50"``: 2 client processes of 50 loops each."""
    processes, _, loops = text.lower().partition("x")
    return int(processes), int(loops)


def _window(latencies_ms: list[float], sent_at: list[float], begin: float, end: float) -> list[float]:
    return [value for value, when in zip(latencies_ms, sent_at) if begin <= when < end]


def storm_round(contender: Contender, target: dict, settings: StormSettings) -> dict:
    """One storm through a freshly started contender: its figures, failures and timeline."""
    pid = contender.pid
    with ExitStack() as stack:
        established = stack.enter_context(client_processes(
            target, settings.established, 1, mode="crowd", size=MESSAGE_SIZE,
            duration=2 * settings.quiet + settings.seconds, late=LATE_SECONDS, interval=INTERVAL, timeline=True))
        churners = stack.enter_context(client_processes(
            target, settings.churn_processes * settings.churn_loops, settings.churn_processes, mode="churn",
            size=MESSAGE_SIZE, duration=settings.seconds))
        cpu_at = [_server_cpu(pid)]
        began = time.perf_counter()
        start(established)
        time.sleep(settings.quiet)
        cpu_at.append(_server_cpu(pid))
        storm_began = time.perf_counter()
        start(churners)
        churned = collect(churners, timeout=60.0)
        cpu_at.append(_server_cpu(pid))
        storm_ended = time.perf_counter()
        talked = collect(established, timeout=LATE_SECONDS + 60.0)
    sessions = sum(result["sessions"] for result in churned)
    storm_seconds = max(r["ended"] for r in churned) - min(r["started"] for r in churned)
    latencies = [value / 1000 for result in talked for value in result["latencies_us"]]
    sent_at = [when for result in talked for when in result["sent_at"]]
    quiet = _window(latencies, sent_at, began, storm_began)
    storm = _window(latencies, sent_at, storm_began, storm_ended)
    figure: dict = {"sessions": sessions, "storm_seconds": storm_seconds,
                    "sessions_per_s": sessions / storm_seconds, "cpu_us_per_session": None,
                    "gross_cpu_us_per_session": None,
                    **{f"{name}_p50_ms": None for name in ("quiet", "storm")},
                    **{f"{name}_p99_ms": None for name in ("quiet", "storm")},
                    **{key: sum(result[key] for result in churned) for key in CHURN_FAILURES},
                    "established_lost": sum(result["lost"] for result in talked),
                    "established_closed": sum(result["closed"] for result in talked),
                    "errors": {key: why for result in churned for key, why in result["errors"].items()},
                    "timeline": _timeline(latencies, sent_at, began, storm_began, storm_ended)}
    for name, values in (("quiet", quiet), ("storm", storm)):
        if values:
            figure[f"{name}_p50_ms"], figure[f"{name}_p99_ms"] = percentiles(values, (0.5, 0.99))
    if pid is not None and sessions:
        quiet_rate = (cpu_at[1] - cpu_at[0]) / (storm_began - began)  # the established sessions' cost
        storm_cpu = cpu_at[2] - cpu_at[1]
        figure["gross_cpu_us_per_session"] = storm_cpu / sessions * 1e6
        figure["cpu_us_per_session"] = (storm_cpu - quiet_rate * (storm_ended - storm_began)) / sessions * 1e6
    log.info("%s storm: %d sessions, %.0f/s, %s us CPU each; established p99 %s ms quiet, %s ms in the storm",
             contender.name, sessions, figure["sessions_per_s"], figure["cpu_us_per_session"],
             figure["quiet_p99_ms"], figure["storm_p99_ms"])
    return figure


def _server_cpu(pid: int | None) -> float:
    """Seconds of CPU the server has spent so far: its live tree and the children it reaped."""
    if pid is None:
        return 0.0
    return cpu_spent({}, tree_cpu_seconds(pid)) + reaped_cpu_seconds(pid)


def _timeline(latencies: list[float], sent_at: list[float], began: float, storm_began: float,
              storm_ended: float) -> dict:
    """The established sessions' p50 and p99 per :data:`BUCKET_SECONDS` of send time, from their
    start; where the storm began and ended on the same clock."""
    buckets: dict[int, list[float]] = {}
    for value, when in zip(latencies, sent_at):
        buckets.setdefault(int((when - began) / BUCKET_SECONDS), []).append(value)
    points = [[index * BUCKET_SECONDS, *percentiles(values, (0.5, 0.99)), len(values)]
              for index, values in sorted(buckets.items())]
    return {"bucket_seconds": BUCKET_SECONDS, "storm_began": storm_began - began, "storm_ended": storm_ended - began,
            "points": points}


def _summary(rounds: list[dict]) -> dict:
    """The median of each figure over the rounds that have it, the failures summed, every round kept."""
    summary: dict = {}
    for key in FIGURES:
        values = [figure[key] for figure in rounds if figure.get(key) is not None]
        summary[key] = statistics.median(values) if values else None
    summary.update({key: sum(figure[key] for figure in rounds) for key in FAILURES})
    summary["value"] = summary["storm_p99_ms"]
    summary["rounds"] = rounds
    return summary


def measure_storms(contenders: list[Contender], docroot: str, settings: StormSettings) -> dict[str, dict]:
    """Every contender once per round, each freshly started; per contender the medians of its rounds."""
    rounds: dict[str, list[dict]] = {contender.name: [] for contender in contenders}
    failed: dict[str, str] = {}
    for number in range(settings.rounds):
        for contender in contenders:
            if contender.name in failed:
                continue
            log.info("== %s, storm round %d", contender.name, number + 1)
            try:
                target = contender.start(docroot, docroot)
                rounds[contender.name].append(storm_round(contender, target, settings))
            except ClientFailed as failure:
                log.warning("%s storm: %s", contender.name, failure)
                failed[contender.name] = str(failure)
            finally:
                contender.stop()
    return {name: {"value": None, "failed": failed[name]} if name in failed else _summary(figures)
            for name, figures in rounds.items()}
