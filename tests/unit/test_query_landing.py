"""Landing find results: VR typing, idempotent Parquet partitions, CSV and SQL (local files, no network)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydicom.dataset import Dataset

from airflow_dicom.dimse.query import DateRange
from airflow_dicom.landing import read_find_dataset, to_table, write_csv, write_parquet, write_sql
from airflow_dicom.landing.table import parse_dt, parse_tm

COLUMNS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "PatientName",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
    "PatientWeight",
    "AcquisitionDateTime",
    "PatientAge",
)


def _study(uid: str, day: str, **extra: object) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = uid
    ds.StudyDate = day
    ds.StudyTime = "101530.25"
    ds.PatientName = "Müller^Jürgen"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.NumberOfStudyRelatedInstances = "12"
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def test_columns_are_typed_by_vr() -> None:
    rows = [
        _study("1.1", "20240105", PatientWeight="71.5", AcquisitionDateTime="20240105101530+0100"),
        _study("1.2", "20240106", ModalitiesInStudy="US", PatientWeight=""),
    ]
    table = to_table(rows, COLUMNS, source_node="pacs", level="STUDY", interval=None)
    types = {f.name: f.type for f in table.schema}
    assert types["StudyDate"] == pa.date32()
    assert types["StudyTime"] == pa.time64("us")
    assert types["AcquisitionDateTime"] == pa.timestamp("us")
    assert types["NumberOfStudyRelatedInstances"] == pa.int64()
    assert types["PatientWeight"] == pa.float64()
    assert types["ModalitiesInStudy"] == pa.list_(pa.string())
    assert types["PatientName"] == pa.string()
    data = table.to_pylist()
    assert data[0]["StudyDate"] == date(2024, 1, 5)
    assert data[0]["StudyTime"] == time(10, 15, 30, 250000)
    assert data[0]["AcquisitionDateTime"] == datetime(2024, 1, 5, 9, 15, 30)  # +0100 -> UTC
    assert data[0]["NumberOfStudyRelatedInstances"] == 12
    assert data[0]["PatientWeight"] == 71.5
    assert data[0]["ModalitiesInStudy"] == ["CT", "MR"]
    assert data[1]["ModalitiesInStudy"] == ["US"]
    assert data[0]["PatientName"] == "Müller^Jürgen"
    assert data[1]["PatientWeight"] is None  # empty -> null
    assert data[0]["PatientAge"] is None  # missing -> null
    assert data[0]["source_node"] == "pacs" and data[0]["query_level"] == "STUDY"


def test_invalid_values_become_nulls_and_are_counted() -> None:
    from airflow_dicom.landing.table import TableBuilder

    builder = TableBuilder(["StudyDate", "StudyTime"], source_node="n", level="STUDY", interval=None)
    builder.add({"StudyDate": "2024-13-45", "StudyTime": "99"})
    table = builder.table()
    assert table.to_pylist()[0]["StudyDate"] is None
    assert builder.invalid == {"StudyDate": 1, "StudyTime": 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", time(12)),
        ("1230", time(12, 30)),
        ("123015.5", time(12, 30, 15, 500000)),
        ("12:30:15", time(12, 30, 15)),
    ],
)
def test_parse_tm_forms(text: str, expected: time) -> None:
    assert parse_tm(text) == expected


def test_parse_dt_partial() -> None:
    assert parse_dt("2024") == datetime(2024, 1, 1)
    assert parse_dt("20240105-0230") is None or parse_dt("20240105-0230") == datetime(2024, 1, 5, 2, 30)


def _table(uids_days: list[tuple[str, str]], interval: DateRange) -> pa.Table:
    rows = [_study(uid, day) for uid, day in uids_days]
    return to_table(rows, COLUMNS, source_node="pacs", level="STUDY", interval=interval)


def test_parquet_rerun_replaces_exactly_the_interval(tmp_path: Path) -> None:
    out = tmp_path / "studies"
    january = DateRange(date(2024, 1, 1), date(2024, 1, 31))
    write_parquet(
        _table([("1.1", "20240105"), ("1.2", "20240106"), ("1.3", "20240120")], january),
        out,
        interval=january,
    )
    february = DateRange(date(2024, 2, 1), date(2024, 2, 29))
    write_parquet(_table([("2.1", "20240201")], february), out, interval=february)
    # January again: 1.2 is gone from the PACS and 1.3 moved to the 21st -> exactly those days change
    result = write_parquet(_table([("1.1", "20240105"), ("1.3", "20240121")], january), out, interval=january)
    assert result.days_written == [date(2024, 1, 5), date(2024, 1, 21)]
    assert result.days_cleared == [date(2024, 1, 6), date(2024, 1, 20)]
    frame = pd.read_parquet(out)
    assert sorted(frame["StudyInstanceUID"]) == ["1.1", "1.3", "2.1"]
    by_uid = dict(zip(frame["StudyInstanceUID"], frame["StudyDate"].astype(str), strict=True))
    assert by_uid == {"1.1": "2024-01-05", "1.3": "2024-01-21", "2.1": "2024-02-01"}
    assert sorted(p.name for p in out.iterdir()) == [
        "StudyDate=2024-01-05",
        "StudyDate=2024-01-21",
        "StudyDate=2024-02-01",
    ]
    # the helper types the partition column as a date
    typed = read_find_dataset(out)
    assert set(typed["StudyDate"]) == {date(2024, 1, 5), date(2024, 1, 21), date(2024, 2, 1)}
    # data files keep the VR types
    files = list(out.rglob("*.parquet"))
    assert pq.read_schema(files[0]).field("StudyTime").type == pa.time64("us")


def test_empty_interval_clears_its_days_only(tmp_path: Path) -> None:
    out = tmp_path / "studies"
    week = DateRange(date(2024, 3, 1), date(2024, 3, 7))
    write_parquet(
        _table([("1.1", "20240302"), ("1.2", "20240308")], DateRange(date(2024, 3, 1), date(2024, 3, 8))),
        out,
        interval=DateRange(date(2024, 3, 1), date(2024, 3, 8)),
    )
    result = write_parquet(_table([], week), out, interval=week)
    assert result.rows == 0 and result.days_cleared == [date(2024, 3, 2)]
    assert list(pd.read_parquet(out)["StudyInstanceUID"]) == ["1.2"]


def test_rows_outside_the_interval_are_not_written(tmp_path: Path) -> None:
    out = tmp_path / "studies"
    day = DateRange(date(2024, 4, 1), date(2024, 4, 1))
    result = write_parquet(_table([("1.1", "20240401"), ("1.2", "20240402")], day), out, interval=day)
    assert result.rows == 1 and result.rows_outside_interval == 1
    assert sorted(p.name for p in out.iterdir()) == ["StudyDate=2024-04-01"]


def test_fsspec_url_target() -> None:
    import fsspec

    url = f"memory://find-{uuid.uuid4().hex}/studies"
    day = DateRange(date(2024, 4, 1), date(2024, 4, 2))
    write_parquet(_table([("1.1", "20240401"), ("1.2", "20240402")], day), url, interval=day)
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(url, detail=False)) == [
        "StudyDate=2024-04-01",
        "StudyDate=2024-04-02",
    ]
    assert sorted(read_find_dataset(url)["StudyInstanceUID"]) == ["1.1", "1.2"]


def test_csv_joins_lists_with_backslashes(tmp_path: Path) -> None:
    day = DateRange(date(2024, 4, 1), date(2024, 4, 1))
    path = write_csv(_table([("1.1", "20240401")], day), tmp_path / "out" / "studies.csv")
    frame = pd.read_csv(path)
    assert frame.loc[0, "ModalitiesInStudy"] == "CT\\MR"
    assert frame.loc[0, "StudyDate"] == "2024-04-01"
    assert frame.loc[0, "PatientName"] == "Müller^Jürgen"


def test_sql_rerun_replaces_the_interval_rows(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'finds.db'}"
    january = DateRange(date(2024, 1, 1), date(2024, 1, 31))
    write_sql(_table([("1.1", "20240105"), ("1.2", "20240106")], january), url, "studies", interval=january)
    february = DateRange(date(2024, 2, 1), date(2024, 2, 29))
    write_sql(_table([("2.1", "20240201")], february), url, "studies", interval=february)
    result = write_sql(_table([("1.1", "20240105")], january), url, "studies", interval=january)
    assert result.deleted == 2 and result.rows == 1
    with sa.create_engine(url).connect() as conn:
        uids = sorted(r[0] for r in conn.execute(sa.text('SELECT "StudyInstanceUID" FROM studies')))
    assert uids == ["1.1", "2.1"]
