"""One C-MOVE or C-GET on an open association: send it, read every response, judge the outcome.

For every request the pending and final sub-operation counts are read and the item is:

* **complete** only if the final status is success (or 0xB000 without failed sub-operations), nothing failed,
  at least one instance was transferred, at least as many as expected, and (when our receiver is the
  destination) at least as many arrived as the PACS says it sent;
* **failed** otherwise, with the reason; out of resources (0xA700-0xA702) and a missing final response are
  transient (worth retrying). A request exceeding its time budget is cancelled with C-CANCEL.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

from pydicom.dataset import Dataset

from airflow_dicom.dimse.association import accepted_context
from airflow_dicom.dimse.errors import AssociationAbortedError, NoAcceptedContextError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.retrieve.contexts import query_model
from airflow_dicom.dimse.retrieve.destinations import ArrivalCheck, MoveDestination
from airflow_dicom.dimse.retrieve.items import MOVE, RetrieveItem
from airflow_dicom.dimse.retrieve.options import RetrieveOptions
from airflow_dicom.dimse.retrieve.results import COMPLETE, FAILED, Attempt
from airflow_dicom.dimse.status import Status, category, describe_status

log = logging.getLogger(__name__)

#: statuses worth retrying: the PACS is (momentarily) out of resources
TRANSIENT_STATUSES = frozenset(
    {Status.OUT_OF_RESOURCES, Status.OUT_OF_RESOURCES_MATCHES, Status.OUT_OF_RESOURCES_SUB_OPERATIONS}
)


class Requester:
    """Sends the C-MOVE or C-GET request of an item and fills its :class:`Attempt` (thread-safe).

    :param node: the PACS.
    :param service: ``C-MOVE`` or ``C-GET``.
    :param destination: for C-MOVE, where the PACS sends the instances.
    :param options: priority, time budget, arrival grace.
    :param arrivals: our receiver's arrival records (None when the destination is not ours).
    :param destination_text: the destination as reports name it.
    """

    def __init__(
        self,
        node: DicomNode,
        service: str,
        *,
        destination: MoveDestination | None,
        options: RetrieveOptions,
        arrivals: ArrivalCheck | None,
        destination_text: str,
    ) -> None:
        self.node = node
        self.service = service
        self.destination = destination
        self.options = options
        self.arrivals = arrivals
        self.destination_text = destination_text
        self._msg_lock = threading.Lock()
        self._next_msg_id = 0

    def _msg_id(self) -> int:
        with self._msg_lock:
            self._next_msg_id = self._next_msg_id % 65535 + 1
            return self._next_msg_id

    def request(self, assoc: Any, item: RetrieveItem, attempt: Attempt) -> None:
        """Send one C-MOVE/C-GET for ``item`` on ``assoc`` and fill ``attempt`` from the responses.

        :param assoc: an established association with the PACS.
        :param item: what to retrieve.
        :param attempt: filled in: counts, status, reason, received.
        :raises NoAcceptedContextError: the association has no context for the request's model.
        :raises AssociationAbortedError: the association was aborted before the final response.
        """
        model = query_model(self.service, item.level)
        context = accepted_context(assoc, model)
        if context is None:
            raise NoAcceptedContextError(self.node, f"{self.service} at {item.level} level ({model})")
        msg_id = self._msg_id()
        attempt.started = datetime.now(timezone.utc)
        started = time.monotonic()
        if self.service == MOVE:
            assert self.destination is not None
            responses = assoc.send_c_move(
                item.identifier(),
                self.destination.ae_title,
                model,
                msg_id=msg_id,
                priority=self.options.priority,
            )
        else:
            responses = assoc.send_c_get(
                item.identifier(), model, msg_id=msg_id, priority=self.options.priority
            )
        cancelled = threading.Event()
        timer = None
        if self.options.time_budget:

            def cancel() -> None:
                if assoc.is_established:
                    cancelled.set()
                    log.warning(
                        "%s %s %s exceeded its time budget of %g s: sending C-CANCEL",
                        self.service,
                        item.level,
                        item.label,
                        self.options.time_budget,
                    )
                    try:
                        assoc.send_c_cancel(msg_id, context.context_id)
                    except Exception as exc:  # association gone meanwhile
                        log.debug("C-CANCEL not sent: %s", exc)

            timer = threading.Timer(float(self.options.time_budget), cancel)
            timer.daemon = True
            timer.start()
        announced: int | None = None
        final_status: int | None = None
        final_identifier: Dataset | None = None
        last: Dataset | None = None
        try:
            for status_ds, identifier in responses:
                status = getattr(status_ds, "Status", None)
                if status is None:
                    break
                last = status_ds
                counts = _counts(status_ds)
                if category(int(status)) == "Pending":
                    if announced is None and counts["remaining"] is not None:
                        announced = sum(v or 0 for v in counts.values())
                    continue
                final_status = int(status)
                final_identifier = identifier
        finally:
            if timer is not None:
                timer.cancel()
        attempt.finished = datetime.now(timezone.utc)
        seconds = time.monotonic() - started
        if final_status is None:
            if assoc.is_aborted or not assoc.is_established:
                raise AssociationAbortedError(self.node, f"{self.service} of {item.level} {item.label}")
            attempt.reason = (
                f"no final {self.service} response within the DIMSE timeout ({self.node.dimse_timeout:g} s)"
            )
            attempt.transient = True
            return
        attempt.dimse_status = final_status
        counts = _counts(last) if last is not None else {}
        attempt.completed = int(counts.get("completed") or 0)
        attempt.failed = int(counts.get("failed") or 0)
        attempt.warning = int(counts.get("warning") or 0)
        if attempt.expected is None:
            attempt.expected = announced
        if final_identifier is not None and "FailedSOPInstanceUIDList" in final_identifier:
            value = final_identifier.FailedSOPInstanceUIDList
            attempt.failed_sop_uids = [
                str(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if v
            ]
        self._judge(attempt, final_status, cancelled.is_set())
        if self.arrivals is not None:
            self._cross_check(item, attempt)
        log.debug("%s took %.3f s", item.label, seconds)

    def _judge(self, attempt: Attempt, status: int, cancelled: bool) -> None:
        transferred = attempt.completed + attempt.warning
        text = describe_status(self.service, status)
        if status == Status.CANCEL:
            attempt.reason = (
                f"cancelled after exceeding the time budget of {self.options.time_budget:g} s "
                f"({transferred} instances transferred)"
                if cancelled
                else f"the PACS cancelled the request ({text})"
            )
        elif status in TRANSIENT_STATUSES:
            attempt.reason = f"the PACS is out of resources ({text})"
            attempt.transient = True
        elif category(status) == "Failure":
            attempt.reason = (
                f"the PACS refused it ({text}); the UID may be unknown to the PACS or the move destination "
                "unknown or unreachable from it"
                if self.service == MOVE
                else f"the PACS refused it ({text}); the UID may be unknown to the PACS"
            )
        elif attempt.failed:
            detail = f"{attempt.failed} of {attempt.failed + transferred} sub-operations failed"
            if attempt.failed_sop_uids:
                shown = ", ".join(attempt.failed_sop_uids[:5])
                more = len(attempt.failed_sop_uids) - 5
                detail += f" (SOP instances {shown}{f' and {more} more' if more > 0 else ''})"
            attempt.reason = f"{detail}; final {text}"
        elif transferred == 0:
            attempt.reason = f"the PACS answered {text} but transferred no instance"
        elif attempt.expected is not None and transferred < attempt.expected:
            attempt.reason = f"only {transferred} of {attempt.expected} expected instances were transferred"
        else:
            attempt.status = COMPLETE
            attempt.reason = ""

    def _cross_check(self, item: RetrieveItem, attempt: Attempt) -> None:
        assert self.arrivals is not None
        held = self.arrivals.held(item)
        if held is None:
            return
        # instances announced as transferred must be on disk (late arrivals get a short grace)
        need = attempt.completed + attempt.warning
        if attempt.expected is not None:
            need = max(need, attempt.expected if attempt.status == COMPLETE else 0)
        deadline = time.monotonic() + self.options.arrival_grace
        while held[0] < need and time.monotonic() < deadline:
            time.sleep(0.05)
            held = self.arrivals.held(item) or held
        attempt.received, attempt.bytes = held
        if attempt.status == COMPLETE and held[0] < need:
            attempt.status = FAILED
            attempt.reason = (
                f"the PACS reported {need} instances sent but only {held[0]} arrived at our receiver "
                f"({self.destination_text})"
            )


def _counts(status_ds: Dataset) -> dict[str, int | None]:
    def get(keyword: str) -> int | None:
        value = getattr(status_ds, keyword, None)
        try:
            return None if value is None or value == "" else int(value)
        except (TypeError, ValueError):
            return None

    return {
        "remaining": get("NumberOfRemainingSuboperations"),
        "completed": get("NumberOfCompletedSuboperations"),
        "failed": get("NumberOfFailedSuboperations"),
        "warning": get("NumberOfWarningSuboperations"),
    }
