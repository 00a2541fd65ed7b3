"""C-MOVE and C-GET that finish, verify completeness, respect the PACS and resume.

The unit of work is a :class:`RetrieveItem`: one UID at PATIENT, STUDY, SERIES or IMAGE level (a PatientID
at PATIENT level), optionally with the number of instances it should have (from a C-FIND's
``NumberOf*RelatedInstances``). :func:`retrieve` sends one request per item, many requests per association,
over up to ``parallel`` associations at once (one per thread; pynetdicom associations are not thread-safe).

For every request it reads the pending and final sub-operation counts and decides:

* **complete** only if the final status is success (or 0xB000 without failed sub-operations), nothing failed,
  at least one instance was transferred, at least as many as expected, and (when our receiver is the
  destination) at least as many arrived as the PACS says it sent;
* **failed** otherwise, with the reason. Transient failures (association rejected transiently, the node
  unreachable or aborting, 0xA700-0xA702 out of resources) are retried with exponential backoff on a fresh
  association; permanent ones (0xC000, unknown destination, ...) are not. A request exceeding its time budget
  is cancelled with C-CANCEL.

Destinations (:class:`MoveDestination`): our receiver embedded for the run (C-MOVE to ourselves), the
long-running receiver service writing to a data directory we can read, or a third node (nothing is started
locally and nothing can be cross-checked). C-GET stores through the receiver's :class:`StoreWriter`, on the
requesting association.

Resume: :func:`plan` skips items already complete per a previous retrieval report or per the receiver's
arrival records, so a rerun fetches only what is missing.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from airflow_dicom.dimse.association import accepted_context, open_association
from airflow_dicom.dimse.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    DicomError,
    InvalidRequestError,
    NoAcceptedContextError,
    NodeUnreachableError,
)
from airflow_dicom.dimse.node import DicomNode, validate_ae_title
from airflow_dicom.dimse.query import LEVELS, UNIQUE_KEY
from airflow_dicom.dimse.status import Status, category, describe_status
from airflow_dicom.dimse.storage_layout import is_valid_uid

log = logging.getLogger(__name__)

#: the identifying attribute of each level (the same table C-FIND deduplicates on)
LEVEL_KEY = UNIQUE_KEY
MOVE = "C-MOVE"
GET = "C-GET"

#: statuses worth retrying: the PACS is (momentarily) out of resources
TRANSIENT_STATUSES = frozenset(
    {Status.OUT_OF_RESOURCES, Status.OUT_OF_RESOURCES_MATCHES, Status.OUT_OF_RESOURCES_SUB_OPERATIONS}
)

COMPLETE = "complete"
FAILED = "failed"
SKIPPED = "skipped"
NOT_STARTED = "not_started"


# ------------------------------------------------------------------------------ items


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
            import ast
            import json

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


# ------------------------------------------------------------------------------ results


@dataclass
class Attempt:
    """The outcome of one request (one row of the retrieval report).

    :param item: what was requested.
    :param service: C-MOVE or C-GET.
    :param attempt: 1 for the first try, 2 for the first retry...
    :param status: ``complete``, ``failed``, ``skipped`` or ``not_started``.
    :param reason: why it failed or was skipped (empty when complete).
    :param dimse_status: the final DIMSE status (None without a response).
    :param expected: instances expected (given, or announced by the PACS in its counts).
    :param completed: completed sub-operations in the final response.
    :param failed: failed sub-operations.
    :param warning: sub-operations with a warning.
    :param received: instances held by our receiver for this item afterwards (None if not ours).
    :param bytes: bytes of those instances (None if not ours).
    :param started: when the request was sent.
    :param finished: when its final response arrived.
    :param node: the PACS.
    :param destination: where the instances were sent.
    :param transient: the failure is worth retrying.
    :param retrying: another attempt follows this one.
    :param failed_sop_uids: the PACS's Failed SOP Instance UID List, if it sent one.
    """

    item: RetrieveItem
    service: str
    attempt: int = 1
    status: str = FAILED
    reason: str = ""
    dimse_status: int | None = None
    expected: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    received: int | None = None
    bytes: int | None = None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished: datetime | None = None
    node: str = ""
    destination: str = ""
    transient: bool = False
    retrying: bool = False
    failed_sop_uids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when complete (or skipped because already complete)."""
        return self.status in (COMPLETE, SKIPPED)

    @property
    def seconds(self) -> float:
        """Duration of the request."""
        end = self.finished or datetime.now(timezone.utc)
        return max(0.0, (end - self.started).total_seconds())

    def row(self, run_id: str | None = None) -> dict[str, Any]:
        """This attempt as a report row (see :mod:`airflow_dicom.landing.report`).

        :param run_id: the Airflow run id (or CLI run label).
        """
        return {
            "uid": self.item.uid,
            "level": self.item.level,
            "study_uid": self.item.study_uid,
            "series_uid": self.item.series_uid,
            "service": self.service,
            "status": self.status,
            "reason": self.reason,
            "dimse_status": self.dimse_status,
            "expected": self.expected,
            "completed": self.completed,
            "failed": self.failed,
            "warning": self.warning,
            "received": self.received,
            "bytes": self.bytes,
            "attempt": self.attempt,
            "started": self.started,
            "finished": self.finished or self.started,
            "seconds": self.seconds,
            "node": self.node,
            "destination": self.destination,
            "run_id": run_id,
        }

    def progress_line(self) -> str:
        """One log line without PHI: item, status, counts, bytes, seconds."""
        counts = f"{self.completed}"
        if self.expected is not None:
            counts += f"/{self.expected}"
        text = (
            f"{self.service} {self.item.level} {self.item.label}: {self.status}, {counts} instances "
            f"({self.failed} failed, {self.warning} warning)"
        )
        if self.received is not None:
            text += f", {self.received} held, {_size(self.bytes or 0)}"
        text += f", {self.seconds:.2f} s"
        if self.attempt > 1:
            text += f", attempt {self.attempt}"
        if self.reason and self.status != COMPLETE:
            text += f": {self.reason}"
        return text


