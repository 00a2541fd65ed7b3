"""The retrieval engine: many items over a bounded pool of associations, each in its own thread.

:func:`retrieve` plans (skips what is complete: :mod:`.planning`), then a :class:`Retriever` sends one
request per item (:mod:`.request`), many requests per association, over up to ``parallel`` associations at
once (one per thread; pynetdicom associations are not thread-safe). Each worker keeps one association
(:class:`_Connection`: opened on demand, reopened after a failure or when C-GET needs another model) and
tries each item with :func:`.retry.retry_item`.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pynetdicom import evt

from airflow_dicom.dimse.association import open_association
from airflow_dicom.dimse.errors import DicomError, InvalidRequestError, ReceiverGoneError, ReceiverStartError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.receiver import Receiver, StoreWriter
from airflow_dicom.dimse.receiver.process import ReceiverProcess, use_receiver_process
from airflow_dicom.dimse.retrieve.contexts import MOVE_MODELS, get_contexts
from airflow_dicom.dimse.retrieve.destinations import ArrivalCheck, MoveDestination
from airflow_dicom.dimse.retrieve.items import GET, MOVE, RetrieveItem
from airflow_dicom.dimse.retrieve.options import RetrieveOptions
from airflow_dicom.dimse.retrieve.planning import plan_retrieval
from airflow_dicom.dimse.retrieve.request import Requester
from airflow_dicom.dimse.retrieve.results import COMPLETE, FAILED, NOT_STARTED, Attempt, RetrieveResult
from airflow_dicom.dimse.retrieve.retry import classify, retry_item, wait

log = logging.getLogger(__name__)


class _Connection:
    """One worker's association: opened on demand, reopened when it broke or the level family changes.

    C-GET proposes the Patient Root model for PATIENT items and the Study Root model for the others, so a
    change between the two families needs a new association.

    :param opener: opens an association for a level, entering it into the given ExitStack.
    """

    def __init__(self, opener: Callable[[ExitStack, str], Any]) -> None:
        self._opener = opener
        self._stack = ExitStack()
        self._assoc: Any = None
        self._family: str | None = None

    @property
    def is_open(self) -> bool:
        """True while an association is held."""
        return self._assoc is not None

    def get(self, level: str) -> Any:
        """The association for an item of ``level`` (opened if needed; raises the association errors).

        :param level: the item's level.
        """
        family = "PATIENT" if level == "PATIENT" else "STUDY"
        if self._assoc is not None and (not self._assoc.is_established or self._family != family):
            self.drop()
        if self._assoc is None:
            self._stack = ExitStack()
            self._assoc = self._opener(self._stack, level)
            self._family = family
        return self._assoc

    def usable(self) -> bool:
        """True when the association is open and established."""
        return self._assoc is not None and self._assoc.is_established

    def drop(self) -> None:
        """Release (or abort) the association; the next :meth:`get` opens a fresh one."""
        self._stack.close()
        self._assoc = None

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.drop()


def embedded_receiver_limit(parallel: int) -> int:
    """Associations the embedded receiver accepts at once for a C-MOVE over ``parallel`` associations.

    The PACS opens one association per C-MOVE in flight, but a released one still counts until its threads
    have ended; a PACS that starts the next study at once (Orthanc: a few ms per small study) overlaps them.
    ``max(4, 2 * parallel)`` was too tight at a load average of ~10 on 2 cores: one association in a few
    hundred was rejected and its study failed.

    :param parallel: the retrieval's associations with the PACS.
    """
    return max(16, 8 * parallel)


class Retriever:
    """Runs C-MOVE or C-GET requests for many items over a bounded pool of associations.

    :param node: the PACS.
    :param service: ``C-MOVE`` or ``C-GET``.
    :param destination: for C-MOVE, where the PACS sends the instances.
    :param writer: for C-GET, the receiver's store core that stores the instances arriving on our association.
    :param options: throttling, retries, time budget.
    :param sop_classes: for C-GET, storage SOP classes to accept (see :func:`.contexts.get_contexts`).
    """

    def __init__(
        self,
        node: DicomNode,
        service: str,
        *,
        destination: MoveDestination | None = None,
        writer: StoreWriter | None = None,
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
        if writer is not None:
            self.arrivals: ArrivalCheck | None = ArrivalCheck(writer.data_dir)
            self.destination_text = f"{node.calling_ae_title} (C-GET into {writer.data_dir})"
        else:
            assert destination is not None
            self.arrivals = ArrivalCheck(destination.data_dir) if destination.data_dir is not None else None
            self.destination_text = destination.describe()
        self.requester = Requester(
            node,
            service,
            destination=destination,
            options=self.options,
            arrivals=self.arrivals,
            destination_text=self.destination_text,
        )

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

        :param items: the items (already planned: see :func:`.planning.plan_retrieval`).
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
        receiver: list[Any] = []  # the embedded receiver, once started

        def keep_going() -> bool:
            if stop.is_set():
                return False
            failure = receiver[0].failure if receiver and isinstance(receiver[0], ReceiverProcess) else None
            if failure:
                stop.set()
                fatal.append(ReceiverGoneError(failure))
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
        with self._embedded_receiver(len(items)) as started:
            receiver.extend(started)
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
    @contextmanager
    def _embedded_receiver(self, items: int) -> Iterator[list[Any]]:
        """Our receiver for the run when the C-MOVE destination is embedded: yields ``[receiver]`` (a
        :class:`Receiver`, or a :class:`ReceiverProcess` for a long retrieval), ``[]`` otherwise.

        :param items: the items to retrieve (a long retrieval's receiver gets a process of its own).
        """
        dest = self.destination
        if self.service != MOVE or dest is None or dest.kind != "embedded":
            yield []
            return
        settings: dict[str, Any] = {
            "data_dir": dest.data_dir,
            "ae_title": dest.ae_title,
            "host": dest.host,
            "port": int(dest.port or 0),
            "layout": dest.layout,
            "max_associations": embedded_receiver_limit(self.options.parallel),
            "acse_timeout": self.node.acse_timeout,
            "dimse_timeout": self.node.dimse_timeout,
            "network_timeout": self.node.network_timeout,
        }
        own_process = use_receiver_process(dest.receiver_process, items)
        factory: Any = ReceiverProcess if own_process else Receiver
        receiver = factory(tls=dest.tls, **settings)
        log.debug("embedded receiver %s", "in its own process" if own_process else "in this process")
        try:
            receiver.start()
        except OSError as exc:
            raise ReceiverStartError(dest.describe(), str(exc.strerror or exc), _start_advice(exc)) from exc
        try:
            yield [receiver]
        finally:
            receiver.stop(10.0)

    def _open(self, stack: ExitStack, level: str) -> Any:
        if self.service == GET:
            assert self.writer is not None
            contexts, roles = get_contexts(level, self.sop_classes)
            handlers = [(evt.EVT_C_STORE, self.writer.handle_store)]
            return stack.enter_context(
                open_association(self.node, contexts, purpose="C-GET", evt_handlers=handlers, ext_neg=roles)
            )
        return stack.enter_context(open_association(self.node, list(MOVE_MODELS), purpose="C-MOVE"))

    def _worker(
        self,
        work: queue.SimpleQueue[RetrieveItem],
        keep_going: Callable[[], bool],
        record: Callable[[Attempt], None],
        pending: Callable[[RetrieveItem], None],
        fatal: list[DicomError],
    ) -> None:
        with _Connection(self._open) as connection:
            while not fatal and keep_going():
                try:
                    item = work.get_nowait()
                except queue.Empty:
                    return
                retry_item(
                    item,
                    lambda number: self._attempt(connection, item, number, fatal),  # noqa: B023 - called now
                    self.options.retry,
                    keep_going=keep_going,
                    record=record,
                    pending=pending,
                )
                if self.options.pause and connection.is_open:
                    wait(self.options.pause, keep_going)

    def _attempt(
        self, connection: _Connection, item: RetrieveItem, number: int, fatal: list[DicomError]
    ) -> Attempt:
        """One try of ``item``: the association's failures and the request's outcome, in an Attempt."""
        attempt = Attempt(
            item=item,
            service=self.service,
            attempt=number,
            node=self.node.describe(),
            destination=self.destination_text,
            expected=item.expected,
        )
        try:
            self.requester.request(connection.get(item.level), item, attempt)
        except DicomError as exc:
            if classify(attempt, exc):
                fatal.append(exc)
        attempt.finished = attempt.finished or datetime.now(timezone.utc)
        if attempt.status != COMPLETE and (attempt.transient or not connection.usable()):
            connection.drop()
        return attempt


def _start_advice(exc: OSError) -> str:
    """What to do when the embedded receiver cannot listen."""
    if exc.errno == errno.EADDRINUSE:
        return (
            "another receiver or run is using the port: stop it, or choose another receive port (and "
            "register it with the PACS)"
        )
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
        return "give an address of this host as the receive host, and a port this user may bind (above 1023)"
    return "check the receive host and port"


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
        writer = StoreWriter(data_dir, layout)
    retriever = Retriever(
        node, service, destination=destination, writer=writer, options=options, sop_classes=sop_classes
    )
    todo, skipped = plan_retrieval(items, completed=completed, arrivals=retriever.arrivals)
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
