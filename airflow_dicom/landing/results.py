"""Run a C-FIND and land its results in one call (shared by the hook, the operator and the CLI)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.query import FindQuery, FindStats
from airflow_dicom.dimse.query.walk import find_matches
from airflow_dicom.landing.parquet import write_parquet
from airflow_dicom.landing.storage import display_path
from airflow_dicom.landing.table import TableBuilder
from airflow_dicom.landing.tabular import write_csv, write_sql

if TYPE_CHECKING:
    from airflow_dicom.dicomweb.node import DicomWebNode

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "sql")


@dataclass
class FindLanding:
    """The outcome of :func:`find_and_land` (small, PHI-free: fit for XCom as :meth:`summary`).

    :ivar rows: rows landed.
    :ivar path: where (dataset path, CSV file or ``sql:<table>``).
    :ivar format: ``parquet``, ``csv`` or ``sql``.
    :ivar level: the query level.
    :ivar interval_start: first queried study date (or ``None``).
    :ivar interval_end: last queried study date (or ``None``).
    :ivar stats: the C-FIND counters (queries, splits...).
    :ivar days_written: partitions that received rows (Parquet).
    :ivar days_cleared: partitions of the interval deleted because nothing matched any more (Parquet).
    :ivar rows_replaced: SQL rows of the interval deleted before inserting.
    :ivar rows_outside_interval: rows dropped because the node returned a StudyDate outside the interval.
    :ivar seconds: wall time of query plus landing.
    """

    rows: int
    path: str
    format: str
    level: str
    node: str
    interval_start: date | None
    interval_end: date | None
    stats: FindStats
    days_written: list[date] = field(default_factory=list)
    days_cleared: list[date] = field(default_factory=list)
    rows_replaced: int = 0
    rows_outside_interval: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary (what the operator returns to XCom)."""
        return {
            "rows": self.rows,
            "path": self.path,
            "format": self.format,
            "level": self.level,
            "node": self.node,
            "interval_start": self.interval_start.isoformat() if self.interval_start else None,
            "interval_end": self.interval_end.isoformat() if self.interval_end else None,
            "queries": self.stats.queries,
            "splits": self.stats.splits,
            "truncated_queries": self.stats.truncated,
            "associations": self.stats.associations,
            "days_written": len(self.days_written),
            "days_cleared": len(self.days_cleared),
            "rows_replaced": self.rows_replaced,
            "rows_outside_interval": self.rows_outside_interval,
            "seconds": round(self.seconds, 3),
        }


def find_and_land(
    node: DicomNode | DicomWebNode,
    query: FindQuery,
    output: Any,
    *,
    output_format: str = "parquet",
    max_results_per_query: int | None = None,
    sql_table: str | None = None,
    filesystem: Any = None,
    source_node: str | None = None,
    matches: Iterable[Any] | None = None,
    stats: FindStats | None = None,
) -> FindLanding:
    """Run ``query`` on ``node`` and land the complete result; nothing is written if the query fails.

    :param node: the node to query: a DIMSE node (C-FIND) or a DICOMweb node (QIDO-RS, same rows).
    :param query: from :func:`airflow_dicom.dimse.query.build_query`.
    :param output: Parquet dataset path or CSV file path (local, URL, ``ObjectStoragePath``), or for
        ``sql`` a SQLAlchemy URL / Engine.
    :param output_format: ``parquet`` (default), ``csv`` or ``sql``.
    :param max_results_per_query: see :func:`airflow_dicom.dimse.query.find`.
    :param sql_table: the SQL table name (required for ``sql``).
    :param filesystem: optional explicit filesystem for ``output``.
    :param source_node: the value of the ``source_node`` column (default: the connection id, else
        ``AET@host:port``).
    :param matches: the query's matches when the caller already started the walk (e.g. a
        :class:`~airflow_dicom.dimse.query.background.Prefetched` :func:`find_matches`, so that the
        command line imports this module while the node computes its answer); default: run it here.
    :param stats: the walk's counters (give the ones the ``matches`` walk fills).
    """
    if output_format not in FORMATS:
        raise InvalidRequestError(f"output format {output_format!r} is not one of {', '.join(FORMATS)}")
    if output_format == "sql" and not sql_table:
        raise InvalidRequestError("the sql format needs a table name (sql_table)")
    started = time.monotonic()
    stats = stats if stats is not None else FindStats()
    if not isinstance(node, DicomNode):  # a DicomWebNode (its HTTP client is imported only then)
        from airflow_dicom.dicomweb.qido import qido_matches  # noqa: PLC0415

        label = source_node or node.name or node.url
        finder: Any = qido_matches
    else:
        label = source_node or node.name or f"{node.called_ae_title}@{node.host}:{node.port}"
        finder = find_matches
    builder = TableBuilder(query.columns, source_node=label, level=query.level, interval=query.date_range)
    if matches is None:
        matches = finder(node, query, max_results_per_query=max_results_per_query, stats=stats)
    builder.extend(matches)
    table = builder.table()
    interval = query.date_range
    landing = FindLanding(
        rows=table.num_rows,
        path="",
        format=output_format,
        level=query.level,
        node=node.describe(),
        interval_start=interval.first if interval else None,
        interval_end=interval.last if interval else None,
        stats=stats,
    )
    if output_format == "parquet":
        written = write_parquet(table, output, interval=interval, filesystem=filesystem)
        landing.path = written.path
        landing.rows = written.rows
        landing.days_written = written.days_written
        landing.days_cleared = written.days_cleared
        landing.rows_outside_interval = written.rows_outside_interval
    elif output_format == "csv":
        landing.path = write_csv(table, output, filesystem=filesystem)
    else:
        result = write_sql(table, output, str(sql_table), interval=interval)
        landing.path = f"sql:{sql_table}"
        landing.rows_replaced = result.deleted
    landing.seconds = time.monotonic() - started
    log.info(
        "find %s on %s: %d rows to %s (%d queries, %d splits) in %.2f s",
        query.describe(),
        node.describe(),
        landing.rows,
        display_path(landing.path),
        stats.queries,
        stats.splits,
        landing.seconds,
    )
    return landing
