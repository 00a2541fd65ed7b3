"""The identifiers a storage layout needs, read from the received bytes (never the whole data set).

SOP/Study/Series Instance UIDs, SOP Class UID and PatientID come from the top-level elements up to
(0020,000E): little endian data sets are read with the codec's element walker, anything else (and anything
the walker cannot read) with pydicom. Values are not validated here: what becomes a path is validated by
:mod:`airflow_dicom.dimse.storage_layout`.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import UID

from airflow_dicom.dimse.codec import ElementWalker, decode_text
from airflow_dicom.dimse.errors import MalformedDicomError, UnreadableDatasetError

_SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
_SOP_CLASS_UID = Tag(0x0008, 0x0016)
_SOP_INSTANCE_UID = Tag(0x0008, 0x0018)
_PATIENT_ID = Tag(0x0010, 0x0020)
_STUDY_UID = Tag(0x0020, 0x000D)
_SERIES_UID = Tag(0x0020, 0x000E)
_HEADER_TAGS = [
    _SPECIFIC_CHARACTER_SET,
    _SOP_CLASS_UID,
    _SOP_INSTANCE_UID,
    _PATIENT_ID,
    _STUDY_UID,
    _SERIES_UID,
]
_WANTED = frozenset(int(tag) for tag in _HEADER_TAGS)

#: bytes of a deflated dataset inflated to find the header tags
_MAX_INFLATED_HEADER = 4 << 20


@dataclass(frozen=True)
class Identifiers:
    """The header values a layout needs, decoded (``None`` when absent)."""

    sop_uid: str | None
    study_uid: str | None
    series_uid: str | None
    patient_id: str | None
    sop_class_uid: str | None


def _patient_id(raw: bytes, charset: bytes | str | None) -> str:
    """PatientID decoded with the dataset's Specific Character Set (pydicom's decoder)."""
    text = charset.decode("ascii", "replace") if isinstance(charset, bytes) else charset or ""
    text = text.rstrip("\0 ").strip()
    encodings = convert_encodings([c.strip() for c in text.split("\\")] if text else None)
    return decode_bytes(raw, encodings, set()).rstrip("\0 ").strip()


def _from_values(values: dict[int, Any]) -> Identifiers:
    """Identifiers from ``{tag: raw value}`` (bytes from the codec; pydicom values are accepted too)."""

    def text(tag: int) -> str | None:
        value = values.get(tag)
        if value is None:
            return None
        return decode_text(value) if isinstance(value, bytes) else str(value).rstrip("\0 ").strip()

    raw_pid = values.get(int(_PATIENT_ID))
    patient_id = None
    if isinstance(raw_pid, bytes):
        patient_id = _patient_id(raw_pid, values.get(int(_SPECIFIC_CHARACTER_SET)))
    elif raw_pid is not None:
        patient_id = str(raw_pid).rstrip("\0 ").strip()
    return Identifiers(
        sop_uid=text(int(_SOP_INSTANCE_UID)),
        study_uid=text(int(_STUDY_UID)),
        series_uid=text(int(_SERIES_UID)),
        patient_id=patient_id,
        sop_class_uid=text(int(_SOP_CLASS_UID)),
    )


def _stop_after_series(tag: Any, vr: Any, length: int) -> bool:
    return tag > _SERIES_UID


def read_identifiers(data: bytes, transfer_syntax: str) -> Identifiers:
    """Read SOP/Study/Series Instance UIDs, SOP Class UID and PatientID from an encoded dataset.

    Only the top-level elements up to (0020,000E) are parsed, values are not validated by pydicom (the
    caller validates what becomes a path), pixel data is never touched. Little endian data sets are read
    with the codec's element walker; anything it cannot read (and deflated or big endian data) is read by
    pydicom, which decides.

    :param data: the dataset as received (no file meta).
    :param transfer_syntax: the transfer syntax it is encoded in.
    :raises UnreadableDatasetError: the bytes cannot be parsed as a dataset in that syntax.
    """
    ts = UID(transfer_syntax)
    if ts.is_little_endian and not ts.is_deflated:
        try:
            return _read_with_codec(data, ts.is_implicit_VR)
        except (MalformedDicomError, LookupError, ValueError):
            pass  # unusual encoding (or not a dataset): pydicom decides
    return _read_with_pydicom(data, ts)


def _read_with_codec(data: bytes, implicit: bool) -> Identifiers:
    walker = ElementWalker(data, implicit=implicit)
    return _from_values(walker.values(_WANTED, stop=int(_SERIES_UID)))


def _read_with_pydicom(data: bytes, ts: UID) -> Identifiers:
    try:
        if ts.is_deflated:  # the header is near the start: never inflate a whole (possibly hostile) stream
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, _MAX_INFLATED_HEADER)
        ds = read_dataset(
            io.BytesIO(data),
            ts.is_implicit_VR,
            ts.is_little_endian,
            stop_when=_stop_after_series,
            specific_tags=_HEADER_TAGS,
        )
        values = {}
        for tag in _HEADER_TAGS:
            element = ds.get_item(tag)
            if element is not None and element.value is not None:
                values[int(tag)] = element.value
        return _from_values(values)
    except Exception as exc:  # anything pydicom or zlib raise on garbage
        raise UnreadableDatasetError(f"{type(exc).__name__}: {exc}") from exc
