"""What to retrieve: :class:`RetrieveItem` (one UID at one level, optionally with its instance count).

A PATIENT-level item is a PatientID; every other level a UID, validated against the DICOM UID grammar before
anything is sent. Items are identified by ``(level, uid)`` in reports.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.query.keys import LEVELS, UNIQUE_KEY
from airflow_dicom.dimse.storage_layout import is_valid_uid

#: the identifying attribute of each level (the same table C-FIND deduplicates on)
LEVEL_KEY = UNIQUE_KEY
MOVE = "C-MOVE"
GET = "C-GET"


def normalise_level(level: Any) -> str:
    """``"study"`` -> ``"STUDY"``; raise for anything that is not a retrieve level.

    :param level: PATIENT, STUDY, SERIES or IMAGE (any case).
    :raises InvalidRequestError: unknown level.
    """
    text = str(level or "").strip().upper()
    if text == "INSTANCE":
        text = "IMAGE"
    if text not in LEVELS:
        raise InvalidRequestError(f"retrieve level {level!r} is not one of {', '.join(LEVELS)}")
    return text


def _check_uid(value: Any, what: str) -> str:
    text = str(value).strip().rstrip("\0") if value is not None else ""
    if not is_valid_uid(text):
        raise InvalidRequestError(
            f"{what} {text[:80]!r} is not a DICOM UID (digits and dots, at most 64 characters)"
        )
    return text


@dataclass(frozen=True)
class RetrieveItem:
    """One thing to retrieve.

    :param level: PATIENT, STUDY, SERIES or IMAGE.
    :param uid: the level's identifier (PatientID at PATIENT level).
    :param study_uid: the parent study (sent at SERIES and IMAGE level when known; needed to cross-check).
    :param series_uid: the parent series (sent at IMAGE level when known).
    :param expected: how many instances it should have, if known (e.g. NumberOfStudyRelatedInstances).
    """

    level: str
    uid: str
    study_uid: str | None = None
    series_uid: str | None = None
    expected: int | None = None

    def __post_init__(self) -> None:
        level = normalise_level(self.level)
        object.__setattr__(self, "level", level)
        if level == "PATIENT":
            text = str(self.uid or "").strip()
            if not text or len(text) > 64 or "\\" in text:
                raise InvalidRequestError(
                    "a PatientID to retrieve must be 1-64 characters without a backslash"
                )
            object.__setattr__(self, "uid", text)
        else:
            object.__setattr__(self, "uid", _check_uid(self.uid, LEVEL_KEY[level]))
        if level == "STUDY":
            object.__setattr__(self, "study_uid", self.uid)
        elif self.study_uid is not None and str(self.study_uid).strip():
            object.__setattr__(self, "study_uid", _check_uid(self.study_uid, "StudyInstanceUID"))
        else:
            object.__setattr__(self, "study_uid", None)
        if level == "SERIES":
            object.__setattr__(self, "series_uid", self.uid)
        elif self.series_uid is not None and str(self.series_uid).strip():
            object.__setattr__(self, "series_uid", _check_uid(self.series_uid, "SeriesInstanceUID"))
        else:
            object.__setattr__(self, "series_uid", None)
        if self.expected is not None:
            try:
                expected = int(self.expected)
            except (TypeError, ValueError):
                expected = -1
            if expected < 0:
                raise InvalidRequestError(f"expected instance count {self.expected!r} is not a count")
            object.__setattr__(self, "expected", expected)

    @property
    def key(self) -> tuple[str, str]:
        """``(level, uid)``: the identity of the item in reports."""
        return (self.level, self.uid)

    @property
    def label(self) -> str:
        """How the item appears in logs: the UID, or a hash for a PatientID (never PHI)."""
        if self.level == "PATIENT":
            return "patient#" + hashlib.sha256(self.uid.encode("utf-8")).hexdigest()[:10]
        return self.uid

    def identifier(self) -> Dataset:
        """The C-MOVE/C-GET identifier: QueryRetrieveLevel and the unique keys."""
        ds = Dataset()
        ds.QueryRetrieveLevel = self.level
        if self.level == "PATIENT":
            ds.PatientID = self.uid
            return ds
        if self.study_uid:
            ds.StudyInstanceUID = self.study_uid
        if self.level in ("SERIES", "IMAGE") and self.series_uid:
            ds.SeriesInstanceUID = self.series_uid
        if self.level == "IMAGE":
            ds.SOPInstanceUID = self.uid
        return ds


def make_items(
    uids: Iterable[Any], level: str = "STUDY", expected: Mapping[str, int] | None = None
) -> list[RetrieveItem]:
    """Items from UIDs (duplicates dropped, order kept).

    :param uids: UIDs (or PatientIDs at PATIENT level) or ready :class:`RetrieveItem` objects.
    :param level: the level of plain UIDs.
    :param expected: optional ``{uid: instance count}``.
    :raises InvalidRequestError: a UID is malformed (nothing is sent then).
    """
    level = normalise_level(level)
    out: list[RetrieveItem] = []
    seen: set[tuple[str, str]] = set()
    for value in uids:
        if isinstance(value, RetrieveItem):
            item = value
        else:
            uid = str(value).strip()
            item = RetrieveItem(level, uid, expected=(expected or {}).get(uid))
        if item.key not in seen:
            seen.add(item.key)
            out.append(item)
    return out


def parse_uid_list(value: Any) -> list[str]:
    """UIDs from a list, or from a string: JSON/Python list syntax, or separated by commas/whitespace.

    Templated operator arguments arrive as strings unless the DAG renders native objects.

    :param value: the value to parse.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") or text.startswith("("):
            try:
                parsed = json.loads(text)
            except ValueError:
                try:
                    parsed = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise InvalidRequestError(f"cannot read a list of UIDs from {text[:80]!r}") from None
            return parse_uid_list(list(parsed))
        return [p for p in re.split(r"[\s,;]+", text) if p]
    if isinstance(value, (list, tuple, set, frozenset)):
        out: list[str] = []
        for entry in value:
            out.extend(parse_uid_list(entry) if isinstance(entry, (list, tuple, str)) else [str(entry)])
        return out
    return [str(value)]
