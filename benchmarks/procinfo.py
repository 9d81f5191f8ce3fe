"""Process facts the benchmark needs from Linux: descriptor limits, process trees, memory.

Memory is read from ``/proc`` rather than from a library so that the figure is exactly the one an
operator would read (``VmRSS``), summed over the server's process tree (gunicorn's master and
worker, websockify's and ouistiti's one child per connection). ``Pss`` is read as well: for a tree
of forked processes the RSS sum counts every shared page once per process, PSS splits it fairly.
"""
from __future__ import annotations

import os
import resource

#: Descriptors wanted for 10 000 idle connections: the client end, the server end and the
#: gateway's UNIX connection each take one in some process.
WANTED_NOFILE = 65536


def raise_nofile_limit(wanted: int = WANTED_NOFILE) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (past the hard limit with CAP_SYS_RESOURCE); return the soft limit.

    Usable as ``preexec_fn``: it never raises.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in ((wanted, max(wanted, hard)), (min(wanted, hard), hard)):
        if target[0] <= soft:
            return soft
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, target)
            return target[0]
        except (ValueError, OSError):
            continue
    return soft


def nofile_limit(pid: int) -> int:
    """The soft descriptor limit of a running process (``Max open files`` in /proc/PID/limits)."""
    try:
        with open(f"/proc/{pid}/limits") as limits:
            for line in limits:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now."""
    children = _children_map()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _read_kib(path: str, field: str) -> int:
    try:
        with open(path) as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(pid: int) -> dict[str, float]:
    """RSS and PSS in MiB summed over the process tree of ``pid``, and how many processes it has."""
    pids = process_tree(pid)
    rss = sum(_read_kib(f"/proc/{p}/status", "VmRSS:") for p in pids)
    pss = sum(_read_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    return {"rss_mib": rss / 1024, "pss_mib": pss / 1024, "processes": len(pids)}


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time of every process in the tree of ``pid``, by pid: the run time of all its threads
    (``/proc/PID/task/*/schedstat``, in nanoseconds).

    Not ``utime + stime`` of ``/proc/PID/stat``: those count whole clock ticks (10 ms) per
    process, and a process per connection (websockify) spends a few milliseconds a session, which
    rounds to nothing. Two readings give what the tree spent between them: a process that was not
    there at the first one spent all its time in between; one that exited takes its time with it.
    """
    seconds = {}
    for current in process_tree(pid):
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue  # exited meanwhile
        total = 0
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/schedstat") as schedstat:
                    total += int(schedstat.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        seconds[current] = total / 1e9
    return seconds


def reaped_cpu_seconds(pid: int) -> float:
    """CPU time of the children the tree of ``pid`` has forked and reaped (``cutime + cstime`` of
    ``/proc/PID/stat``, 10 ms ticks): a server forking a process per session (websockify) takes its
    children's time out of :func:`tree_cpu_seconds` when they exit; over hundreds of them the ticks
    add up to a fair figure. A child still running at the first reading is counted whole."""
    ticks = 0
    for current in process_tree(pid):
        try:
            with open(f"/proc/{current}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (fields 16 and 17 of stat(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """Seconds of CPU the tree spent between two :func:`tree_cpu_seconds` readings."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())
