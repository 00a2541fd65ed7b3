"""How DicomArrivalSensor reads the studies to wait for (every accepted form) and rejects bad ones."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.sensors.arrival import DicomArrivalSensor, expected_from_find_dataset, parse_studies


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3", {"1.2.3": None}),
        ("1.2.3, 1.2.4\n1.2.5", {"1.2.3": None, "1.2.4": None, "1.2.5": None}),
        ('["1.2.3", "1.2.4"]', {"1.2.3": None, "1.2.4": None}),
        (["1.2.3"], {"1.2.3": None}),
        ({"1.2.3": 4, "1.2.4": None}, {"1.2.3": 4, "1.2.4": None}),
        ([{"StudyInstanceUID": "1.2.3", "NumberOfStudyRelatedInstances": "7"}], {"1.2.3": 7}),
        ({"rows": [{"StudyInstanceUID": "1.2.3", "NumberOfStudyRelatedInstances": None}]}, {"1.2.3": None}),
        ({"StudyInstanceUID": "1.2.3", "NumberOfStudyRelatedInstances": 0}, {"1.2.3": None}),
        (None, {}),
    ],
)
def test_parse_studies(value: object, expected: dict) -> None:
    assert parse_studies(value) == expected


def test_rows_without_study_uid_are_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="no StudyInstanceUID"):
        parse_studies([{"PatientID": "x"}])


def test_find_dataset_hive_partitioned(tmp_path: Path) -> None:
    root = tmp_path / "find"
    for day, rows in {"2024-01-01": [("1.2.1", 3)], "2024-01-02": [("1.2.2", None), ("1.2.3", 5)]}.items():
        part = root / f"StudyDate={day}"
        part.mkdir(parents=True)
        table = pa.table(
            {
                "StudyInstanceUID": [r[0] for r in rows],
                "NumberOfStudyRelatedInstances": pa.array([r[1] for r in rows], pa.int64()),
            }
        )
        pq.write_table(table, part / "part-0.parquet")
    assert expected_from_find_dataset(str(root)) == {"1.2.1": 3, "1.2.2": None, "1.2.3": 5}
    assert parse_studies({"rows": 3, "path": str(root)}) == {"1.2.1": 3, "1.2.2": None, "1.2.3": 5}


def test_resolve_merges_and_validates() -> None:
    sensor = DicomArrivalSensor(
        task_id="t", data_dir="/x", studies=["1.2.3", "1.2.4"], expected_instances={"1.2.4": 9}
    )
    assert sensor.resolve_studies({}) == {"1.2.3": None, "1.2.4": 9}
    sensor = DicomArrivalSensor(task_id="t2", data_dir="/x", studies="1.2.3,1.2.4", expected_instances="2")
    assert sensor.resolve_studies({}) == {"1.2.3": 2, "1.2.4": 2}
    with pytest.raises(InvalidRequestError, match="invalid StudyInstanceUID"):
        DicomArrivalSensor(task_id="t3", data_dir="/x", studies=["../x"]).resolve_studies({})
    with pytest.raises(InvalidRequestError, match="no studies to wait for"):
        DicomArrivalSensor(task_id="t4", data_dir="/x", studies=[]).resolve_studies({})
