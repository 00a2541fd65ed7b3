"""Landing of DICOM results: typed C-FIND tables (Parquet, CSV, SQL) and retrieval reports."""

from __future__ import annotations

from typing import Any

from airflow_dicom.landing.parquet import (
    WriteResult,
    day_directory,
    read_find_dataset,
    write_parquet,
)
from airflow_dicom.landing.results import FORMATS, FindLanding, find_and_land
from airflow_dicom.landing.storage import resolve_target
from airflow_dicom.landing.table import TableBuilder, arrow_type, schema_for, to_table
from airflow_dicom.landing.tabular import SqlResult, to_flat_frame, write_csv, write_sql


def __getattr__(name: str) -> Any:
    """``PARTITIONING`` on first use (``pyarrow.dataset`` imports pandas; writing needs neither)."""
    if name == "PARTITIONING":
        from airflow_dicom.landing import parquet  # noqa: PLC0415

        return parquet.PARTITIONING
    raise AttributeError(name)


__all__ = [
    "FORMATS",
    "FindLanding",
    "find_and_land",
    "PARTITIONING",
    "SqlResult",
    "TableBuilder",
    "WriteResult",
    "arrow_type",
    "day_directory",
    "read_find_dataset",
    "resolve_target",
    "schema_for",
    "to_flat_frame",
    "to_table",
    "write_csv",
    "write_parquet",
    "write_sql",
]