@dataclass
class RetrieveResult:
    """Everything one :func:`retrieve` call did.

    :param attempts: every attempt, in the order they finished (skipped items included).
    :param final: the last attempt per item key, in request order.
    :param interrupted: True when ``should_continue`` stopped the run before every item was tried.
    """

    attempts: list[Attempt] = field(default_factory=list)
    final: dict[tuple[str, str], Attempt] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def complete(self) -> list[Attempt]:
        """Items retrieved completely in this run."""
        return [a for a in self.final.values() if a.status == COMPLETE]

    @property
    def skipped(self) -> list[Attempt]:
        """Items skipped because already complete."""
        return [a for a in self.final.values() if a.status == SKIPPED]

    @property
    def failed(self) -> list[Attempt]:
        """Items whose last attempt failed."""
        return [a for a in self.final.values() if a.status == FAILED]

    @property
    def not_started(self) -> list[Attempt]:
        """Items never tried (the run was interrupted)."""
        return [a for a in self.final.values() if a.status == NOT_STARTED]

    @property
    def ok(self) -> bool:
        """True when every item is complete or skipped."""
        return all(a.ok for a in self.final.values())

    def summary(self) -> dict[str, Any]:
        """Counts and failed UIDs with reasons (JSON-serialisable, no PHI beyond UIDs)."""
        return {
            "requested": len(self.final),
            "complete": len(self.complete),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "not_started": len(self.not_started),
            "instances": sum(a.completed for a in self.complete),
            "bytes": sum(a.bytes or 0 for a in self.complete),
            "failures": {a.item.label: a.reason for a in self.failed},
        }


# ------------------------------------------------------------------------------ destinations


