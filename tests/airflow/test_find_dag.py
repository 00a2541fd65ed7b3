"""DicomFindOperator in real DAG runs (``dag.test()``) against a real Orthanc."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagrun import get_dag as load_dag
from harness.orthanc import OrthancServer
from harness.synth import dataset_bytes, make_same_day_corpus

pytestmark = [pytest.mark.airflow, pytest.mark.integration]


def _conn(pacs: OrthancServer) -> str:
    return json.dumps(
        {
            "conn_type": "dicom",
            "host": "127.0.0.1",
            "port": pacs.dicom_port,
            "extra": {"called_ae_title": pacs.aet},
        }
    )


def _run(dag, day: date):  # type: ignore[no-untyped-def]
    """Run the daily DAG for the data interval [day, day + 1)."""
    run_after = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
    return dag.test(logical_date=run_after)


def _summary(dag_run) -> dict:  # type: ignore[no-untyped-def,type-arg]
    ti = dag_run.get_task_instance("find_studies")
    return ti.xcom_pull(task_ids="find_studies", key="return_value")


def test_daily_runs_land_exactly_their_days_and_reruns_are_idempotent(
    airflow_db: Path, loaded_orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pacs, corpus = loaded_orthanc
    out = tmp_path / "studies"
    monkeypatch.setenv("AIRFLOW_CONN_FIND_PACS", _conn(pacs))
    monkeypatch.setenv("DICOM_FIND_DAG_OUT", str(out))
    dag = load_dag("test_find_daily")
    days = sorted({s.study_date for s in corpus.studies})[:3]

    for day in days:
        dag_run = _run(dag, day)
        assert dag_run.state == "success"
        assert dag_run.data_interval_start.date() == day
        summary = _summary(dag_run)
        expected = corpus.studies_between(day, day)
        assert summary["rows"] == len(expected)
        assert summary["interval_start"] == summary["interval_end"] == day.isoformat()
        assert summary["queries"] >= 1 and summary["path"] == str(out)

    frame = pd.read_parquet(out)
    expected_uids = {s.study_uid for s in corpus.studies if s.study_date in days}
    assert sorted(frame["StudyInstanceUID"]) == sorted(expected_uids)  # exactly those days, no duplicates
    assert {str(d) for d in frame["StudyDate"]} == {d.isoformat() for d in days}
    assert sorted(p.name for p in out.iterdir()) == [f"StudyDate={d.isoformat()}" for d in days]

    # the same logical date again: the same rows, not twice as many
    dag_run = _run(dag, days[1])
    assert dag_run.state == "success"
    again = pd.read_parquet(out)
    assert sorted(again["StudyInstanceUID"]) == sorted(frame["StudyInstanceUID"])

    # a day whose studies vanished from the PACS: its stale partition is cleared by the rerun
    empty_day = next(
        d for d in (days[0] - timedelta(days=n) for n in range(1, 400)) if not corpus.studies_between(d, d)
    )
    stale = out / f"StudyDate={empty_day.isoformat()}"
    stale.mkdir()
    pq.write_table(
        pq.read_table(next((out / f"StudyDate={days[0].isoformat()}").glob("*.parquet"))),
        stale / "part-0.parquet",
    )
    dag_run = _run(dag, empty_day)
    assert dag_run.state == "success"
    summary = _summary(dag_run)
    assert summary["rows"] == 0 and summary["days_cleared"] == 1
    assert not stale.exists()
    assert sorted(pd.read_parquet(out)["StudyInstanceUID"]) == sorted(expected_uids)


def test_the_run_emits_an_asset_event_with_the_summary(
    airflow_db: Path, loaded_orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    pacs, corpus = loaded_orthanc
    monkeypatch.setenv("AIRFLOW_CONN_FIND_PACS", _conn(pacs))
    monkeypatch.setenv("DICOM_FIND_DAG_OUT", str(tmp_path / "studies"))
    day = corpus.studies[0].study_date
    dag_run = _run(load_dag("test_find_daily"), day)
    assert dag_run.state == "success"
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "pacs_studies", AssetEvent.source_run_id == dag_run.run_id)
            .all()
        )
        assert len(events) == 1
        assert events[0].extra["rows"] == len(corpus.studies_between(day, day))
        assert events[0].extra["interval_start"] == day.isoformat()


def test_more_studies_at_one_time_than_the_limit_fails_the_task(
    airflow_db: Path, orthanc_limited: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orthanc_limited.clear()
    for ds in make_same_day_corpus(8, day=date(2025, 6, 1), study_time="120000", seed=21).datasets():
        orthanc_limited.upload(dataset_bytes(ds))
    monkeypatch.setenv("AIRFLOW_CONN_FIND_LIMITED", _conn(orthanc_limited))
    monkeypatch.setenv("DICOM_FIND_DAG_OUT", str(tmp_path / "crowded"))
    dag_run = load_dag("dicom_find_crowded").test(logical_date=datetime(2025, 6, 2, tzinfo=timezone.utc))
    orthanc_limited.clear()
    assert dag_run.state == "failed"
    assert dag_run.get_task_instance("find_studies").state == "failed"
    assert not any((tmp_path / "crowded").rglob("*.parquet"))  # nothing partial landed


def test_object_storage_path_target(airflow_db: Path, loaded_orthanc, tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    from airflow_dicom.dimse.node import DicomNode
    from airflow_dicom.dimse.query import build_query
    from airflow_dicom.landing import find_and_land, read_find_dataset

    pacs, corpus = loaded_orthanc
    target = ObjectStoragePath(f"file://{tmp_path}/lake/studies")
    query = build_query("STUDY", date_from="2024-01-01", date_to="2024-06-30")
    landing = find_and_land(DicomNode("127.0.0.1", pacs.dicom_port, pacs.aet), query, target)
    expected = {s.study_uid for s in corpus.studies_between(date(2024, 1, 1), date(2024, 6, 30))}
    assert landing.rows == len(expected)
    assert set(read_find_dataset(target)["StudyInstanceUID"]) == expected
    assert set(pd.read_parquet(tmp_path / "lake" / "studies")["StudyInstanceUID"]) == expected
