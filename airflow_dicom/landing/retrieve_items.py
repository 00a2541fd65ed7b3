"""What to retrieve, read from the Parquet dataset written by ``DicomFindOperator`` (or any similar one).

The dataset has one column per DICOM keyword (``StudyInstanceUID``, ``NumberOfStudyRelatedInstances``...)
and may be hive-partitioned (``StudyDate=2024-01-05/part-0.parquet``); partition columns can be filtered on
like any other column.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow.fs as pafs

from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.retrieve import LEVEL_KEY, RetrieveItem, normalise_level
from airflow_dicom.landing.parquet import read_find_dataset
from airflow_dicom.landing.storage import resolve_target

#: the find result column giving the number of instances of an item, per level
EXPECTED_COLUMN = {
    "PATIENT": "NumberOfPatientRelatedInstances",
    "STUDY": "NumberOfStudyRelatedInstances",
    "SERIES": "NumberOfSeriesRelatedInstances",
    "IMAGE": None,
}


def _read(path: str) -> Any:
    fs, base = resolve_target(path, None)
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        raise InvalidRequestError(
            f"find results {path!r} do not exist: run the find task first or fix the path"
        )
    return read_find_dataset(path)


def _apply_filter(frame: Any, where: Any) -> Any:
    if where is None or where == "" or where == {}:
        return frame
    if isinstance(where, str):
        try:
            return frame.query(where, engine="python")
        except Exception as exc:
            raise InvalidRequestError(
                f"filter {where!r} cannot be applied to the find results: {exc}"
            ) from None
    if isinstance(where, Mapping):
        for column, wanted in where.items():
            if column not in frame.columns:
                raise InvalidRequestError(
                    f"filter column {column!r} is not in the find results "
                    f"(columns: {', '.join(frame.columns)})"
                )
            accepted = {str(w) for w in wanted} if isinstance(wanted, (list, tuple, set)) else {str(wanted)}
            frame = frame[frame[column].map(lambda cell, ok=accepted: _matches(cell, ok))]
        return frame
    raise InvalidRequestError("filter must be a pandas query string or a {column: value(s)} mapping")


def _matches(cell: Any, accepted: set[str]) -> bool:
    """A scalar cell matches if it is accepted; a multi-valued one (ModalitiesInStudy) if any value is."""
    if cell is None:
        return False
    if hasattr(cell, "__len__") and not isinstance(cell, (str, bytes)):
        return any(str(v) in accepted for v in cell)
    return str(cell) in accepted


def items_from_parquet(path: str, level: str = "STUDY", where: Any = None) -> list[RetrieveItem]:
    """One :class:`RetrieveItem` per distinct UID of ``level`` in the find results at ``path``.

    :param path: the dataset directory (or URL), or a single Parquet file.
    :param level: the retrieve level; its UID column must be present.
    :param where: optional filter: a pandas query (``"NumberOfStudyRelatedInstances > 0"``) or
        ``{column: value or [values]}`` (a multi-valued column such as ModalitiesInStudy matches when any
        of its values does).
    :raises InvalidRequestError: missing dataset or columns, bad filter, malformed UIDs.
    """
    level = normalise_level(level)
    frame = _read(str(path))
    key = LEVEL_KEY[level]
    if key not in frame.columns:
        raise InvalidRequestError(
            f"find results {path!r} have no {key} column: they cannot drive a {level}-level retrieval"
        )
    frame = _apply_filter(frame, where)
    expected_col = EXPECTED_COLUMN[level]
    items: list[RetrieveItem] = []
    seen: set[str] = set()
    for row in frame.to_dict("records"):
        uid = row.get(key)
        if uid is None or str(uid).strip() == "" or str(uid) in seen:
            continue
        seen.add(str(uid))
        expected = row.get(expected_col) if expected_col else None
        if expected is not None and (expected != expected or int(expected) < 0):  # NaN / nonsense
            expected = None
        items.append(
            RetrieveItem(
                level,
                str(uid),
                study_uid=_text(row.get("StudyInstanceUID")),
                series_uid=_text(row.get("SeriesInstanceUID")),
                expected=int(expected) if expected is not None else None,
            )
        )
    return items


def _text(value: Any) -> str | None:
    if value is None or value != value:
        return None
    text = str(value).strip()
    return text or None
