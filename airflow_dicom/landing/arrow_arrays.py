"""Python values -> Arrow arrays of the find table's types, without pyarrow's Python-object conversion.

``pyarrow.array()`` on Python objects imports pandas the first time (pyarrow checks every input for pandas
types): measured +54 MB of RSS and ~0.4 s for a command that never needs pandas. The find table has few
types (string, date32, time64[us], timestamp[us], int64, float64 and lists of those); their buffers are
built here and handed to ``pyarrow.Array.from_buffers``, which converts nothing. Nulls are ``None``.
``tests/unit/test_arrow_arrays.py`` checks every type against ``pyarrow.array``.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from datetime import date, datetime, time
from typing import Any

import pyarrow as pa

_EPOCH_DAY = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1)


def _validity(values: Sequence[Any]) -> tuple[pa.Buffer | None, int]:
    """The validity bitmap (None when nothing is null) and the null count."""
    nulls = [i for i, v in enumerate(values) if v is None]
    if not nulls:
        return None, 0
    bits = bytearray(b"\xff" * ((len(values) + 7) // 8))
    for i in nulls:
        bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
    return pa.py_buffer(bytes(bits)), len(nulls)


def _date(value: date) -> int:
    return value.toordinal() - _EPOCH_DAY


def _time(value: time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def _timestamp(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


#: primitive Arrow type id -> (array typecode, Python value -> stored number)
_PRIMITIVES: dict[Any, tuple[str, Any]] = {
    pa.int64(): ("q", int),
    pa.float64(): ("d", float),
    pa.date32(): ("i", _date),
    pa.time64("us"): ("q", _time),
    pa.timestamp("us"): ("q", _timestamp),
}


def _strings(values: Sequence[str | None]) -> pa.Array:
    validity, nulls = _validity(values)
    encoded = [b"" if v is None else v.encode("utf-8") for v in values]
    offsets = array("i", [0])
    total = 0
    for item in encoded:
        total += len(item)
        offsets.append(total)
    if total >= 2**31:
        raise OverflowError("a batch of more than 2 GiB of text")
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(pa.string(), len(values), [validity, pa.py_buffer(offsets), data], nulls)


def to_array(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """``pyarrow.array(values, type_)`` for the find table's types, built from buffers.

    :param values: Python values of the type (``str``, ``date``, ``time``, ``datetime``, ``int``,
        ``float``, or lists of those for a list type); ``None`` for nulls.
    :param type_: one of the types :func:`airflow_dicom.landing.table.arrow_type` gives.
    :raises TypeError: a type this module does not build.
    """
    if pa.types.is_string(type_):
        return _strings(values)
    if pa.types.is_list(type_):
        validity, nulls = _validity(values)
        offsets = array("i", [0])
        flat: list[Any] = []
        for item in values:
            if item is not None:
                flat.extend(item)
            offsets.append(len(flat))
        child = to_array(flat, type_.value_type)
        return pa.Array.from_buffers(type_, len(values), [validity, pa.py_buffer(offsets)], nulls, 0, [child])
    spec = _PRIMITIVES.get(type_)
    if spec is None:
        raise TypeError(f"no buffer builder for Arrow type {type_}")
    typecode, store = spec
    validity, nulls = _validity(values)
    data = array(typecode, [0 if v is None else store(v) for v in values])
    return pa.Array.from_buffers(type_, len(values), [validity, pa.py_buffer(data)], nulls)


def constant(value: Any, length: int, type_: pa.DataType) -> pa.Array:
    """An array of ``length`` times ``value`` (or nulls).

    :param value: the value (``None`` for nulls).
    :param length: the length.
    :param type_: its type.
    """
    return to_array([value] * length, type_)
