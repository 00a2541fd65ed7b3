"""Find results as CSV or as rows of a SQL table (for users of pacsanini's ``*2csv`` / ``*2sql``).

Multi-valued columns are joined with a backslash (the DICOM separator); dates, times and datetimes use
ISO form in CSV and native column types in SQL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from airflow_dicom.dimse.query import DateRange
from airflow_dicom.landing.storage import display_path, resolve_target

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def to_flat_frame(table: pa.Table) -> pd.DataFrame:
    """``table`` as a pandas frame whose list columns are ``a\\b`` strings (for CSV and SQL).

    :param table: a table from :func:`airflow_dicom.landing.table.to_table`.
    """
    frame = table.to_pandas(date_as_object=True)
    for name in table.column_names:
        if pa.types.is_list(table.schema.field(name).type):
            frame[name] = frame[name].map(
                lambda v: None if v is None or len(v) == 0 else "\\".join(str(x) for x in v)
            )
    return frame


def write_csv(table: pa.Table, path: Any, *, filesystem: Any = None) -> str:
    """Write ``table`` as one CSV file (UTF-8, header row), replacing the file.

    :param table: the typed table.
    :param path: a file path, fsspec URL or ``ObjectStoragePath``; parent directories are created.
    :param filesystem: optional explicit filesystem.
    :return: the path as text.
    """
    fs, target = resolve_target(path, filesystem)
    parent = target.rsplit("/", 1)[0] if "/" in target else ""
    if parent:
        fs.create_dir(parent, recursive=True)
    text = to_flat_frame(table).to_csv(index=False)
    with fs.open_output_stream(target) as out:
        out.write(text.encode("utf-8"))
    log.info("landed %d rows as CSV at %s", table.num_rows, display_path(path))
    return display_path(path)


@dataclass
class SqlResult:
    """What :func:`write_sql` did: rows inserted and rows of the interval deleted first."""

    table: str
    rows: int
    deleted: int


def write_sql(
    table: pa.Table,
    connection: Any,
    table_name: str,
    *,
    interval: DateRange | None,
    schema: str | None = None,
) -> SqlResult:
    """Append ``table`` to a SQL table, first deleting the rows of the same node and interval (idempotent).

    :param table: the typed table (with ``StudyDate`` and ``source_node``).
    :param connection: a SQLAlchemy URL (``sqlite:///finds.db``, ``postgresql://...``) or Engine.
    :param table_name: the SQL table; created by pandas on first use.
    :param interval: the queried interval: rows of this node with a StudyDate in it are replaced.
    :param schema: the database schema (optional).
    """
    import sqlalchemy as sa  # the optional 'sql' extra: imported only when a SQL table is the target

    engine = sa.create_engine(connection) if isinstance(connection, str) else connection
    frame = to_flat_frame(table)
    deleted = 0
    nodes = sorted(set(frame["source_node"])) if len(frame) else []
    with engine.begin() as conn:
        if interval is not None and sa.inspect(conn).has_table(table_name, schema=schema):
            existing = sa.Table(table_name, sa.MetaData(), schema=schema, autoload_with=conn)
            condition = existing.c.StudyDate.between(interval.first, interval.last)
            if nodes and "source_node" in existing.c:
                condition = sa.and_(condition, existing.c.source_node.in_(nodes))
            deleted = conn.execute(sa.delete(existing).where(condition)).rowcount or 0
        if len(frame):
            frame.to_sql(table_name, conn, schema=schema, if_exists="append", index=False)
    log.info("landed %d rows in SQL table %s (%d old rows replaced)", len(frame), table_name, deleted)
    return SqlResult(table=table_name, rows=len(frame), deleted=deleted)
