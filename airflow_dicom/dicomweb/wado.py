"""WADO-RS retrieval into the receiver's store core: streamed, atomic, with arrival records and a report.

Each item (study, series or instance) is one WADO-RS request asking for the instances as stored
(``transfer-syntax=*``: no transcoding). The multipart answer is read as a stream (``dicomweb-client``'s
chunked decoder): one instance at a time is held in memory, never a whole study. Each part is a DICOM
Part 10 file; its data set goes through :class:`~airflow_dicom.dimse.receiver.StoreWriter` exactly like a
C-STORE arriving at our receiver (same layouts, ``*.tmp`` + rename, arrival records, quarantine), so the
arrival sensor and the retrieval report see no difference. The report's ``service`` column says
``WADO-RS``.

PATIENT items are refused (WADO-RS has no patient resource): retrieve the patient's studies.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from airflow_dicom.dicomweb.client import (
    DicomWebAuthError,
    DicomWebTlsError,
    make_client,
    service_url,
    web_errors,
)
from airflow_dicom.dicomweb.node import DicomWebNode
from airflow_dicom.dimse.errors import DicomError, InvalidRequestError
from airflow_dicom.dimse.receiver import StoreWriter
from airflow_dicom.dimse.retrieve import RetrieveItem, RetrieveOptions
from airflow_dicom.dimse.retrieve.destinations import ArrivalCheck
from airflow_dicom.dimse.retrieve.planning import plan_retrieval
from airflow_dicom.dimse.retrieve.results import COMPLETE, FAILED, NOT_STARTED, Attempt, RetrieveResult
from airflow_dicom.dimse.retrieve.retry import classify, retry_item
from airflow_dicom.dimse.status import Status

log = logging.getLogger(__name__)

WADO = "WADO-RS"

#: ask for every instance in the transfer syntax it is stored in (no transcoding by the server)
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _url(node: DicomWebNode, item: RetrieveItem) -> str:
    """The WADO-RS resource of ``item`` (under the node's WADO prefix)."""
    base = service_url(node, "wado")
    if item.level == "STUDY":
        return f"{base}/studies/{item.uid}"
    if item.study_uid is None:
        raise InvalidRequestError(
            f"WADO-RS needs the study of {item.level} {item.uid}: give its StudyInstanceUID"
        )
    if item.level == "SERIES":
        return f"{base}/studies/{item.study_uid}/series/{item.uid}"
    if item.series_uid is None:
        raise InvalidRequestError(
            f"WADO-RS needs the series of instance {item.uid}: give its SeriesInstanceUID"
        )
    return f"{base}/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.uid}"


def iter_parts(client: DICOMwebClient, node: DicomWebNode, url: str, what: str) -> Iterator[bytes]:
    """Stream the parts (DICOM Part 10 files) of one WADO-RS answer, one at a time.

    :param client: the node's client.
    :param node: the node (messages).
    :param url: the resource.
    :param what: the request, for messages.
    """
    with web_errors(node, what):
        response = client._http_get(url, headers={"Accept": ACCEPT}, stream=True)
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("application/dicom"):  # a single, non-encapsulated part
            yield response.content
            return
        yield from client._decode_multipart_message(response, stream=True)


def split_part(part: bytes | bytearray) -> tuple[str, str, str, memoryview]:
    """``(sop_class_uid, sop_instance_uid, transfer_syntax, data set bytes)`` of a Part 10 file.

    :param part: the file's bytes.
    :raises InvalidDicomError: not a Part 10 file, or its meta lacks a group length.
    """
    meta = dcmread(io.BytesIO(part), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).file_meta
    length = meta.get("FileMetaInformationGroupLength")
    if length is None or "TransferSyntaxUID" not in meta:
        raise InvalidDicomError("the file meta information lacks its group length or transfer syntax")
    offset = 128 + 4 + 12 + int(length)
    return (
        str(meta.get("MediaStorageSOPClassUID", "")),
        str(meta.get("MediaStorageSOPInstanceUID", "")),
        str(meta.TransferSyntaxUID),
        memoryview(part)[offset:],
    )


class WadoRetriever:
    """Retrieves items over WADO-RS into a :class:`StoreWriter`, ``parallel`` requests at once.

    :param node: the DICOMweb node.
    :param writer: the store core (data directory and layout).
    :param options: parallelism and retry policy (time budget, pause and priority are DIMSE-only).
    """

    def __init__(
        self, node: DicomWebNode, writer: StoreWriter, options: RetrieveOptions | None = None
    ) -> None:
        self.node = node
        self.writer = writer
        self.options = options or RetrieveOptions()
        self.arrivals = ArrivalCheck(writer.data_dir)
        self.destination_text = f"WADO-RS into {writer.data_dir}"

    def _request(self, client: DICOMwebClient, item: RetrieveItem, attempt: Attempt) -> None:
        what = f"WADO-RS {item.level} {item.label}"
        for part in iter_parts(client, self.node, _url(self.node, item), what):
            try:
                sop_class, sop_uid, syntax, data = split_part(part)
            except (InvalidDicomError, ValueError, EOFError) as exc:
                attempt.failed += 1
                log.warning("%s: a part is not a DICOM file (%s)", what, exc)
                continue
            outcome = self.writer.store(
                bytes(data), sop_class_uid=sop_class, sop_instance_uid=sop_uid, transfer_syntax=syntax
            )
            if outcome.status == Status.SUCCESS:
                attempt.completed += 1
            else:
                attempt.failed += 1
                attempt.failed_sop_uids.append(sop_uid)
        held = self.arrivals.held(item)
        if held is not None:
            attempt.received, attempt.bytes = held
        if attempt.failed:
            attempt.reason = f"{attempt.failed} instance(s) could not be stored (see the receiver's log)"
        elif attempt.completed == 0:
            attempt.reason = "the server answered no instance"
        elif attempt.expected is not None and (attempt.received or attempt.completed) < attempt.expected:
            attempt.reason = f"{attempt.completed} of {attempt.expected} expected instances received"
        else:
            attempt.status = COMPLETE

    def attempt(
        self, client: DICOMwebClient, item: RetrieveItem, number: int, fatal: list[DicomError]
    ) -> Attempt:
        """One try of ``item``.

        :param client: this worker's client.
        :param item: the item.
        :param number: 1 for the first try.
        :param fatal: receives an error that stops the run (bad credentials, TLS).
        """
        attempt = Attempt(
            item=item,
            service=WADO,
            attempt=number,
            node=self.node.describe(),
            destination=self.destination_text,
            expected=item.expected,
        )
        try:
            self._request(client, item, attempt)
        except DicomError as exc:
            classify(attempt, exc)
            if isinstance(exc, (DicomWebAuthError, DicomWebTlsError)):
                fatal.append(exc)  # no other item can succeed either
        attempt.finished = datetime.now(timezone.utc)
        log.info("%s", attempt.progress_line())
        return attempt

    def run(
        self,
        items: Sequence[RetrieveItem],
        *,
        should_continue: Callable[[], bool] | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> RetrieveResult:
        """Request every item; in-flight requests finish when ``should_continue()`` turns false.

        :param items: the items to request.
        :param should_continue: polled before each request.
        :param on_attempt: called with every finished attempt (serialised).
        """
        result = RetrieveResult()
        for item in items:
            result.final[item.key] = Attempt(
                item=item, service=WADO, attempt=0, status=NOT_STARTED, reason="not started"
            )
        work: queue.SimpleQueue[RetrieveItem] = queue.SimpleQueue()
        for item in items:
            work.put(item)
        lock = threading.Lock()
        stop = threading.Event()
        fatal: list[DicomError] = []

        def keep_going() -> bool:
            if stop.is_set() or fatal:
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
            with lock:
                result.final[item.key] = Attempt(
                    item=item, service=WADO, attempt=0, status=NOT_STARTED, reason="retry not started"
                )

        def worker() -> None:
            client = make_client(self.node)  # one session per thread
            while keep_going():
                try:
                    item = work.get_nowait()
                except queue.Empty:
                    return
                retry_item(
                    item,
                    lambda number: self.attempt(client, item, number, fatal),  # noqa: B023 - called now
                    self.options.retry,
                    keep_going=keep_going,
                    record=record,
                    pending=pending,
                )

        threads = [
            threading.Thread(target=worker, name=f"wado-{n}", daemon=True)
            for n in range(min(self.options.parallel, len(items)))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if fatal:
            for key, attempt in list(result.final.items()):
                if attempt.status == NOT_STARTED:
                    attempt.status, attempt.reason = FAILED, f"not requested: {fatal[0]}"
                    result.final[key] = attempt
        return result


def wado_retrieve(
    node: DicomWebNode,
    items: Sequence[RetrieveItem],
    data_dir: str | Path,
    *,
    layout: str = "patient",
    options: RetrieveOptions | None = None,
    completed: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    should_continue: Callable[[], bool] | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> RetrieveResult:
    """Plan (skip what is complete) and retrieve ``items`` over WADO-RS into ``data_dir``.

    The counterpart of :func:`airflow_dicom.dimse.retrieve.retrieve` with ``service=C-GET``: same
    planning, same store core, same result and report rows (``service`` is ``WADO-RS``).

    :param node: the DICOMweb node.
    :param items: STUDY, SERIES (with study) or IMAGE (with study and series) items.
    :param data_dir: where instances are stored (with arrival records).
    :param layout: ``patient``, ``study`` or ``flat``.
    :param options: parallel requests and retries.
    :param completed: items complete in a previous retrieval report (skipped).
    :param should_continue: polled before every request; False stops starting new ones.
    :param on_attempt: called with every attempt (skips included).
    :raises InvalidRequestError: PATIENT items (WADO-RS has no patient resource).
    """
    patients = [i for i in items if i.level == "PATIENT"]
    if patients:
        raise InvalidRequestError(
            f"WADO-RS has no patient resource ({len(patients)} PATIENT item(s)): find the patients' studies "
            "and retrieve those"
        )
    writer = StoreWriter(data_dir, layout)
    retriever = WadoRetriever(node, writer, options)
    todo, skipped = plan_retrieval(items, completed=completed, arrivals=retriever.arrivals)
    for attempt in skipped:
        attempt.service = attempt.service or WADO
        attempt.node = node.describe()
        attempt.destination = retriever.destination_text
        if on_attempt is not None:
            on_attempt(attempt)
    log.info("WADO-RS: %d item(s) from %s, %d already complete", len(todo), node.describe(), len(skipped))
    try:
        result = retriever.run(todo, should_continue=should_continue, on_attempt=on_attempt)
    finally:
        writer.close()
    merged = RetrieveResult(interrupted=result.interrupted)
    merged.attempts = [*skipped, *result.attempts]
    skipped_by_key = {a.item.key: a for a in skipped}
    for item in items:
        merged.final[item.key] = skipped_by_key.get(item.key) or result.final[item.key]
    return merged
