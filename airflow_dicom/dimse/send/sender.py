"""C-STORE SCU: send DICOM files, directories and globs to a node, with an account of every file.

How a send works:

1. :func:`.files.collect_files` expands the paths (directories recursively, globs), then :func:`.files.scan`
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

Associations come from :func:`~airflow_dicom.dimse.association.open_association`; each C-STORE is written
by :func:`~airflow_dicom.dimse.pynetdicom_ext.send_c_store` (command set encoded by the codec, the file's
bytes as they are).

The caller decides the policy: :meth:`SendReport.raise_for_failures` fails when more than
``max_failed`` files failed (default 0).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydicom
from pydicom.uid import UID
from pynetdicom.dsutils import encode

from airflow_dicom.dimse.association import open_association
from airflow_dicom.dimse.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    DicomError,
    InvalidRequestError,
    LostResponseError,
    MalformedDicomError,
    NoAcceptedContextError,
    NodeUnreachableError,
)
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.pynetdicom_ext import send_c_store
from airflow_dicom.dimse.retry import DEFAULT_STORE_RETRIES
from airflow_dicom.dimse.send.files import DicomFileInfo, collect_files, read_dataset_bytes, scan
from airflow_dicom.dimse.send.planning import FALLBACK_SYNTAXES, AssociationJob, plan_associations
from airflow_dicom.dimse.send.report import FAILED, SENT, WARNING, FileResult, SendReport
from airflow_dicom.dimse.status import category, describe_status

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 2


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

    :param info: the file (its meta was read by :func:`~airflow_dicom.dimse.send.files.read_meta`).
    :param target: an uncompressed transfer syntax UID.
    :returns: the data set encoded in ``target``.
    :raises ValueError: pydicom cannot encode it, or the identity changed.
    """
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
        self.deferred: list[AssociationJob] = []
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

    def run(self, job: AssociationJob) -> None:
        pending = deque(job.files)
        attempts: dict[str, int] = {}
        while pending:
            try:
                with open_association(self.node, list(job.contexts), purpose="C-STORE") as assoc:
                    with self.lock:
                        self.associations += 1
                        self.active += 1
                    try:
                        self._send_over(assoc, pending, attempts)
                    finally:
                        with self.lock:
                            self.active -= 1
            except (AssociationAbortedError, AssociationRejectedError) as exc:
                transient = exc.retryable
                with self.lock:
                    busy = self.active > 0
                    if transient and busy:
                        # the node serves fewer associations at once than we opened: finish later, serially
                        log.info(
                            "%s: association refused while others are open; deferring %d files",
                            self.node.describe(),
                            len(pending),
                        )
                        self.deferred.append(AssociationJob(tuple(pending), job.contexts))
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
        prepared: dict[str, Any] = {}  # the next file's bytes (or why they could not be read), read early

        def prepare_next() -> None:
            # runs while the peer stores the current file: read (and check) the next one meanwhile
            if len(pending) < 2:
                return
            upcoming = pending[1]
            route = self._route(assoc, exact, fallback, upcoming)
            if route is None or route[1] is not None:
                return  # refused, or to be transcoded: done in its turn
            try:
                prepared[upcoming.path] = read_dataset_bytes(upcoming, check=self.check_files)
            except Exception as exc:  # reported in the file's own turn, as if read then
                prepared[upcoming.path] = exc

        while pending:
            info = pending[0]
            route = self._route(assoc, exact, fallback, info)
            if route is None:
                pending.popleft()
                self._failed(info, self._refused(info), attempts=attempts.get(info.path, 0))
                continue
            context_id, target = route
            try:
                early = prepared.pop(info.path, None)
                if isinstance(early, BaseException):
                    raise early
                if early is not None and target is None:
                    data: Any = early
                elif target is None:
                    data = read_dataset_bytes(info, check=self.check_files)
                else:
                    data = _transcode(info, target)
            except (MalformedDicomError, OSError) as exc:
                pending.popleft()
                self._failed(info, f"invalid DICOM file: {exc}", attempts=attempts.get(info.path, 0))
                continue
            except Exception as exc:  # pydicom cannot decode/encode this data set (or the check broke on it)
                pending.popleft()
                what = f"cannot transcode to {UID(target).name}" if target else "invalid DICOM file"
                self._failed(info, f"{what}: {exc}", attempts=attempts.get(info.path, 0))
                continue
            msg_id = msg_id % 65535 + 1
            attempts[info.path] = attempts.get(info.path, 0) + 1
            try:
                rsp = send_c_store(
                    assoc,
                    context_id,
                    msg_id,
                    info.sop_class_uid,
                    info.sop_instance_uid,
                    data,
                    priority=self.priority,
                    timeout=self.response_timeout,
                    while_waiting=prepare_next,
                )
            except LostResponseError as exc:
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
    retries: int = DEFAULT_STORE_RETRIES,
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
    jobs = plan_associations(sendable, parallel=parallel, transcode=transcode)
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
