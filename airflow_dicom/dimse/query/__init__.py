"""C-FIND with full recall: keys, date/time ranges, the request, the walk that splits on truncation.

Rooms: :mod:`.keys` (levels, attributes, validation), :mod:`.ranges` (date and time ranges),
:mod:`.request` (:func:`build_query`, :class:`FindQuery`), :mod:`.walk` (:func:`find`, the splitting walk).
The names below are the public API of C-FIND.
"""

from __future__ import annotations

from airflow_dicom.dimse.errors import FindTruncatedError
from airflow_dicom.dimse.query.keys import (
    DEFAULT_RETURN_KEYS,
    LEVELS,
    UNIQUE_KEY,
    key_level,
    multi_values,
    validate_keyword,
)
from airflow_dicom.dimse.query.ranges import DateRange, TimeRange
from airflow_dicom.dimse.query.request import FindQuery, build_query
from airflow_dicom.dimse.query.walk import FindSession, FindStats, find, find_all

__all__ = [
    "DEFAULT_RETURN_KEYS",
    "LEVELS",
    "UNIQUE_KEY",
    "DateRange",
    "FindQuery",
    "FindSession",
    "FindStats",
    "FindTruncatedError",
    "TimeRange",
    "build_query",
    "find",
    "find_all",
    "key_level",
    "multi_values",
    "validate_keyword",
]
