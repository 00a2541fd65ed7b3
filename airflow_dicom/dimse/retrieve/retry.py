"""Retrying one item: how a failed attempt is classified, and when it is tried again.

Classification (:func:`classify`): a DICOM error fails the attempt with its message; it is *transient* when
the error is retryable (:attr:`~airflow_dicom.dimse.errors.DicomError.retryable`); a permanent refusal of
the association itself (rejection, no accepted context) also *stops the run*, since no item can succeed.
Requests that got an answer are judged in :mod:`.request` (out of resources and a missing final response are
transient). The policy (attempts, waits) is the options' :class:`~airflow_dicom.dimse.retry.RetryPolicy`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from airflow_dicom.dimse.errors import AssociationRejectedError, DicomError, NoAcceptedContextError
from airflow_dicom.dimse.retrieve.items import RetrieveItem
from airflow_dicom.dimse.retrieve.results import COMPLETE, Attempt
from airflow_dicom.dimse.retry import RetryPolicy


def stops_the_run(error: DicomError) -> bool:
    """True when ``error`` refuses the association itself for good: no other item can succeed either.

    :param error: the failure of an attempt.
    """
    return not error.retryable and isinstance(error, (AssociationRejectedError, NoAcceptedContextError))


def classify(attempt: Attempt, error: DicomError) -> bool:
    """Record ``error`` as the reason ``attempt`` failed; return True when it stops the run.

    :param attempt: the failed attempt (its reason and ``transient`` flag are set).
    :param error: what failed.
    """
    attempt.reason = str(error)
    attempt.transient = error.retryable
    return stops_the_run(error)


def wait(seconds: float, keep_going: Callable[[], bool]) -> bool:
    """Sleep ``seconds`` unless ``keep_going()`` turns false meanwhile; return ``keep_going()``.

    :param seconds: how long.
    :param keep_going: polled every 0.2 s at most.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not keep_going():
            return False
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return keep_going()


def retry_item(
    item: RetrieveItem,
    attempt_once: Callable[[int], Attempt],
    policy: RetryPolicy,
    *,
    keep_going: Callable[[], bool],
    record: Callable[[Attempt], None],
    pending: Callable[[RetrieveItem], None],
) -> None:
    """Try ``item`` until it is complete, fails permanently or ``policy`` is used up.

    Every attempt is recorded; one that will be retried says so in its reason. When the run stops while
    waiting to retry, the item is handed to ``pending`` (to be tried again when the run resumes).

    :param item: the item.
    :param attempt_once: makes attempt number ``n`` (1 for the first) and returns it.
    :param policy: attempts and waits.
    :param keep_going: false when the run must stop starting requests.
    :param record: receives every attempt.
    :param pending: receives the item when it is left for a later run.
    """
    number = 1
    while True:
        attempt = attempt_once(number)
        if attempt.status != COMPLETE and attempt.transient and number < policy.attempts:
            delay = policy.delay(number)
            attempt.reason += f" (retrying in {delay:g} s)"
            attempt.retrying = True
            record(attempt)
            if not wait(delay, keep_going):
                pending(item)
                return
            number += 1
            continue
        record(attempt)
        return
