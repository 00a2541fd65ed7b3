"""C-FIND keys: levels, which attributes belong to which level, validation, default return keys."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from airflow_dicom.dimse.errors import InvalidRequestError

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

#: The unique key of each level (what results are deduplicated on).
UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}

#: Information models by short name.
MODELS = {
    "patient": PatientRootQueryRetrieveInformationModelFind,
    "study": StudyRootQueryRetrieveInformationModelFind,
}
MODEL_NAMES = {"patient": "Patient Root", "study": "Study Root"}

#: Patient-level attributes (PS3.4 C.6.1.1.2 and common optional keys).
PATIENT_KEYS = frozenset(
    {
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
        "EthnicGroup",
        "PatientComments",
        "PatientSpeciesDescription",
        "PatientBreedDescription",
        "ResponsiblePerson",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    }
)
#: Study-level attributes (PS3.4 C.6.1.1.3 / C.6.2.1.2).
STUDY_KEYS = frozenset(
    {
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyInstanceUID",
        "ReferringPhysicianName",
        "StudyDescription",
        "ProcedureCodeSequence",
        "NameOfPhysiciansReadingStudy",
        "AdmittingDiagnosesDescription",
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "AnatomicRegionsInStudyCodeSequence",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "Occupation",
        "AdditionalPatientHistory",
        "OtherStudyNumbers",
        "InstitutionName",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "IssuerOfAccessionNumberSequence",
    }
)
#: Series-level attributes (PS3.4 C.6.1.1.4 and common optional keys).
SERIES_KEYS = frozenset(
    {
        "Modality",
        "SeriesNumber",
        "SeriesInstanceUID",
        "SeriesDescription",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "Laterality",
        "ProtocolName",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "RequestAttributesSequence",
        "Manufacturer",
        "StationName",
        "NumberOfSeriesRelatedInstances",
    }
)
LEVEL_RANK = {level: rank for rank, level in enumerate(LEVELS)}

#: Return keys used when none are given (PatientName and friends are asked for explicitly only).
DEFAULT_RETURN_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientName", "PatientBirthDate", "PatientSex"),
    "STUDY": (
        "PatientID",
        "PatientName",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "SERIES": (
        "PatientID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ),
    "IMAGE": ("PatientID", "Modality", "SOPClassUID", "InstanceNumber"),
}

#: Value representations that cannot be requested or matched (no sensible C-FIND use or landing).
_UNSUPPORTED_VRS = frozenset({"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"})


def key_level(keyword: str) -> str:
    """The query level an attribute belongs to (``IMAGE`` for anything not patient, study or series).

    :param keyword: a DICOM keyword.
    """
    if keyword in PATIENT_KEYS:
        return "PATIENT"
    if keyword in STUDY_KEYS:
        return "STUDY"
    if keyword in SERIES_KEYS:
        return "SERIES"
    return "IMAGE"


def keyword_vr(keyword: str) -> str:
    """The dictionary VR of a keyword (``PN``, ``DA``...).

    :param keyword: a DICOM keyword known to pydicom.
    """
    return str(dictionary_VR(keyword_dict[keyword]))


def validate_keyword(keyword: Any, where: str) -> str:
    """Return ``keyword`` if it is a DICOM keyword usable in C-FIND, else raise :class:`InvalidRequestError`.

    :param keyword: the candidate keyword.
    :param where: where it was given (``return keys``, ``matching keys``), for the message.
    """
    if not isinstance(keyword, str) or not keyword.strip():
        raise InvalidRequestError(f"{where}: {keyword!r} is not a DICOM keyword")
    keyword = keyword.strip()
    if keyword not in keyword_dict:
        close = difflib.get_close_matches(keyword, keyword_dict.keys(), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise InvalidRequestError(
            f"{where}: {keyword!r} is not a keyword of the DICOM dictionary{hint}; "
            "use DICOM keywords such as PatientID, StudyDate, ModalitiesInStudy"
        )
    vr = keyword_vr(keyword)
    if vr in _UNSUPPORTED_VRS:
        raise InvalidRequestError(
            f"{where}: {keyword} has VR {vr}; sequences and binary attributes are not supported in C-FIND "
            "queries here"
        )
    if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
        raise InvalidRequestError(f"{where}: {keyword} is set by the query itself; remove it")
    return keyword


def multi_values(value: Any) -> list[str]:
    """The values of a (possibly multi-valued) element value as strings (``None``/empty -> ``[]``).

    :param value: a pydicom element value: a str (``a\\b`` is split), a MultiValue, a list or None.
    """
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        return [part for part in text.split("\\") if part] if text else []
    if isinstance(value, Iterable):
        return [str(v) for v in value if v is not None and str(v) != ""]
    return [str(value)]
