"""Date and time ranges of C-FIND matching, and how a truncated range is halved.

Time ranges use open ends for the first and last piece of a day (``-115959.999999``, ``12-``) and the
shortest form of each lower bound (``12`` rather than ``120000``): PACS that compare TM values as strings
(Orthanc does) then also place empty, ``HHMM`` and fractional times in exactly one piece.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from airflow_dicom.dimse.errors import InvalidRequestError


@dataclass(frozen=True)
class DateRange:
    """An inclusive range of study dates.

    :param first: the first day.
    :param last: the last day (inclusive, like a DICOM range).
    """

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise InvalidRequestError(f"study date range ends ({self.last}) before it starts ({self.first})")

    @property
    def days(self) -> int:
        """Number of days in the range."""
        return (self.last - self.first).days + 1

    def each_day(self) -> list[date]:
        """Every day of the range."""
        return [self.first + timedelta(days=n) for n in range(self.days)]

    def dicom(self) -> str:
        """The DICOM DA range ``YYYYMMDD-YYYYMMDD`` (a single date for a one-day range)."""
        if self.first == self.last:
            return self.first.strftime("%Y%m%d")
        return f"{self.first:%Y%m%d}-{self.last:%Y%m%d}"

    def halves(self) -> tuple[DateRange, DateRange]:
        """Two ranges covering this one (needs at least two days)."""
        middle = self.first + timedelta(days=(self.days - 1) // 2)
        return DateRange(self.first, middle), DateRange(middle + timedelta(days=1), self.last)

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}..{self.last}"


_DAY_SECONDS = 86400


def _hhmmss(seconds: int) -> str:
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"


def _shortest_tm(seconds: int) -> str:
    """``120000`` -> ``12``, ``123000`` -> ``1230``: sorts before any form of a value in that second."""
    text = _hhmmss(seconds)
    while len(text) > 2 and text.endswith("00"):
        text = text[:-2]
    return text


@dataclass(frozen=True)
class TimeRange:
    """An inclusive range of whole seconds within one day (``0`` to ``86399``).

    :param first: the first second.
    :param last: the last second (inclusive; the range covers its fractions too).
    """

    first: int = 0
    last: int = _DAY_SECONDS - 1

    @property
    def whole_day(self) -> bool:
        """True when the range is the whole day (no StudyTime key needed)."""
        return self.first == 0 and self.last == _DAY_SECONDS - 1

    def dicom(self) -> str:
        """The DICOM TM range; open at the day's ends so empty and odd-format times are included."""
        lower = "" if self.first == 0 else _shortest_tm(self.first)
        upper = "" if self.last == _DAY_SECONDS - 1 else f"{_hhmmss(self.last)}.999999"
        return f"{lower}-{upper}"

    def halves(self) -> tuple[TimeRange, TimeRange]:
        """Two ranges covering this one (needs at least two seconds)."""
        middle = self.first + (self.last - self.first) // 2
        return TimeRange(self.first, middle), TimeRange(middle + 1, self.last)

    def __str__(self) -> str:
        def clock(s: int) -> str:
            return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"

        return f"{clock(self.first)}-{clock(self.last)}"
