"""Profile ouistiti-gw (``ouistiti-gw serve``) under one benchmark load: where does its time go?

    python benchmarks/profile_gateway.py [--load msgs_1KiB_c16|mbps_16MiB_c1|sessions] [--seconds 10]
                                         [--tool cprofile|py-spy|strace|none] [--top 25]

The load is one of the ping-pong figures, or ``sessions``: ``--loops`` churning loops (``churn.py``:
connect, handshake, one 100 B echo, close, as fast as they can). Whatever the tool, the gateway's
CPU (master and worker, ``/proc/*/task/*/schedstat``) over the load is printed per message or per
session; ``none`` takes only that figure, undisturbed.

``cprofile`` profiles the worker (``profiling/sitecustomize.py``, started and stopped by signals
around the load: exact call counts, some overhead per call, so the figures shrink); ``py-spy``
samples the running worker from outside (``pip install py-spy``; no overhead, idle time in the
event loop left out); ``strace`` counts the worker's system calls (``strace -f -c``) and divides
them by the messages or sessions. The profilers print the top functions by own time; py-spy also
by total (inclusive) time.
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

from churn import FAILURE_OF
from clientpool import run_clients
from contenders import OuistitiGw, stop_tree
from crowd import MESSAGE_SIZE
from measure import THROUGHPUT, Settings, throughput_round
from procinfo import cpu_spent, process_tree, tree_cpu_seconds
from run import start_echo

LOADS = {metric.key: metric for metric in THROUGHPUT}
SESSIONS = "sessions"
HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", default="msgs_1KiB_c16", choices=[*sorted(LOADS), SESSIONS])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--loops", type=int, default=20, help="churning loops of the sessions load")
    parser.add_argument("--tool", default="py-spy", choices=["py-spy", "cprofile", "strace", "none"])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--keep", metavar="FILE", help="copy py-spy's collapsed stacks (or cProfile's stats) here")
    return parser.parse_args(argv)


class ProfiledGateway(OuistitiGw):
    """``ouistiti-gw serve`` whose worker loads ``profiling/sitecustomize.py``: SIGUSR1 starts
    cProfile, SIGUSR2 writes its stats to ``stats_path``."""

    stats_path: str = ""

    def command(self, docroot: str, port: int) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command(docroot, port)
        path = os.pathsep.join(filter(None, [os.path.join(HERE, "profiling"), os.environ.get("PYTHONPATH")]))
        return argv, {**env, "PYTHONPATH": path, "OWB_CPROFILE": self.stats_path}


def run_load(target: dict, load: str, args: argparse.Namespace) -> tuple[int, str]:
    """Drive the gateway; how many messages or sessions were done, and a line saying what ran."""
    if load == SESSIONS:
        results = run_clients(target, args.loops, args.client_processes, timeout=120.0, mode="churn",
                              size=MESSAGE_SIZE, duration=args.seconds)
        sessions = sum(result["sessions"] for result in results)
        failed = sum(result[key] for result in results for key in FAILURE_OF.values())
        return sessions, f"{sessions:,} sessions by {args.loops} loops in {args.seconds:g} s ({failed} failed)"
    metric = LOADS[load]
    settings = Settings(rounds=1, duration=args.seconds, latency_messages=0, idle_counts=[],
                        client_processes=args.client_processes)
    figure = throughput_round(target, metric, settings)
    messages = round(figure.value * args.seconds) if metric.unit == "msg/s" else round(
        figure.value * 1e6 * args.seconds / metric.size)
    return messages, (f"{metric.title}: {figure.value:,.1f} {metric.unit} ({figure.cpu_us_per_message:.0f} us of "
                      f"machine CPU per message, {figure.idle_share:.0%} idle), about {messages:,} messages")


def strace_table(path: str, units: int) -> str:
    """``strace -c``'s summary with each call's count per message or session."""
    lines = ["calls per unit  syscall (errors)"]
    with open(path) as summary:
        for line in summary:
            fields = line.split()
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
                calls, name = int(fields[3]), fields[-1]
                errors = f" ({int(fields[4]) / units:.2f})" if len(fields) == 6 else ""
                lines.append(f"{calls / units:14.2f}  {name}{errors}")
    return "\n".join(lines)


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
    docroot = tempfile.mkdtemp(prefix="owp-", dir="/tmp")
    echo = start_echo(docroot)
    gateway = (ProfiledGateway if args.tool == "cprofile" else OuistitiGw)("ouistiti-gw", "profiled")
    gateway.stats_path = os.path.join(docroot, "gateway.prof")
    try:
        target = gateway.start(docroot, docroot)
        # warm up (first connections, imports) outside the profile window
        run_clients(target, 1, 1, timeout=60.0, mode="pingpong", size=MESSAGE_SIZE, duration=0.3)
        if args.load == SESSIONS:
            run_clients(target, 1, 1, timeout=60.0, mode="churn", size=MESSAGE_SIZE, duration=0.3)
        worker = process_tree(gateway.pid)[-1]
        tracer, trace_path = None, os.path.join(docroot, "gateway.trace")
        if args.tool == "py-spy":
            tracer = subprocess.Popen(["py-spy", "record", "--pid", str(worker), "--format", "raw", "--function",
                                       "--rate", "200", "--duration", str(int(args.seconds + 2)),
                                       "--output", trace_path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        elif args.tool == "strace":
            tracer = subprocess.Popen(["strace", "-f", "-c", "-o", trace_path, "-p", str(worker)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        elif args.tool == "cprofile":
            os.kill(worker, signal.SIGUSR1)
        before = tree_cpu_seconds(gateway.pid)
        units, what = run_load(target, args.load, args)
        spent = cpu_spent(before, tree_cpu_seconds(gateway.pid))
        unit = "session" if args.load == SESSIONS else "message"
        print(f"{what}\ngateway CPU (master + worker, schedstat): {spent * 1e6 / max(units, 1):.1f} us per {unit} "
              f"under {args.tool}; load average {os.getloadavg()[0]:.2f}\n")
        if args.tool == "py-spy":
            tracer.wait(timeout=60)
            print(collapse(trace_path, args.top))
        elif args.tool == "strace":
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
            print(strace_table(trace_path, max(units, 1)))
        elif args.tool == "cprofile":
            os.kill(worker, signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not os.path.exists(gateway.stats_path) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # written whole
            stats = pstats.Stats(gateway.stats_path)
            print(f"(per {unit}: divide the call counts by {units})")
            stats.sort_stats("tottime").print_stats(args.top)
        if args.keep and args.tool != "none":
            shutil.copy(gateway.stats_path if args.tool == "cprofile" else trace_path, args.keep)
    finally:
        gateway.stop()
        stop_tree(echo)
        shutil.rmtree(docroot, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
