"""DicomMoveOperator and DicomGetOperator: retrieve studies that finish, verify, respect the PACS, resume.

Both operators take their items from ``uids`` (a templated list, e.g. a batch in ``.expand(uids=...)``) or
from the Parquet results of ``DicomFindOperator`` (``find_results`` path, or its XCom, plus ``find_filter``).
Items already complete (per the retrieval report or the receiver's arrival records) are skipped, so a rerun
retrieves only what is missing. With a ``window`` the task runs only inside it: outside it defers with
``DateTimeTrigger`` (no worker slot is held) and, when the window closes mid-run, it stops starting new
requests, lets the running ones finish and defers again until the window reopens. The task fails at the end,
after doing all it can, listing every UID that is not complete with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseOperator

from airflow_dicom.dimse.errors import DicomError, InvalidRequestError
from airflow_dicom.dimse.retrieve import (
    COMPLETE,
    GET,
    MOVE,
    NOT_STARTED,
    SKIPPED,
    Attempt,
    MoveDestination,
    RetrieveItem,
    RetrieveOptions,
    make_items,
    normalise_level,
    parse_uid_list,
)
from airflow_dicom.dimse.tls import embedded_receiver_tls
from airflow_dicom.dimse.window import TimeWindow
from airflow_dicom.hooks.dicom import DicomHook
from airflow_dicom.hooks.dicomweb import DicomWebHook, retrieval_hook
from airflow_dicom.landing.claims import claim, read_batch_expected

#: at most this many failed UIDs are spelled out in the task's failure message (all are in the report)
MAX_LISTED_FAILURES = 50


class RetrievalIncompleteError(DicomError):
    """Some requested items are not complete after everything was tried.

    :param failures: ``{uid label: reason}``.
    :param summary: the task's summary (also in XCom).
    """

    def __init__(self, service: str, failures: dict[str, str], summary: dict[str, Any]) -> None:
        self.failures = failures
        self.summary = summary
        lines = [f"  {uid}: {reason}" for uid, reason in list(failures.items())[:MAX_LISTED_FAILURES]]
        more = len(failures) - MAX_LISTED_FAILURES
        if more > 0:
            lines.append(f"  ... and {more} more (see the retrieval report)")
        report = summary.get("report_path")
        super().__init__(
            f"{service}: {len(failures)} of {summary['requested']} item(s) not complete "
            f"({summary['complete']} complete, {summary['skipped']} already complete)"
            + (f"; report: {report}" if report else "")
            + ":\n"
            + "\n".join(lines)
        )


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _DicomRetrieveOperator(BaseOperator):
    """Shared machinery of :class:`DicomMoveOperator` and :class:`DicomGetOperator` (see their docs)."""

    service = MOVE
    template_fields: Sequence[str] = (
        "dicom_conn_id",
        "uids",
        "uids_file",
        "level",
        "find_results",
        "find_filter",
        "data_dir",
        "report_path",
        "window",
        "timezone",
        "calling_ae_title",
    )
    ui_color = "#cfe8d4"

    def __init__(
        self,
        *,
        dicom_conn_id: str = DicomHook.default_conn_name,
        uids: Any = None,
        uids_file: str | None = None,
        level: str = "STUDY",
        find_results: Any = None,
        find_filter: Any = None,
        data_dir: str | None = None,
        layout: str = "patient",
        report_path: str | None = None,
        parallel: int = 2,
        time_budget: float | None = None,
        max_attempts: int = 3,
        backoff: float = 2.0,
        pause: float = 0.0,
        priority: int = 2,
        window: Any = None,
        timezone: Any = None,
        calling_ae_title: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dicom_conn_id = dicom_conn_id
        self.uids = uids
        self.uids_file = uids_file
        self.level = level
        self.find_results = find_results
        self.find_filter = find_filter
        self.data_dir = data_dir
        self.layout = layout
        self.report_path = report_path
        self.parallel = parallel
        self.time_budget = time_budget
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.pause = pause
        self.priority = priority
        self.window = window
        self.timezone = timezone
        self.calling_ae_title = calling_ae_title
        if uids is None and find_results is None and uids_file is None:
            raise InvalidRequestError(
                "give the items to retrieve: uids=[...], uids_file=<batch file> "
                "or find_results=<path or XCom>"
            )
        # fail at parse time on what can be checked before templating
        RetrieveOptions(
            parallel=parallel,
            time_budget=time_budget,
            max_attempts=max_attempts,
            backoff=backoff,
            pause=pause,
            priority=priority,
        )
        if not _is_templated(window):
            TimeWindow.parse(window, None if _is_templated(timezone) else timezone)

    # -- inputs
    def _items(self) -> list[RetrieveItem]:
        level = normalise_level(self.level)
        source = self.find_results
        uids = self.uids
        expected: dict[str, int | None] = {}
        if self.uids_file:
            if uids is not None or source is not None:
                raise InvalidRequestError("give either uids_file, uids or find_results, not several")
            expected = read_batch_expected(str(self.uids_file))
            uids = list(expected)
        if isinstance(uids, dict) and "path" in uids:  # the find operator's XCom passed as uids
            source, uids = uids, None
        if uids is not None and source is not None:
            raise InvalidRequestError("give either uids or find_results, not both")
        if source is not None:
            # imported here (as the landing imports below): pyarrow costs ~0.3 s at DAG parse otherwise
            from airflow_dicom.landing.retrieve_items import items_from_parquet

            path = source.get("path") if isinstance(source, dict) else source
            if not path:
                raise InvalidRequestError(f"find_results {source!r} does not name a dataset path")
            return items_from_parquet(str(path), level, self.find_filter)
        counts = {uid: n for uid, n in expected.items() if n is not None}
        return make_items(parse_uid_list(uids), level, counts or None)

    def _options(self) -> RetrieveOptions:
        return RetrieveOptions(
            parallel=self.parallel,
            time_budget=self.time_budget,
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            pause=self.pause,
            priority=self.priority,
        )

    def _hook(self) -> DicomHook:
        overrides = {"calling_ae_title": self.calling_ae_title} if self.calling_ae_title else {}
        return DicomHook(self.dicom_conn_id, **overrides)

    def _report_path(self) -> str | None:
        if self.report_path:
            return str(self.report_path)
        if self.data_dir:
            return f"{str(self.data_dir).rstrip('/')}/.reports/retrieval"
        return None

    # -- execution
    def execute(self, context: Any) -> dict[str, Any]:
        if self.uids_file:  # one batch of a shared plan: never retrieved by two tasks at once
            with claim(str(self.uids_file)):
                return self._slot(context, {})
        return self._slot(context, {})

    def execute_resume(
        self, context: Any, event: Any = None, progress: dict[str, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Continue after a deferral (the window opened): ``progress`` holds the items already settled."""
        return self._slot(context, dict(progress or {}))

    def _slot(self, context: Any, progress: dict[str, dict[str, Any]]) -> dict[str, Any]:
        window = TimeWindow.parse(self.window, self.timezone)
        if window is not None and not window.is_open(_utcnow()):
            self._defer_until_open(window, progress, "outside")
        items = self._items()
        todo = [item for item in items if _key(item) not in progress]
        report_path = self._report_path()
        completed: dict[tuple[str, str], Any] = {}
        if report_path:
            from airflow_dicom.landing.report import completed_items

            completed = completed_items(report_path)
        hook = self._hook()
        run_id = str(context.get("run_id") or "") if hasattr(context, "get") else ""
        from airflow_dicom.landing.report import ReportWriter

        total = len(items)
        counter = {"n": len(items) - len(todo)}

        def on_attempt(attempt: Attempt) -> None:
            writer.add(attempt.row())
            if not attempt.retrying:
                counter["n"] += 1
            self.log.info("[%d/%d] %s", min(counter["n"], total), total, attempt.progress_line())

        def window_open() -> bool:
            return window is None or window.is_open(_utcnow())

        self.log.info(
            "%s of %d %s-level item(s) (%d settled before this slot) from %s to %s, %d association(s)%s",
            self.service,
            total,
            normalise_level(self.level),
            total - len(todo),
            hook.node.describe(),
            self._destination_text(hook),  # type: ignore[attr-defined]
            self.parallel,
            f", window {window.describe()}" if window else "",
        )
        with ReportWriter(report_path, run_id) as writer:
            result = self._retrieve(  # type: ignore[attr-defined]
                hook, todo, completed=completed, should_continue=window_open, on_attempt=on_attempt
            )
        for key, attempt in result.final.items():
            if attempt.status != NOT_STARTED:
                progress[f"{key[0]}:{key[1]}"] = _settled(attempt)
        pending = [item for item in items if _key(item) not in progress]
        if pending and window is not None and result.interrupted:
            self.log.info(
                "the window %s closed: %d item(s) left for its next opening", window.describe(), len(pending)
            )
            self._defer_until_open(window, progress, "closed")
        return self._finish(context, items, progress, report_path)

    def _defer_until_open(self, window: TimeWindow, progress: dict[str, Any], why: str) -> None:
        moment = window.next_open(_utcnow())
        self.log.info(
            "%s the window %s: deferring until %s (%d item(s) settled so far)",
            "outside" if why == "outside" else "after",
            window.describe(),
            moment.isoformat(timespec="seconds"),
            len(progress),
        )
        self.defer(
            trigger=DateTimeTrigger(moment=moment),
            method_name="execute_resume",
            kwargs={"progress": progress},
        )

    def _finish(
        self, context: Any, items: list[RetrieveItem], progress: dict[str, Any], report_path: str | None
    ) -> dict[str, Any]:
        settled = [
            progress.get(_key(item)) or {"status": NOT_STARTED, "reason": "not started"} for item in items
        ]
        failures = {
            item.label: state.get("reason") or state["status"]
            for item, state in zip(items, settled, strict=True)
            if state["status"] not in (COMPLETE, SKIPPED)
        }
        summary = {
            "service": self.service,
            "requested": len(items),
            "complete": sum(1 for s in settled if s["status"] == COMPLETE),
            "skipped": sum(1 for s in settled if s["status"] == SKIPPED),
            "failed": len(failures),
            "instances": sum(int(s.get("completed") or 0) for s in settled if s["status"] == COMPLETE),
            "bytes": sum(int(s.get("bytes") or 0) for s in settled if s["status"] == COMPLETE),
            "report_path": report_path,
            "failed_uids": failures,
        }
        ti = context.get("ti") if hasattr(context, "get") else None
        if ti is not None:
            ti.xcom_push(key="summary", value=summary)
        self.log.info(
            "%s done: %d requested, %d complete, %d already complete, %d failed, %d instances, %d bytes",
            self.service,
            summary["requested"],
            summary["complete"],
            summary["skipped"],
            summary["failed"],
            summary["instances"],
            summary["bytes"],
        )
        if failures:
            raise RetrievalIncompleteError(self.service, failures, summary)
        return summary


