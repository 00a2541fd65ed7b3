"""How hard to push the PACS: parallelism, time budget, throttling, priority and the retry policy."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.retry import RetryPolicy


@dataclass(frozen=True)
class RetrieveOptions:
    """How hard to push the PACS.

    :param parallel: associations at once (one thread each); small by default to spare the PACS.
    :param time_budget: seconds one request may take before it is cancelled (C-CANCEL); ``None``: no limit.
    :param max_attempts: tries per item for transient failures (1 = no retry); see :attr:`retry`.
    :param backoff: seconds before the first retry; doubled for each further retry.
    :param max_backoff: longest wait between tries.
    :param pause: seconds to wait between two requests on an association (throttling).
    :param priority: DIMSE priority: 0 medium, 1 high, 2 low (default: low, the PACS serves clinics first).
    :param arrival_grace: seconds to wait for late arrivals at our receiver before calling an item short.
    """

    parallel: int = 2
    time_budget: float | None = None
    max_attempts: int = 3
    backoff: float = 2.0
    max_backoff: float = 60.0
    pause: float = 0.0
    priority: int = 2
    arrival_grace: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= int(self.parallel) <= 32:
            raise InvalidRequestError(f"parallel={self.parallel}: use 1-32 associations")
        self.retry  # noqa: B018 - validates max_attempts, backoff and max_backoff
        if self.time_budget is not None and float(self.time_budget) <= 0:
            raise InvalidRequestError("time_budget must be a positive number of seconds")
        if int(self.priority) not in (0, 1, 2):
            raise InvalidRequestError("priority must be 0 (medium), 1 (high) or 2 (low)")
        for name in ("pause", "arrival_grace"):
            if float(getattr(self, name)) < 0:
                raise InvalidRequestError(f"{name} must not be negative")

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of these options (:mod:`airflow_dicom.dimse.retry`)."""
        return RetryPolicy(int(self.max_attempts), float(self.backoff), float(self.max_backoff))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt``.

        :param attempt: 1 for the first try.
        """
        return self.retry.delay(attempt)
