"""Shared helpers for the benchmarks: timing whole commands, best-of-N.

The benchmarks use the test harness (``harness.orthanc``, ``harness.dcmtk``...): ``make bench`` puts
``tests/`` on ``PYTHONPATH`` for them, as ``pythonpath`` in ``pyproject.toml`` does for pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: our console script in the running venv
CLI = str(Path(sys.executable).with_name("airflow-dicom"))
#: dcmtk needs TCP_NODELAY=1 or every message waits for a delayed ACK
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def best_of(n: int, func: Callable[[], Any]) -> float:
    """Run ``func`` ``n`` times; return the fastest wall-clock time in seconds.

    :param n: repetitions.
    :param func: the measured callable (raise to signal a failed run).
    """
    best = float("inf")
    for _ in range(n):
        started = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - started)
    return best


def run(cmd: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> None:
    """Run a command; raise with its output when it fails.

    :param cmd: the command and arguments.
    :param env: its environment (default: ours).
    :param timeout: seconds before it is killed.
    """
    result = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{cmd[0]} failed ({result.returncode}): {result.stderr[-2000:]}{result.stdout[-2000:]}"
        )


def row(name: str, ours: float, dcmtk: float, note: str = "", goal: float | None = None) -> dict[str, Any]:
    """A result row: our time, dcmtk's, their ratio and the goal ratio (if the issue names one).

    :param name: what was measured.
    :param ours: our seconds.
    :param dcmtk: the dcmtk tool's seconds in the same run.
    :param note: extra context (e.g. a baseline's time).
    :param goal: the ratio the issue asks for.
    """
    return {
        "name": name,
        "ours_s": round(ours, 4),
        "dcmtk_s": round(dcmtk, 4),
        "ratio": round(ours / dcmtk, 2) if dcmtk else None,
        "goal": goal,
        "note": note,
    }
