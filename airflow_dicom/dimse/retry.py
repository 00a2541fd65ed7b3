"""The retry configuration of the DIMSE layer: what is retried, where, how often and how long to wait.

Kept apart from :mod:`airflow_dicom.dimse.errors` (as ADIT keeps its retry configuration apart from its
``DicomError``/``RetriableDicomError``): the errors say *whether* a failure may go away
(:attr:`~airflow_dicom.dimse.errors.DicomError.retryable`), this module says what is done about it.

Decision for every failure::

    failure ──> error.retryable?
                 ├─ yes ──> retried by the operation below, within its policy; when the policy is used up
                 │          the operation reports the failure (an item "failed", a file "failed")
                 └─ no  ──> never retried inside the run: reported at once; an association-level refusal
                            (permanent rejection, no accepted context) also stops a retrieval run

Where retries happen (one layer each, so retries never multiply):

========================  ====================================================  ==========================
operation                 what is retried                                       policy
========================  ====================================================  ==========================
C-MOVE / C-GET            an item whose attempt failed retryably (unreachable,  :class:`RetryPolicy`:
(:mod:`.retrieve`)        aborted, rejected transiently, out of resources, no   3 attempts, 2 s doubling,
                          final response), on a fresh association               at most 60 s
C-STORE (:mod:`.send`)    a file whose response was lost (timeout, abort): re-  ``DEFAULT_STORE_RETRIES``
                          sent at once on a fresh association; an association   (1) re-sends, no wait
                          refused transiently while others are open is deferred
                          and run alone afterwards
C-FIND (:mod:`.query`)    nothing: a partial result is never returned; rerun    Airflow task retries
                          the interval (idempotent landing)
C-ECHO                    nothing                                               Airflow task retries
========================  ====================================================  ==========================

Airflow's own task retries sit above all of this; the example DAG ``dicom_retrieve`` sets ``retries: 0`` on
its retrieval tasks (the items already retry, and a rerun resumes what is missing).
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_dicom.dimse.errors import DicomError, InvalidRequestError

#: re-sends of a file whose C-STORE response was lost (``send(retries=...)``).
DEFAULT_STORE_RETRIES = 1


def is_retryable(error: BaseException) -> bool:
    """True when ``error`` is a DICOM failure that may go away if the request is made again later.

    :param error: any exception (non-DICOM ones are never retryable here).
    """
    return isinstance(error, DicomError) and bool(error.retryable)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a retryable failure is tried again.

    :param attempts: tries in all (1 = no retry).
    :param backoff: seconds before the first retry; doubled for each further retry.
    :param max_backoff: the longest wait between two tries.
    """

    attempts: int = 3
    backoff: float = 2.0
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        if int(self.attempts) < 1:
            raise InvalidRequestError("max_attempts must be at least 1")
        for name in ("backoff", "max_backoff"):
            if float(getattr(self, name)) < 0:
                raise InvalidRequestError(f"{name} must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt``.

        :param attempt: 1 for the first try.
        """
        return min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """True when ``error`` is retryable and attempt number ``attempt`` was not the last allowed.

        :param error: the failure of the attempt.
        :param attempt: 1 for the first try.
        """
        return is_retryable(error) and attempt < self.attempts
