"""Where a distributed run's wall time goes, from the task instances' own timestamps (the REST API).

Per task: ``scheduled_when`` -> ``queued_when`` (the scheduler: pools, limits, its loop), ``queued_when`` ->
``start_date`` (the executor and the broker: Celery delivering the workload, the worker forking the task's
supervisor), ``start_date`` -> ``end_date`` (the task process: DAG file parse, the work, the state update).
The medians of each phase and the sum of the task durations tell orchestration cost from transfer cost.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _seconds(start: str | None, end: str | None) -> float | None:
    first, last = _at(start), _at(end)
    return (last - first).total_seconds() if first and last else None


def phases(tis: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task id: count, median seconds of each phase, the sum of the run phases, first start, last end.

    :param tis: task instances as the REST API returns them (``queued_when``, ``scheduled_when``,
        ``start_date``, ``end_date``).
    """
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ti in tis:
        by_task[ti["task_id"]].append(ti)
    out: dict[str, dict[str, Any]] = {}
    for task_id, group in sorted(by_task.items()):
        cols = {
            "scheduled_to_queued": [_seconds(t.get("scheduled_when"), t.get("queued_when")) for t in group],
            "queued_to_start": [_seconds(t.get("queued_when"), t.get("start_date")) for t in group],
            "start_to_end": [_seconds(t.get("start_date"), t.get("end_date")) for t in group],
        }
        row: dict[str, Any] = {"count": len(group)}
        for name, values in cols.items():
            known = [v for v in values if v is not None]
            row[name] = round(statistics.median(known), 2) if known else None
        row["sum_start_to_end"] = round(sum(v for v in cols["start_to_end"] if v is not None), 1)
        starts = [s for s in (_at(t.get("start_date")) for t in group) if s]
        ends = [e for e in (_at(t.get("end_date")) for t in group) if e]
        if starts and ends:
            row["span"] = round((max(ends) - min(starts)).total_seconds(), 1)
        row["peak_running"] = peak_running(group)
        out[task_id] = row
    return out


def peak_running(tis: list[dict[str, Any]]) -> int:
    """The most task instances of ``tis`` running at one time (from their start and end dates).

    :param tis: task instances as the REST API returns them.
    """
    events = []
    for ti in tis:
        start, end = _at(ti.get("start_date")), _at(ti.get("end_date"))
        if start and end:
            events += [(start, 1), (end, -1)]
    peak = running = 0
    for _, step in sorted(events):
        running += step
        peak = max(peak, running)
    return peak