@dataclass
class MoveDestination:
    """Where a C-MOVE sends the instances.

    :param ae_title: the destination AE title the PACS knows.
    :param data_dir: the data directory of *our* receiver (embedded or service); ``None`` for a third node.
    :param port: listen here with an embedded receiver for the run; ``None`` if the receiver runs elsewhere.
    :param host: address the embedded receiver listens on.
    :param layout: storage layout of the embedded receiver.
    """

    ae_title: str
    data_dir: str | Path | None = None
    port: int | None = None
    host: str = "0.0.0.0"
    layout: str = "patient"

    def __post_init__(self) -> None:
        self.ae_title = validate_ae_title(self.ae_title, "move destination AE title")
        if self.port is not None and self.data_dir is None:
            raise InvalidRequestError("an embedded receiver (a receive port) needs a data directory")
        if self.port is not None and not 0 <= int(self.port) <= 65535:
            raise InvalidRequestError(f"receive port {self.port} is outside 0-65535")

    @property
    def kind(self) -> str:
        """``embedded``, ``service`` or ``node``."""
        if self.port is not None:
            return "embedded"
        return "service" if self.data_dir is not None else "node"

    def describe(self) -> str:
        """For messages: ``DEST (embedded receiver on port 11113)``."""
        if self.kind == "embedded":
            return f"{self.ae_title} (embedded receiver on port {self.port})"
        if self.kind == "service":
            return f"{self.ae_title} (receiver service writing to {self.data_dir})"
        return f"{self.ae_title} (third node)"


class ArrivalCheck:
    """What our receiver holds for an item, read from its arrival records under ``data_dir``.

    :param data_dir: the receiver's data directory.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)

    def held(self, item: RetrieveItem) -> tuple[int, int] | None:
        """``(instances, bytes)`` held for ``item``; ``None`` when it cannot be told (PATIENT level, or a
        SERIES/IMAGE item without its study UID).

        :param item: the item.
        """
        from airflow_dicom.dimse.arrivals import study_arrivals

        if item.study_uid is None:
            return None
        state = study_arrivals(self.data_dir, item.study_uid)
        records = list(state.instances.values())
        if item.level == "SERIES":
            records = [r for r in records if r.series_uid == item.uid]
        elif item.level == "IMAGE":
            records = [r for r in records if r.sop_uid == item.uid]
        return len(records), sum(r.bytes for r in records)


# ------------------------------------------------------------------------------ C-GET contexts

#: uncompressed syntaxes, one presentation context each: the acceptor picks one syntax per context, so a
#: shared context would make the PACS convert Implicit VR files to Explicit VR (or the reverse)
_UNCOMPRESSED_FAMILIES = [
    [ExplicitVRLittleEndian],
    [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian],
]
_COMPRESSED_FAMILIES = [
    [RLELossless],
    [JPEGLosslessSV1, JPEGLossless, JPEGLSLossless, JPEGLSNearLossless],
    [JPEG2000Lossless, JPEG2000],
    [JPEGBaseline8Bit, JPEGExtended12Bit],
]
#: image storage SOP classes offered with compressed transfer syntaxes for C-GET
GET_IMAGE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
    "1.2.840.10008.5.1.4.1.1.1.2",  # MG for presentation
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.3.1",  # US multi-frame
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.12.1",  # XA
    "1.2.840.10008.5.1.4.1.1.12.2",  # RF
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic
)
#: non-image storage SOP classes offered uncompressed for C-GET
GET_OTHER_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
)


def get_contexts(
    level: str, sop_classes: Sequence[str] | None = None
) -> tuple[list[Any], list[SCP_SCU_RoleSelectionNegotiation]]:
    """Presentation contexts and SCP role items for a C-GET association (at most 128 contexts).

    :param level: the retrieve level (PATIENT needs the patient root model).
    :param sop_classes: storage SOP classes to accept; default :data:`GET_IMAGE_SOP_CLASSES` (with every
        compressed family) plus :data:`GET_OTHER_SOP_CLASSES` (uncompressed). Instances of other classes
        are reported by the PACS as failed sub-operations.
    """
    model = _model(GET, level)
    contexts: list[Any] = [build_context(model)]
    if sop_classes:
        image = [uid for uid in sop_classes]
        other: list[str] = []
    else:
        image, other = list(GET_IMAGE_SOP_CLASSES), list(GET_OTHER_SOP_CLASSES)
    families = [*_UNCOMPRESSED_FAMILIES, *_COMPRESSED_FAMILIES]
    for uid in image:
        contexts.extend(build_context(uid, list(ts)) for ts in families)
    for uid in other:
        contexts.extend(build_context(uid, list(ts)) for ts in _UNCOMPRESSED_FAMILIES)
    if len(contexts) > 128:
        per_class = len(families)
        raise InvalidRequestError(
            f"C-GET for {len(image)} SOP classes needs {len(contexts)} presentation contexts (at most "
            f"128; each "
            f"class takes {per_class}); give at most {127 // per_class} SOP classes"
        )
    roles = []
    for uid in dict.fromkeys([*image, *other]):
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = uid
        role.scu_role = False
        role.scp_role = True
        roles.append(role)
    return contexts, roles


def _model(service: str, level: str) -> str:
    if service == MOVE:
        return (
            PatientRootQueryRetrieveInformationModelMove
            if level == "PATIENT"
            else StudyRootQueryRetrieveInformationModelMove
        )
    return (
        PatientRootQueryRetrieveInformationModelGet
        if level == "PATIENT"
        else StudyRootQueryRetrieveInformationModelGet
    )


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class RetrieveOptions:
    """How hard to push the PACS.

    :param parallel: associations at once (one thread each); small by default to spare the PACS.
    :param time_budget: seconds one request may take before it is cancelled (C-CANCEL); ``None``: no limit.
    :param max_attempts: tries per item for transient failures (1 = no retry).
    :param backoff: seconds before the first retry; doubled for each further retry.
    :param max_backoff: longest wait between tries.
    :param pause: seconds to wait between two requests on an association (throttling).
    :param priority: DIMSE priority: 0 medium, 1 high, 2 low (default: low, the PACS serves clinics first).
    :param arrival_grace: seconds to wait for late arrivals at our receiver before calling an item short.
    """

    parallel: int = 2
    time_budget: float | None = None
    max_attempts: int = 3
    backoff: float = 2.0
    max_backoff: float = 60.0
    pause: float = 0.0
    priority: int = 2
    arrival_grace: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= int(self.parallel) <= 32:
            raise InvalidRequestError(f"parallel={self.parallel}: use 1-32 associations")
        if int(self.max_attempts) < 1:
            raise InvalidRequestError("max_attempts must be at least 1")
        if self.time_budget is not None and float(self.time_budget) <= 0:
            raise InvalidRequestError("time_budget must be a positive number of seconds")
        if int(self.priority) not in (0, 1, 2):
            raise InvalidRequestError("priority must be 0 (medium), 1 (high) or 2 (low)")
        for name in ("backoff", "max_backoff", "pause", "arrival_grace"):
            if float(getattr(self, name)) < 0:
                raise InvalidRequestError(f"{name} must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt``.

        :param attempt: 1 for the first try.
        """
        return min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))


