"""Benchmark ouistiti-gw against websockify, ouistiti (C) and the raw UNIX echo: one command.

    python benchmarks/run.py [--quick] [--json FILE] [--ouistiti DIR] [--baseline DIR] [--only NAMES]
    python benchmarks/run.py --crowd 1000,5000,max [--crowd-seconds S] [--charts DIR]
    python benchmarks/run.py --storm [--baseline COMMIT] [--quick] [--charts DIR]

Starts one UNIX echo server in a temporary docroot, then each contender in front of it on a free
loopback port, drives it with client processes (see wsclient.py) and prints the table; see
benchmarks/README.md for what each figure means.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from contenders import ECHO_NAME, Contender, all_contenders, source_tree, stop_tree
from crowd import LATE_SECONDS, MESSAGE_SIZE, CrowdSettings, measure_crowd, parse_sizes
from measure import Settings, measure_idle, measure_reload, measure_traffic, not_reloaded
from procinfo import raise_nofile_limit
from report import all_metrics, ratios, render, render_crowd, render_storm, storm_ratios, storm_targets, targets
from storm import StormSettings, measure_storms, parse_churn

log = logging.getLogger("benchmarks")
HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, short runs, no 10 000 idle test")
    parser.add_argument("--json", metavar="FILE", help="write every figure, round and ratio as JSON")
    parser.add_argument("--ouistiti", metavar="DIR", help="also run ouistiti (C) built in DIR by ouistiti-ref")
    parser.add_argument("--baseline", metavar="DIR|COMMIT",
                        help="also run `ouistiti-gw serve` from the source tree DIR, or from a commit of this "
                             "repository (written out with git archive): the gateway before a change, in the same run")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated contenders (default: all)")
    parser.add_argument("--rounds", type=int,
                        help="rounds per figure (default 5, 1 with --quick; a storm: 3, interleaved)")
    parser.add_argument("--duration", type=float, help="seconds per throughput round (default 1, 0.2 with --quick)")
    parser.add_argument("--idle", metavar="COUNTS",
                        help="idle connection counts (default 100,1000,10000; 100,1000 with --quick)")
    parser.add_argument("--reload-idle", type=int, metavar="COUNT",
                        help="idle sessions a reload moves (default 10000, 100 with --quick)")
    parser.add_argument("--metrics", metavar="GLOBS", default="*",
                        help="comma-separated globs of traffic metrics to take, e.g. 'msgs_*,lat_*' (default: all)")
    parser.add_argument("--client-processes", type=int, default=2, help="client processes for 16 connections")
    parser.add_argument("--crowd", metavar="SIZES",
                        help="run the crowd scenario instead of ping-pong and idle memory, at these session counts, "
                             "e.g. 1000,5000,max (max: the most the descriptor limit allows a gateway process)")
    parser.add_argument("--crowd-seconds", type=float, default=20.0,
                        help="seconds the crowd sends, after every session has connected (default 20)")
    parser.add_argument("--crowd-processes", type=int, default=4, help="client processes carrying the crowd")
    parser.add_argument("--storm", action="store_true",
                        help="run the connect storm instead: sessions churning while established ones talk "
                             "(default contenders: ouistiti-gw, baseline, websockify, raw)")
    parser.add_argument("--storm-seconds", type=float, help="seconds of storm (default 4, 1.5 with --quick)")
    parser.add_argument("--storm-quiet", type=float,
                        help="seconds the established sessions talk alone first (default 2, 1 with --quick)")
    parser.add_argument("--storm-sessions", type=int, default=100,
                        help="established sessions, one 100 B message every 100 ms each (default 100)")
    parser.add_argument("--storm-churn", metavar="PxL", default="2x50",
                        help="churning client processes x loops in each (default 2x50)")
    parser.add_argument("--charts", metavar="DIR", help="draw PNG charts of what was measured into DIR (matplotlib)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every figure as it is taken")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    idle = args.idle or ("100,1000" if args.quick else "100,1000,10000")
    return Settings(rounds=args.rounds or (1 if args.quick else 5),
                    duration=args.duration or (0.2 if args.quick else 1.0),
                    latency_messages=200 if args.quick else 2000,
                    idle_counts=sorted(int(count) for count in idle.split(",") if count.strip()),
                    client_processes=args.client_processes,
                    reload_idle=args.reload_idle or (100 if args.quick else 10000),
                    selected=tuple(glob.strip() for glob in args.metrics.split(",") if glob.strip()))


def storm_settings_from(args: argparse.Namespace) -> StormSettings:
    processes, loops = parse_churn(args.storm_churn)
    return StormSettings(rounds=args.rounds or (1 if args.quick else 3),
                         seconds=args.storm_seconds or (1.5 if args.quick else 4.0),
                         quiet=args.storm_quiet or (1.0 if args.quick else 2.0),
                         established=args.storm_sessions, churn_processes=processes, churn_loops=loops)


#: The storm's contenders unless ``--only`` says otherwise (``raw-tcp`` has no churning client).
STORM_CONTENDERS = ("ouistiti-gw", "baseline", "websockify", "raw")


def start_echo(docroot: str) -> subprocess.Popen:
    path = os.path.join(docroot, ECHO_NAME)
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "echo_server.py"), path],
                               stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile_limit)
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("the echo server did not start")
    return process


def selected_contenders(args: argparse.Namespace, baseline_dir: str | None) -> list[Contender]:
    contenders = all_contenders(args.ouistiti, baseline_dir)
    for contender in contenders:
        if contender.name == "baseline" and baseline_dir != args.baseline:
            contender.description = f"`ouistiti-gw serve` at commit {args.baseline} (before a change)"
    if args.storm and not args.only:
        contenders = [contender for contender in contenders if contender.name in STORM_CONTENDERS]
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        unknown = wanted - {contender.name for contender in contenders}
        if unknown:
            raise SystemExit(f"unknown contender(s): {', '.join(sorted(unknown))}")
        contenders = [contender for contender in contenders if contender.name in wanted]
    return contenders


def measure_pingpong(contenders: list[Contender], docroot: str, settings: Settings) -> dict[str, dict]:
    """Each contender in turn: its traffic figures, then (restarted) its idle memory, then
    (restarted) what a reload does to its sessions, where it has a reload that keeps them."""
    results: dict[str, dict] = {}
    for contender in contenders:
        log.info("== %s", contender.name)
        try:
            target = contender.start(docroot, docroot)
            results[contender.name] = measure_traffic(contender, target, settings)
        finally:
            contender.stop()
        try:
            target = contender.start(docroot, docroot)
            results[contender.name].update(measure_idle(contender, target, settings))
        finally:
            contender.stop()
        if not contender.reloads:
            results[contender.name].update(not_reloaded(settings, "no reload that keeps sessions"))
            continue
        try:
            target = contender.start(docroot, docroot)
            results[contender.name].update(measure_reload(contender, target, settings))
        finally:
            contender.stop()
    return results


def measure_crowds(contenders: list[Contender], docroot: str, settings: CrowdSettings) -> dict[str, dict]:
    """Size by size, every contender in turn, each freshly started (its memory is the crowd's alone)."""
    results: dict[str, dict] = {contender.name: {} for contender in contenders}
    for size in settings.sizes:
        for contender in contenders:
            log.info("== %s, crowd of %d", contender.name, size)
            try:
                target = contender.start(docroot, docroot)
                results[contender.name][str(size)] = measure_crowd(contender, target, size, settings)
            finally:
                contender.stop()
    return results


def run(args: argparse.Namespace) -> dict:
    if not args.baseline:
        return run_with(args, None)
    with source_tree(args.baseline) as baseline_dir:
        return run_with(args, baseline_dir)


def run_with(args: argparse.Namespace, baseline_dir: str | None) -> dict:
    contenders = selected_contenders(args, baseline_dir)
    nofile = raise_nofile_limit()
    docroot = tempfile.mkdtemp(prefix="owb-", dir="/tmp")
    echo = start_echo(docroot)
    started = time.time()
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "python": platform.python_version(), "cpus": os.cpu_count(), "nofile": nofile,
            "load_average_at_start": os.getloadavg(),
            "contenders": {contender.name: contender.description for contender in contenders}}
    report: dict = {"meta": meta}
    try:
        if args.storm:
            storm = storm_settings_from(args)
            results = measure_storms(contenders, docroot, storm)
            report["storm"] = {"rounds": storm.rounds, "seconds": storm.seconds, "quiet_seconds": storm.quiet,
                               "established": storm.established, "churn_processes": storm.churn_processes,
                               "churn_loops": storm.churn_loops, "message_size": MESSAGE_SIZE,
                               "results": results, "ratios": storm_ratios(results),
                               "targets": storm_targets(results)}
        elif args.crowd:
            crowd = CrowdSettings(parse_sizes(args.crowd, nofile), args.crowd_seconds, args.crowd_processes)
            report["crowd"] = {"sizes": crowd.sizes, "seconds": crowd.seconds, "message_size": MESSAGE_SIZE,
                               "late_seconds": LATE_SECONDS, "client_processes": crowd.client_processes,
                               "results": measure_crowds(contenders, docroot, crowd)}
        else:
            settings = settings_from(args)
            results = measure_pingpong(contenders, docroot, settings)
            metrics = all_metrics(settings.idle_counts, settings.reload_idle)
            meta.update({"quick": args.quick, "rounds": settings.rounds, "duration": settings.duration,
                         "latency_messages": settings.latency_messages, "idle_counts": settings.idle_counts,
                         "reload_idle": settings.reload_idle,
                         "client_processes": settings.client_processes,
                         "metrics_selected": list(settings.selected),
                         "method": "ping-pong per connection; MB/s = payload bytes echoed / s / 1e6"})
            report.update({
                "metrics": {m.key: {"title": m.title, "unit": m.unit, "higher_is_better": m.higher_is_better}
                            for m in metrics},
                "results": results, "ratios": ratios(results, metrics), "targets": targets(results)})
    finally:
        stop_tree(echo)
        echo.stdout.close()
        shutil.rmtree(docroot, ignore_errors=True)
    meta.update({"seconds": round(time.time() - started, 1), "load_average_at_end": os.getloadavg()})
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    report = run(args)
    if "storm" in report:
        print(render_storm(report["storm"], report["meta"]))
    elif "crowd" in report:
        print(render_crowd(report["crowd"]))
    else:
        metrics = all_metrics(report["meta"]["idle_counts"], report["meta"]["reload_idle"])
        print(render(report["results"], metrics, report["ratios"], report["targets"]))
    if args.json:
        with open(args.json, "w") as output:
            json.dump(report, output, indent=2)
    if args.charts:
        from charts import draw  # matplotlib only when charts are asked for (the "bench" extra)

        for path in draw(report, args.charts):
            print(f"chart: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
