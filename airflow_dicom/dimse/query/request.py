"""A C-FIND request, validated before any network traffic: :func:`build_query` and :class:`FindQuery`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.query.keys import (
    LEVEL_RANK,
    LEVELS,
    MODELS,
    UNIQUE_KEY,
    key_level,
    keyword_vr,
    validate_keyword,
)
from airflow_dicom.dimse.query.ranges import DateRange


def _as_date(value: Any, name: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        for fmt in ("%Y-%m-%d", "%Y%m%d"):
            try:
                return datetime.strptime(text, fmt).date()
            except ValueError:
                continue
    raise InvalidRequestError(f"{name}: {value!r} is not a date (use YYYY-MM-DD or YYYYMMDD)")


def _matching_value(keyword: str, value: Any) -> str:
    """A matching value as the DICOM string sent in the identifier (lists become ``a\\b``)."""
    vr = keyword_vr(keyword)
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime({"DA": "%Y%m%d", "TM": "%H%M%S", "DT": "%Y%m%d%H%M%S"}.get(vr, "%Y%m%d%H%M%S"))
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        parts = [_matching_value(keyword, item) for item in items]
        if any("\\" in part for part in parts):
            raise InvalidRequestError(f"matching key {keyword}: a list item contains a backslash")
        return "\\".join(parts)
    if isinstance(value, bool):
        raise InvalidRequestError(f"matching key {keyword}: {value!r} is not a DICOM value")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    raise InvalidRequestError(f"matching key {keyword}: {type(value).__name__} values are not supported")


@dataclass(frozen=True)
class FindQuery:
    """A validated C-FIND request (build it with :func:`build_query`).

    :param level: ``PATIENT``, ``STUDY``, ``SERIES`` or ``IMAGE``.
    :param matching: keyword -> DICOM matching string (wildcards, ranges, ``a\\b`` lists).
    :param return_keys: keywords to return (validated against the DICOM dictionary).
    :param date_range: the study-date range, or ``None`` for no date constraint.
    :param modalities: the modality filter (``ModalitiesInStudy`` at STUDY level, ``Modality`` below).
    :param model: ``patient`` or ``study`` root; ``None`` chooses per level.
    :param modality_match: ``local`` (match ``ModalitiesInStudy`` here) or ``node`` (send it as a key).
    """

    level: str
    matching: Mapping[str, str] = field(default_factory=dict)
    return_keys: tuple[str, ...] = ()
    date_range: DateRange | None = None
    modalities: tuple[str, ...] = ()
    model: str | None = None
    modality_match: str = "local"

    @property
    def unique_key(self) -> str:
        """The key results are deduplicated on."""
        return UNIQUE_KEY[self.level]

    @property
    def walks_studies(self) -> bool:
        """True when the query goes through a STUDY-level walk (always, except a plain PATIENT query)."""
        if self.level != "PATIENT":
            return True
        return (
            self.date_range is not None
            or bool(self.modalities)
            or any(key_level(k) == "STUDY" for k in self.matching)
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """Every keyword of the result rows, in order: unique keys, StudyDate, matching keys, return keys."""
        if self.level == "PATIENT":
            head = ["PatientID"]
        else:
            head = [UNIQUE_KEY[level] for level in LEVELS[1 : LEVEL_RANK[self.level] + 1]]
        head.append("StudyDate")
        extra = list(self.matching) + list(self.return_keys)
        if self.modalities:
            extra.append("ModalitiesInStudy" if self.level in ("PATIENT", "STUDY") else "Modality")
        if self.level == "PATIENT" and self.walks_studies:
            extra = [k for k in extra if key_level(k) == "PATIENT"]
        return tuple(dict.fromkeys(head + extra))

    def describe(self) -> str:
        """A PHI-free description (level, model, interval, modalities, which keys are matched)."""
        parts = [f"{self.level} level"]
        if self.date_range is not None:
            parts.append(f"study dates {self.date_range}")
        if self.modalities:
            parts.append(f"modalities {'/'.join(self.modalities)}")
        if self.matching:
            parts.append(f"matching on {', '.join(self.matching)}")
        return ", ".join(parts)


def build_query(
    level: str = "STUDY",
    *,
    return_keys: Iterable[str] = (),
    matching: Mapping[str, Any] | None = None,
    date_from: date | datetime | str | None = None,
    date_to: date | datetime | str | None = None,
    modality: str | Iterable[str] | None = None,
    model: str | None = None,
    modality_match: str = "local",
) -> FindQuery:
    """Validate a C-FIND request; nothing touches the network.

    :param level: ``PATIENT``, ``STUDY``, ``SERIES`` or ``IMAGE`` (``INSTANCE`` is accepted for IMAGE).
    :param return_keys: DICOM keywords to return (``PatientName``...); unknown ones raise here.
    :param matching: keyword -> value: strings with wildcards (``DOE*``) or ranges (``20240101-20240131``),
        lists (list matching), dates; ``None``/``""`` means return only.
    :param date_from: first study date (inclusive); ``date_to`` alone means "up to".
    :param date_to: last study date (inclusive); ``date_from`` alone means "up to today".
    :param modality: one modality or several; mapped to ``ModalitiesInStudy`` at STUDY level and used for
        both ``ModalitiesInStudy`` and ``Modality`` below.
    :param model: ``patient`` or ``study`` to override the information model (default: Patient Root for
        a plain PATIENT query, Study Root otherwise).
    :param modality_match: ``local`` (default): request ``ModalitiesInStudy`` and match it here, safe with
        PACS that apply their result limit before matching it (Orthanc 1.10 then truncates silently);
        ``node``: send it as a matching key (less traffic).
    :raises InvalidRequestError: anything invalid, with what to change.
    """
    if not isinstance(level, str) or level.strip().upper() not in (*LEVELS, "INSTANCE"):
        raise InvalidRequestError(f"query level {level!r} is not one of {', '.join(LEVELS)}")
    level = level.strip().upper()
    level = "IMAGE" if level == "INSTANCE" else level
    if isinstance(return_keys, str):
        return_keys = [return_keys]
    keys = tuple(dict.fromkeys(validate_keyword(k, "return keys") for k in return_keys))
    normalized: dict[str, str] = {}
    for keyword, value in (matching or {}).items():
        keyword = validate_keyword(keyword, "matching keys")
        normalized[keyword] = _matching_value(keyword, value)
    first, last = _as_date(date_from, "date_from"), _as_date(date_to, "date_to")
    date_range = None
    if first is not None or last is not None:
        if "StudyDate" in normalized:
            raise InvalidRequestError(
                "give the study dates either as date_from/date_to or as a StudyDate matching key, not both"
            )
        date_range = DateRange(first or date(1900, 1, 1), last or date.today())
    if isinstance(modality, str):
        modality = [m for m in modality.replace(",", "\\").split("\\")]
    modalities = tuple(dict.fromkeys(m.strip().upper() for m in (modality or ()) if m and m.strip()))
    for m in modalities:
        if len(m) > 16 or not m.replace("_", "").isalnum():
            raise InvalidRequestError(f"modality {m!r} is not a DICOM modality code (CT, MR, US...)")
    if modalities and ({"Modality", "ModalitiesInStudy"} & set(normalized)):
        raise InvalidRequestError(
            "give the modality filter either as modality= or as a Modality/ModalitiesInStudy key, not both"
        )
    if model is not None:
        model = str(model).strip().lower().replace("_root", "").replace(" root", "")
        if model not in MODELS:
            raise InvalidRequestError(f"information model {model!r} is not 'patient' or 'study'")
    if modality_match not in ("local", "node"):
        raise InvalidRequestError(f"modality_match must be 'local' or 'node', not {modality_match!r}")
    query = FindQuery(level, normalized, keys, date_range, modalities, model, modality_match)
    if level == "PATIENT" and not query.walks_studies and model == "study":
        raise InvalidRequestError("the Study Root model has no PATIENT level; use model='patient' or None")
    if level in ("PATIENT", "STUDY") and "Modality" in normalized:
        raise InvalidRequestError(
            f"Modality is a series attribute: at {level} level filter with modality= (sent as "
            "ModalitiesInStudy) or a ModalitiesInStudy matching key"
        )
    if level == "PATIENT":
        below = [k for k in normalized if key_level(k) in ("SERIES", "IMAGE")]
        if below:
            raise InvalidRequestError(f"PATIENT-level queries cannot match on {', '.join(below)}")
    return query
