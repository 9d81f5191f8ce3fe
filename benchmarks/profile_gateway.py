"""Profile ouistiti-gw (``ouistiti-gw serve``) under one benchmark load: where does its time go?

    python benchmarks/profile_gateway.py [--load msgs_1KiB_c16|mbps_16MiB_c1] [--seconds 10]
                                         [--tool cprofile|py-spy] [--top 25]

``cprofile`` runs the gateway under ``python -m cProfile`` (exact call counts, some overhead per
call, so small-message figures shrink); ``py-spy`` samples the running gateway from outside
(``pip install py-spy``; no overhead, idle time in the event loop left out). Both print the top
functions by own time; the py-spy one also by total (inclusive) time.
"""
from __future__ import annotations

import argparse
import collections
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from clientpool import run_clients
from contenders import OuistitiGw, stop_tree
from measure import THROUGHPUT, Settings, throughput_round
from run import start_echo

LOADS = {metric.key: metric for metric in THROUGHPUT}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", default="msgs_1KiB_c16", choices=sorted(LOADS))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tool", default="py-spy", choices=["py-spy", "cprofile"])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--keep", metavar="FILE", help="copy py-spy's collapsed stacks (or cProfile's stats) here")
    return parser.parse_args(argv)


class ProfiledGateway(OuistitiGw):
    """``ouistiti-gw serve`` under cProfile, which writes its stats when SIGINT stops the server."""

    stats_path: str = ""

    def command(self, docroot: str, port: int) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command(docroot, port)
        return [sys.executable, "-m", "cProfile", "-o", self.stats_path, *argv[1:]], env


def collapse(raw_path: str, top: int) -> str:
    """Own and total sample shares per function from py-spy's ``--format raw`` (collapsed stacks)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    with open(raw_path) as raw:
        for line in raw:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            frames = [frame.split(" (")[0] + " " + frame.split("/")[-1].rstrip(")")
                      for frame in stack.split(";")
                      if not frame.startswith("process ") and not frame.startswith("thread ")]
            weight = int(count)
            samples += weight
            if frames:
                own[frames[-1]] += weight
            for frame in set(frames):
                total[frame] += weight
    lines = [f"{samples} busy samples", "", "own %   function (file:line)"]
    lines += [f"{100 * n / samples:5.1f}   {name}" for name, n in own.most_common(top)]
    lines += ["", "total % function (file:line)"]
    lines += [f"{100 * n / samples:5.1f}   {name}" for name, n in total.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    metric = LOADS[args.load]
    docroot = tempfile.mkdtemp(prefix="owp-", dir="/tmp")
    echo = start_echo(docroot)
    settings = Settings(rounds=1, duration=args.seconds, latency_messages=0, idle_counts=[],
                        client_processes=args.client_processes)
    gateway = (ProfiledGateway if args.tool == "cprofile" else OuistitiGw)("ouistiti-gw", "profiled")
    gateway.stats_path = os.path.join(docroot, "gateway.prof")
    try:
        target = gateway.start(docroot, docroot)
        # warm up (first connections, imports) outside the profile window where we can
        run_clients(target, 1, 1, timeout=60.0, mode="pingpong", size=metric.size, duration=0.3)
        spy = None
        if args.tool == "py-spy":
            raw_path = os.path.join(docroot, "gateway.raw")
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(gateway.pid), "--format", "raw", "--function",
                                    "--rate", "200", "--duration", str(int(args.seconds + 2)),
                                    "--output", raw_path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        figure = throughput_round(target, metric, settings)
        print(f"{metric.title}: {figure.value:,.1f} {metric.unit} while profiled with {args.tool} "
              f"({figure.cpu_us_per_message:.0f} us of machine CPU per message, {figure.idle_share:.0%} idle)\n")
        if spy is not None:
            spy.wait(timeout=60)
            print(collapse(raw_path, args.top))
            if args.keep:
                shutil.copy(raw_path, args.keep)
        else:
            gateway.process.send_signal(signal.SIGINT)
            gateway.process.wait(timeout=30)
            stats = pstats.Stats(gateway.stats_path)
            if args.keep:
                shutil.copy(gateway.stats_path, args.keep)
            stats.sort_stats("tottime").print_stats(args.top)
    finally:
        gateway.stop()
        stop_tree(echo)
        shutil.rmtree(docroot, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
