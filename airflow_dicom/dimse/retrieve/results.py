"""What happened: one :class:`Attempt` per request (a report row), a :class:`RetrieveResult` per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_dicom.dimse.retrieve.items import RetrieveItem
from airflow_dicom.dimse.units import size_text

COMPLETE = "complete"
FAILED = "failed"
SKIPPED = "skipped"
NOT_STARTED = "not_started"


@dataclass
class Attempt:
    """The outcome of one request (one row of the retrieval report).

    :param item: what was requested.
    :param service: C-MOVE or C-GET.
    :param attempt: 1 for the first try, 2 for the first retry...
    :param status: ``complete``, ``failed``, ``skipped`` or ``not_started``.
    :param reason: why it failed or was skipped (empty when complete).
    :param dimse_status: the final DIMSE status (None without a response).
    :param expected: instances expected (given, or announced by the PACS in its counts).
    :param completed: completed sub-operations in the final response.
    :param failed: failed sub-operations.
    :param warning: sub-operations with a warning.
    :param received: instances held by our receiver for this item afterwards (None if not ours).
    :param bytes: bytes of those instances (None if not ours).
    :param started: when the request was sent.
    :param finished: when its final response arrived.
    :param node: the PACS.
    :param destination: where the instances were sent.
    :param transient: the failure is worth retrying.
    :param retrying: another attempt follows this one.
    :param failed_sop_uids: the PACS's Failed SOP Instance UID List, if it sent one.
    """

    item: RetrieveItem
    service: str
    attempt: int = 1
    status: str = FAILED
    reason: str = ""
    dimse_status: int | None = None
    expected: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    received: int | None = None
    bytes: int | None = None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished: datetime | None = None
    node: str = ""
    destination: str = ""
    transient: bool = False
    retrying: bool = False
    failed_sop_uids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when complete (or skipped because already complete)."""
        return self.status in (COMPLETE, SKIPPED)

    @property
    def seconds(self) -> float:
        """Duration of the request."""
        end = self.finished or datetime.now(timezone.utc)
        return max(0.0, (end - self.started).total_seconds())

    def row(self, run_id: str | None = None) -> dict[str, Any]:
        """This attempt as a report row (see :mod:`airflow_dicom.landing.report`).

        :param run_id: the Airflow run id (or CLI run label).
        """
        return {
            "uid": self.item.uid,
            "level": self.item.level,
            "study_uid": self.item.study_uid,
            "series_uid": self.item.series_uid,
            "service": self.service,
            "status": self.status,
            "reason": self.reason,
            "dimse_status": self.dimse_status,
            "expected": self.expected,
            "completed": self.completed,
            "failed": self.failed,
            "warning": self.warning,
            "received": self.received,
            "bytes": self.bytes,
            "attempt": self.attempt,
            "started": self.started,
            "finished": self.finished or self.started,
            "seconds": self.seconds,
            "node": self.node,
            "destination": self.destination,
            "run_id": run_id,
        }

    def progress_line(self) -> str:
        """One log line without PHI: item, status, counts, bytes, seconds."""
        counts = f"{self.completed}"
        if self.expected is not None:
            counts += f"/{self.expected}"
        text = (
            f"{self.service} {self.item.level} {self.item.label}: {self.status}, {counts} instances "
            f"({self.failed} failed, {self.warning} warning)"
        )
        if self.received is not None:
            text += f", {self.received} held, {size_text(self.bytes or 0)}"
        text += f", {self.seconds:.2f} s"
        if self.attempt > 1:
            text += f", attempt {self.attempt}"
        if self.reason and self.status != COMPLETE:
            text += f": {self.reason}"
        return text


@dataclass
class RetrieveResult:
    """Everything one :func:`retrieve` call did.

    :param attempts: every attempt, in the order they finished (skipped items included).
    :param final: the last attempt per item key, in request order.
    :param interrupted: True when ``should_continue`` stopped the run before every item was tried.
    """

    attempts: list[Attempt] = field(default_factory=list)
    final: dict[tuple[str, str], Attempt] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def complete(self) -> list[Attempt]:
        """Items retrieved completely in this run."""
        return [a for a in self.final.values() if a.status == COMPLETE]

    @property
    def skipped(self) -> list[Attempt]:
        """Items skipped because already complete."""
        return [a for a in self.final.values() if a.status == SKIPPED]

    @property
    def failed(self) -> list[Attempt]:
        """Items whose last attempt failed."""
        return [a for a in self.final.values() if a.status == FAILED]

    @property
    def not_started(self) -> list[Attempt]:
        """Items never tried (the run was interrupted)."""
        return [a for a in self.final.values() if a.status == NOT_STARTED]

    @property
    def ok(self) -> bool:
        """True when every item is complete or skipped."""
        return all(a.ok for a in self.final.values())

    def summary(self) -> dict[str, Any]:
        """Counts and failed UIDs with reasons (JSON-serialisable, no PHI beyond UIDs)."""
        return {
            "requested": len(self.final),
            "complete": len(self.complete),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "not_started": len(self.not_started),
            "instances": sum(a.completed for a in self.complete),
            "bytes": sum(a.bytes or 0 for a in self.complete),
            "failures": {a.item.label: a.reason for a in self.failed},
        }
