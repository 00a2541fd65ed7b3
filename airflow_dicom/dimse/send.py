"""C-STORE SCU: send DICOM files, directories and globs to a node, with an account of every file.

How a send works:

1. :func:`collect_files` expands the paths (directories recursively, globs), then :func:`read_meta`
   reads each file's meta information only. Files without the ``DICM`` prefix are *skipped* (listed,
   never silently dropped); files with broken meta are *failed*.
2. One presentation context is proposed per (SOP class, transfer syntax) pair actually present,
   compressed syntaxes included (with ``transcode=True`` also one uncompressed fallback per SOP class).
   More than 128 contexts are spread over several associations, and each group's files are striped
   over up to ``parallel`` associations running at once (one thread each; associations are never
   shared between threads).
3. Each file's data set bytes are sent exactly as stored (never decoded); a structural check first
   tells a truncated file from a complete one, so a broken file fails alone. The C-STORE status of
   every file is recorded: sent, warning (status and meaning) or failed (status and meaning, or why
   nothing was sent: context refused, unreadable, no response).
4. A response that never comes (a lost response, pynetdicom#875, or a stuck peer) is bounded by the
   response timeout: the association is aborted and the file retried on a fresh association
   (``retries`` times), and the retry is reported.

Associations come from :func:`~airflow_dicom.dimse.association.open_association` with
``low_latency=True`` (see :mod:`airflow_dicom.dimse.tuning`).

The caller decides the policy: :meth:`SendReport.raise_for_failures` fails when more than
``max_failed`` files failed (default 0).
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom.uid import UID

from airflow_dicom.dimse import dicomfile
from airflow_dicom.dimse.association import MAX_CONTEXTS, open_association
from airflow_dicom.dimse.dicomfile import DicomFileInfo, InvalidDicomError, NotDicomError
from airflow_dicom.dimse.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    DicomError,
    InvalidRequestError,
    NoAcceptedContextError,
    NodeUnreachableError,
)
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.status import category, describe_status
from airflow_dicom.dimse.tuning import RawSendError, send_c_store_raw

log = logging.getLogger(__name__)

SENT = "sent"
WARNING = "warning"
FAILED = "failed"
SKIPPED = "skipped"

#: Media Storage Directory Storage (DICOMDIR): an index of files, not an instance to store.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: the uncompressed syntaxes offered as fallback when transcoding is allowed, in preference order.
FALLBACK_SYNTAXES = (dicomfile.EXPLICIT_VR_LITTLE_ENDIAN, dicomfile.IMPLICIT_VR_LITTLE_ENDIAN)
DEFAULT_PARALLEL = 2


class SendFailedError(DicomError):
    """More files failed to be stored than the caller allows.

    :param report: the complete account of the send.
    :param max_failed: the number of failed files that was allowed.
    """

    def __init__(self, report: SendReport, max_failed: int) -> None:
        self.report = report
        self.max_failed = max_failed
        failed = report.failed
        shown = "; ".join(f"{r.path}: {r.reason}" for r in failed[:20])
        more = f"; and {len(failed) - 20} more" if len(failed) > 20 else ""
        super().__init__(
            f"C-STORE to {report.node.describe()}: {len(failed)} of {report.files} files failed "
            f"(allowed: {max_failed}): {shown}{more}"
        )


@dataclass(frozen=True)
class FileResult:
    """What happened to one file.

    :param path: the file.
    :param outcome: ``sent``, ``warning``, ``failed`` or ``skipped``.
    :param sop_instance_uid: from the file meta (None if unreadable).
    :param sop_class_uid: from the file meta.
    :param transfer_syntax: the file's transfer syntax.
    :param bytes: data set bytes sent (0 if not sent).
    :param status: the C-STORE response status, None when no response was received.
    :param reason: the status meaning, or why the file was not sent/skipped.
    :param attempts: C-STORE requests made for the file (more than 1 after a lost response).
    :param transcoded_to: the transfer syntax it was converted to, if it was.
    """

    path: str
    outcome: str
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    transfer_syntax: str | None = None
    bytes: int = 0
    status: int | None = None
    reason: str = ""
    attempts: int = 0
    transcoded_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


def transcoding(result: FileResult) -> str:
    """How a file was converted, in words: ``"RLE Lossless -> Explicit VR Little Endian"``.

    :param result: a file's result (``transcoded_to`` set).
    """
    return f"{UID(result.transfer_syntax or '').name} -> {UID(result.transcoded_to or '').name}"


@dataclass
class SendReport:
    """The account of a send: one :class:`FileResult` per file found.

    :param node: the destination.
    :param results: per-file results in the order the files were found.
    :param seconds: wall-clock duration of the whole send.
    :param associations: associations opened.
    """

    node: DicomNode
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    associations: int = 0

    def _with(self, outcome: str) -> list[FileResult]:
        return [r for r in self.results if r.outcome == outcome]

    @property
    def files(self) -> int:
        """Files examined (skipped ones included)."""
        return len(self.results)

    @property
    def sent(self) -> list[FileResult]:
        """Files stored with status Success."""
        return self._with(SENT)

    @property
    def warnings(self) -> list[FileResult]:
        """Files stored with a warning status (e.g. 0xB000 coercion of data elements)."""
        return self._with(WARNING)

    @property
    def failed(self) -> list[FileResult]:
        """Files not stored: failure status, refused context, unreadable, no response."""
        return self._with(FAILED)

    @property
    def skipped(self) -> list[FileResult]:
        """Files that are not DICOM Part 10 files (or DICOMDIR indexes)."""
        return self._with(SKIPPED)

    @property
    def bytes_sent(self) -> int:
        """Data set bytes of the files stored (success or warning)."""
        return sum(r.bytes for r in self.results if r.outcome in (SENT, WARNING))

    @property
    def retried(self) -> list[FileResult]:
        """Files that needed more than one C-STORE request (lost response, aborted association)."""
        return [r for r in self.results if r.attempts > 1]

    @property
    def transcoded(self) -> list[FileResult]:
        """Files stored after conversion to another transfer syntax (``transcode=True``)."""
        return [r for r in self.results if r.transcoded_to and r.outcome in (SENT, WARNING)]

    def summary(self, max_listed: int = 100) -> dict[str, Any]:
        """A JSON-serialisable summary (the operator's XCom): counts, bytes, seconds, failures listed.

        :param max_listed: at most this many failed/skipped/retried files are listed by name.
        """

        def listed(results: list[FileResult]) -> list[dict[str, Any]]:
            return [
                {
                    "path": r.path,
                    "sop_instance_uid": r.sop_instance_uid,
                    "status": r.status,
                    "reason": r.reason,
                }
                for r in results[:max_listed]
            ]

        return {
            "node": self.node.describe(),
            "files": self.files,
            "bytes": self.bytes_sent,
            "sent": len(self.sent),
            "warning": len(self.warnings),
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "retried": len(self.retried),
            "associations": self.associations,
            "seconds": round(self.seconds, 3),
            "failures": listed(self.failed),
            "skipped_files": listed(self.skipped),
            "warnings": listed(self.warnings),
            "transcoded": len(self.transcoded),
            "transcoded_files": [
                {
                    "path": r.path,
                    "sop_instance_uid": r.sop_instance_uid,
                    "from": r.transfer_syntax,
                    "to": r.transcoded_to,
                }
                for r in self.transcoded[:max_listed]
            ],
        }

    def raise_for_failures(self, max_failed: int = 0) -> None:
        """Raise :class:`SendFailedError` when more than ``max_failed`` files failed.

        :param max_failed: failed files tolerated (0: any failure raises).
        """
        if len(self.failed) > max_failed:
            raise SendFailedError(self, max_failed)


# ---------------------------------------------------------------------------- finding files


def _has_magic(path: str) -> bool:
    return glob.has_magic(path)


def collect_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Expand files, directories (recursively) and glob patterns into a sorted, de-duplicated file list.

    :param paths: one path or several.
    :raises InvalidRequestError: a path does not exist or a pattern matches nothing.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[str] = []
    missing: list[str] = []
    for item in paths:
        text = os.fspath(item)
        if _has_magic(text) and not os.path.exists(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                missing.append(f"{text} (pattern matches nothing)")
            candidates = matches
        elif os.path.exists(text):
            candidates = [text]
        else:
            missing.append(text)
            continue
        for candidate in candidates:
            if os.path.isdir(candidate):
                for root, dirs, names in os.walk(candidate):
                    dirs.sort()
                    found.extend(os.path.join(root, n) for n in sorted(names))
            else:
                found.append(candidate)
    if missing:
        raise InvalidRequestError(f"nothing to send at: {', '.join(missing)}; check the paths")
    seen: set[str] = set()
    unique: list[str] = []
    for path in found:
        key = os.path.realpath(path)
        if key not in seen and os.path.isfile(path):
            seen.add(key)
            unique.append(path)
    return unique


def files_from_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """The file paths listed in a ``DicomArrivalSensor`` manifest.

    Expected shape: ``{"studies": {StudyInstanceUID: {"files": [path, ...], "instances": n,
    "bytes": b}, ...}, ...}`` (other top-level keys are ignored); a plain ``{"files": [...]}`` is
    accepted too.

    :param manifest: the manifest dict (e.g. the sensor's XCom).
    :raises InvalidRequestError: the manifest has neither shape.
    """
    if not isinstance(manifest, Mapping):
        raise InvalidRequestError(f"a manifest must be a dict, got {type(manifest).__name__}")
    files: list[str] = []
    if isinstance(manifest.get("files"), list):
        files.extend(map(str, manifest["files"]))
    studies = manifest.get("studies")
    if isinstance(studies, Mapping):
        for study_uid, study in studies.items():
            listed = study.get("files") if isinstance(study, Mapping) else None
            if not isinstance(listed, list):
                raise InvalidRequestError(f"manifest study {study_uid} has no 'files' list")
            files.extend(map(str, listed))
    elif "files" not in manifest:
        raise InvalidRequestError(
            "the manifest has no 'studies' mapping ({StudyInstanceUID: {'files': [...]}}) nor a 'files' list"
        )
    return files


def scan(paths: Sequence[str]) -> tuple[list[DicomFileInfo], list[FileResult]]:
    """Read the meta of every file: the sendable files, and the skipped or failed ones.

    :param paths: files (already expanded).
    """
    sendable: list[DicomFileInfo] = []
    rejected: list[FileResult] = []
    for path in paths:
        try:
            info = dicomfile.read_meta(path)
        except NotDicomError as exc:
            rejected.append(FileResult(path, SKIPPED, reason=str(exc)))
            continue
        except InvalidDicomError as exc:
            rejected.append(FileResult(path, FAILED, reason=f"invalid DICOM file: {exc}"))
            continue
        except OSError as exc:
            rejected.append(FileResult(path, FAILED, reason=f"cannot read the file: {exc.strerror or exc}"))
            continue
        if info.sop_class_uid == MEDIA_STORAGE_DIRECTORY:
            rejected.append(
                FileResult(
                    path, SKIPPED, sop_class_uid=info.sop_class_uid, reason="DICOMDIR index, not an instance"
                )
            )
            continue
        sendable.append(info)
    return sendable, rejected


# ---------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Job:
    """Files sent over one association at a time (re-opened after a lost response)."""

    files: tuple[DicomFileInfo, ...]
    contexts: tuple[tuple[str, tuple[str, ...]], ...]


def _contexts_for(files: Iterable[DicomFileInfo], transcode: bool) -> list[tuple[str, tuple[str, ...]]]:
    """One context per (SOP class, transfer syntax) present, plus fallbacks when transcoding."""
    by_class: dict[str, set[str]] = {}
    for info in files:
        by_class.setdefault(info.sop_class_uid, set()).add(info.transfer_syntax)
    contexts: list[tuple[str, tuple[str, ...]]] = []
    for sop_class in sorted(by_class):
        syntaxes = sorted(by_class[sop_class])
        contexts.extend((sop_class, (ts,)) for ts in syntaxes)
        if transcode and set(syntaxes) - {dicomfile.IMPLICIT_VR_LITTLE_ENDIAN}:
            contexts.append((sop_class, FALLBACK_SYNTAXES))
    return contexts


def plan(files: Sequence[DicomFileInfo], *, parallel: int, transcode: bool) -> list[_Job]:
    """Split files into jobs: groups of SOP classes needing at most 128 contexts, each striped.

    :param files: the sendable files.
    :param parallel: associations to run at once.
    :param transcode: add uncompressed fallback contexts.
    """
    per_class: dict[str, list[DicomFileInfo]] = {}
    for info in files:
        per_class.setdefault(info.sop_class_uid, []).append(info)
    groups: list[list[DicomFileInfo]] = []
    current: list[DicomFileInfo] = []
    used = 0
    for sop_class in sorted(per_class):
        members = per_class[sop_class]
        needed = len(_contexts_for(members, transcode))
        if current and used + needed > MAX_CONTEXTS:
            groups.append(current)
            current, used = [], 0
        current.extend(members)
        used += needed
    if current:
        groups.append(current)
    order = {id(info): n for n, info in enumerate(files)}
    jobs: list[_Job] = []
    for group in groups:
        group.sort(key=lambda info: order[id(info)])
        stripes = max(1, min(parallel, len(group)))
        for stripe in range(stripes):
            members = tuple(group[stripe::stripes])
            jobs.append(_Job(members, tuple(_contexts_for(members, transcode))))
    return jobs


# ---------------------------------------------------------------------------- sending


class _LostResponse(Exception):
    """No C-STORE response arrived (timeout or aborted association)."""


def _wait_response(assoc: Any, msg_id: int, timeout: float) -> Any:
    """The C-STORE response for ``msg_id``; raises :class:`_LostResponse` if none comes in time."""
    deadline = time.monotonic() + timeout
    messages = assoc.dimse.msg_queue
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _LostResponse(f"no C-STORE response within {timeout:g} s")
        try:
            _, rsp = messages.get(timeout=min(remaining, 0.25))
        except queue.Empty:
            if assoc.is_aborted or not assoc.is_established or not assoc.dul.is_alive():
                raise _LostResponse("the association was aborted before the C-STORE response") from None
            continue
        if rsp is None:
            raise _LostResponse("the association was aborted before the C-STORE response")
        responded_to = getattr(rsp, "MessageIDBeingRespondedTo", None)
        if responded_to != msg_id:
            log.warning(
                "ignoring an unexpected DIMSE message (responding to %s, waiting for %s)",
                responded_to,
                msg_id,
            )
            continue
        return rsp


def _transcode(info: DicomFileInfo, target: str) -> bytes:
    """Decode the file with pydicom and encode its data set in the uncompressed ``target`` syntax.

    The instance keeps its identity: SOP Instance UID and every attribute except what the standard
    ties to the encoding (the pixel data, and for colour images decoded from YBR the Photometric
    Interpretation pydicom converts with them) are sent as stored.

    pydicom 3 gives an instance a new SOP Instance UID by default in ``Dataset.decompress()``,
    ``Dataset.compress()``, ``Dataset.set_pixel_data()`` and ``pydicom.pixels.decompress()`` /
    ``compress()`` (``generate_instance_uid=True``): a peer then refuses the C-STORE (0xA900, the data
    set does not match the request) or, worse, stores a duplicate under a UID nobody asked for. This
    calls ``decompress(generate_instance_uid=False)`` and checks the identity before sending.

    :param info: the file (its meta was read by :func:`~airflow_dicom.dimse.dicomfile.read_meta`).
    :param target: an uncompressed transfer syntax UID.
    :returns: the data set encoded in ``target``.
    :raises ValueError: pydicom cannot encode it, or the identity changed.
    """
    import pydicom
    from pynetdicom.dsutils import encode

    ds = pydicom.dcmread(info.path)
    if UID(info.transfer_syntax).is_compressed:
        ds.decompress(generate_instance_uid=False)
    if str(ds.get("SOPInstanceUID", "")) != info.sop_instance_uid:
        raise ValueError(
            f"decoding changed the SOP Instance UID ({info.sop_instance_uid} -> {ds.get('SOPInstanceUID')})"
        )
    target_uid = UID(target)
    encoded = encode(ds, target_uid.is_implicit_VR, target_uid.is_little_endian, target_uid.is_deflated)
    if encoded is None:
        raise ValueError("pydicom could not encode the data set")
    return encoded


class _Sender:
    """Runs the jobs of one send and collects results (thread-safe)."""

    def __init__(
        self,
        node: DicomNode,
        *,
        transcode: bool,
        retries: int,
        response_timeout: float,
        priority: int,
        check_files: bool,
        progress: Callable[[FileResult], None] | None,
    ) -> None:
        self.node = node
        self.transcode = transcode
        self.retries = retries
        self.response_timeout = response_timeout
        self.priority = priority
        self.check_files = check_files
        self.progress = progress
        self.lock = threading.Lock()
        self.results: dict[str, FileResult] = {}
        self.associations = 0
        self.active = 0
        self.deferred: list[_Job] = []
        self.association_errors: list[DicomError] = []

    def record(self, result: FileResult) -> None:
        with self.lock:
            self.results[result.path] = result
        if result.outcome == FAILED:
            log.debug("not stored: %s (%s): %s", result.path, result.sop_instance_uid, result.reason)
        if self.progress is not None:
            self.progress(result)

    def _failed(
        self, info: DicomFileInfo, reason: str, *, status: int | None = None, attempts: int = 0
    ) -> None:
        self.record(
            FileResult(
                info.path,
                FAILED,
                info.sop_instance_uid,
                info.sop_class_uid,
                info.transfer_syntax,
                status=status,
                reason=reason,
                attempts=attempts,
            )
        )

    def run(self, job: _Job) -> None:
        pending = deque(job.files)
        attempts: dict[str, int] = {}
        while pending:
            try:
                with open_association(
                    self.node, list(job.contexts), purpose="C-STORE", low_latency=True
                ) as assoc:
                    with self.lock:
                        self.associations += 1
                        self.active += 1
                    try:
                        self._send_over(assoc, pending, attempts)
                    finally:
                        with self.lock:
                            self.active -= 1
            except (AssociationAbortedError, AssociationRejectedError) as exc:
                transient = isinstance(exc, AssociationAbortedError) or exc.transient
                with self.lock:
                    busy = self.active > 0
                    if transient and busy:
                        # the node serves fewer associations at once than we opened: finish later, serially
                        log.info(
                            "%s: association refused while others are open; deferring %d files",
                            self.node.describe(),
                            len(pending),
                        )
                        self.deferred.append(_Job(tuple(pending), job.contexts))
                        return
                    self.association_errors.append(exc)
                for info in pending:
                    self._failed(info, f"no association: {exc}", attempts=attempts.get(info.path, 0))
                pending.clear()
            except NoAcceptedContextError:
                for info in pending:
                    self._failed(info, self._refused(info), attempts=attempts.get(info.path, 0))
                pending.clear()
            except NodeUnreachableError as exc:
                with self.lock:
                    self.association_errors.append(exc)
                for info in pending:
                    self._failed(info, f"no association: {exc}", attempts=attempts.get(info.path, 0))
                pending.clear()

    def _refused(self, info: DicomFileInfo) -> str:
        hint = "" if self.transcode else " (transcoding to an uncompressed syntax is off)"
        return (
            f"{self.node.describe()} refused the presentation context for SOP class "
            f"{info.sop_class_uid} in transfer syntax {info.transfer_syntax}{hint}"
        )

    def _route(
        self,
        assoc: Any,
        exact: dict[tuple[str, str], int],
        fallback: dict[str, tuple[int, str]],
        info: DicomFileInfo,
    ) -> tuple[int, str | None] | None:
        """(context id, transcode target or None) for a file; None when the peer refused it."""
        context_id = exact.get((info.sop_class_uid, info.transfer_syntax))
        if context_id is not None:
            return context_id, None
        if self.transcode and info.sop_class_uid in fallback:
            context_id, target = fallback[info.sop_class_uid]
            return context_id, target
        return None

    def _send_over(self, assoc: Any, pending: deque[DicomFileInfo], attempts: dict[str, int]) -> None:
        exact: dict[tuple[str, str], int] = {}
        fallback: dict[str, tuple[int, str]] = {}
        for context in assoc.accepted_contexts:
            key = (str(context.abstract_syntax), str(context.transfer_syntax[0]))
            exact.setdefault(key, int(context.context_id))
            if key[1] in FALLBACK_SYNTAXES and key[0] not in fallback:
                fallback[key[0]] = (int(context.context_id), key[1])
        msg_id = 0
        while pending:
            info = pending[0]
            route = self._route(assoc, exact, fallback, info)
            if route is None:
                pending.popleft()
                self._failed(info, self._refused(info), attempts=attempts.get(info.path, 0))
                continue
            context_id, target = route
            try:
                if target is None:
                    data: Any = dicomfile.read_dataset_bytes(info, check=self.check_files)
                else:
                    data = _transcode(info, target)
            except (InvalidDicomError, OSError) as exc:
                pending.popleft()
                self._failed(info, f"invalid DICOM file: {exc}", attempts=attempts.get(info.path, 0))
                continue
            except Exception as exc:  # pydicom cannot decode/encode this data set
                pending.popleft()
                self._failed(info, f"cannot transcode to {UID(target or '').name}: {exc}")
                continue
            msg_id = msg_id % 65535 + 1
            attempts[info.path] = attempts.get(info.path, 0) + 1
            try:
                send_c_store_raw(
                    assoc, context_id, msg_id, info.sop_class_uid, info.sop_instance_uid, data, self.priority
                )
                rsp = _wait_response(assoc, msg_id, self.response_timeout)
            except (RawSendError, _LostResponse) as exc:
                log.warning(
                    "C-STORE of %s to %s: %s (attempt %d)",
                    info.sop_instance_uid,
                    self.node.describe(),
                    exc,
                    attempts[info.path],
                )
                if assoc.is_established:
                    assoc.abort()
                if attempts[info.path] > self.retries:
                    pending.popleft()
                    self._failed(info, f"no C-STORE response: {exc}", attempts=attempts[info.path])
                return  # the caller opens a fresh association for what is left
            pending.popleft()
            self._record_status(info, rsp, len(data), attempts[info.path], target)

    def _record_status(
        self, info: DicomFileInfo, rsp: Any, size: int, attempts: int, target: str | None
    ) -> None:
        status = getattr(rsp, "Status", None)
        if status is None:
            self._failed(info, "the C-STORE response has no status", attempts=attempts)
            return
        status = int(status)
        kind = category(status)
        reason = describe_status("C-STORE", status)
        comment = getattr(rsp, "ErrorComment", None)
        if comment:
            reason += f" ({comment})"
        if kind == "Success":
            outcome, reason = SENT, ""
        elif kind == "Warning":
            outcome = WARNING
        else:
            self._failed(info, reason, status=status, attempts=attempts)
            return
        self.record(
            FileResult(
                info.path,
                outcome,
                info.sop_instance_uid,
                info.sop_class_uid,
                info.transfer_syntax,
                bytes=size,
                status=status,
                reason=reason,
                attempts=attempts,
                transcoded_to=target,
            )
        )


def send(
    node: DicomNode,
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    parallel: int = DEFAULT_PARALLEL,
    transcode: bool = False,
    retries: int = 1,
    response_timeout: float | None = None,
    priority: int = 2,
    check_files: bool = True,
    progress: Callable[[FileResult], None] | None = None,
) -> SendReport:
    """Send DICOM files to ``node`` (C-STORE) and account for every file.

    Never raises for individual files: see :meth:`SendReport.raise_for_failures`.

    :param node: the destination.
    :param paths: files, directories (recursive) and glob patterns (``**`` allowed).
    :param parallel: associations running at once (1-32).
    :param transcode: when the node refuses a file's (compressed) transfer syntax but accepts an
        uncompressed one for its SOP class, decode the file with pydicom and send it uncompressed.
    :param retries: how many times a file whose response was lost is re-sent on a fresh association.
    :param response_timeout: seconds to wait for each C-STORE response (default: the node's DIMSE timeout).
    :param priority: C-STORE priority: 0 medium, 1 high, 2 low.
    :param check_files: check each data set's structure before sending (a truncated file fails alone
        instead of making the peer abort the association).
    :param progress: called with each file's :class:`FileResult` as soon as it is known (from worker threads).
    :raises InvalidRequestError: a path does not exist, or invalid arguments.
    :raises NodeUnreachableError: (and the other association errors) when no file could be sent at all
        because no association could be opened.
    """
    if not 1 <= parallel <= 32:
        raise InvalidRequestError(f"parallel must be between 1 and 32, got {parallel}")
    if retries < 0:
        raise InvalidRequestError(f"retries must be 0 or more, got {retries}")
    if priority not in (0, 1, 2):
        raise InvalidRequestError(f"priority must be 0 (medium), 1 (high) or 2 (low), got {priority}")
    started = time.monotonic()
    files = collect_files(paths)
    sendable, rejected = scan(files)
    sender = _Sender(
        node,
        transcode=transcode,
        retries=retries,
        response_timeout=response_timeout if response_timeout is not None else node.dimse_timeout,
        priority=priority,
        check_files=check_files,
        progress=progress,
    )
    for result in rejected:
        sender.record(result)
    jobs = plan(sendable, parallel=parallel, transcode=transcode)
    log.info(
        "C-STORE to %s: %d files (%d not DICOM), %d association job(s), %d in parallel",
        node.describe(),
        len(files),
        len(rejected),
        len(jobs),
        parallel,
    )
    if len(jobs) == 1 or parallel == 1:
        for job in jobs:
            sender.run(job)
    else:
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="dicom-send") as pool:
            for future in [pool.submit(sender.run, job) for job in jobs]:
                future.result()
    while sender.deferred:  # jobs the node could not take in parallel: one association at a time
        sender.run(sender.deferred.pop(0))
    report = SendReport(
        node=node,
        results=[sender.results[path] for path in files if path in sender.results],
        seconds=time.monotonic() - started,
        associations=sender.associations,
    )
    if sender.association_errors and not report.sent and not report.warnings and sendable:
        raise sender.association_errors[0]
    log.info(
        "C-STORE to %s: %d sent, %d warning, %d failed, %d skipped, %d retried, %.1f MB in %.2f s",
        node.describe(),
        len(report.sent),
        len(report.warnings),
        len(report.failed),
        len(report.skipped),
        len(report.retried),
        report.bytes_sent / 1e6,
        report.seconds,
    )
    return report
