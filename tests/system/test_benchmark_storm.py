"""The benchmark's connect storm runs end to end on a tiny storm, and nothing in it fails.

No timing is asserted: figures depend on the machine. What is checked is what a reader of the
storm table relies on: the churning clients completed whole sessions (handshake, echo, close)
through a real gateway and through the raw echo without a failure of any kind, the established
sessions got every echo back, the server's CPU per session was read from its processes, the
baseline (here this same tree) is compared, and the chart is a PNG.
"""
from __future__ import annotations

import pytest

from support import ROOT
from support.benchmarks import run_benchmark

CONTENDERS = ["ouistiti-gw", "baseline", "raw"]
FAILURES = ["connect_errors", "handshake_errors", "lost", "close_timeouts", "established_lost", "established_closed"]


@pytest.fixture(scope="module")
def storm(tmp_path_factory) -> tuple[dict, str, object]:
    directory = tmp_path_factory.mktemp("storm")
    report, stdout = run_benchmark(
        directory, "--storm", "--quick", "--storm-seconds", "0.5", "--storm-quiet", "0.5", "--storm-sessions", "5",
        "--storm-churn", "2x3", "--baseline", str(ROOT), "--only", ",".join(CONTENDERS))
    return report, stdout, directory


def test_every_session_of_the_storm_completes(storm):
    report, _, _ = storm
    results = report["storm"]["results"]
    assert list(results) == CONTENDERS
    for contender in CONTENDERS:
        figures = results[contender]
        assert "failed" not in figures, figures
        assert [figures[key] for key in FAILURES] == [0] * len(FAILURES), (contender, figures)
        (only_round,) = figures["rounds"]
        assert only_round["sessions"] > 0 and figures["sessions_per_s"] > 0
        assert only_round["errors"] == {}
        # the established sessions were measured alone first, then during the storm
        assert 0 < figures["quiet_p50_ms"] <= figures["quiet_p99_ms"]
        assert 0 < figures["storm_p50_ms"] <= figures["storm_p99_ms"]


def test_the_server_cpu_per_session_is_read_where_there_is_a_server(storm):
    report, _, _ = storm
    results = report["storm"]["results"]
    for contender in ("ouistiti-gw", "baseline"):
        assert results[contender]["cpu_us_per_session"] is not None
        assert results[contender]["rounds"][0]["gross_cpu_us_per_session"] > 0
    assert results["raw"]["cpu_us_per_session"] is None  # no server between the client and the echo


def test_the_baseline_is_compared_and_the_targets_reported(storm):
    report, stdout, _ = storm
    ratios = report["storm"]["ratios"]
    assert ratios["baseline"]["sessions_per_s"] == pytest.approx(1.0)
    assert ratios["ouistiti-gw"]["cpu_us_per_session"] is not None
    assert {goal["goal"] for goal in report["storm"]["targets"]} == {
        "established RTT p99 during the storm < 50 ms", "CPU per session <= 0.4x baseline's"}
    assert "Ratio to baseline (x)" in stdout and "new sessions / s" in stdout


def test_the_timeline_covers_the_storm_and_is_drawn(storm):
    report, _, directory = storm
    timeline = report["storm"]["results"]["ouistiti-gw"]["rounds"][0]["timeline"]
    assert 0 < timeline["storm_began"] < timeline["storm_ended"]
    times = [point[0] for point in timeline["points"]]
    assert times == sorted(times) and times[0] < timeline["storm_began"] < times[-1]
    assert (directory / "storm_p99.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
