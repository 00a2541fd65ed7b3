"""C-MOVE and C-GET that finish, verify completeness, respect the PACS and resume.

The unit of work is a :class:`RetrieveItem`: one UID at PATIENT, STUDY, SERIES or IMAGE level (a PatientID
at PATIENT level), optionally with the number of instances it should have (from a C-FIND's
``NumberOf*RelatedInstances``). :func:`retrieve` skips what a previous report or our receiver says is
complete, then sends one request per item over up to ``parallel`` associations, judges every request from
its sub-operation counts and what arrived, retries transient failures with backoff and reports every
attempt.

Rooms: :mod:`.items`, :mod:`.results`, :mod:`.destinations`, :mod:`.contexts`, :mod:`.options`,
:mod:`.planning` (resume), :mod:`.request` (one request and its judgement), :mod:`.retry` (classification
and retries of one item), :mod:`.engine` (threads and associations). The names below are the public API.
"""

from __future__ import annotations

from airflow_dicom.dimse.retrieve.contexts import GET_IMAGE_SOP_CLASSES, GET_OTHER_SOP_CLASSES, get_contexts
from airflow_dicom.dimse.retrieve.destinations import ArrivalCheck, MoveDestination
from airflow_dicom.dimse.retrieve.engine import Retriever, retrieve
from airflow_dicom.dimse.retrieve.items import (
    GET,
    LEVEL_KEY,
    MOVE,
    RetrieveItem,
    make_items,
    normalise_level,
    parse_uid_list,
)
from airflow_dicom.dimse.retrieve.options import RetrieveOptions
from airflow_dicom.dimse.retrieve.planning import plan_retrieval
from airflow_dicom.dimse.retrieve.request import TRANSIENT_STATUSES
from airflow_dicom.dimse.retrieve.results import (
    COMPLETE,
    FAILED,
    NOT_STARTED,
    SKIPPED,
    Attempt,
    RetrieveResult,
)

__all__ = [
    "COMPLETE",
    "FAILED",
    "GET",
    "GET_IMAGE_SOP_CLASSES",
    "GET_OTHER_SOP_CLASSES",
    "LEVEL_KEY",
    "MOVE",
    "NOT_STARTED",
    "SKIPPED",
    "TRANSIENT_STATUSES",
    "ArrivalCheck",
    "Attempt",
    "MoveDestination",
    "RetrieveItem",
    "RetrieveOptions",
    "RetrieveResult",
    "Retriever",
    "get_contexts",
    "make_items",
    "normalise_level",
    "parse_uid_list",
    "plan_retrieval",
    "retrieve",
]