# ------------------------------------------------------------------------------ planning


def plan(
    items: Sequence[RetrieveItem],
    *,
    completed: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    arrivals: ArrivalCheck | None = None,
) -> tuple[list[RetrieveItem], list[Attempt]]:
    """Split ``items`` into those to request and those already complete (returned as skipped attempts).

    An item is complete when a previous report says so (``completed``: latest report rows per key), or when
    our receiver already holds at least the expected number of its instances.

    :param items: the requested items.
    :param completed: ``{(level, uid): row}`` of items complete in the retrieval report.
    :param arrivals: our receiver's arrival records, when it is the destination.
    """
    todo: list[RetrieveItem] = []
    skipped: list[Attempt] = []
    for item in items:
        row = (completed or {}).get(item.key)
        reason = ""
        held = None
        if row is not None:
            reason = "already complete in the retrieval report"
        elif arrivals is not None and item.expected:
            held = arrivals.held(item)
            if held is not None and held[0] >= item.expected:
                reason = f"all {item.expected} expected instances already received"
        if not reason:
            todo.append(item)
            continue
        now = datetime.now(timezone.utc)
        attempt = Attempt(
            item=item, service="", attempt=0, status=SKIPPED, reason=reason, started=now, finished=now
        )
        if row is not None:
            attempt.service = str(row.get("service") or "")
            attempt.expected = _int_or_none(row.get("expected"))
            attempt.completed = int(_int_or_none(row.get("completed")) or 0)
            attempt.received = _int_or_none(row.get("received"))
            attempt.bytes = _int_or_none(row.get("bytes"))
        elif held is not None:
            attempt.expected = item.expected
            attempt.received, attempt.bytes = held
            attempt.completed = held[0]
        skipped.append(attempt)
    return todo, skipped


