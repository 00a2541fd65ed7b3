"""QIDO-RS find with the same walk, keys and rows as C-FIND (so the landed Parquet is the same).

:class:`QidoSession` replaces the one network step of the C-FIND walk
(:meth:`~airflow_dicom.dimse.query.walk.FindSession.ask`) with QIDO-RS searches; the date splitting,
the local ``ModalitiesInStudy`` match, the levels below STUDY and the deduplication are the C-FIND
walk's own. DICOM JSON answers become :class:`~pydicom.dataset.Dataset` rows, which the landing layer
types by VR exactly as it types C-FIND matches.

Paging: every search asks ``limit=page_size`` and then the next ``offset`` until a page comes back
empty, so servers that cap each page (``Warning: 299``) are read to the end. A server that caps the
whole search silently (measured: Orthanc 1.10's DICOMweb plugin with ``LimitFindResults=5`` answers
6 matches in all, whatever ``limit``/``offset`` ask, with no warning) is declared on the node
(``max_results``): a search reaching it is truncated, so the walk splits the date range (then
StudyTime) exactly as for C-FIND, and fails loudly when it cannot. A server that ignores ``offset``
(a page brings no new match) is reported as truncation too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

from dicomweb_client.api import DICOMwebClient
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from airflow_dicom.dicomweb.client import make_client, web_errors
from airflow_dicom.dicomweb.node import DicomWebNode
from airflow_dicom.dimse.query import FindQuery, FindStats
from airflow_dicom.dimse.query.match import Match, matches_from
from airflow_dicom.dimse.query.walk import FindSession, QueryAnswer, walk_rows

log = logging.getLogger(__name__)

#: the level a search is sent at -> the QIDO-RS resource
_RESOURCES = {"PATIENT": "studies", "STUDY": "studies", "SERIES": "series", "IMAGE": "instances"}

#: a stand-in for a final DIMSE status (QIDO has none; the walk only logs it)
_SUCCESS = 0x0000

#: hard stop on pages per search (a server that keeps answering would otherwise loop for ever)
MAX_PAGES = 100_000


def _params(keys: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Split C-FIND identifier keys into QIDO matching parameters and ``includefield`` keys."""
    search: dict[str, str] = {}
    fields: list[str] = []
    for keyword, value in keys.items():
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        if value in (None, ""):
            fields.append(f"{tag_for_keyword(keyword):08X}")
        else:
            search[keyword] = str(value).replace("\\", ",")
    return search, fields


