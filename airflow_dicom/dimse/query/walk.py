"""C-FIND at every level with full recall: split on truncation, check every final status, stream results.

A query is built and validated first (:func:`build_query`: level, matching keys, return keys, a study-date
range, a modality filter), before any network traffic. :func:`find` then runs it over ONE association and
yields one :class:`~pydicom.dataset.Dataset` per match, deduplicated on the level's unique key.
:func:`find_matches` yields the same matches still encoded (:class:`~.match.Match`: a key is decoded when
read), which is what the landing uses: on our associations the responses are read raw
(:func:`~airflow_dicom.dimse.pynetdicom_ext.send_c_find_raw`), pydicom decodes nothing per match.

How the walk works (the fix for pacsanini's letter-by-letter walk, which missed names starting with a
digit, a non-ASCII letter or empty ones):

* The date-bounded part is always a STUDY-level query asking for the whole interval at once
  (``StudyDate=first-last``). The modality filter uses ``ModalitiesInStudy``, the key Orthanc and the
  standard use at that level (``Modality`` only below it). By default (``modality_match="local"``)
  ``ModalitiesInStudy`` is requested and matched here rather than by the node: Orthanc 1.10 applies
  ``LimitFindResults`` BEFORE it matches ``ModalitiesInStudy`` (a computed attribute) and then answers
  Success with fewer matches than exist (measured: 4 of 11 CT studies, status 0x0000), a silent
  truncation nothing could detect. ``modality_match="node"`` sends it as a matching key instead (less
  traffic, for PACS known to match it before their limit). A node that returns no ``ModalitiesInStudy``
  (pynetdicom's qrscp) is asked per study at SERIES level which ``Modality`` values it holds (logged).
* Every final status is checked. When the node signals truncation (``0xFE00`` Cancel after a result
  limit such as Orthanc's ``LimitFindResults``, ``0xA700``/``0xA701``/``0xA702`` out of resources, or at
  least ``max_results_per_query`` matches for nodes that truncate silently) the interval is halved, down
  to one day, then the day is split by ``StudyTime`` ranges down to one second. What a truncated query
  returned must reappear in its pieces (checked), so values no piece can reach fail loudly too. A piece
  that cannot be split further raises :class:`FindTruncatedError`; a partial result is never returned
  silently.
* PATIENT level with a date range (or study-level filters) walks the studies and reports each patient
  once per study date (a PATIENT-level query with a ``StudyDate`` key returns nothing on Orthanc, and
  per-day rows keep daily partitions complete and independent); without them it is a plain Patient Root
  PATIENT query, deduplicated on ``PatientID``.
* SERIES and IMAGE levels walk the studies, then ask the level below per study (``StudyInstanceUID``),
  and per series when an IMAGE query of one study is truncated. This works on strictly hierarchical
  PACS, and every row carries its study's ``StudyDate`` (the Parquet partition key).

How the date and time pieces are written is in :mod:`airflow_dicom.dimse.query.ranges`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from airflow_dicom.dimse.association import accepted_context, open_association
from airflow_dicom.dimse.codec import MalformedDicomError
from airflow_dicom.dimse.errors import (
    AssociationAbortedError,
    DimseFailureError,
    FindTruncatedError,
    InvalidRequestError,
    NoAcceptedContextError,
)
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.pynetdicom_ext import raw_find_supported, send_c_find_raw
from airflow_dicom.dimse.query.keys import MODEL_NAMES, MODELS, UNIQUE_KEY, key_level
from airflow_dicom.dimse.query.match import Match
from airflow_dicom.dimse.query.ranges import DateRange, TimeRange
from airflow_dicom.dimse.query.request import FindQuery
from airflow_dicom.dimse.status import Status, describe_status, is_pending

log = logging.getLogger(__name__)

#: Statuses meaning "the node stopped before sending every match".
TRUNCATION_STATUSES = frozenset(
    {
        Status.CANCEL,
        Status.OUT_OF_RESOURCES,
        Status.OUT_OF_RESOURCES_MATCHES,
        Status.OUT_OF_RESOURCES_SUB_OPERATIONS,
    }
)


@dataclass
class FindStats:
    """Counters of one :func:`find` run (filled while results are streamed).

    :ivar associations: associations opened (one per run).
    :ivar queries: C-FIND requests sent.
    :ivar splits: truncated queries that were split into smaller pieces.
    :ivar truncated: queries the node answered with a truncation status or at the configured limit.
    :ivar matches: pending responses received (duplicates included).
    :ivar results: unique results yielded.
    :ivar seconds: wall time from the association request to the end of the walk.
    """

    associations: int = 0
    queries: int = 0
    splits: int = 0
    truncated: int = 0
    matches: int = 0
    results: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        return {
            "associations": self.associations,
            "queries": self.queries,
            "splits": self.splits,
            "truncated": self.truncated,
            "matches": self.matches,
            "results": self.results,
            "seconds": round(self.seconds, 3),
        }


_LIMIT_ADVICE = (
    "Raise the node's result limit (Orthanc: LimitFindResults / LimitFindInstances), narrow the query "
    "(modality, AccessionNumber or other matching keys), or raise max_results_per_query if it is set "
    "below the node's real limit."
)


@dataclass
class QueryAnswer:
    status: int
    rows: list[Match]
    truncated: bool
    reason: str


class FindSession:
    """One association running the pieces of one query."""

    def __init__(
        self,
        node: DicomNode,
        assoc: Association,
        query: FindQuery,
        max_results: int | None,
        stats: FindStats,
    ) -> None:
        self.node = node
        self.assoc = assoc
        self.query = query
        self.max_results = max_results
        self.stats = stats
        self.charset_needed = any(not v.isascii() for v in query.matching.values())
        self._seen_studies: set[str] = set()
        self._study_modalities: dict[str, set[str]] = {}
        self._series_fallback_said = False

    # -------------------------------------------------------------- one C-FIND
    def _model(self, level: str) -> str:
        if level == "PATIENT":
            return "patient"
        return self.query.model or "study"

    def _identifier(self, level: str, keys: Mapping[str, str]) -> Dataset:
        ds = Dataset()
        if self.charset_needed:
            ds.SpecificCharacterSet = "ISO_IR 192"
        ds.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        return ds

    def ask(self, level: str, keys: Mapping[str, str], where: str) -> QueryAnswer:
        """Send one C-FIND and collect every response; classify the final status."""
        model = self._model(level)
        uid = MODELS[model]
        context = accepted_context(self.assoc, uid)
        if context is None:
            raise NoAcceptedContextError(self.node, f"C-FIND ({MODEL_NAMES[model]})")
        identifier = self._identifier(level, keys)
        self.stats.queries += 1
        rows: list[Match] = []
        final: int | None = None
        undecodable = f"{level} query for {where}: a match could not be decoded"
        if raw_find_supported(self.assoc, context):
            syntax = context.transfer_syntax[0]
            implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
            for code, _, data in send_c_find_raw(self.assoc, context, identifier):
                if code is None:
                    break
                if is_pending(code):
                    if data is None:
                        raise DimseFailureError(self.node, "C-FIND", code, undecodable)
                    try:  # elements are split now; values are decoded (with the charset) when read
                        rows.append(Match.from_bytes(data, implicit=implicit, little=little))
                    except MalformedDicomError as exc:
                        raise DimseFailureError(self.node, "C-FIND", code, f"{undecodable} ({exc})") from exc
                    continue
                final = code
        else:  # stock pynetdicom (outside the supported versions) or a deflated context
            for status_ds, found in self.assoc.send_c_find(identifier, uid):
                code = getattr(status_ds, "Status", None)
                if code is None:
                    break
                code = int(code)
                if is_pending(code):
                    if found is None:
                        raise DimseFailureError(self.node, "C-FIND", code, undecodable)
                    rows.append(Match.from_dataset(found))
                    continue
                final = code
        self.stats.matches += len(rows)
        if final is None:
            if self.assoc.is_aborted or not self.assoc.is_established:
                raise AssociationAbortedError(self.node, f"C-FIND at {level} level for {where}")
            raise DimseFailureError(self.node, "C-FIND", None, f"{level} query for {where}")
        truncated, reason = False, ""
        if final in TRUNCATION_STATUSES:
            truncated, reason = True, f"{describe_status('C-FIND', final)} after {len(rows)} matches"
        elif final != Status.SUCCESS:
            raise DimseFailureError(self.node, "C-FIND", final, f"{level} query for {where}")
        elif self.max_results is not None and len(rows) >= self.max_results:
            truncated = True
            reason = f"{len(rows)} matches reached max_results_per_query={self.max_results}"
        if truncated:
            self.stats.truncated += 1
        note = " (truncated, splitting)" if truncated else ""
        log.info("C-FIND %s %s: %d responses%s", level, where, len(rows), note)
        return QueryAnswer(final, rows, truncated, reason)

    # -------------------------------------------------------------- the study walk
    def _study_keys(self) -> dict[str, str]:
        """Identifier of the study walk: study (and patient) matching keys, return keys, modality filter."""
        q = self.query
        keys: dict[str, str] = {"StudyInstanceUID": "", "StudyDate": "", "StudyTime": ""}
        if q.level == "PATIENT":
            keys["PatientID"] = ""
        wanted = [k for k in (*q.matching, *q.return_keys) if key_level(k) in ("PATIENT", "STUDY")]
        if q.level == "STUDY":
            wanted = [*q.matching, *q.return_keys]  # anything asked at STUDY level goes into the study query
        for keyword in wanted:
            keys[keyword] = ""
        for keyword, value in q.matching.items():
            if keyword in keys:
                keys[keyword] = value
        if q.modalities:
            keys["ModalitiesInStudy"] = "\\".join(q.modalities) if q.modality_match == "node" else ""
        return keys

    def _modality_ok(self, row: Match, where: str) -> bool:
        """The local ``ModalitiesInStudy`` match (``modality_match="local"``).

        A node that returns no ``ModalitiesInStudy`` (pynetdicom's qrscp, some archives) is asked at SERIES
        level which modalities the study holds (one query per study, said once in the log); the row then
        carries what was learned.
        """
        q = self.query
        if not q.modalities or q.modality_match != "local":
            return True
        values = row.items("ModalitiesInStudy")
        present = {str(v).strip().upper() for v in values if str(v).strip()}
        if not present:
            present = self._series_modalities(row.text("StudyInstanceUID"), where)
            if present:
                row.set("ModalitiesInStudy", sorted(present))
        return bool(present & set(q.modalities))

    def _series_modalities(self, uid: str, where: str) -> set[str]:
        """The modalities of one study's series (the fallback of :meth:`_modality_ok`), cached per study."""
        if uid in self._study_modalities:
            return self._study_modalities[uid]
        if not self._series_fallback_said:
            self._series_fallback_said = True
            log.info(
                "%s returned no ModalitiesInStudy for %s: the modality filter %s is matched with a "
                "SERIES-level query (Modality) per study instead",
                self.node.describe(),
                where,
                "/".join(self.query.modalities),
            )
        answer = self.ask(
            "SERIES",
            {"StudyInstanceUID": uid, "SeriesInstanceUID": "", "Modality": ""},
            f"modalities of study {uid}",
        )
        if answer.truncated:
            raise FindTruncatedError(self.node, "SERIES", f"study {uid}", answer.reason, _LIMIT_ADVICE)
        found = {r.text("Modality").strip().upper() for r in answer.rows}
        found.discard("")
        self._study_modalities[uid] = found
        return found

    def walk_studies(self) -> Iterator[Match]:
        """Every study matching the query (each once), splitting the date range on truncation."""
        keys = self._study_keys()
        if self.query.date_range is None:
            yield from self._walk(keys, None, TimeRange())
        else:
            yield from self._walk(keys, self.query.date_range, TimeRange())

    def _walk(self, keys: dict[str, str], dates: DateRange | None, times: TimeRange) -> Iterator[Match]:
        """Query one piece; yield its new studies; split when truncated. Returns the piece's study UIDs."""
        piece = dict(keys)
        where = "all study dates"
        if dates is not None:
            piece["StudyDate"] = dates.dicom()
            where = f"study dates {dates}"
        if not times.whole_day:
            piece["StudyTime"] = times.dicom()
            where += f" times {times}"
        answer = self.ask("STUDY", piece, where)
        found: set[str] = set()
        for row in answer.rows:
            uid = row.text("StudyInstanceUID")
            if not uid:
                raise DimseFailureError(
                    self.node, "C-FIND", answer.status, f"a STUDY match for {where} has no StudyInstanceUID"
                )
            found.add(uid)
            if not self._modality_ok(row, where):
                continue
            if uid not in self._seen_studies:
                self._seen_studies.add(uid)
                yield row
        if not answer.truncated:
            return found
        if dates is None:
            raise FindTruncatedError(
                self.node,
                "STUDY",
                where,
                answer.reason,
                "Give a study-date range (date_from/date_to) so the query can be split. " + _LIMIT_ADVICE,
            )
        if dates.days > 1:
            pieces: list[tuple[DateRange, TimeRange]] = [(half, times) for half in dates.halves()]
        elif times.first < times.last:
            pieces = [(dates, half) for half in times.halves()]
        else:
            raise FindTruncatedError(self.node, "STUDY", where, answer.reason, _LIMIT_ADVICE)
        self.stats.splits += 1
        covered: set[str] = set()
        for piece_dates, piece_times in pieces:
            covered |= yield from self._walk(keys, piece_dates, piece_times)
        missing = found - covered
        if missing:
            raise DimseFailureError(
                self.node,
                "C-FIND",
                answer.status,
                f"{len(missing)} studies found for {where} are in none of its pieces (their StudyDate or "
                "StudyTime cannot be matched by ranges); the result would be incomplete. Query a wider "
                "interval on a node with a higher result limit",
            )
        return found | covered

    # -------------------------------------------------------------- levels below STUDY
    def _leaf_keys(self, level: str, levels: tuple[str, ...]) -> dict[str, str]:
        """Identifier keys of a per-study/per-series query at ``level`` taking the keys of ``levels``."""
        q = self.query
        keys: dict[str, str] = {UNIQUE_KEY[level]: ""}
        if level == "IMAGE":
            keys = {"SeriesInstanceUID": "", **keys}
        for keyword in (*q.matching, *q.return_keys):
            if key_level(keyword) in levels:
                keys[keyword] = q.matching.get(keyword, "")
        if q.modalities and "SERIES" in levels:
            keys["Modality"] = "\\".join(q.modalities)
        return keys

    def _series_level_keys_needed(self) -> bool:
        q = self.query
        return bool(q.modalities) or any(key_level(k) == "SERIES" for k in (*q.matching, *q.return_keys))

    def below(self, study: Match) -> Iterator[Match]:
        """Rows of the query's level (SERIES or IMAGE) in one study, with the study's attributes merged."""
        uid = study.text("StudyInstanceUID")
        in_study = {"StudyInstanceUID": uid}
        if self.query.level == "SERIES":
            keys = self._leaf_keys("SERIES", ("SERIES", "IMAGE"))
            yield from self._children("SERIES", in_study, keys, f"study {uid}", study)
            return
        if not self._series_level_keys_needed():
            keys = self._leaf_keys("IMAGE", ("IMAGE",))
            answer = self.ask("IMAGE", {**in_study, **keys}, f"study {uid}")
            if not answer.truncated:
                for row in answer.rows:
                    self._check_unique("IMAGE", row, f"study {uid}", answer.status)
                    yield row.merge(study)
                return
            self.stats.splits += 1  # too many instances in one study: ask series by series
        series_keys = self._leaf_keys("SERIES", ("SERIES",))
        image_keys = self._leaf_keys("IMAGE", ("IMAGE",))
        for series in list(self._children("SERIES", in_study, series_keys, f"study {uid}", study)):
            series_uid = series.text("SeriesInstanceUID")
            in_series = {**in_study, "SeriesInstanceUID": series_uid}
            yield from self._children("IMAGE", in_series, image_keys, f"series {series_uid}", series)

    def _check_unique(self, level: str, row: Match, where: str, status: int) -> None:
        if not row.text(UNIQUE_KEY[level]):
            raise DimseFailureError(
                self.node, "C-FIND", status, f"a {level} match in {where} has no {UNIQUE_KEY[level]}"
            )

    def _children(
        self, level: str, parent_keys: dict[str, str], keys: dict[str, str], where: str, parent: Match
    ) -> Iterator[Match]:
        """One query for the children of one study or series (these cannot be split by date)."""
        answer = self.ask(level, {**keys, **parent_keys}, where)
        if answer.truncated:
            raise FindTruncatedError(self.node, level, where, answer.reason, _LIMIT_ADVICE)
        for row in answer.rows:
            self._check_unique(level, row, where, answer.status)
            yield row.merge(parent)  # the parent's attributes (study or series level) the row lacks


def _row_key(query: FindQuery, row: Match) -> tuple[str, ...]:
    key = row.text(query.unique_key)
    if query.level == "PATIENT" and query.date_range is not None:
        return (key, row.text("StudyDate"))
    return (key,)


def find(
    node: DicomNode,
    query: FindQuery,
    *,
    max_results_per_query: int | None = None,
    stats: FindStats | None = None,
) -> Iterator[Dataset]:
    """Run ``query`` against ``node`` over one association; yield each match once (streamed).

    Each match is the pydicom Dataset of its identifier (see :func:`find_matches` for the encoded form).
    Every row carries the columns of :attr:`FindQuery.columns` the node returned (keys it does not
    return are simply absent). The walk splits truncated queries (see the module docstring).

    :param node: the node to query.
    :param query: a request from :func:`build_query`.
    :param max_results_per_query: for nodes that truncate silently: a query returning this many matches
        or more is treated as truncated and split. ``None`` trusts the node's final status.
    :param stats: a :class:`FindStats` to fill (queries sent, splits made...), read it after iterating.
    :raises FindTruncatedError: a truncated piece cannot be split further.
    :raises DicomError: association or DIMSE failure (typed, naming the node).
    """
    for match in find_matches(node, query, max_results_per_query=max_results_per_query, stats=stats):
        yield match.dataset()


def find_matches(
    node: DicomNode,
    query: FindQuery,
    *,
    max_results_per_query: int | None = None,
    stats: FindStats | None = None,
) -> Iterator[Match]:
    """:func:`find`, yielding each match as a :class:`~.match.Match` (decoded key by key when read).

    Every row carries the columns of :attr:`FindQuery.columns` the node returned (keys it does not
    return are simply absent). The walk splits truncated queries (see the module docstring).

    :param node: the node to query.
    :param query: a request from :func:`build_query`.
    :param max_results_per_query: for nodes that truncate silently: a query returning this many matches
        or more is treated as truncated and split. ``None`` trusts the node's final status.
    :param stats: a :class:`FindStats` to fill (queries sent, splits made...), read it after iterating.
    :raises FindTruncatedError: a truncated piece cannot be split further.
    :raises DicomError: association or DIMSE failure (typed, naming the node).
    """
    if max_results_per_query is not None and int(max_results_per_query) < 1:
        raise InvalidRequestError(f"max_results_per_query must be at least 1, not {max_results_per_query}")
    stats = stats if stats is not None else FindStats()
    max_results = int(max_results_per_query) if max_results_per_query is not None else None
    started = time.monotonic()
    contexts = [StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind]
    with open_association(node, contexts, purpose="C-FIND") as assoc:
        stats.associations += 1
        session = FindSession(node, assoc, query, max_results, stats)
        yield from walk_rows(session, query, stats)
    stats.seconds = time.monotonic() - started
    log.info(
        "C-FIND %s on %s: %d unique %s results from %d responses (a node may answer once per instance), "
        "%d queries, %d splits, %.2f s",
        query.describe(),
        node.describe(),
        stats.results,
        query.level,
        stats.matches,
        stats.queries,
        stats.splits,
        stats.seconds,
    )


def walk_rows(session: FindSession, query: FindQuery, stats: FindStats) -> Iterator[Match]:
    """Every row of ``query`` asked through ``session`` (any transport), each once.

    :param session: a :class:`FindSession` (C-FIND) or a subclass sending its queries another way.
    :param query: the query.
    :param stats: counters to fill.
    """
    seen: set[tuple[str, ...]] = set()
    for row in _rows(session, query):
        key = _row_key(query, row)
        if key in seen:
            continue
        seen.add(key)
        row.set("QueryRetrieveLevel", query.level)
        stats.results += 1
        yield row


def _rows(session: FindSession, query: FindQuery) -> Iterator[Match]:
    if query.level == "PATIENT" and not query.walks_studies:
        keys = {"PatientID": ""}
        for keyword in (*query.matching, *query.return_keys):
            keys[keyword] = query.matching.get(keyword, "")
        answer = session.ask("PATIENT", keys, "all patients")
        if answer.truncated:
            raise FindTruncatedError(
                session.node,
                "PATIENT",
                "all patients",
                answer.reason,
                "Give a study-date range so patients are found through their studies, day by day. "
                + _LIMIT_ADVICE,
            )
        yield from answer.rows
        return
    for study in session.walk_studies():
        if query.level in ("PATIENT", "STUDY"):
            yield study
        else:
            yield from session.below(study)


def find_all(
    node: DicomNode,
    query: FindQuery,
    *,
    max_results_per_query: int | None = None,
    stats: FindStats | None = None,
) -> list[Dataset]:
    """:func:`find` collected into a list (convenience for small results).

    :param node: the node to query.
    :param query: a request from :func:`build_query`.
    :param max_results_per_query: see :func:`find`.
    :param stats: see :func:`find`.
    """
    return list(find(node, query, max_results_per_query=max_results_per_query, stats=stats))
