"""PNG charts of a benchmark report: readers compare contenders faster from a picture than from a table.

    python benchmarks/charts.py DIR REPORT.json [REPORT.json ...]

``run.py --charts DIR`` draws the run it just made; this draws saved ``--json`` reports (a
ping-pong run and a crowd run, say). Needs matplotlib (``pip install -e '.[bench]'``); the Agg
backend draws without a display.

- ``crowd_latency.png``: for each crowd size, the round-trip distribution of every contender, as
  a percentile plot: the x axis counts "nines" (90 %, 99 %, 99.9 %...), the latency axis is
  logarithmic, so the tail is as readable as the median.
- ``storm_p99.png``: the established sessions' round-trip p99 per 250 ms of send time during a
  connect storm (``run.py --storm``), one line per contender and round, the storm shaded; the
  latency axis is logarithmic (a quiet p99 is a millisecond, a storm's a hundred).
- ``pingpong_msgs.png``: msg/s of every contender by message size and connection count (bars
  from zero, so their heights compare as the figures do).
"""
from __future__ import annotations

import json
import math
import os
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen before pyplot is imported)

from measure import THROUGHPUT, Metric  # noqa: E402

NINES = 4


def _colours(report: dict) -> dict[str, str]:
    """One colour per contender, the same in every chart of the report."""
    return {name: f"C{index}" for index, name in enumerate(report["meta"]["contenders"])}


def _nines(fraction: float) -> float:
    return -math.log10(max(1 - fraction, 10 ** -NINES))


def crowd_latency(report: dict, path: str) -> str:
    crowd = report["crowd"]
    colours = _colours(report)
    sizes = crowd["sizes"]
    columns = min(2, len(sizes))
    rows = math.ceil(len(sizes) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.2 * rows), sharey=True, squeeze=False)
    for axis in axes.flat[len(sizes):]:
        axis.set_visible(False)
    for axis, size in zip(axes.flat, sizes):
        for name, figures in crowd["results"].items():
            result = figures[str(size)]
            if result["value"] is None:
                continue
            fractions, values = zip(*result["curve_ms"])
            closed = f", {result['closed']:,} closed" if result["closed"] else ""
            axis.plot([_nines(fraction) for fraction in fractions], values, color=colours[name],
                      label=f"{name} ({result['lost']:,} lost{closed})")
        axis.set_title(f"{size:,} sessions, 1 msg/s each")
        axis.set_yscale("log")
        axis.set_xticks(range(NINES + 1), ["0 %"] + [f"{100 - 10 ** (2 - n):g} %" for n in range(1, NINES + 1)])
        axis.set_xlabel("percentile")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    for row in axes:
        row[0].set_ylabel("round trip (ms)")
    figure.suptitle(f"Crowd: {crowd['message_size']} B messages, {crowd['seconds']:g} s "
                    f"({report['meta']['started']}, {report['meta']['cpus']} cores)")
    return _save(figure, path)


def storm_p99(report: dict, path: str) -> str:
    storm = report["storm"]
    colours = _colours(report)
    figure, axis = plt.subplots(figsize=(9, 4.5))
    bucket = None
    for name, figures in storm["results"].items():
        for number, result in enumerate(figures.get("rounds", [])):
            timeline = result["timeline"]
            if bucket is None:
                bucket = timeline["bucket_seconds"]
                axis.axvspan(timeline["storm_began"], timeline["storm_ended"], color="grey", alpha=0.15,
                             label="storm (round 1)")
            times = [point[0] for point in timeline["points"]]
            p99 = [point[2] for point in timeline["points"]]
            lost = result["established_lost"] + result["handshake_errors"] + result["lost"]
            label = f"{name} ({result['sessions_per_s']:,.0f} sessions/s, {lost} failed)"
            axis.plot(times, p99, color=colours[name], alpha=0.8, linewidth=1.2, label=None if number else label)
    axis.set_yscale("log")
    axis.set_xlabel(f"send time (s), a point per {bucket or 0:g} s")
    axis.set_ylabel("established RTT p99 (ms)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize="small")
    churners = storm["churn_processes"] * storm["churn_loops"]
    axis.set_title(f"Connect storm: {storm['established']} sessions at 10 msg/s while {churners} loops churn "
                   f"({report['meta']['started']}, {report['meta']['cpus']} cores, load "
                   f"{report['meta']['load_average_at_start'][0]:.1f})", fontsize="medium")
    return _save(figure, path)


def pingpong_msgs(report: dict, path: str) -> str:
    colours = _colours(report)
    results = report["results"]
    metrics = [metric for metric in THROUGHPUT if metric.unit == "msg/s" and metric.key in report["metrics"]]
    kinds = list(dict.fromkeys(_kind(metric) for metric in metrics))  # "16 B", "1 KiB", "200 B JSON"...
    names = list(results)
    width = 0.8 / len(names)
    figure, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4.2), sharey=True, squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        group = [metric for metric in metrics if _kind(metric) == kind]
        for index, name in enumerate(names):
            values = [results[name][metric.key]["value"] or 0 for metric in group]
            axis.bar([position + (index - (len(names) - 1) / 2) * width for position in range(len(group))],
                     values, width, color=colours[name], label=name)
        axis.set_xticks(range(len(group)), [f"{metric.connections} conn" for metric in group])
        axis.set_title(f"{kind} messages, ping-pong")
        axis.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        axis.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("messages / s (missing bar: not measured)")
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    figure.suptitle(f"Ping-pong msg/s ({report['meta']['started']}, {report['meta']['cpus']} cores)")
    return _save(figure, path)


def _kind(metric: Metric) -> str:
    """What a msg/s figure sends, from its title: "16 B msg/s, 1 conn" is "16 B"."""
    return metric.title.split(" msg/s")[0]


def _save(figure, path: str) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def draw(report: dict, directory: str) -> list[str]:
    """Every chart the report has figures for, as PNG files in ``directory``; their paths."""
    os.makedirs(directory, exist_ok=True)
    drawn = []
    if "storm" in report:
        drawn.append(storm_p99(report, os.path.join(directory, "storm_p99.png")))
    if "crowd" in report:
        drawn.append(crowd_latency(report, os.path.join(directory, "crowd_latency.png")))
    if "results" in report:
        drawn.append(pingpong_msgs(report, os.path.join(directory, "pingpong_msgs.png")))
    return drawn


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    for report_path in argv[1:]:
        with open(report_path) as source:
            for path in draw(json.load(source), argv[0]):
                print(f"chart: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
