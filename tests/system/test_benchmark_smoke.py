"""The benchmark still runs end to end: its quickest setting exits 0 and writes the JSON it promises.

No timing is asserted, ever: figures depend on the machine. This only guards the harness (echo
server, client processes, contenders' command lines, report) against rotting.
"""
from __future__ import annotations

import pytest

from support.benchmarks import run_benchmark

# The benchmark runs every contender, gunicorn among them.
pytestmark = pytest.mark.gunicorn

CONTENDERS = ["ouistiti-gw", "gw-deflate", "gunicorn", "gw-2workers", "direct", "websockify", "raw", "raw-tcp"]
TRAFFIC_KEYS = ["msgs_16B_c1", "msgs_16B_c16", "msgs_1KiB_c1", "msgs_1KiB_c16", "mbps_64KiB_c1",
                "mbps_64KiB_c16", "mbps_16MiB_c1", "mbps_16MiB_c16", "lat_100B_p50_us", "lat_100B_p99_us"]
IDLE = 20


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def report(output_dir) -> dict:
    report, stdout = run_benchmark(
        output_dir, "--quick", "--duration", "0.05", "--idle", str(IDLE), "--only", ",".join(CONTENDERS),
        "--metrics", "msgs_16B_*,msgs_1KiB_c1,mbps_64KiB_c1,lat_*,*json*", timeout=120,
        env={"BENCH_STALL_SECONDS": "5"})
    assert "Ratio to websockify" in stdout and "Machine CPU per message" in stdout
    return report


def test_every_contender_has_every_figure_key(report):
    assert set(report["results"]) == set(CONTENDERS)
    for contender in CONTENDERS:
        for key in TRAFFIC_KEYS + ["rss_idle_0", f"rss_idle_{IDLE}"]:
            assert key in report["results"][contender], (contender, key)


def test_selected_figures_are_measured_and_the_rest_say_why(report):
    for contender in CONTENDERS:
        figures = report["results"][contender]
        for key in ("msgs_16B_c1", "msgs_16B_c16", "msgs_1KiB_c1", "mbps_64KiB_c1", "lat_100B_p50_us"):
            assert figures[key]["value"] > 0, (contender, key, figures[key])
        # what a message cost the whole machine, and how much of it stayed idle
        assert figures["msgs_16B_c16"]["cpu_us_per_message"] > 0
        assert 0 <= figures["msgs_16B_c16"]["idle_share"] <= 1
        assert figures["mbps_16MiB_c1"]["value"] is None
        assert "skipped" in figures["mbps_16MiB_c1"]


def test_idle_memory_is_read_from_the_servers(report):
    for contender in ("ouistiti-gw", "gunicorn", "gw-2workers", "websockify"):
        figure = report["results"][contender][f"rss_idle_{IDLE}"]
        assert figure["value"] > 0 and figure["pss_mib"] > 0
    assert report["results"]["gunicorn"][f"rss_idle_{IDLE}"]["processes"] >= 2  # master and worker
    assert report["results"]["gw-2workers"][f"rss_idle_{IDLE}"]["processes"] >= 3  # master and 2 workers
    for reference in ("raw", "raw-tcp"):  # no gateway process to measure
        assert report["results"][reference][f"rss_idle_{IDLE}"]["value"] is None


def test_a_reload_is_measured_where_sessions_move(report):
    figures = report["results"]["ouistiti-gw"]
    for key in ("reload_pause_p50_ms", "reload_pause_p99_ms", "reload_idle_s"):
        assert figures[key]["value"] > 0, (key, figures[key])
    assert figures["reload_idle_s"]["measured_connections"] == 100
    assert "skipped" in report["results"]["gunicorn"]["reload_idle_s"]


def test_ratios_and_targets_are_reported(report):
    ratio = report["ratios"]["ouistiti-gw"]["msgs_16B_c1"]
    assert set(ratio) == {"vs_websockify", "vs_raw", "vs_raw-tcp"} and ratio["vs_websockify"] > 0
    assert report["ratios"]["websockify"]["msgs_16B_c1"]["vs_websockify"] == pytest.approx(1.0)
    assert {"contender", "goal", "value", "bound", "met"} <= set(report["targets"][0])
    assert {goal["contender"] for goal in report["targets"]} == {"ouistiti-gw", "gw-2workers", "direct"}
    assert report["meta"]["rounds"] == 1 and report["meta"]["quick"] is True


def test_the_msgs_chart_is_a_png(report, output_dir):
    assert (output_dir / "pingpong_msgs.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_compression_figures_show_bytes_on_the_wire(report):
    """The JSON figures of ``gw-deflate`` (clients offering permessage-deflate) against the
    same gateway uncompressed: fewer bytes on the wire per message, and a CPU cost per message."""
    plain, compressed = report["results"]["ouistiti-gw"], report["results"]["gw-deflate"]
    for key in ("msgs_json200B_c16", "mbps_json64KiB_c1"):
        assert plain[key]["value"] > 0 and compressed[key]["value"] > 0, key
    assert compressed["msgs_json200B_c16"]["cpu_us_per_message"] > 0
    for key in ("wire_json200B_c16", "wire_json64KiB_c1"):
        assert 0 < compressed[key]["value"] < plain[key]["value"] / 2, (key, compressed[key], plain[key])
    assert compressed[f"rss_idle_{IDLE}"]["value"] > 0
