"""C-FIND results -> a pyarrow table typed by VR (no Airflow import).

Types come from the DICOM dictionary (VR and VM of each keyword), never from the data, so every run
produces the same schema for the same keys:

=================  ==========================================================================
VR                 Arrow type
=================  ==========================================================================
DA                 ``date32`` (``YYYYMMDD``; the old ``YYYY.MM.DD`` form is read too)
TM                 ``time64[us]`` (``HH``, ``HHMM``, ``HHMMSS``, fractions, ``HH:MM:SS``)
DT                 ``timestamp[us]`` (naive; a ``+HHMM`` offset is applied, i.e. converted to UTC)
IS, US, UL, SS...  ``int64``
DS, FL, FD         ``float64``
PN                 ``string`` (the whole name, ``Family^Given^...`` with ``=`` groups)
anything else      ``string``
VM other than 1    ``list<...>`` of the above (e.g. ``ModalitiesInStudy``)
=================  ==========================================================================

Missing, empty and unparsable values become nulls (unparsable ones are counted and logged by keyword,
never by value). Extra columns: ``source_node``, ``query_level``, ``interval_start``, ``interval_end``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pyarrow as pa
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_dict
from pydicom.dataset import Dataset

from airflow_dicom.dimse.query import DateRange
from airflow_dicom.dimse.query.match import Match, element_items, key_specs
from airflow_dicom.landing.arrow_arrays import constant, to_array

log = logging.getLogger(__name__)

#: Columns added to every table, after the DICOM keywords.
EXTRA_COLUMNS = ("source_node", "query_level", "interval_start", "interval_end")

_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})


def parse_da(text: str) -> date | None:
    """A DICOM DA value as a date (``None`` if it is not one).

    :param text: ``YYYYMMDD`` (or the pre-1993 ``YYYY.MM.DD``).
    """
    text = text.strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")


def parse_tm(text: str) -> time | None:
    """A DICOM TM value as a time (``None`` if it is not one).

    :param text: ``HH``, ``HHMM``, ``HHMMSS``, ``HHMMSS.FFFFFF`` or the old ``HH:MM:SS`` form.
    """
    match = _TM.match(text.strip())
    if not match:
        return None
    hour, minute, second, fraction = match.groups()
    try:
        return time(
            int(hour),
            int(minute or 0),
            min(int(second or 0), 59),  # a leap second 60 is clamped
            int((fraction or "0").ljust(6, "0")),
        )
    except ValueError:
        return None


_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")


def parse_dt(text: str) -> datetime | None:
    """A DICOM DT value as a naive datetime (UTC when the value carries an offset; ``None`` if invalid).

    :param text: ``YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]``.
    """
    match = _DT.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        value = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            min(int(second or 0), 59),
            int((fraction or "0").ljust(6, "0")),
        )
    except ValueError:
        return None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:]))
        value = value.replace(tzinfo=timezone(sign * delta)).astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None


def _float(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _vr(keyword: str) -> str:
    return str(dictionary_VR(keyword_dict[keyword]))


def _is_multi(keyword: str) -> bool:
    return str(dictionary_VM(keyword_dict[keyword])).strip() != "1"


def arrow_type(keyword: str) -> pa.DataType:
    """The Arrow type of a DICOM keyword's column (see the module docstring).

    :param keyword: a DICOM keyword.
    """
    vr = _vr(keyword)
    if vr == "DA":
        base: pa.DataType = pa.date32()
    elif vr == "TM":
        base = pa.time64("us")
    elif vr == "DT":
        base = pa.timestamp("us")
    elif vr in _INT_VRS:
        base = pa.int64()
    elif vr in _FLOAT_VRS:
        base = pa.float64()
    else:
        base = pa.string()
    return pa.list_(base) if _is_multi(keyword) else base


def _converter(keyword: str) -> Callable[[str], Any]:
    vr = _vr(keyword)
    if vr == "DA":
        return parse_da
    if vr == "TM":
        return parse_tm
    if vr == "DT":
        return parse_dt
    if vr in _INT_VRS:
        return _int
    if vr in _FLOAT_VRS:
        return _float
    return lambda text: text


def schema_for(columns: Sequence[str]) -> pa.Schema:
    """The table schema for ``columns`` (DICOM keywords) plus :data:`EXTRA_COLUMNS`.

    :param columns: DICOM keywords, in order.
    """
    fields = [pa.field(keyword, arrow_type(keyword)) for keyword in columns]
    fields += [
        pa.field("source_node", pa.string()),
        pa.field("query_level", pa.string()),
        pa.field("interval_start", pa.date32()),
        pa.field("interval_end", pa.date32()),
    ]
    return pa.schema(fields)


def _items(row: Match | Dataset | Mapping[str, Any], keyword: str) -> list[Any]:
    """The values of ``keyword`` in a row (a match, a pydicom Dataset or a keyword -> value mapping)."""
    if isinstance(row, Match):
        return row.items(keyword)
    if isinstance(row, Dataset):
        return element_items(row[keyword].value) if keyword in row else []
    return element_items(row.get(keyword))


#: rows typed into one Arrow record batch at a time (the Python values of a batch are then let go)
BATCH_ROWS = 8192


class TableBuilder:
    """Accumulate C-FIND rows into typed columns; :meth:`table` gives the pyarrow table.

    Rows are typed into Arrow record batches of :data:`BATCH_ROWS` as they come (a few hundred bytes per
    row instead of a Python object per value).

    :param columns: the DICOM keywords of the table (e.g. :attr:`FindQuery.columns`).
    :param source_node: the node the rows came from (``AET@host:port`` or the connection id).
    :param level: the query level.
    :param interval: the queried study-date interval (or ``None``).
    :param batch_rows: rows per record batch.
    """

    def __init__(
        self,
        columns: Sequence[str],
        *,
        source_node: str,
        level: str,
        interval: DateRange | None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.columns = tuple(columns)
        self.schema = schema_for(self.columns)
        self.source_node = source_node
        self.level = level
        self.interval = interval
        self._multi = {k: _is_multi(k) for k in self.columns}
        self._convert = {k: _converter(k) for k in self.columns}
        self._keys = key_specs(self.columns)
        self._data: dict[str, list[Any]] = {k: [] for k in self.columns}
        self._batches: list[pa.RecordBatch] = []
        self._pending = 0
        self.batch_rows = max(1, int(batch_rows))
        self.invalid: Counter[str] = Counter()
        self.rows = 0

    def _value(self, keyword: str, items: list[Any]) -> Any:
        convert = self._convert[keyword]
        out = []
        for item in items:
            value = convert(item) if isinstance(item, str) else item
            if value is None:
                self.invalid[keyword] += 1
                continue
            out.append(value)
        if self._multi[keyword]:
            return out or None
        if len(items) > 1:
            self.invalid[keyword] += 1  # several values where the dictionary allows one: keep the first
        return out[0] if out else None

    def add(self, row: Match | Dataset | Mapping[str, Any]) -> None:
        """Add one result row (a :class:`Match`, a pydicom Dataset or a keyword -> value mapping).

        :param row: the row.
        """
        if isinstance(row, Match):
            for keyword, items in zip(self.columns, row.items_of(self._keys), strict=True):
                self._data[keyword].append(self._value(keyword, items))
        else:
            for keyword in self.columns:
                self._data[keyword].append(self._value(keyword, _items(row, keyword)))
        self.rows += 1
        self._pending += 1
        if self._pending >= self.batch_rows:
            self._flush()

    def extend(self, rows: Iterable[Match | Dataset | Mapping[str, Any]]) -> TableBuilder:
        """Add every row of ``rows``; return self.

        :param rows: result rows.
        """
        for row in rows:
            self.add(row)
        return self

    def _flush(self) -> None:
        """Type the rows added since the last batch into a record batch."""
        n = self._pending
        if not n:
            return
        arrays = [to_array(self._data[k], self.schema.field(k).type) for k in self.columns]
        first = self.interval.first if self.interval else None
        last = self.interval.last if self.interval else None
        arrays += [
            constant(self.source_node, n, pa.string()),
            constant(self.level, n, pa.string()),
            constant(first, n, pa.date32()),
            constant(last, n, pa.date32()),
        ]
        self._batches.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self._data = {k: [] for k in self.columns}
        self._pending = 0

    def table(self) -> pa.Table:
        """The typed table (logs how many values per keyword could not be parsed, without the values)."""
        if self.invalid:
            log.warning(
                "values that are not valid for their VR were landed as nulls: %s",
                ", ".join(f"{k}: {n}" for k, n in sorted(self.invalid.items())),
            )
        self._flush()
        return pa.Table.from_batches(self._batches, schema=self.schema)


def to_table(
    rows: Iterable[Dataset | Mapping[str, Any]],
    columns: Sequence[str],
    *,
    source_node: str,
    level: str,
    interval: DateRange | None = None,
) -> pa.Table:
    """Type C-FIND results into a pyarrow table (see the module docstring for the types).

    :param rows: pydicom Datasets (as :func:`airflow_dicom.dimse.query.find` yields) or mappings.
    :param columns: the DICOM keywords to keep, in order.
    :param source_node: the node the rows came from.
    :param level: the query level.
    :param interval: the queried study-date interval.
    """
    return TableBuilder(columns, source_node=source_node, level=level, interval=interval).extend(rows).table()
