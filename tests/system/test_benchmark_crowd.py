"""The benchmark's crowd scenario runs end to end on a tiny crowd, and its client counts right.

No timing is asserted: figures depend on the machine. What is checked is what a reader of the
crowd table relies on: every message the crowd client sent through a real gateway is matched
with its echo (the client's frame parsing and its per-session bookkeeping), the server's CPU and
memory are read from its processes, a contender that cannot carry a size says why, and the chart
is a PNG.
"""
from __future__ import annotations

import pytest

from support.benchmarks import run_benchmark

SMALL, LARGE = 30, 600  # websockify (a process per connection) is run only up to 500


@pytest.fixture(scope="module")
def crowd(tmp_path_factory) -> tuple[dict, str, object]:
    directory = tmp_path_factory.mktemp("crowd")
    report, stdout = run_benchmark(directory, "--crowd", f"{SMALL},{LARGE}", "--crowd-seconds", "2",
                                   "--crowd-processes", "2", "--only", "ouistiti-gw,websockify,raw")
    return report, stdout, directory


def test_every_message_sent_through_a_gateway_comes_back(crowd):
    report, _, _ = crowd
    results = report["crowd"]["results"]
    for contender, size in (("ouistiti-gw", SMALL), ("ouistiti-gw", LARGE), ("websockify", SMALL), ("raw", LARGE)):
        figure = results[contender][str(size)]
        # each session sends within its first second, then about once a second
        assert figure["sent"] >= size, (contender, size, figure["sent"])
        assert figure["answered"] == figure["sent"] and figure["lost"] == 0 and figure["closed"] == 0
        assert 0 < figure["p50_ms"] <= figure["p99_ms"] <= figure["p999_ms"] <= figure["max_ms"]
        assert figure["clients_cpu_cores"] > 0


def test_the_server_is_read_from_its_processes(crowd):
    report, _, _ = crowd
    results = report["crowd"]["results"]
    gateway = results["ouistiti-gw"][str(LARGE)]
    assert gateway["server_cpu_cores"] > 0 and gateway["server_rss_mib"] > 0
    # websockify forks a process per connection: all of them are counted
    assert results["websockify"][str(SMALL)]["server_processes"] > SMALL
    assert results["raw"][str(LARGE)]["server_cpu_cores"] is None  # no server process between client and echo


def test_a_size_a_contender_cannot_carry_is_reported_as_such(crowd):
    report, stdout, _ = crowd
    figure = report["crowd"]["results"]["websockify"][str(LARGE)]
    assert figure["value"] is None and figure["skipped"].startswith("not run:")
    assert f"websockify, {LARGE} sessions: not run:" in stdout
    assert "600 sessions: RTT p99.9 (ms)" in stdout


def test_the_latency_chart_is_a_png(crowd):
    _, _, directory = crowd
    assert (directory / "crowd_latency.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
