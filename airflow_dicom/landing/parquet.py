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
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from airflow_dicom.dimse.query import DateRange
from airflow_dicom.landing.arrow_arrays import to_array
from airflow_dicom.landing.storage import display_path, resolve_target

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PARTITION_COLUMN = "StudyDate"
#: the name of each partition's file (what ``pyarrow.dataset.write_dataset`` names ``part-{i}``)
PART_FILE = "part-0.parquet"


def __getattr__(name: str) -> Any:
    """``PARTITIONING``: the partitioning of every find dataset (``StudyDate=YYYY-MM-DD``, date32).

    Made on first use: ``pyarrow.dataset`` imports pandas (~0.4 s and ~40 MB), which writing needs not.
    """
    if name == "PARTITIONING":
        return _partitioning()
    raise AttributeError(name)


def _partitioning() -> Any:
    import pyarrow.dataset as ds  # noqa: PLC0415 - see __getattr__

    return ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.date32())]), flavor="hive")


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

    Each day with rows is emptied, then gets one file (``StudyDate=<day>/part-0.parquet``, the day's rows
    in the order given, the partition column in the directory name only): what ``pyarrow.dataset``'s
    ``write_dataset`` with ``existing_data_behavior="delete_matching"`` writes, without importing
    ``pyarrow.dataset`` (it imports pandas).

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
    days: dict[date | None, list[int]] = {}
    for index, day in enumerate(table.column(PARTITION_COLUMN).to_pylist()):
        if interval is not None and (day is None or not interval.first <= day <= interval.last):
            result.rows_outside_interval += 1
            continue
        days.setdefault(day, []).append(index)
    if result.rows_outside_interval:
        log.warning(
            "%d rows have a StudyDate outside %s..%s (or none); they are not written to this interval",
            result.rows_outside_interval,
            interval.first if interval else None,
            interval.last if interval else None,
        )
    fs.create_dir(base, recursive=True)
    existing = _day_directories(fs, base)
    rows = table.drop_columns([PARTITION_COLUMN])
    order = [i for indices in days.values() for i in indices]  # each day's rows together: a slice each
    if order != list(range(table.num_rows)):
        rows = rows.take(to_array(order, pa.int64()))
    offset = 0
    for day, indices in days.items():
        directory = day_directory(base, day)
        if directory.rsplit("/", 1)[-1] in existing:
            fs.delete_dir_contents(directory)
        else:
            fs.create_dir(directory, recursive=False)
        pq.write_table(rows.slice(offset, len(indices)), f"{directory}/{PART_FILE}", filesystem=fs)
        offset += len(indices)
    result.rows = offset
    result.days_written = sorted(d for d in days if d is not None)
    if interval is not None:
        result.days_cleared = _clear_days(fs, base, interval, set(days), existing)
    log.info(
        "landed %d rows in %d day partitions at %s (%d days of the interval cleared)",
        result.rows,
        len(result.days_written),
        result.path,
        len(result.days_cleared),
    )
    return result


def _day_directories(fs: pafs.FileSystem, base: str) -> dict[str, str]:
    """The partition directories under ``base``: name (``StudyDate=...``) -> path."""
    prefix = f"{PARTITION_COLUMN}="
    return {
        info.base_name: info.path
        for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        if info.type == pafs.FileType.Directory and info.base_name.startswith(prefix)
    }


def _clear_days(
    fs: pafs.FileSystem, base: str, interval: DateRange, keep: set[Any], existing: dict[str, str]
) -> list[date]:
    """Delete the partitions of days in ``interval`` that are not in ``keep``; return those days."""
    cleared = []
    prefix = f"{PARTITION_COLUMN}="
    for name, path in existing.items():
        try:
            day = date.fromisoformat(name[len(prefix) :])
        except ValueError:
            continue
        if interval.first <= day <= interval.last and day not in keep:
            fs.delete_dir(path)
            cleared.append(day)
    return sorted(cleared)


def read_find_dataset(path: Any, *, filesystem: Any = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a find dataset into pandas with ``StudyDate`` typed as a date (``datetime.date`` values).

    :param path: the dataset path (local, URL or ``ObjectStoragePath``).
    :param filesystem: optional explicit filesystem.
    :param columns: columns to read (default: all).
    """
    import pyarrow.dataset as ds  # noqa: PLC0415 - imports pandas: only when reading

    fs, base = resolve_target(path, filesystem)
    dataset = ds.dataset(base, filesystem=fs, format="parquet", partitioning=_partitioning())
    return dataset.to_table(columns=columns).to_pandas(types_mapper=None, date_as_object=True)
