"""DicomWebHook: an Airflow Connection of type ``dicomweb`` turned into a :class:`DicomWebNode`.

The hook offers the calls of :class:`~airflow_dicom.hooks.dicom.DicomHook` that DICOMweb can serve, with
the same signatures and results: ``find``/``find_and_land`` (QIDO-RS), ``get`` (WADO-RS), ``send``
(STOW-RS), so the operators work on either kind of node (:func:`node_hook`, :func:`retrieval_hook`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_dicom.dicomweb.capabilities import (
    C_GET,
    WADO_RS,
    choose_retrieval,
    dimse_capabilities,
    web_capabilities,
)
from airflow_dicom.dicomweb.client import make_client, web_errors
from airflow_dicom.dicomweb.node import DicomWebNode, web_node_from_connection
from airflow_dicom.dicomweb.qido import qido_find
from airflow_dicom.dicomweb.stow import stow_send
from airflow_dicom.dicomweb.wado import wado_retrieve
from airflow_dicom.dimse.errors import DicomError, InvalidRequestError
from airflow_dicom.dimse.query import FindQuery, FindStats
from airflow_dicom.dimse.retrieve import Attempt, RetrieveItem, RetrieveOptions, RetrieveResult
from airflow_dicom.dimse.send import FileResult, SendReport
from airflow_dicom.hooks.dicom import DicomHook

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient
    from pydicom.dataset import Dataset

    from airflow_dicom.landing.results import FindLanding

log = logging.getLogger(__name__)


class DicomWebHook(BaseHook):
    """Interact with a DICOMweb origin server (PS3.18): QIDO-RS, WADO-RS, STOW-RS.

    :param dicomweb_conn_id: id of a connection of type ``dicomweb``: host = the base URL
        (``https://pacs/dicom-web``), login + password for basic auth or password = bearer token, and the
        extra fields ``qido_prefix``, ``wado_prefix``, ``stow_prefix``, ``auth`` (``none``, ``basic``,
        ``bearer``), ``verify_tls``, ``ca_bundle``, ``connect_timeout``, ``read_timeout``, ``page_size``,
        ``max_results`` (the server's result cap) and ``capabilities`` (``qido wado stow``).
    """

    conn_name_attr = "dicomweb_conn_id"
    default_conn_name = "dicomweb_default"
    conn_type = "dicomweb"
    hook_name = "DICOMweb node"

    def __init__(self, dicomweb_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.dicomweb_conn_id = dicomweb_conn_id

    @cached_property
    def node(self) -> DicomWebNode:
        """The :class:`DicomWebNode` described by the connection (validated)."""
        conn = self.get_connection(self.dicomweb_conn_id)
        return web_node_from_connection(
            self.dicomweb_conn_id,
            conn.host,
            conn.extra_dejson,
            login=conn.login,
            password=conn.password,
            port=conn.port,
            schema=conn.schema,
        )

    def get_conn(self) -> DICOMwebClient:
        """A ``dicomweb-client`` client for the node (authentication and TLS set)."""
        return make_client(self.node)

    def find(
        self, query: FindQuery, *, max_results_per_query: int | None = None, stats: FindStats | None = None
    ) -> Iterator[Dataset]:
        """QIDO-RS search with the C-FIND walk (see :func:`airflow_dicom.dicomweb.qido.qido_find`).

        :param query: from :func:`airflow_dicom.dimse.query.build_query`.
        :param max_results_per_query: treat this many matches as truncation.
        :param stats: counters to fill.
        """
        return qido_find(self.node, query, max_results_per_query=max_results_per_query, stats=stats)

    def find_and_land(self, query: FindQuery, output: Any, **kwargs: Any) -> FindLanding:
        """QIDO-RS find and land the complete result, exactly as :meth:`DicomHook.find_and_land`.

        :param query: from :func:`airflow_dicom.dimse.query.build_query`.
        :param output: see :func:`airflow_dicom.landing.results.find_and_land`.
        :param kwargs: see :func:`~airflow_dicom.landing.results.find_and_land`.
        """
        from airflow_dicom.landing.results import find_and_land  # pyarrow (~0.3 s) only when used

        kwargs.setdefault("source_node", self.dicomweb_conn_id)
        return find_and_land(self.node, query, output, **kwargs)

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
        """Retrieve ``items`` over WADO-RS into ``data_dir`` through the receiver's store core.

        :param items: STUDY, SERIES or IMAGE items.
        :param data_dir: where instances are stored (with arrival records).
        :param layout: storage layout (``patient``, ``study`` or ``flat``).
        :param options: parallel requests and retries.
        :param completed: items complete in a previous retrieval report (skipped).
        :param should_continue: polled before each request; False stops starting new ones.
        :param on_attempt: called with every attempt.
        :param sop_classes: ignored (WADO-RS returns every SOP class); kept for the C-GET signature.
        """
        if not self.node.offers("wado"):
            raise InvalidRequestError(f"{self.node.describe()} does not offer WADO-RS (its capabilities)")
        return wado_retrieve(
            self.node,
            items,
            data_dir,
            layout=layout,
            options=options,
            completed=completed,
            should_continue=should_continue,
            on_attempt=on_attempt,
        )

    def move(self, *args: Any, **kwargs: Any) -> RetrieveResult:
        """DICOMweb has no C-MOVE: always raises.

        :raises InvalidRequestError: use DicomGetOperator (WADO-RS) with a dicomweb connection.
        """
        raise InvalidRequestError(
            f"{self.node.describe()} is a DICOMweb node: it has no C-MOVE. Use DicomGetOperator, which "
            "retrieves over WADO-RS into data_dir"
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
        """Send DICOM files, directories and globs over STOW-RS (files as they are on disk).

        :param paths: files, directories (recursive) and glob patterns.
        :param parallel: STOW-RS requests at once (each a batch of files).
        :param transcode: ignored (the server decides what it accepts; refusals are in the report).
        :param retries: ignored (a batch is sent once; failures are reported per file).
        :param response_timeout: ignored (the connection's read timeout applies).
        :param progress: called with each file's result.
        """
        if not self.node.offers("stow"):
            raise InvalidRequestError(f"{self.node.describe()} does not offer STOW-RS (its capabilities)")
        return stow_send(self.node, paths, parallel=parallel, progress=progress)

    def test_connection(self) -> tuple[bool, str]:
        """A cheap QIDO-RS search (one study); used by the UI's Test button."""
        try:
            node = self.node
            with web_errors(node, "QIDO-RS studies search"):
                found = make_client(node).search_for_studies(limit=1, fields=["StudyInstanceUID"])
        except DicomError as exc:
            return False, str(exc)
        except Exception as exc:  # the UI must show any reason, never a traceback
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"QIDO-RS to {node.describe()} answered ({len(found)} study for limit=1)"


def _conn_type(conn_id: str) -> tuple[str, dict[str, Any]]:
    conn = BaseHook.get_connection(conn_id)
    return str(conn.conn_type or "").lower(), dict(conn.extra_dejson or {})


def node_hook(conn_id: str, **node_overrides: Any) -> DicomHook | DicomWebHook:
    """The hook for a connection of either type: ``dicom`` (DIMSE) or ``dicomweb``.

    :param conn_id: the connection id.
    :param node_overrides: DIMSE node settings (ignored for DICOMweb, which has no AE titles).
    """
    kind, _ = _conn_type(conn_id)
    if kind == "dicomweb":
        return DicomWebHook(conn_id)
    return DicomHook(conn_id, **node_overrides)


def retrieval_hook(conn_id: str, **node_overrides: Any) -> tuple[DicomHook | DicomWebHook, str]:
    """The hook and service a retrieval into our own storage uses: WADO-RS when offered, else C-GET.

    A ``dicom`` connection whose ``dicomweb_conn_id`` extra field names the same PACS's ``dicomweb``
    connection retrieves over WADO-RS through it. The choice is logged (and each report row says it).

    :param conn_id: a ``dicom`` or ``dicomweb`` connection.
    :param node_overrides: DIMSE node settings.
    :raises InvalidRequestError: the node offers neither (e.g. only C-MOVE).
    """
    kind, extra = _conn_type(conn_id)
    hooks: dict[str, DicomHook | DicomWebHook] = {}
    offered: set[str] = set()
    if kind == "dicomweb":
        web = DicomWebHook(conn_id)
        offered |= web_capabilities(web.node.capabilities)
        hooks[WADO_RS] = web
    else:
        offered |= dimse_capabilities(extra)
        hooks[C_GET] = DicomHook(conn_id, **node_overrides)
        linked = extra.get("dicomweb_conn_id")
        if linked:
            web = DicomWebHook(str(linked))
            if web.node.offers("wado"):
                offered.add(WADO_RS)
                hooks[WADO_RS] = web
    service = choose_retrieval(offered, allowed=(WADO_RS, C_GET), node=f"connection {conn_id!r}")
    log.info(
        "retrieval from connection %r: %s chosen (offered: %s; preference WADO-RS > C-GET > C-MOVE)",
        conn_id,
        service,
        ", ".join(sorted(offered)),
    )
    return hooks[service], service