class QidoSession(FindSession):
    """The C-FIND walk over QIDO-RS: only :meth:`ask` differs.

    :param node: the DICOMweb node.
    :param client: its ``dicomweb-client`` client.
    :param query: the validated query.
    :param max_results: see :func:`qido_find`.
    :param stats: counters to fill.
    """

    def __init__(
        self,
        node: DicomWebNode,
        client: DICOMwebClient,
        query: FindQuery,
        max_results: int | None,
        stats: FindStats,
    ) -> None:
        super().__init__(node, None, query, max_results, stats)  # type: ignore[arg-type]
        self.client = client
        self.web_node = node
        self.pages = 0

    def _search(self, level: str, keys: Mapping[str, str], offset: int, limit: int) -> list[dict[str, Any]]:
        search, fields = _params(keys)
        study = search.pop("StudyInstanceUID", None) if level in ("SERIES", "IMAGE") else None
        series = search.pop("SeriesInstanceUID", None) if level == "IMAGE" else None
        resource = _RESOURCES[level]
        what = f"QIDO-RS {resource} search"
        common: dict[str, Any] = {
            "limit": limit,
            "offset": offset,
            "fields": fields or None,
            "search_filters": search or None,
        }
        with web_errors(self.web_node, what):
            if resource == "studies":
                return self.client.search_for_studies(**common)
            if resource == "series":
                return self.client.search_for_series(study_instance_uid=study, **common)
            return self.client.search_for_instances(
                study_instance_uid=study, series_instance_uid=series, **common
            )

    def ask(self, level: str, keys: Mapping[str, str], where: str) -> QueryAnswer:
        """Page one search to its end; the answer is truncated only when paging cannot complete it.

        :param level: the C-FIND level of the search.
        :param keys: the C-FIND identifier keys (empty value: return key).
        :param where: the piece, for messages.
        """
        page_size = self.web_node.page_size
        rows: list[Dataset] = []
        seen: set[str] = set()
        unique = {"PATIENT": "StudyInstanceUID", "STUDY": "StudyInstanceUID"}.get(level)
        unique = unique or ("SeriesInstanceUID" if level == "SERIES" else "SOPInstanceUID")
        wanted = {*keys, unique}
        offset = 0
        truncated, reason = False, ""
        for _ in range(MAX_PAGES):
            page = self._search(level, keys, offset, page_size)
            self.pages += 1
            self.stats.queries += 1  # every HTTP request counts
            if not page:
                break
            new = 0
            for item in page:
                row = Dataset.from_json(item)
                for element in list(row):  # as a C-FIND answer: only the keys asked (servers add defaults)
                    if element.keyword not in wanted:
                        del row[element.tag]
                uid = str(row.get(unique, "") or "")
                if uid and uid in seen:
                    continue
                seen.add(uid)
                rows.append(row)
                new += 1
            if new == 0:
                truncated = True
                reason = (
                    f"the server answered offset={offset} with matches already seen (it ignores QIDO-RS "
                    f"paging) after {len(rows)} matches"
                )
                break
            offset += len(page)
        else:
            truncated, reason = True, f"more than {MAX_PAGES} pages of {page_size} matches"
        self.stats.matches += len(rows)
        if self.max_results is not None and len(rows) >= self.max_results and not truncated:
            truncated = True
            reason = f"{len(rows)} matches reached max_results_per_query={self.max_results}"
        if truncated:
            self.stats.truncated += 1
        log.info("QIDO-RS %s %s: %d matches%s", level, where, len(rows), " (truncated)" if truncated else "")
        return QueryAnswer(_SUCCESS, matches_from(rows), truncated, reason)


def qido_find(
    node: DicomWebNode,
    query: FindQuery,
    *,
    max_results_per_query: int | None = None,
    stats: FindStats | None = None,
) -> Iterator[Dataset]:
    """Run ``query`` against a DICOMweb node over QIDO-RS; yield each match once (streamed).

    The rows are those :func:`airflow_dicom.dimse.query.find` yields for the same query on a DIMSE node.

    :param node: the DICOMweb node.
    :param query: a request from :func:`~airflow_dicom.dimse.query.build_query`.
    :param max_results_per_query: treat a search with this many matches as truncated (split it).
    :param stats: a :class:`~airflow_dicom.dimse.query.FindStats` to fill (``associations`` stays 0).
    :raises FindTruncatedError: a search that paging cannot complete and that cannot be split.
    :raises DicomWebError: the server is unreachable, refuses the credentials or answers an error.
    """
    for match in qido_matches(node, query, max_results_per_query=max_results_per_query, stats=stats):
        yield match.dataset()


def qido_matches(
    node: DicomWebNode,
    query: FindQuery,
    *,
    max_results_per_query: int | None = None,
    stats: FindStats | None = None,
) -> Iterator[Match]:
    """:func:`qido_find`, yielding each match as a :class:`~airflow_dicom.dimse.query.match.Match`.

    :param node: the DICOMweb node.
    :param query: the query.
    :param max_results_per_query: see :func:`qido_find`.
    :param stats: see :func:`qido_find`.
    """
    stats = stats if stats is not None else FindStats()
    started = time.monotonic()
    caps = [int(c) for c in (max_results_per_query, node.max_results) if c is not None]
    session = QidoSession(node, make_client(node), query, min(caps) if caps else None, stats)
    yield from walk_rows(session, query, stats)
    stats.seconds = time.monotonic() - started
    log.info(
        "QIDO-RS %s on %s: %d results, %d searches, %d pages, %d splits, %.2f s",
        query.describe(),
        node.describe(),
        stats.results,
        stats.queries,
        session.pages,
        stats.splits,
        stats.seconds,
    )
