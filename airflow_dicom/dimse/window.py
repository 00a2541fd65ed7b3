"""Time windows such as "only between 20:00 and 06:00, Europe/Paris" (no Airflow import).

A window is a daily interval of local wall-clock time in a time zone. ``start < end`` is a same-day window
(``08:00``-``12:00``); ``start > end`` wraps midnight (``20:00``-``06:00``). The start is inclusive and the
end exclusive. Daylight-saving changes are handled by building each boundary in the zone for its own date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_dicom.dimse.errors import InvalidRequestError

_HHMM = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?\s*$")


def parse_clock(value: Any, what: str = "time") -> dtime:
    """A wall-clock time from ``"HH:MM"``, ``"HH:MM:SS"`` or a :class:`datetime.time`.

    :param value: the value to parse.
    :param what: its name, for the error message.
    :raises InvalidRequestError: not a time of day.
    """
    if isinstance(value, dtime):
        return value.replace(tzinfo=None, microsecond=0)
    if isinstance(value, str):
        match = _HHMM.match(value)
        if match:
            return dtime(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))
    raise InvalidRequestError(f"window {what} {value!r} is not a time of day: use 'HH:MM' or 'HH:MM:SS'")


def parse_timezone(value: Any) -> Any:
    """A tzinfo from a zone name (``"Europe/Paris"``, ``"UTC"``), a tzinfo, or ``None`` (UTC).

    :param value: the zone.
    :raises InvalidRequestError: unknown zone name.
    """
    if value is None or value == "":
        return timezone.utc
    if hasattr(value, "utcoffset"):
        return value
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequestError(
            f"unknown time zone {value!r}: use an IANA name such as 'Europe/Paris'"
        ) from None


@dataclass(frozen=True)
class TimeWindow:
    """A daily window of wall-clock time in a time zone.

    :param start: when the window opens each day (inclusive).
    :param end: when it closes (exclusive); before ``start`` means it wraps midnight.
    :param tz: the zone the times are read in.
    """

    start: dtime
    end: dtime
    tz: Any = timezone.utc

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise InvalidRequestError(
                f"window start and end are both {self.start}: an empty window never opens (omit the window "
                "to run at any time)"
            )

    @classmethod
    def parse(cls, window: Any, tz: Any = None) -> TimeWindow | None:
        """Build a window from ``(start, end)`` strings/times, or return ``None`` for no window.

        :param window: ``None``, a :class:`TimeWindow`, or a pair such as ``("20:00", "06:00")``.
        :param tz: zone name or tzinfo (default UTC).
        :raises InvalidRequestError: malformed window.
        """
        if window is None or window == "" or window == []:
            return None
        if isinstance(window, TimeWindow):
            return window
        if isinstance(window, str):
            parts = [p for p in re.split(r"[,\s]+|-(?=\s*\d)", window) if p.strip()]
            window = parts
        if not isinstance(window, (list, tuple)) or len(window) != 2:
            raise InvalidRequestError(
                f"window {window!r} must be a pair (start, end), e.g. ('20:00', '06:00')"
            )
        return cls(parse_clock(window[0], "start"), parse_clock(window[1], "end"), parse_timezone(tz))

    def _at(self, day: Any, clock: dtime) -> datetime:
        return datetime.combine(day, clock).replace(tzinfo=self.tz)

    def _local(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            raise InvalidRequestError("a time window needs timezone-aware datetimes")
        return moment.astimezone(self.tz)

    def is_open(self, moment: datetime) -> bool:
        """True if ``moment`` (timezone-aware) is inside the window.

        :param moment: the instant to test.
        """
        clock = self._local(moment).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= clock < self.end
        return clock >= self.start or clock < self.end

    def next_open(self, moment: datetime) -> datetime:
        """The instant the window opens next after ``moment`` (``moment`` itself if it is open).

        :param moment: a timezone-aware instant.
        """
        if self.is_open(moment):
            return moment
        local = self._local(moment)
        for offset in (0, 1, 2):
            candidate = self._at(local.date() + timedelta(days=offset), self.start)
            if candidate > local:
                return candidate.astimezone(timezone.utc)
        raise AssertionError("unreachable: a window opens every day")  # pragma: no cover

    def closes_at(self, moment: datetime) -> datetime | None:
        """When the window that contains ``moment`` closes (``None`` if it is closed now).

        :param moment: a timezone-aware instant.
        """
        if not self.is_open(moment):
            return None
        local = self._local(moment)
        for offset in (0, 1):
            candidate = self._at(local.date() + timedelta(days=offset), self.end)
            if candidate > local:
                return candidate.astimezone(timezone.utc)
        raise AssertionError("unreachable")  # pragma: no cover

    def describe(self) -> str:
        """``20:00:00-06:00:00 Europe/Paris``."""
        return f"{self.start.isoformat()}-{self.end.isoformat()} {self.tz}"

    def to_list(self) -> list[str]:
        """``[start, end]`` as strings (serialisable)."""
        return [self.start.isoformat(), self.end.isoformat()]
