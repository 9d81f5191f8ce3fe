"""``benchmarks/run.py`` as its users run it, with tiny sizes: the figures it wrote, and what it printed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from . import ROOT

RUN = str(ROOT / "benchmarks" / "run.py")


def run_benchmark(directory: Path, *arguments: str, timeout: float = 180,
                  env: dict[str, str] | None = None) -> tuple[dict, str]:
    """Run ``run.py ARGUMENTS --json --charts`` into ``directory``; its JSON report and its stdout
    (the run must succeed)."""
    report = directory / "report.json"
    completed = subprocess.run([sys.executable, RUN, *arguments, "--json", str(report), "--charts", str(directory)],
                               capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(report.read_text()), completed.stdout
