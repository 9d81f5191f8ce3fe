"""Turn the figures into what people read: a table, ratios to websockify and to raw, the targets.

Ratios are plain quotients (contender / reference) for every metric; for latency and memory a
ratio below 1 is the better one, as the table's header line says.
"""
from __future__ import annotations

from measure import LATENCY, THROUGHPUT, WIRE, Metric, idle_metrics, reload_metrics

REFERENCES = ("websockify", "raw", "raw-tcp")
#: The project's own ways to run the gateway whose figures are held to the issue's targets.
TARGETED = ("ouistiti-gw", "gw-2workers")


def all_metrics(idle_counts: list[int], reload_idle: int) -> list[Metric]:
    base = Metric("rss_idle_0", "RSS, started, no conn", "MiB", False, 0, 0)
    return [*THROUGHPUT, *WIRE, *LATENCY, base, *idle_metrics(idle_counts), *reload_metrics(reload_idle)]


def _value(results: dict, contender: str, key: str) -> float | None:
    return results.get(contender, {}).get(key, {}).get("value")


def ratios(results: dict, metrics: list[Metric]) -> dict[str, dict[str, dict[str, float | None]]]:
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for contender in results:
        table[contender] = {}
        for metric in metrics:
            mine = _value(results, contender, metric.key)
            entry = {}
            for reference in REFERENCES:
                theirs = _value(results, reference, metric.key)
                entry[f"vs_{reference}"] = mine / theirs if mine is not None and theirs else None
            table[contender][metric.key] = entry
    return table


