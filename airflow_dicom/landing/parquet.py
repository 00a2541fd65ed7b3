"""Find results as a Parquet dataset hive-partitioned by StudyDate, idempotent per study-date interval.

Layout: ``<path>/StudyDate=2024-01-05/part-0.parquet`` (ISO dates in directory names; rows without a
StudyDate go to ``StudyDate=__HIVE_DEFAULT_PARTITION__``).

Idempotent backfills: a run for an interval REPLACES exactly the days of that interval:

1. rows are written with ``existing_data_behavior="delete_matching"``: each day that has rows is
   emptied, then written;
2. then every ``StudyDate=<day>`` directory of a day inside the interval that got no rows this time is
   deleted, so a rerun that now finds nothing (studies deleted or corrected on the PACS) leaves no
   stale rows;
3. days outside the interval are never touched; rows the node returned with a StudyDate outside the
   interval are dropped with a warning (they belong to another interval's run, whose partition they
   would otherwise overwrite).

Writing rows first and clearing empty days after keeps the window in which a day is missing small. Use
one dataset path per node: partitions are per day, not per node.

Reading back: ``pandas.read_parquet(path)`` works; as with every hive-partitioned dataset pyarrow
infers partition values as strings, so ``StudyDate`` comes back as a categorical of ISO dates
(``"2024-01-05"``; Spark, Trino and DuckDB read the same directories as DATE).
:func:`read_find_dataset` reads it with ``StudyDate`` typed as a date.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from airflow_dicom.dimse.query import DateRange
from airflow_dicom.landing.storage import display_path, resolve_target

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PARTITION_COLUMN = "StudyDate"
#: The partitioning of every find dataset (``StudyDate=YYYY-MM-DD`` directories, typed date32).
PARTITIONING = ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.date32())]), flavor="hive")


@dataclass
class WriteResult:
    """What a write did.

    :ivar path: the dataset path as given.
    :ivar rows: rows written.
    :ivar days_written: days (partitions) that received rows.
    :ivar days_cleared: days of the interval whose old partition was deleted because nothing matched.
    :ivar rows_outside_interval: rows dropped because their StudyDate is outside the interval.
    """

    path: str
    rows: int = 0
    days_written: list[date] = field(default_factory=list)
    days_cleared: list[date] = field(default_factory=list)
    rows_outside_interval: int = 0


def day_directory(base: str, day: date | None) -> str:
    """The partition directory of ``day`` under ``base``.

    :param base: the dataset root on its filesystem.
    :param day: the study date (``None`` for rows without one).
    """
    value = day.isoformat() if day is not None else "__HIVE_DEFAULT_PARTITION__"
    return f"{base.rstrip('/')}/{PARTITION_COLUMN}={value}"


def write_parquet(
    table: pa.Table,
    path: Any,
    *,
    interval: DateRange | None,
    filesystem: Any = None,
) -> WriteResult:
    """Write ``table`` into the dataset at ``path``, replacing exactly the days of ``interval``.

    :param table: a table from :func:`airflow_dicom.landing.table.to_table` (must have ``StudyDate``).
    :param path: local path, fsspec URL or ``ObjectStoragePath``.
    :param interval: the queried interval; its days without rows are cleared. ``None`` (no date
        constraint) replaces only the days present in ``table``.
    :param filesystem: optional explicit pyarrow/fsspec filesystem.
    """
    if PARTITION_COLUMN not in table.column_names:
        raise ValueError(f"the table has no {PARTITION_COLUMN} column to partition on")
    fs, base = resolve_target(path, filesystem)
    result = WriteResult(path=display_path(path))
    if interval is not None and table.num_rows:
        dates = table.column(PARTITION_COLUMN)
        inside = pc.and_(
            pc.greater_equal(dates, pa.scalar(interval.first, pa.date32())),
            pc.less_equal(dates, pa.scalar(interval.last, pa.date32())),
        )
        inside = pc.fill_null(inside, False)
        kept = table.filter(inside)
        result.rows_outside_interval = table.num_rows - kept.num_rows
        if result.rows_outside_interval:
            log.warning(
                "%d rows have a StudyDate outside %s..%s (or none); they are not written to this interval",
                result.rows_outside_interval,
                interval.first,
                interval.last,
            )
        table = kept
    fs.create_dir(base, recursive=True)
    if table.num_rows:
        ds.write_dataset(
            table,
            base,
            filesystem=fs,
            format="parquet",
            partitioning=PARTITIONING,
            existing_data_behavior="delete_matching",
            basename_template="part-{i}.parquet",
        )
    written = {d for d in table.column(PARTITION_COLUMN).to_pylist()} if table.num_rows else set()
    result.rows = table.num_rows
    result.days_written = sorted(d for d in written if d is not None)
    if interval is not None:
        result.days_cleared = _clear_days(fs, base, interval, written)
    log.info(
        "landed %d rows in %d day partitions at %s (%d days of the interval cleared)",
        result.rows,
        len(result.days_written),
        result.path,
        len(result.days_cleared),
    )
    return result


def _clear_days(fs: pafs.FileSystem, base: str, interval: DateRange, keep: set[Any]) -> list[date]:
    """Delete the partitions of days in ``interval`` that are not in ``keep``; return those days."""
    cleared = []
    prefix = f"{PARTITION_COLUMN}="
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        name = info.base_name
        if info.type != pafs.FileType.Directory or not name.startswith(prefix):
            continue
        try:
            day = date.fromisoformat(name[len(prefix) :])
        except ValueError:
            continue
        if interval.first <= day <= interval.last and day not in keep:
            fs.delete_dir(info.path)
            cleared.append(day)
    return sorted(cleared)


def read_find_dataset(path: Any, *, filesystem: Any = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a find dataset into pandas with ``StudyDate`` typed as a date (``datetime.date`` values).

    :param path: the dataset path (local, URL or ``ObjectStoragePath``).
    :param filesystem: optional explicit filesystem.
    :param columns: columns to read (default: all).
    """
    fs, base = resolve_target(path, filesystem)
    dataset = ds.dataset(base, filesystem=fs, format="parquet", partitioning=PARTITIONING)
    return dataset.to_table(columns=columns).to_pandas(types_mapper=None, date_as_object=True)
