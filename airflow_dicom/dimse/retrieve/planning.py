"""Resume: which items are already complete (per a previous report or our receiver's arrival records)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from airflow_dicom.dimse.retrieve.destinations import ArrivalCheck
from airflow_dicom.dimse.retrieve.items import RetrieveItem
from airflow_dicom.dimse.retrieve.results import SKIPPED, Attempt


def plan_retrieval(
    items: Sequence[RetrieveItem],
    *,
    completed: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    arrivals: ArrivalCheck | None = None,
) -> tuple[list[RetrieveItem], list[Attempt]]:
    """Split ``items`` into those to request and those already complete (returned as skipped attempts).

    An item is complete when a previous report says so (``completed``: latest report rows per key), or when
    our receiver already holds at least the expected number of its instances.

    :param items: the requested items.
    :param completed: ``{(level, uid): row}`` of items complete in the retrieval report.
    :param arrivals: our receiver's arrival records, when it is the destination.
    """
    todo: list[RetrieveItem] = []
    skipped: list[Attempt] = []
    for item in items:
        row = (completed or {}).get(item.key)
        reason = ""
        held = None
        if row is not None:
            reason = "already complete in the retrieval report"
        elif arrivals is not None and item.expected:
            held = arrivals.held(item)
            if held is not None and held[0] >= item.expected:
                reason = f"all {item.expected} expected instances already received"
        if not reason:
            todo.append(item)
            continue
        now = datetime.now(timezone.utc)
        attempt = Attempt(
            item=item, service="", attempt=0, status=SKIPPED, reason=reason, started=now, finished=now
        )
        if row is not None:
            attempt.service = str(row.get("service") or "")
            attempt.expected = _int_or_none(row.get("expected"))
            attempt.completed = int(_int_or_none(row.get("completed")) or 0)
            attempt.received = _int_or_none(row.get("received"))
            attempt.bytes = _int_or_none(row.get("bytes"))
        elif held is not None:
            attempt.expected = item.expected
            attempt.received, attempt.bytes = held
            attempt.completed = held[0]
        skipped.append(attempt)
    return todo, skipped


def _int_or_none(value: Any) -> int | None:
    try:
        if value is None or value != value:  # NaN from pandas
            return None
        return int(value)
    except (TypeError, ValueError):
        return None
