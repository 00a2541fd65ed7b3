"""DicomHook: an Airflow Connection of type ``dicom`` turned into a :class:`DicomNode`.

The hook owns every DICOM call an operator makes (the sftp provider's shape); the calls themselves live
in :mod:`airflow_dicom.dimse`, which has no Airflow import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_dicom.dimse.echo import EchoResult, echo
from airflow_dicom.dimse.errors import DicomError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.query import FindQuery, FindStats, find
from airflow_dicom.dimse.retrieve import (
    GET,
    MOVE,
    Attempt,
    MoveDestination,
    RetrieveItem,
    RetrieveOptions,
    RetrieveResult,
    retrieve,
)
from airflow_dicom.dimse.send import FileResult, SendReport, send
from airflow_dicom.hooks.connection import node_from_connection
from airflow_dicom.hooks.task_logs import quiet_pynetdicom

if TYPE_CHECKING:
    import os

    from pydicom.dataset import Dataset

    from airflow_dicom.landing.results import FindLanding

# task logs show our progress lines, not pynetdicom's per-message INFO chatter (see hooks/task_logs.py)
quiet_pynetdicom()


class DicomHook(BaseHook):
    """Interact with a remote DICOM node (PACS, modality, archive).

    :param dicom_conn_id: id of a connection of type ``dicom``: host, port and the extra fields
        ``called_ae_title`` (required), ``calling_ae_title``, ``acse_timeout``, ``dimse_timeout``,
        ``network_timeout``, ``max_pdu``, ``tls``, ``tls_ca_file``, ``tls_cert_file``,
        ``tls_verify_hostname``, ``tls_min_version``; the password holds the TLS private key (path or PEM).
    :param node_overrides: node settings that take precedence over the connection's, e.g.
        ``calling_ae_title="RESEARCH"`` for one task.
    """

    conn_name_attr = "dicom_conn_id"
    default_conn_name = "dicom_default"
    conn_type = "dicom"
    hook_name = "DICOM node"

    def __init__(self, dicom_conn_id: str = default_conn_name, **node_overrides: Any) -> None:
        super().__init__()
        self.dicom_conn_id = dicom_conn_id
        self.node_overrides = node_overrides

    @cached_property
    def node(self) -> DicomNode:
        """The :class:`DicomNode` described by the connection (validated)."""
        conn = self.get_connection(self.dicom_conn_id)
        node = node_from_connection(
            self.dicom_conn_id, conn.host, conn.port, conn.extra_dejson, conn.password
        )
        return node.with_changes(**self.node_overrides) if self.node_overrides else node

    def get_conn(self) -> DicomNode:
        """Return the :class:`DicomNode` (DICOM has no persistent client object)."""
        return self.node

    def echo(self) -> EchoResult:
        """Send a C-ECHO to the node.

        :raises DicomError: unreachable, rejected, aborted or a failure status.
        """
        return echo(self.node)

    def move(
        self,
        items: Sequence[RetrieveItem],
        destination: MoveDestination,
        *,
        options: RetrieveOptions | None = None,
        completed: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        should_continue: Callable[[], bool] | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> RetrieveResult:
        """C-MOVE ``items`` to ``destination`` (see :func:`airflow_dicom.dimse.retrieve.retrieve`).

        :param items: what to retrieve.
        :param destination: a third node, our receiver service, or an embedded receiver for this call.
        :param options: parallelism, retries, time budget, throttling.
        :param completed: items complete in a previous retrieval report (skipped).
        :param should_continue: polled before each request; False stops starting new ones.
        :param on_attempt: called with every attempt.
        """
        return retrieve(
            self.node,
            items,
            service=MOVE,
            destination=destination,
            options=options,
            completed=completed,
            should_continue=should_continue,
            on_attempt=on_attempt,
        )

    def get(
        self,
        items: Sequence[RetrieveItem],
        data_dir: str | Path,
        *,
        layout: str = "patient",
        options: RetrieveOptions | None = None,
        completed: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        should_continue: Callable[[], bool] | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
        sop_classes: Sequence[str] | None = None,
    ) -> RetrieveResult:
        """C-GET ``items`` into ``data_dir`` through the receiver's store core.

        :param items: what to retrieve.
        :param data_dir: where instances are stored (with arrival records).
        :param layout: storage layout (``patient``, ``study`` or ``flat``).
        :param options: parallelism, retries, time budget, throttling.
        :param completed: items complete in a previous retrieval report (skipped).
        :param should_continue: polled before each request; False stops starting new ones.
        :param on_attempt: called with every attempt.
        :param sop_classes: storage SOP classes to accept (default: common ones).
        """
        return retrieve(
            self.node,
            items,
            service=GET,
            data_dir=data_dir,
            layout=layout,
            options=options,
            completed=completed,
            should_continue=should_continue,
            on_attempt=on_attempt,
            sop_classes=sop_classes,
        )

    def send(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        parallel: int = 2,
        transcode: bool = False,
        retries: int = 1,
        response_timeout: float | None = None,
        progress: Callable[[FileResult], None] | None = None,
    ) -> SendReport:
        """Send DICOM files, directories and globs to the node (C-STORE).

        Delegates to :func:`airflow_dicom.dimse.send.send`.

        :param paths: files, directories (recursive) and glob patterns.
        :param parallel: associations at once.
        :param transcode: send compressed files uncompressed when the node refuses their syntax.
        :param retries: re-sends of a file whose response was lost.
        :param response_timeout: seconds per C-STORE response (default: the DIMSE timeout).
        :param progress: called with each file's result.
        :return: the per-file account; per-file failures do not raise.
        :raises DicomError: bad paths, or no association could be opened at all.
        """
        return send(
            self.node,
            paths,
            parallel=parallel,
            transcode=transcode,
            retries=retries,
            response_timeout=response_timeout,
            progress=progress,
        )

    def find(
        self,
        query: FindQuery,
        *,
        max_results_per_query: int | None = None,
        stats: FindStats | None = None,
    ) -> Iterator[Dataset]:
        """Run a C-FIND (split on truncation, one association) and stream the deduplicated matches.

        :param query: from :func:`airflow_dicom.dimse.query.build_query`.
        :param max_results_per_query: treat this many matches as truncation (nodes that truncate silently).
        :param stats: a :class:`~airflow_dicom.dimse.query.FindStats` to fill.
        :raises DicomError: unreachable, rejected, failure status or an unsplittable truncation.
        """
        return find(self.node, query, max_results_per_query=max_results_per_query, stats=stats)

    def find_and_land(self, query: FindQuery, output: Any, **kwargs: Any) -> FindLanding:
        """Run a C-FIND and land the complete result (Parquet dataset, CSV file or SQL table).

        :param query: from :func:`airflow_dicom.dimse.query.build_query`.
        :param output: see :func:`airflow_dicom.landing.results.find_and_land`.
        :param kwargs: ``output_format``, ``max_results_per_query``, ``sql_table``, ``filesystem``,
            ``source_node`` (see :func:`~airflow_dicom.landing.results.find_and_land`).
        """
        # imported here: the landing layer loads pyarrow (~0.3 s), which DAG files importing this hook skip
        from airflow_dicom.landing.results import find_and_land

        kwargs.setdefault("source_node", self.dicom_conn_id)
        return find_and_land(self.node, query, output, **kwargs)

    def test_connection(self) -> tuple[bool, str]:
        """Run a real C-ECHO; used by the UI's Test button and ``airflow connections test``."""
        try:
            result = self.echo()
        except DicomError as exc:
            return False, str(exc)
        except Exception as exc:  # the UI must show any reason, never a traceback
            return False, f"{type(exc).__name__}: {exc}"
        return True, (
            f"C-ECHO to {result.node.describe()} succeeded: round trip {result.round_trip * 1e3:.1f} ms "
            f"(association included {result.total * 1e3:.1f} ms)"
        )