def targets(results: dict) -> list[dict]:
    """The issue's goals for the project's own server and worker: which hold on this run (None:
    not measured). Direct mode's goal (80 % of raw at 16 MiB) is listed with them."""
    def get(contender: str, key: str) -> float | None:
        return _value(results, contender, key)

    def check(contender: str, goal: str, key: str, bound: float | None, higher: bool) -> dict:
        mine = get(contender, key)
        met = None if mine is None or bound is None else (mine >= bound if higher else mine <= bound)
        return {"contender": contender, "goal": goal, "value": mine, "bound": bound, "met": met}

    def scaled(value: float | None, factor: float) -> float | None:
        return None if value is None else value * factor

    goals = []
    for contender in TARGETED:
        if contender not in results:
            continue
        for suffix in ("c1", "c16"):
            key = f"msgs_1KiB_{suffix}"
            goals.append(check(contender, f"{key} >= 1.5x websockify", key, scaled(get("websockify", key), 1.5), True))
            goals.append(check(contender, f"{key} >= ouistiti C", key, get("ouistiti", key), True))
            key = f"mbps_16MiB_{suffix}"
            goals.append(check(contender, f"{key} >= 1.5x websockify", key, scaled(get("websockify", key), 1.5), True))
            goals.append(check(contender, f"{key} >= raw / 3", key, scaled(get("raw", key), 1 / 3), True))
        goals.append(check(contender, "lat_100B_p50_us <= websockify", "lat_100B_p50_us",
                           get("websockify", "lat_100B_p50_us"), False))
        goals.append(check(contender, "rss_idle_10000 < 300 MiB", "rss_idle_10000", 300.0, False))
    if "direct" in results:
        for suffix in ("c1", "c16"):
            key = f"mbps_16MiB_{suffix}"
            goals.append(check("direct", f"{key} >= 0.8x raw", key, scaled(get("raw", key), 0.8), True))
    return goals


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _cost(results: dict, contender: str, key: str) -> str:
    figure = results.get(contender, {}).get(key, {})
    if figure.get("cpu_us_per_message") is None:
        return "-"
    return f"{figure['cpu_us_per_message']:.0f} / {figure['idle_share']:.0%} idle"


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w)  # noqa: E731
                                         for i, (cell, w) in enumerate(zip(row, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def _goals(goals: list[dict]) -> str:
    rows = [[goal["contender"], goal["goal"], _format(goal["value"]), _format(goal["bound"]),
             {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]] for goal in goals]
    return _grid(["contender", "goal", "value", "bound", "status"], rows)


def render(results: dict, metrics: list[Metric], ratio_table: dict, goals: list[dict]) -> str:
    """Markdown tables: figures, ratios to websockify, ratios to raw, then the targets."""
    contenders = list(results)
    header = ["metric", *contenders]
    figures = [[f"{m.title} ({m.unit})", *(_format(_value(results, c, m.key)) for c in contenders)]
               for m in metrics]
    parts = ["Figures (median of rounds; `-` = not measured, see the JSON for why)", _grid(header, figures)]
    for reference in REFERENCES:
        if reference not in results:
            continue
        rows = [[m.title + ("" if m.higher_is_better else " (lower is better)"),
                 *(_format(ratio_table[c][m.key][f"vs_{reference}"]) for c in contenders)] for m in metrics]
        parts += ["", f"Ratio to {reference} (x)", _grid(header, rows)]
    cost_rows = [[m.title, *(_cost(results, c, m.key) for c in contenders)]
                 for m in metrics if m.unit == "msg/s"]
    parts += ["", "Machine CPU per message, all processes (us), and the share of the machine left idle",
              _grid(header, cost_rows)]
    parts += ["", "Targets", _goals(goals)]
    return "\n".join(parts)


#: The crowd table's rows: a title (after the size) and how a measured figure reads in a cell.
CROWD_ROWS = [
    ("RTT p50 (ms)", lambda figure: _format(figure["p50_ms"])),
    ("RTT p99 (ms)", lambda figure: _format(figure["p99_ms"])),
    ("RTT p99.9 (ms)", lambda figure: _format(figure["p999_ms"])),
    ("lost / late of sent", lambda figure: f"{figure['lost']:,} / {figure['late']:,} of {figure['sent']:,}"),
    ("sessions the server closed", lambda figure: f"{figure['closed']:,}"),
    ("server CPU (cores)", lambda figure: _format(figure["server_cpu_cores"])),
    ("server RSS (MiB)", lambda figure: _format(figure["server_rss_mib"])),
    ("clients' CPU (cores; busiest)",
     lambda figure: f"{figure['clients_cpu_cores']:.2f}; {figure['busiest_client_cpu']:.2f}"),
    ("machine left idle", lambda figure: f"{figure['machine_idle_share']:.0%}"),
]


def render_crowd(crowd: dict) -> str:
    """The crowd's table: a block of rows per size, a column per contender; then why any cell is empty."""
    results = crowd["results"]
    contenders = list(results)
    rows, reasons = [], []
    for size in crowd["sizes"]:
        figures = {contender: results[contender][str(size)] for contender in contenders}
        for title, cell in CROWD_ROWS:
            rows.append([f"{size:,} sessions: {title}",
                         *(cell(figure) if figure["value"] is not None else "-" for figure in figures.values())])
        reasons += [f"- {contender}, {size:,} sessions: {figure.get('skipped') or figure.get('failed')}"
                    for contender, figure in figures.items() if figure["value"] is None]
    title = (f"Crowd: each session sends {crowd['message_size']} B about once a second for {crowd['seconds']:g} s "
             f"(late: no echo within {crowd['late_seconds']:g} s); `-` = not measured")
    return "\n".join([title, _grid(["metric", *contenders], rows), *reasons])


#: The storm table's rows: a title, the figure's key and how many decimals (None: a count).
STORM_ROWS = [
    ("new sessions / s", "sessions_per_s", 0),
    ("server CPU per session (us)", "cpu_us_per_session", 0),
    ("established RTT p50, storm (ms)", "storm_p50_ms", 1),
    ("established RTT p99, storm (ms)", "storm_p99_ms", 1),
    ("established RTT p50, quiet (ms)", "quiet_p50_ms", 2),
    ("established RTT p99, quiet (ms)", "quiet_p99_ms", 2),
    ("churn: connect errors", "connect_errors", None),
    ("churn: handshake errors", "handshake_errors", None),
    ("churn: echoes lost", "lost", None),
    ("churn: closes not answered", "close_timeouts", None),
    ("established: echoes lost", "established_lost", None),
    ("established: closed by the server", "established_closed", None),
]
#: The storm's figures compared with the baseline's (the gateway before a change).
STORM_RATIOS = ("sessions_per_s", "cpu_us_per_session", "storm_p99_ms", "quiet_p99_ms")


def storm_ratios(results: dict) -> dict[str, dict[str, float | None]]:
    """Each contender's storm figures over the ``baseline`` contender's (empty without one)."""
    if "baseline" not in results:
        return {}
    base = results["baseline"]
    return {contender: {key: figures[key] / base[key] if figures.get(key) is not None and base.get(key) else None
                        for key in STORM_RATIOS}
            for contender, figures in results.items()}


def storm_targets(results: dict) -> list[dict]:
    """Issue 22's goals for ``ouistiti-gw``: which hold on this run (None: not measured)."""
    if "ouistiti-gw" not in results:
        return []
    mine = results["ouistiti-gw"]
    goals = [("established RTT p99 during the storm < 50 ms", mine.get("storm_p99_ms"), 50.0)]
    if "baseline" in results:
        base = results["baseline"].get("cpu_us_per_session")
        goals.append(("CPU per session <= 0.4x baseline's", mine.get("cpu_us_per_session"),
                      None if base is None else 0.4 * base))
    return [{"contender": "ouistiti-gw", "goal": goal, "value": value, "bound": bound,
             "met": None if value is None or bound is None else value <= bound} for goal, value, bound in goals]


def render_storm(storm: dict, meta: dict) -> str:
    """The storm's table (medians of the rounds), its ratios to the baseline, the targets, and
    why a contender has no figures."""
    results = storm["results"]
    contenders = list(results)

    def cell(figures: dict, key: str, decimals: int | None) -> str:
        value = figures.get(key) if figures.get("failed") is None else None
        if value is None:
            return "-"
        return f"{value:,}" if decimals is None else f"{value:,.{decimals}f}"

    rows = [[title, *(cell(results[c], key, decimals) for c in contenders)] for title, key, decimals in STORM_ROWS]
    churners = storm["churn_processes"] * storm["churn_loops"]
    parts = [f"Storm: {churners} loops ({storm['churn_processes']} processes x {storm['churn_loops']}) open a session, "
             f"echo {storm['message_size']} B and close, as fast as they can, for {storm['seconds']:g} s, while "
             f"{storm['established']} established sessions send {storm['message_size']} B every 100 ms "
             f"(alone for {storm['quiet_seconds']:g} s first: 'quiet'); median of {storm['rounds']} interleaved "
             f"round(s); load average {', '.join(f'{v:.2f}' for v in meta['load_average_at_start'])} at start",
             _grid(["metric", *contenders], rows)]
    if storm["ratios"]:
        titles = dict((key, title) for title, key, _ in STORM_ROWS)
        ratio_rows = [[titles[key], *(_format(storm["ratios"][c][key]) for c in contenders)] for key in STORM_RATIOS]
        parts += ["", "Ratio to baseline (x)", _grid(["metric", *contenders], ratio_rows)]
    if storm["targets"]:
        parts += ["", "Targets (issue 22)", _goals(storm["targets"])]
    parts += [f"- {contender}: {figures['failed']}" for contender, figures in results.items() if figures.get("failed")]
    errors = {contender: {key: why for figure in figures.get("rounds", []) for key, why in figure["errors"].items()}
              for contender, figures in results.items()}
    parts += [f"- {contender}, {kind}: e.g. {why}"
              for contender, kinds in errors.items() for kind, why in kinds.items()]
    return "\n".join(parts)
