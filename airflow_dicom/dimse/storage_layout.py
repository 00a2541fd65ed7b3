"""Where a received instance is stored: validated path components and the storage layouts.

Every component of a path under the data directory comes from this module, and every one is either a
UID that matched the DICOM UID grammar or a PatientID encoded so that it cannot contain a separator,
cannot be ``.``/``..`` and cannot collide with another PatientID. :func:`instance_path` additionally
checks that the resolved path is inside the data directory.
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path

from airflow_dicom.dimse.errors import UnsafeIdentifierError

#: PS3.5 9.1: digits and dots, no empty component, at most 64 characters. Leading zeros in a component
#: are tolerated (common in real archives and harmless in a file name).
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*\Z")
MAX_UID_LENGTH = 64
#: PatientID is LO: at most 64 characters.
MAX_PATIENT_ID_LENGTH = 64
#: characters of a PatientID kept as they are in a directory name; everything else is %XX-encoded.
_SAFE_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
#: directory name for an empty PatientID ("_" is never produced by the encoding, so no collision).
EMPTY_PATIENT_ID_DIR = "_"


class Layout(str, enum.Enum):
    """How instances are arranged under the data directory (the layouts of pacsanini's storescp)."""

    #: ``<PatientID>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm``
    PATIENT = "patient"
    #: ``<StudyUID>/<SeriesUID>/<SOPUID>.dcm``
    STUDY = "study"
    #: ``<SOPUID>.dcm``
    FLAT = "flat"

    @classmethod
    def parse(cls, value: str | Layout) -> Layout:
        """The layout named ``value`` (case-insensitive).

        :param value: ``patient``, ``study`` or ``flat`` (or a Layout).
        :raises ValueError: unknown name.
        """
        if isinstance(value, Layout):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown storage layout {value!r}: use one of {names}") from None


def is_valid_uid(value: str) -> bool:
    """True if ``value`` is a UID safe for a file name: digits and dots, no empty part, <= 64 chars.

    :param value: the UID as decoded (padding already stripped).
    """
    return 0 < len(value) <= MAX_UID_LENGTH and _UID_RE.match(value) is not None


def checked_uid(field: str, value: str | None) -> str:
    """Return ``value`` if it is a valid UID, else raise.

    :param field: attribute keyword for the message.
    :param value: the UID.
    :raises UnsafeIdentifierError: missing, too long or not digits-and-dots.
    """
    if value is None or value == "":
        raise UnsafeIdentifierError(field, "is missing or empty")
    if len(value) > MAX_UID_LENGTH:
        raise UnsafeIdentifierError(field, f"is {len(value)} characters long (at most {MAX_UID_LENGTH})")
    if _UID_RE.match(value) is None:
        raise UnsafeIdentifierError(field, "is not a UID (only digits and single dots are allowed)")
    return value


def patient_dir_name(patient_id: str | None) -> str:
    """A directory name for ``patient_id``: unambiguous, never a path separator, ``.`` or ``..``.

    Letters, digits and ``-`` are kept; every other character is written as ``%XX`` for each byte of
    its UTF-8 encoding (so ``123/45`` becomes ``123%2F45`` and ``..`` becomes ``%2E%2E``). Two
    different PatientIDs always get different names. An empty PatientID becomes ``_``.

    :param patient_id: the PatientID as decoded (padding stripped).
    :raises UnsafeIdentifierError: longer than the 64 characters LO allows.
    """
    if not patient_id:
        return EMPTY_PATIENT_ID_DIR
    if len(patient_id) > MAX_PATIENT_ID_LENGTH:
        raise UnsafeIdentifierError(
            "PatientID", f"is {len(patient_id)} characters long (at most {MAX_PATIENT_ID_LENGTH})"
        )
    out: list[str] = []
    for char in patient_id:
        if char in _SAFE_ID_CHARS:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def relative_instance_path(
    layout: Layout,
    *,
    sop_uid: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str | None = None,
) -> str:
    """The instance's path relative to the data directory (``/``-separated), every part validated.

    :param layout: the storage layout.
    :param sop_uid: SOPInstanceUID.
    :param study_uid: StudyInstanceUID (needed by PATIENT and STUDY).
    :param series_uid: SeriesInstanceUID (needed by PATIENT and STUDY).
    :param patient_id: PatientID (needed by PATIENT).
    :raises UnsafeIdentifierError: an identifier the layout needs is missing or unsafe.
    """
    name = checked_uid("SOPInstanceUID", sop_uid) + ".dcm"
    if layout is Layout.FLAT:
        return name
    parts = [checked_uid("StudyInstanceUID", study_uid), checked_uid("SeriesInstanceUID", series_uid), name]
    if layout is Layout.PATIENT:
        parts.insert(0, patient_dir_name(patient_id))
    return "/".join(parts)


def resolve_inside(data_dir: Path, relative: str) -> Path:
    """``data_dir / relative``, refusing anything that would not be strictly inside ``data_dir``.

    A second line of defence after the component checks (it also catches a component that is a
    symbolic link pointing elsewhere).

    :param data_dir: the absolute, resolved data directory.
    :param relative: a ``/``-separated relative path.
    :raises UnsafeIdentifierError: the path escapes the data directory.
    """
    if relative.startswith("/") or any(p in ("", ".", "..") for p in relative.split("/")):
        raise UnsafeIdentifierError("path", "has an empty, '.' or '..' component")
    target = data_dir.joinpath(*relative.split("/"))
    parent = os.path.realpath(target.parent)
    root = str(data_dir)
    if parent != root and not parent.startswith(root + os.sep):
        raise UnsafeIdentifierError("path", "resolves outside the data directory")
    return target