def _int_or_none(value: Any) -> int | None:
    try:
        if value is None or value != value:  # NaN from pandas
            return None
        return int(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------ the engine


class _Interrupted(Exception):
    """Raised inside a worker when the run must stop starting requests."""


class Retriever:
    """Runs C-MOVE or C-GET requests for many items over a bounded pool of associations.

    :param node: the PACS.
    :param service: ``C-MOVE`` or ``C-GET``.
    :param destination: for C-MOVE, where the PACS sends the instances.
    :param writer: for C-GET, the receiver :class:`~airflow_dicom.dimse.receiver.StoreWriter` that stores
        the instances arriving on our association.
    :param options: throttling, retries, time budget.
    :param sop_classes: for C-GET, storage SOP classes to accept (see :func:`get_contexts`).
    """

    def __init__(
        self,
        node: DicomNode,
        service: str,
        *,
        destination: MoveDestination | None = None,
        writer: Any = None,
        options: RetrieveOptions | None = None,
        sop_classes: Sequence[str] | None = None,
    ) -> None:
        if service not in (MOVE, GET):
            raise InvalidRequestError(f"service {service!r} is not C-MOVE or C-GET")
        if service == MOVE and destination is None:
            raise InvalidRequestError("C-MOVE needs a destination AE title")
        if service == GET and writer is None:
            raise InvalidRequestError("C-GET needs a data directory to store into")
        self.node = node
        self.service = service
        self.destination = destination
        self.writer = writer
        self.options = options or RetrieveOptions()
        self.sop_classes = list(sop_classes) if sop_classes else None
        if service == GET:
            self.arrivals: ArrivalCheck | None = ArrivalCheck(writer.data_dir)
            self.destination_text = f"{node.calling_ae_title} (C-GET into {writer.data_dir})"
        else:
            assert destination is not None
            self.arrivals = ArrivalCheck(destination.data_dir) if destination.data_dir is not None else None
            self.destination_text = destination.describe()
        self._msg_lock = threading.Lock()
        self._next_msg_id = 0

    # -- public
    def run(
        self,
        items: Sequence[RetrieveItem],
        *,
        should_continue: Callable[[], bool] | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> RetrieveResult:
        """Request every item; return when all are done or ``should_continue()`` turned false.

        In-flight requests always finish; items not started are reported as ``not_started``.

        :param items: the items (already planned: see :func:`plan`).
        :param should_continue: polled before each request (e.g. "is the time window still open").
        :param on_attempt: called (from worker threads, serialised) with every finished attempt.
        """
        result = RetrieveResult()
        for item in items:
            result.final[item.key] = Attempt(
                item=item, service=self.service, attempt=0, status=NOT_STARTED, reason="not started"
            )
        if not items:
            return result
        work: queue.SimpleQueue[RetrieveItem] = queue.SimpleQueue()
        for item in items:
            work.put(item)
        lock = threading.Lock()
        stop = threading.Event()
        fatal: list[DicomError] = []

        def keep_going() -> bool:
            if stop.is_set():
                return False
            if should_continue is not None and not should_continue():
                stop.set()
                result.interrupted = True
                return False
            return True

        def record(attempt: Attempt) -> None:
            with lock:
                result.attempts.append(attempt)
                result.final[attempt.item.key] = attempt
                if on_attempt is not None:
                    try:
                        on_attempt(attempt)
                    except Exception:  # a reporting callback must not break the retrieval
                        log.exception("progress callback failed")

        def pending(item: RetrieveItem) -> None:
            # interrupted while waiting to retry: not failed, to be tried again when the run resumes
            with lock:
                result.final[item.key] = Attempt(
                    item=item, service=self.service, attempt=0, status=NOT_STARTED, reason="retry not started"
                )

        workers = min(self.options.parallel, len(items))
        threads = [
            threading.Thread(
                target=self._worker,
                args=(work, keep_going, record, pending, fatal),
                name=f"retrieve-{n}",
                daemon=True,
            )
            for n in range(workers)
        ]
        with self._embedded_receiver():
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if fatal:
            # a permanent refusal ends the run: every item not tried fails with the same reason
            for key, attempt in list(result.final.items()):
                if attempt.status == NOT_STARTED:
                    result.final[key] = replace(
                        attempt, status=FAILED, reason=f"not requested: {fatal[0]}", attempt=0
                    )
        elif result.interrupted:
            log.info("%s stopped before %d item(s): not started", self.service, len(result.not_started))
        return result

    # -- internals
    def _embedded_receiver(self) -> Any:
        stack = ExitStack()
        dest = self.destination
        if self.service == MOVE and dest is not None and dest.kind == "embedded":
            from airflow_dicom.dimse.receiver import Receiver

            receiver = Receiver(
                dest.data_dir,  # type: ignore[arg-type]
                ae_title=dest.ae_title,
                host=dest.host,
                port=int(dest.port or 0),
                layout=dest.layout,
                max_associations=max(4, self.options.parallel * 2),
                acse_timeout=self.node.acse_timeout,
                dimse_timeout=self.node.dimse_timeout,
                network_timeout=self.node.network_timeout,
            )
            stack.enter_context(receiver)
        return stack

    def _msg_id(self) -> int:
        with self._msg_lock:
            self._next_msg_id = self._next_msg_id % 65535 + 1
            return self._next_msg_id

    def _open(self, stack: ExitStack, level: str) -> Any:
        if self.service == GET:
            contexts, roles = get_contexts(level, self.sop_classes)
            handlers = [(evt.EVT_C_STORE, self.writer.handle_store)]
            return stack.enter_context(
                open_association(
                    self.node,
                    contexts,
                    purpose="C-GET",
                    evt_handlers=handlers,
                    ext_neg=roles,
                )
            )
        models = [StudyRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelMove]
        return stack.enter_context(open_association(self.node, models, purpose="C-MOVE"))

    def _worker(
        self,
        work: queue.SimpleQueue[RetrieveItem],
        keep_going: Callable[[], bool],
        record: Callable[[Attempt], None],
        pending: Callable[[RetrieveItem], None],
        fatal: list[DicomError],
    ) -> None:
        stack = ExitStack()
        assoc: Any = None
        assoc_level: str | None = None
        try:
            while not fatal and keep_going():
                try:
                    item = work.get_nowait()
                except queue.Empty:
                    return
                attempt_no = 1
                while True:
                    # C-GET contexts depend on the level's model: reopen when the level family changes
                    family = "PATIENT" if item.level == "PATIENT" else "STUDY"
                    if assoc is not None and (not assoc.is_established or assoc_level != family):
                        stack.close()
                        assoc = None
                    attempt = Attempt(
                        item=item,
                        service=self.service,
                        attempt=attempt_no,
                        node=self.node.describe(),
                        destination=self.destination_text,
                        expected=item.expected,
                    )
                    try:
                        if assoc is None:
                            stack = ExitStack()
                            assoc = self._open(stack, item.level)
                            assoc_level = family
                        self._request(assoc, item, attempt)
                    except AssociationRejectedError as exc:
                        attempt.reason = str(exc)
                        attempt.transient = exc.transient
                        if not exc.transient:
                            fatal.append(exc)
                    except NoAcceptedContextError as exc:
                        attempt.reason = str(exc)
                        fatal.append(exc)
                    except (NodeUnreachableError, AssociationAbortedError) as exc:
                        attempt.reason = str(exc)
                        attempt.transient = True
                    except DicomError as exc:
                        attempt.reason = str(exc)
                    attempt.finished = attempt.finished or datetime.now(timezone.utc)
                    if attempt.status != COMPLETE and (
                        attempt.transient or assoc is None or not assoc.is_established
                    ):
                        stack.close()
                        assoc = None
                    if (
                        attempt.status != COMPLETE
                        and attempt.transient
                        and attempt_no < self.options.max_attempts
                    ):
                        delay = self.options.delay(attempt_no)
                        attempt.reason += f" (retrying in {delay:g} s)"
                        attempt.retrying = True
                        record(attempt)
                        if not self._sleep(delay, keep_going):
                            pending(item)
                            break
                        attempt_no += 1
                        continue
                    record(attempt)
                    break
                if self.options.pause and assoc is not None:
                    self._sleep(self.options.pause, keep_going)
        finally:
            stack.close()

    @staticmethod
    def _sleep(seconds: float, keep_going: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not keep_going():
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return keep_going()

    def _request(self, assoc: Any, item: RetrieveItem, attempt: Attempt) -> None:
        """Send one C-MOVE/C-GET for ``item`` on ``assoc`` and fill ``attempt`` from the responses."""
        model = _model(self.service, item.level)
        context = accepted_context(assoc, model)
        if context is None:
            raise NoAcceptedContextError(self.node, f"{self.service} at {item.level} level ({model})")
        msg_id = self._msg_id()
        attempt.started = datetime.now(timezone.utc)
        started = time.monotonic()
        if self.service == MOVE:
            assert self.destination is not None
            responses = assoc.send_c_move(
                item.identifier(),
                self.destination.ae_title,
                model,
                msg_id=msg_id,
                priority=self.options.priority,
            )
        else:
            responses = assoc.send_c_get(
                item.identifier(), model, msg_id=msg_id, priority=self.options.priority
            )
        cancelled = threading.Event()
        timer = None
        if self.options.time_budget:

            def cancel() -> None:
                if assoc.is_established:
                    cancelled.set()
                    log.warning(
                        "%s %s %s exceeded its time budget of %g s: sending C-CANCEL",
                        self.service,
                        item.level,
                        item.label,
                        self.options.time_budget,
                    )
                    try:
                        assoc.send_c_cancel(msg_id, context.context_id)
                    except Exception as exc:  # association gone meanwhile
                        log.debug("C-CANCEL not sent: %s", exc)

            timer = threading.Timer(float(self.options.time_budget), cancel)
            timer.daemon = True
            timer.start()
        announced: int | None = None
        final_status: int | None = None
        final_identifier: Dataset | None = None
        last: Dataset | None = None
        try:
            for status_ds, identifier in responses:
                status = getattr(status_ds, "Status", None)
                if status is None:
                    break
                last = status_ds
                counts = _counts(status_ds)
                if category(int(status)) == "Pending":
                    if announced is None and counts["remaining"] is not None:
                        announced = sum(v or 0 for v in counts.values())
                    continue
                final_status = int(status)
                final_identifier = identifier
        finally:
            if timer is not None:
                timer.cancel()
        attempt.finished = datetime.now(timezone.utc)
        seconds = time.monotonic() - started
        if final_status is None:
            if assoc.is_aborted or not assoc.is_established:
                raise AssociationAbortedError(self.node, f"{self.service} of {item.level} {item.label}")
            attempt.reason = (
                f"no final {self.service} response within the DIMSE timeout ({self.node.dimse_timeout:g} s)"
            )
            attempt.transient = True
            return
        attempt.dimse_status = final_status
        counts = _counts(last) if last is not None else {}
        attempt.completed = int(counts.get("completed") or 0)
        attempt.failed = int(counts.get("failed") or 0)
        attempt.warning = int(counts.get("warning") or 0)
        if attempt.expected is None:
            attempt.expected = announced
        if final_identifier is not None and "FailedSOPInstanceUIDList" in final_identifier:
            value = final_identifier.FailedSOPInstanceUIDList
            attempt.failed_sop_uids = [
                str(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if v
            ]
        self._judge(attempt, final_status, cancelled.is_set())
        if self.arrivals is not None:
            self._cross_check(item, attempt)
        log.debug("%s took %.3f s", item.label, seconds)

    def _judge(self, attempt: Attempt, status: int, cancelled: bool) -> None:
        transferred = attempt.completed + attempt.warning
        text = describe_status(self.service, status)
        if status == Status.CANCEL:
            attempt.reason = (
                f"cancelled after exceeding the time budget of {self.options.time_budget:g} s "
                f"({transferred} instances transferred)"
                if cancelled
                else f"the PACS cancelled the request ({text})"
            )
        elif status in TRANSIENT_STATUSES:
            attempt.reason = f"the PACS is out of resources ({text})"
            attempt.transient = True
        elif category(status) == "Failure":
            attempt.reason = (
                f"the PACS refused it ({text}); the UID may be unknown to the PACS or the move destination "
                "unknown or unreachable from it"
                if self.service == MOVE
                else f"the PACS refused it ({text}); the UID may be unknown to the PACS"
            )
        elif attempt.failed:
            detail = f"{attempt.failed} of {attempt.failed + transferred} sub-operations failed"
            if attempt.failed_sop_uids:
                shown = ", ".join(attempt.failed_sop_uids[:5])
                more = len(attempt.failed_sop_uids) - 5
                detail += f" (SOP instances {shown}{f' and {more} more' if more > 0 else ''})"
            attempt.reason = f"{detail}; final {text}"
        elif transferred == 0:
            attempt.reason = f"the PACS answered {text} but transferred no instance"
        elif attempt.expected is not None and transferred < attempt.expected:
            attempt.reason = f"only {transferred} of {attempt.expected} expected instances were transferred"
        else:
            attempt.status = COMPLETE
            attempt.reason = ""

    def _cross_check(self, item: RetrieveItem, attempt: Attempt) -> None:
        assert self.arrivals is not None
        held = self.arrivals.held(item)
        if held is None:
            return
        # instances announced as transferred must be on disk (late arrivals get a short grace)
        need = attempt.completed + attempt.warning
        if attempt.expected is not None:
            need = max(need, attempt.expected if attempt.status == COMPLETE else 0)
        deadline = time.monotonic() + self.options.arrival_grace
        while held[0] < need and time.monotonic() < deadline:
            time.sleep(0.05)
            held = self.arrivals.held(item) or held
        attempt.received, attempt.bytes = held
        if attempt.status == COMPLETE and held[0] < need:
            attempt.status = FAILED
            attempt.reason = (
                f"the PACS reported {need} instances sent but only {held[0]} arrived at our receiver "
                f"({self.destination_text})"
            )


def _counts(status_ds: Dataset) -> dict[str, int | None]:
    def get(keyword: str) -> int | None:
        value = getattr(status_ds, keyword, None)
        try:
            return None if value is None or value == "" else int(value)
        except (TypeError, ValueError):
            return None

    return {
        "remaining": get("NumberOfRemainingSuboperations"),
        "completed": get("NumberOfCompletedSuboperations"),
        "failed": get("NumberOfFailedSuboperations"),
        "warning": get("NumberOfWarningSuboperations"),
    }


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


# ------------------------------------------------------------------------------ one-call API


def retrieve(
    node: DicomNode,
    items: Sequence[RetrieveItem],
    *,
    service: str = MOVE,
    destination: MoveDestination | None = None,
    data_dir: str | Path | None = None,
    layout: str = "patient",
    options: RetrieveOptions | None = None,
    completed: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    should_continue: Callable[[], bool] | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    sop_classes: Sequence[str] | None = None,
) -> RetrieveResult:
    """Plan (skip what is complete) and retrieve ``items``; the skipped items are part of the result.

    :param node: the PACS.
    :param items: what to retrieve.
    :param service: ``C-MOVE`` or ``C-GET``.
    :param destination: C-MOVE destination.
    :param data_dir: C-GET: where to store (through the receiver's store core).
    :param layout: C-GET: storage layout.
    :param options: parallelism, retries, time budget, throttling.
    :param completed: items complete in a previous retrieval report (see
        :func:`airflow_dicom.landing.report.completed_items`).
    :param should_continue: polled before every request; False stops starting new ones.
    :param on_attempt: called with every attempt (skips included).
    :param sop_classes: C-GET: storage SOP classes to accept.
    """
    writer = None
    if service == GET:
        if data_dir is None:
            raise InvalidRequestError("C-GET needs a data directory to store into")
        from airflow_dicom.dimse.receiver import StoreWriter

        writer = StoreWriter(data_dir, layout)
    retriever = Retriever(
        node, service, destination=destination, writer=writer, options=options, sop_classes=sop_classes
    )
    todo, skipped = plan(items, completed=completed, arrivals=retriever.arrivals)
    for attempt in skipped:
        attempt.service = attempt.service or service
        attempt.node = node.describe()
        attempt.destination = retriever.destination_text
        if on_attempt is not None:
            on_attempt(attempt)
    try:
        result = retriever.run(todo, should_continue=should_continue, on_attempt=on_attempt)
    finally:
        if writer is not None:
            writer.close()
    merged = RetrieveResult(interrupted=result.interrupted)
    merged.attempts = [*skipped, *result.attempts]
    skipped_by_key = {a.item.key: a for a in skipped}
    for item in items:
        merged.final[item.key] = skipped_by_key.get(item.key) or result.final[item.key]
    return merged
