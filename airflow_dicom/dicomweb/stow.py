"""STOW-RS send with the per-file account of a C-STORE send (:class:`~airflow_dicom.dimse.send.SendReport`).

Files are found and checked as for C-STORE (:func:`~airflow_dicom.dimse.send.files.scan`: non-DICOM
files are skipped, unreadable ones fail), then posted as they are on disk (Part 10 files, no decoding or
re-encoding) in batches of at most ``batch_files`` files and ``batch_bytes`` bytes, so memory stays
bounded. The server's answer (PS3.18 10.5.3: ``ReferencedSOPSequence`` with an optional
``WarningReason``, ``FailedSOPSequence`` with a ``FailureReason``) gives each file its outcome: ``sent``,
``warning`` or ``failed`` with the reason; a file the answer does not mention fails, and a batch the
server refuses as a whole (an HTTP error) fails each of its files with the HTTP status and message.
Credentials refused, TLS failures and an unreachable server raise: no file could be sent.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from airflow_dicom.dicomweb.client import DicomWebHttpError, make_client, service_url, web_errors
from airflow_dicom.dicomweb.node import DicomWebNode
from airflow_dicom.dimse.send.files import DicomFileInfo, collect_files, scan
from airflow_dicom.dimse.send.report import FAILED, SENT, WARNING, FileResult, SendReport
from airflow_dicom.dimse.status import describe_status

log = logging.getLogger(__name__)

#: the multipart boundary ``dicomweb-client`` uses for STOW-RS
CONTENT_TYPE = 'multipart/related; type="application/dicom"; boundary="0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"'


def _code(item: Dataset, keyword: str) -> int | None:
    value = item.get(keyword)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _answer(response: requests.Response | None) -> Dataset | None:
    """The STOW-RS response body as a data set (DICOM JSON), if it has one."""
    if response is None or not response.content:
        return None
    json_type = "json" in response.headers.get("Content-Type", "")
    if not json_type and not response.content.lstrip().startswith(b"{"):  # Orthanc's 400 has no type
        return None
    try:
        return Dataset.from_json(response.json())
    except (ValueError, TypeError, KeyError, AttributeError):  # not DICOM JSON (e.g. Orthanc's own error)
        return None


def account(batch: list[DicomFileInfo], answer: Dataset | None, why: str = "") -> list[FileResult]:
    """Each file of ``batch`` with its outcome read from the server's answer.

    :param batch: the files posted together.
    :param answer: the STOW-RS response data set (None: the server sent none).
    :param why: the reason for files the answer does not mention.
    """
    accepted: dict[str, Dataset] = {}
    refused: dict[str, Dataset] = {}
    if answer is not None:
        for item in answer.get("ReferencedSOPSequence", []):
            accepted[str(item.get("ReferencedSOPInstanceUID", ""))] = item
        for item in answer.get("FailedSOPSequence", []):
            refused[str(item.get("ReferencedSOPInstanceUID", ""))] = item
    results = []
    for info in batch:
        common: dict[str, Any] = {
            "sop_instance_uid": info.sop_instance_uid,
            "sop_class_uid": info.sop_class_uid,
            "transfer_syntax": info.transfer_syntax,
            "attempts": 1,
        }
        uid = info.sop_instance_uid
        if uid in refused:
            code = _code(refused[uid], "FailureReason")
            reason = describe_status("C-STORE", code) if code is not None else "refused without a reason"
            results.append(FileResult(info.path, FAILED, status=code, reason=f"STOW-RS: {reason}", **common))
        elif uid in accepted:
            code = _code(accepted[uid], "WarningReason")
            if code:
                reason = f"STOW-RS: {describe_status('C-STORE', code)}"
                results.append(
                    FileResult(info.path, WARNING, bytes=info.size, status=code, reason=reason, **common)
                )
            else:
                results.append(FileResult(info.path, SENT, bytes=info.size, status=0, **common))
        else:
            reason = why or "the server's STOW-RS answer does not mention this instance"
            results.append(FileResult(info.path, FAILED, reason=reason, **common))
    return results


def _batches(files: list[DicomFileInfo], max_files: int, max_bytes: int) -> Iterable[list[DicomFileInfo]]:
    """Batches of files; one SOP Instance UID at most once per batch (the answer is keyed by it)."""
    batch: list[DicomFileInfo] = []
    uids: set[str] = set()
    size = 0
    for info in files:
        if batch and (
            len(batch) >= max_files or size + info.size > max_bytes or info.sop_instance_uid in uids
        ):
            yield batch
            batch, uids, size = [], set(), 0
        batch.append(info)
        uids.add(info.sop_instance_uid)
        size += info.size
    if batch:
        yield batch


def _post(
    client: DICOMwebClient, node: DicomWebNode, url: str, batch: list[DicomFileInfo]
) -> list[FileResult]:
    parts = []
    for info in batch:
        with open(info.path, "rb") as f:
            parts.append(f.read())
    body = client._encode_multipart_message(parts, CONTENT_TYPE)
    del parts
    what = f"STOW-RS of {len(batch)} file(s)"
    try:
        with web_errors(node, what):
            response = client._http_post(url, body, headers={"Content-Type": CONTENT_TYPE})
    except DicomWebHttpError as exc:
        response = exc.__cause__.response if isinstance(exc.__cause__, requests.HTTPError) else None
        answer = _answer(response)
        return account(batch, answer, why=str(exc))
    return account(batch, _answer(response))


def stow_send(
    node: DicomWebNode,
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    batch_files: int = 32,
    batch_bytes: int = 64 * 1024 * 1024,
    parallel: int = 2,
    progress: Callable[[FileResult], None] | None = None,
) -> SendReport:
    """Send DICOM files, directories (recursive) and globs to a DICOMweb node over STOW-RS.

    :param node: the DICOMweb node.
    :param paths: files, directories and glob patterns.
    :param batch_files: files per STOW-RS request at most.
    :param batch_bytes: bytes per request at most (a larger file goes alone).
    :param parallel: requests at once (one client each); memory holds up to ``parallel`` batches.
    :param progress: called with each file's result.
    :return: the per-file account; per-file failures do not raise.
    :raises InvalidRequestError: a path does not exist.
    :raises DicomWebError: the server is unreachable or refuses the credentials or TLS.
    """
    started = time.monotonic()
    sendable, rejected = scan(collect_files(paths))
    report = SendReport(node=node)  # type: ignore[arg-type]
    report.results.extend(rejected)
    for result in rejected:
        if progress is not None:
            progress(result)
    url = service_url(node, "stow") + "/studies"
    local = threading.local()

    def post(batch: list[DicomFileInfo]) -> list[FileResult]:
        if not hasattr(local, "client"):
            local.client = make_client(node)  # a requests session per thread
        return _post(local.client, node, url, batch)

    batches = list(_batches(sendable, max(1, batch_files), max(1, batch_bytes)))
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(batches) or 1))) as pool:
        for results in pool.map(post, batches):  # in order; an auth/TLS/unreachable error raises here
            report.results.extend(results)
            for result in results:
                if progress is not None:
                    progress(result)
    report.seconds = time.monotonic() - started
    log.info(
        "STOW-RS to %s: %d file(s), %d sent, %d warning, %d failed, %d skipped in %.2f s",
        node.describe(),
        report.files,
        len(report.sent),
        len(report.warnings),
        len(report.failed),
        len(report.skipped),
        report.seconds,
    )
    return report
