"""The retrieval report: one Parquet row per requested item and attempt (the audit trail of C-MOVE/C-GET).

The report is a directory of Parquet files (a pyarrow dataset). Every retrieval run appends new files
(``part-<time>-<token>.parquet``) and never rewrites old ones, so the trail of attempts is complete. The
latest row per ``(level, uid)`` tells whether an item is complete; :func:`completed_items` reads exactly that
for the resume logic. ``path`` may be a local directory or any URL pyarrow's filesystems understand
(``s3://``, ``gs://``...).
"""

from __future__ import annotations

import secrets
import threading
import time
from array import array
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from airflow_dicom.landing.arrow_arrays import to_array

#: columns of the report, in order, with their types.
REPORT_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("level", pa.string()),
        ("study_uid", pa.string()),
        ("series_uid", pa.string()),
        ("service", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("dimse_status", pa.int32()),
        ("expected", pa.int64()),
        ("completed", pa.int64()),
        ("failed", pa.int64()),
        ("warning", pa.int64()),
        ("received", pa.int64()),
        ("bytes", pa.int64()),
        ("attempt", pa.int32()),
        ("started", pa.timestamp("ms", tz="UTC")),
        ("finished", pa.timestamp("ms", tz="UTC")),
        ("seconds", pa.float64()),
        ("node", pa.string()),
        ("destination", pa.string()),
        ("run_id", pa.string()),
    ]
)

#: ``status`` values.
COMPLETE = "complete"
FAILED = "failed"
SKIPPED = "skipped"
NOT_STARTED = "not_started"


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), path


def write_report(rows: Iterable[Mapping[str, Any]], path: str) -> str | None:
    """Append ``rows`` to the report at ``path`` as one new Parquet file; return the file's path.

    :param rows: mappings with (a subset of) the :data:`REPORT_SCHEMA` columns; missing ones are null.
    :param path: the report directory (created if needed) or URL.
    :return: the written file, or ``None`` when there were no rows.
    """
    rows = list(rows)
    if not rows:
        return None
    table = report_table(rows)
    fs, root = _filesystem(str(path))
    fs.create_dir(root, recursive=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    target = f"{root.rstrip('/')}/part-{stamp}-{secrets.token_hex(4)}.parquet"
    tmp = target + ".tmp"
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, target)
    return target


_EPOCH = datetime(1970, 1, 1)


def _epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch, UTC (naive datetimes taken as UTC, as pyarrow takes them)."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _column(values: list[Any], type_: pa.DataType) -> pa.Array:
    """A :data:`REPORT_SCHEMA` column from Python values, built from buffers (no conversion, no compute)."""
    if pa.types.is_timestamp(type_):  # int64 milliseconds, viewed as the timestamp type (same buffers)
        return to_array([None if v is None else _epoch_ms(v) for v in values], pa.int64()).view(type_)
    if pa.types.is_int32(type_):
        wide = to_array(values, pa.int64())  # its validity bitmap serves the int32 column
        narrow = array("i", [0 if v is None else int(v) for v in values])
        return pa.Array.from_buffers(
            type_, len(values), [wide.buffers()[0], pa.py_buffer(narrow)], wide.null_count
        )
    return to_array(values, type_)


def report_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """``pyarrow.Table.from_pydict`` of report rows with :data:`REPORT_SCHEMA`, without importing pandas.

    pyarrow's conversion of Python objects imports pandas the first time (~0.3 s of a retrieval command that
    never needs it), and casting imports ``pyarrow.compute`` (~30 ms): the columns are built from buffers
    instead (:func:`~.arrow_arrays.to_array`; timestamps in ms, truncated as ``from_pydict`` truncates them).

    :param rows: mappings with (a subset of) the :data:`REPORT_SCHEMA` columns; missing ones are null.
    """
    rows = list(rows)
    columns = [_column([row.get(field.name) for row in rows], field.type) for field in REPORT_SCHEMA]
    return pa.Table.from_arrays(columns, schema=REPORT_SCHEMA)


def read_report(path: str) -> Any:
    """The whole report as a pandas DataFrame (empty, with the report's columns, if there is none yet).

    :param path: the report directory or URL.
    """
    import pyarrow.dataset as pads  # imports pandas (~0.3 s): only reading a report needs it

    fs, root = _filesystem(str(path))
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return REPORT_SCHEMA.empty_table().to_pandas()
    dataset = pads.dataset(
        root,
        schema=REPORT_SCHEMA,
        format="parquet",
        filesystem=fs,
        exclude_invalid_files=True,
        ignore_prefixes=[".", "_"],
    )
    table = dataset.to_table()
    frame = table.to_pandas()
    return frame.sort_values(["finished", "attempt"], kind="stable").reset_index(drop=True)


def latest_rows(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest row per ``(level, uid)`` (rows with status ``skipped`` do not override real attempts).

    :param path: the report directory or URL.
    """
    fs, root = _filesystem(str(path))
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        return {}  # no report yet: a first run reads nothing (nor imports pandas to do so)
    frame = read_report(path)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in frame.to_dict("records"):
        key = (row["level"], row["uid"])
        if row["status"] == SKIPPED and key in latest:
            continue
        latest[key] = row
    return latest


def completed_items(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``(level, uid)`` of every item whose latest attempt in the report is complete, with that row.

    :param path: the report directory or URL.
    """
    return {key: row for key, row in latest_rows(path).items() if row["status"] in (COMPLETE, SKIPPED)}


class ReportWriter:
    """Buffers report rows and appends them to the report in batches (one Parquet file per flush).

    Thread-safe: retrieval workers add rows as attempts finish. Use as a context manager so the last rows are
    written even when the run fails.

    :param path: the report directory or URL; ``None`` keeps nothing (rows are only counted).
    :param run_id: stamped on every row.
    :param batch: rows per file (a flush also happens every ``interval`` seconds).
    :param interval: seconds between time-based flushes.
    """

    def __init__(
        self, path: str | None, run_id: str | None, *, batch: int = 200, interval: float = 60.0
    ) -> None:
        self.path = str(path) if path else None
        self.run_id = run_id
        self.batch = batch
        self.interval = interval
        self.files: list[str] = []
        self.rows_written = 0
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._clock = time.monotonic
        self._last = self._clock()

    def add(self, row: Mapping[str, Any]) -> None:
        """Queue one row (flushed when the batch is full or the interval passed).

        :param row: a report row; ``run_id`` is filled in.
        """
        with self._lock:
            self._rows.append({**row, "run_id": row.get("run_id") or self.run_id})
            due = len(self._rows) >= self.batch or self._clock() - self._last >= self.interval
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the queued rows now."""
        with self._lock:
            rows, self._rows = self._rows, []
            self._last = self._clock()
            if not rows or self.path is None:
                return
            written = write_report(rows, self.path)
            if written:
                self.files.append(written)
                self.rows_written += len(rows)

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()