def _key(item: RetrieveItem) -> str:
    return f"{item.level}:{item.uid}"


def _settled(attempt: Attempt) -> dict[str, Any]:
    return {
        "status": attempt.status,
        "reason": attempt.reason,
        "completed": attempt.completed,
        "expected": attempt.expected,
        "bytes": attempt.bytes,
    }


def _is_templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, (list, tuple)):
        return any(_is_templated(v) for v in value)
    return False


class DicomMoveOperator(_DicomRetrieveOperator):
    """Retrieve studies (or patients, series, images) with C-MOVE; verify every item is complete.

    Destinations:

    * ``receive_port`` given: our receiver is started inside the task on that port, storing to ``data_dir``
      (C-MOVE to ourselves; the PACS must know ``move_destination`` at this host and port);
    * ``data_dir`` without ``receive_port``: the long-running receiver service (``airflow-dicom storescp``)
      known to the PACS as ``move_destination`` writes there; arrivals are cross-checked and used to resume;
    * neither: a third node; nothing is started locally and only the PACS's counts can be checked.

    :param dicom_conn_id: the PACS connection (templated).
    :param uids: UIDs to retrieve (templated; a list, a string of UIDs, or the find operator's XCom).
    :param uids_file: a batch file (one UID per line, templated) in the shared data directory, instead of
        ``uids``: the task claims the batch (``landing.claims``) so no two tasks retrieve it at once. A line
        may carry the study's expected instance count after the UID: a retry then skips the studies the
        receiver already holds completely, even when the report had not recorded them yet.
    :param level: PATIENT, STUDY, SERIES or IMAGE (templated).
    :param find_results: path of the find operator's Parquet dataset, or its XCom (templated).
    :param find_filter: filter on the find results: a pandas query or ``{column: value(s)}`` (templated).
    :param move_destination: the destination AE title (templated); default: our calling AE title.
    :param receive_port: start the embedded receiver on this port (templated; rendered empty: none).
    :param receive_host: address the embedded receiver listens on (templated).
    :param receiver_process: run the embedded receiver in a process of its own (True), in the task's process
        (False), or decide by size (None, the default: its own process from 100 items on a host with two
        cores or more, where it uses the second core).
    :param data_dir: where our receiver (embedded or service) stores instances (templated).
    :param layout: storage layout of the embedded receiver (``patient``, ``study``, ``flat``).
    :param report_path: the retrieval report dataset (templated); default ``<data_dir>/.reports/retrieval``.
    :param parallel: associations at once (default 2).
    :param time_budget: seconds per request before C-CANCEL.
    :param max_attempts: tries per item for transient failures.
    :param backoff: seconds before the first retry (doubled each time).
    :param pause: seconds between requests on an association.
    :param priority: DIMSE priority (0 medium, 1 high, 2 low).
    :param window: ``("20:00", "06:00")``: run only inside this daily window (templated).
    :param timezone: the window's zone, e.g. ``"Europe/Paris"`` (default UTC) (templated).
    :param calling_ae_title: our AE title, overriding the connection's (templated).
    :return: the summary (requested, complete, skipped, failed, instances, bytes, report_path, failed_uids),
        also pushed as XCom ``summary`` when the task fails.
    """

    service = MOVE
    template_fields: Sequence[str] = (
        *_DicomRetrieveOperator.template_fields,
        "move_destination",
        "receive_port",
        "receive_host",
    )

    def __init__(
        self,
        *,
        move_destination: str | None = None,
        receive_port: int | str | None = None,
        receive_host: str = "0.0.0.0",
        receiver_process: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.move_destination = move_destination
        self.receive_port = receive_port
        self.receive_host = receive_host
        self.receiver_process = receiver_process
        if receive_port is not None and not kwargs.get("data_dir"):
            raise InvalidRequestError("receive_port needs data_dir: the embedded receiver stores there")

    def _destination(self, hook: DicomHook) -> MoveDestination:
        port = self.receive_port
        if isinstance(port, str) and not port.strip():  # a template rendered empty: no embedded receiver
            port = None
        if isinstance(port, str):
            if not port.strip().isdigit():
                raise InvalidRequestError(f"receive_port {port!r} is not a port number")
            port = int(port)
        return MoveDestination(
            ae_title=self.move_destination or hook.node.calling_ae_title,
            data_dir=self.data_dir or None,
            port=port,
            host=self.receive_host,
            layout=self.layout,
            tls=embedded_receiver_tls(hook.node) if port is not None else None,
            receiver_process=self.receiver_process,
        )

    def _destination_text(self, hook: DicomHook) -> str:
        return self._destination(hook).describe()

    def _retrieve(self, hook: DicomHook, items: list[RetrieveItem], **kwargs: Any) -> Any:
        return hook.move(items, self._destination(hook), options=self._options(), **kwargs)


class DicomGetOperator(_DicomRetrieveOperator):
    """Retrieve studies (or patients, series, images) with C-GET into ``data_dir``; verify completeness.

    For PACS that will not register a move destination: the instances come back on our own association
    and are stored by the receiver's store core (validated names, atomic writes, arrival records).

    With a ``dicomweb`` connection (or a ``dicom`` connection whose ``dicomweb_conn_id`` extra field links
    the same PACS's DICOMweb service) the instances are retrieved over WADO-RS instead, streamed into the
    same store core: the transport is chosen per node, WADO-RS before C-GET (C-MOVE is
    :class:`DicomMoveOperator`'s), logged, and written in each report row's ``service``.

    Takes the parameters of :class:`DicomMoveOperator` except the destination ones, plus:

    :param data_dir: where instances are stored (required, templated).
    :param sop_classes: storage SOP classes to accept (default: the common image and document classes).
    """

    service = GET

    def __init__(self, *, sop_classes: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not kwargs.get("data_dir"):
            raise InvalidRequestError("DicomGetOperator needs data_dir: C-GET stores the instances itself")
        self.sop_classes = list(sop_classes) if sop_classes else None

    def _hook(self) -> DicomHook | DicomWebHook:  # type: ignore[override]
        """WADO-RS when the node offers it (a ``dicomweb`` connection, or a linked one), else C-GET."""
        overrides = {"calling_ae_title": self.calling_ae_title} if self.calling_ae_title else {}
        hook, self.service = retrieval_hook(self.dicom_conn_id, **overrides)
        self.log.info("retrieval service: %s (preference WADO-RS > C-GET > C-MOVE)", self.service)
        return hook

    def _destination_text(self, hook: DicomHook) -> str:
        return f"{self.data_dir} ({self.service})"

    def _retrieve(self, hook: DicomHook, items: list[RetrieveItem], **kwargs: Any) -> Any:
        return hook.get(
            items,
            str(self.data_dir),
            layout=self.layout,
            options=self._options(),
            sop_classes=self.sop_classes,
            **kwargs,
        )
