"""The example DAGs in ``dags/``: they import fast without touching anything, and they do their job.

``dicom_find_daily`` and ``dicom_retrieve`` run with ``dag.test()`` against the ``loaded_orthanc`` PACS with
``AIRFLOW_DICOM_DATA_DIR`` pointing at a temporary directory (set before the DAG file is parsed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow.dataset as pads
import pydicom
import pytest
from dagrun import EXAMPLE_DAGS_FOLDER, get_example_dag, task_states, xcom
from harness.ports import free_port

from airflow_dicom.dimse.arrivals import read_manifest
from airflow_dicom.landing.claims import read_batch

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

EXAMPLE_FILES = sorted(EXAMPLE_DAGS_FOLDER.glob("*.py"))
EXPECTED_DAGS = {
    "dicom_echo",
    "dicom_find_daily",
    "dicom_retrieve",
    "dicom_send",
    "dicom_on_arrival",
    "dicom_research_export",
}

#: parses one DAG file with a DagBag (as the DAG processor does) after Airflow itself is imported; reports
#: the seconds, the DAGs, import errors, and any socket use (connect/getaddrinfo refuse and record)
_IMPORT_PROBE = textwrap.dedent(
    """
    import json, socket, sys, time
    from airflow.dag_processing.dagbag import DagBag  # Airflow's own import time is not the DAG file's

    attempts = []
    def refuse(*args, **kwargs):
        attempts.append(repr(args)[:200])
        raise OSError("network access at DAG import")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    started = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    seconds = time.perf_counter() - started
    print(json.dumps({
        "seconds": seconds,
        "file_seconds": sum(s.duration.total_seconds() for s in bag.dagbag_stats),
        "dags": sorted(bag.dag_ids),
        "errors": {str(k): v for k, v in bag.import_errors.items()},
        "network": attempts,
    }))
    """
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_example_dag_imports_fast_without_network_or_airflow_db(path: Path, tmp_path: Path) -> None:
    closed = {"conn_type": "dicom", "host": "127.0.0.1", "port": _closed_port(), "extra": {}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_DICOM_"))} | {
        # a home without a metadata DB: importing a DAG file must not need one
        "AIRFLOW_HOME": str(tmp_path / "no-db-home"),
        "AIRFLOW_CONN_DICOM_DEFAULT": json.dumps(closed),
        "AIRFLOW_CONN_DICOM_FORWARD": json.dumps(closed),
        "AIRFLOW_DICOM_DATA_DIR": str(tmp_path / "data"),
    }
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["errors"] == {}
    print(f"{path.name}: parsed in {probe['file_seconds']:.3f} s ({probe['seconds']:.3f} s with the DagBag)")
    assert probe["dags"] == [path.stem]  # one DAG per file, named after it
    assert probe["network"] == []
    assert probe["file_seconds"] < 5.0  # the goal is well under a second; a generous bound against flakiness
    assert not (tmp_path / "data").exists()  # nothing written at import
    assert not (tmp_path / "no-db-home" / "airflow.db").exists()


def test_every_example_dag_is_documented_and_tagged(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("AIRFLOW_DICOM_DATA_DIR", str(tmp_path))
    assert {p.stem for p in EXAMPLE_FILES} == EXPECTED_DAGS
    for dag_id in sorted(EXPECTED_DAGS):
        dag = get_example_dag(dag_id)
        assert {"dicom", "example"} <= set(dag.tags), dag_id
        assert dag.doc_md and len(dag.doc_md) > 200, dag_id
    retrieve = get_example_dag("dicom_retrieve")
    assert set(retrieve.params) == {
        "date_from",
        "date_to",
        "modality",
        "study_uids",
        "patient_ids",
        "service",
        "destination_aet",
        "window_start",
        "window_end",
        "batch_size",
        "modality_match",
        "dicom_conn_id",
    }
    # every optional param accepts null (Airflow's trigger form requires any param whose type lacks "null"):
    # only the fields with a usable default or that a person must choose are required
    params = {name: retrieve.params.get_param(name) for name in retrieve.params}
    required = {name for name, p in params.items() if "null" not in p.schema.get("type", [])}
    assert required == {"service", "batch_size", "modality_match", "dicom_conn_id"}
    assert all(params[name].value is not None for name in required)
    for dag_id, watcher in (("dicom_retrieve", "run_failed"), ("dicom_send", "run_failed")):
        dag = get_example_dag(dag_id)
        assert dag.get_task(watcher).trigger_rule == "one_failed"
        assert set(dag.get_task(watcher).upstream_task_ids) == {t for t in dag.task_ids if t != watcher}
    assert set(get_example_dag("dicom_send").params) == {"path", "parallel", "dicom_conn_id"}


# --------------------------------------------------------------------------- runs against the PACS


def _conn(server) -> str:  # type: ignore[no-untyped-def]
    return json.dumps(
        {
            "conn_type": "dicom",
            "host": server.host,
            "port": server.dicom_port,
            "extra": {"called_ae_title": server.aet, "calling_ae_title": "AIRFLOWEX"},
        }
    )


def received_sop_uids(directory: Path) -> set[str]:
    """SOPInstanceUIDs of the DICOM files stored under ``directory`` (bookkeeping dot-folders excluded)."""
    found = set()
    for path in directory.rglob("*.dcm"):
        if not any(part.startswith(".") for part in path.relative_to(directory).parts):
            found.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return found


def find_dataset(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return pads.dataset(path, format="parquet", partitioning="hive").to_table().to_pylist()


@pytest.fixture
def example_env(loaded_orthanc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The environment the example DAGs read: data dir, PACS connection, embedded receiver."""
    server, corpus = loaded_orthanc
    port = free_port()
    # dag.test() only runs DAGs found in the DAG folder (its bundle path is settings.DAGS_FOLDER, read once)
    from airflow import settings

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(EXAMPLE_DAGS_FOLDER))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(EXAMPLE_DAGS_FOLDER))
    monkeypatch.setenv("AIRFLOW_DICOM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AIRFLOW_CONN_DICOM_DEFAULT", _conn(server))
    monkeypatch.setenv("AIRFLOW_DICOM_RECEIVER_AET", "EXAMPLERCV")
    monkeypatch.setenv("AIRFLOW_DICOM_RECEIVER_PORT", str(port))
    monkeypatch.setenv("AIRFLOW_DICOM_QUIET_PERIOD", "2")
    monkeypatch.setenv("AIRFLOW_DICOM_ARRIVAL_TIMEOUT", "30")
    # dag.test() runs one task at a time: a deferred sensor would wait before the retrieval could run, so the
    # sensor reschedules here; the deferrable path runs in the real triggerer in tests/e2e
    monkeypatch.setenv("AIRFLOW_DICOM_ARRIVAL_MODE", "reschedule")
    server.register_modality("example-receiver", "EXAMPLERCV", "127.0.0.1", port)
    return server, corpus, tmp_path / "data"


def test_find_daily_lands_exactly_the_studies_of_its_day_or_of_a_date_range(example_env) -> None:
    _, corpus, data = example_env
    dates = sorted({s.study_date for s in corpus.studies})
    day = max(dates, key=lambda d: len(corpus.studies_between(d, d)))  # the busiest day
    dag = get_example_dag("dicom_find_daily")
    run_after = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
    dag_run = dag.test(logical_date=run_after)
    assert dag_run.state == "success", task_states(dag_run)
    rows = find_dataset(data / "find" / "studies")
    expected = corpus.studies_between(day, day)
    assert sorted(r["StudyInstanceUID"] for r in rows) == sorted(s.study_uid for s in expected)
    by_uid = {r["StudyInstanceUID"]: r for r in rows}
    for study in expected:
        row = by_uid[study.study_uid]
        assert str(row["StudyDate"]) == day.isoformat()  # the hive partition value
        assert row["PatientID"] == study.patient_id
        assert row["AccessionNumber"] == study.accession_number
        assert row["NumberOfStudyRelatedInstances"] == study.n_instances
        assert set(row["ModalitiesInStudy"]) == set(study.modalities)
    summary = xcom(dag_run, "find_studies")
    assert summary["rows"] == len(expected) and summary["interval_start"] == day.isoformat()
    # the same DAG with the params date_from/date_to: a range in one run (same data directory and asset:
    # Airflow keeps one active asset per name, a test with its own directory would find it inactive)
    _range_run_replaces_only_its_days(dag, corpus, data)


def _range_run_replaces_only_its_days(dag, corpus, data: Path) -> None:  # type: ignore[no-untyped-def]
    """``dicom_find_daily`` run with ``date_from``/``date_to``: one run lands every day of the range."""
    dates = sorted({s.study_date for s in corpus.studies})
    assert len(dates) >= 4
    # the whole corpus first, then all but the last day: the second run must leave the last day's partition
    dag_run = dag.test(run_conf={"date_from": dates[0].isoformat(), "date_to": dates[-1].isoformat()})
    assert dag_run.state == "success", task_states(dag_run)
    assert xcom(dag_run, "find_studies")["rows"] == len(corpus.studies)
    last = dates[-1]
    first, until = dates[0], dates[-2]
    dag_run = dag.test(run_conf={"date_from": first.isoformat(), "date_to": until.isoformat()})
    assert dag_run.state == "success", task_states(dag_run)
    rows = find_dataset(data / "find" / "studies")
    expected = corpus.studies_between(first, until) + corpus.studies_between(last, last)
    assert sorted(r["StudyInstanceUID"] for r in rows) == sorted(s.study_uid for s in expected)
    assert {str(r["StudyDate"]) for r in rows} == {s.study_date.isoformat() for s in expected}
    summary = xcom(dag_run, "find_studies")
    assert summary["rows"] == len(corpus.studies_between(first, until))
    assert (summary["interval_start"], summary["interval_end"]) == (first.isoformat(), until.isoformat())
    assert summary["days_written"] == len({s.study_date for s in corpus.studies_between(first, until)})


def _range_with(corpus, n: int) -> tuple[date, date]:  # type: ignore[no-untyped-def]
    """A date range holding ``n`` or more studies (the first ``n`` by date)."""
    dates = sorted(s.study_date for s in corpus.studies)
    return dates[0], dates[n - 1]


def test_retrieve_by_date_range_moves_every_instance_and_reports_complete(example_env) -> None:
    _, corpus, data = example_env
    first, last = _range_with(corpus, 5)
    studies = corpus.studies_between(first, last)
    dag = get_example_dag("dicom_retrieve")
    conf = {"date_from": first.isoformat(), "date_to": last.isoformat(), "batch_size": 2}
    dag_run = dag.test(run_conf=conf)
    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert states["arrival"] == "success" and states["retrieve_get"] == "skipped"
    n_batches = -(-len(studies) // 2)
    assert [states[f"retrieve_move[{i}]"] for i in range(n_batches)] == ["success"] * n_batches

    wanted = {i.sop_uid for s in studies for i in corpus.instances_of_study(s.study_uid)}
    assert received_sop_uids(data / "received") == wanted
    report = xcom(dag_run, "report")
    assert report["requested"] == report["complete"] == len(studies)
    assert report["failed"] == 0 and report["failed_studies"] == {}
    assert report["instances"] == len(wanted)
    summary = xcom(dag_run, "arrival")  # the manifest is a file; the XCom its summary
    assert (summary["studies"], summary["instances"]) == (len(studies), len(wanted))
    manifest = read_manifest(summary)
    assert set(manifest["studies"]) == {s.study_uid for s in studies}
    # every XCom holds paths and counts, not one entry per study or file
    batches = xcom(dag_run, "make_batches")
    assert [read_batch(path) for path in batches] == [
        sorted(s.study_uid for s in studies)[n : n + 2] for n in range(0, len(studies), 2)
    ]


def test_retrieve_given_uids_with_get_reports_the_study_the_pacs_lacks(example_env, monkeypatch) -> None:
    _, corpus, data = example_env
    monkeypatch.setenv("AIRFLOW_DICOM_ARRIVAL_TIMEOUT", "5")  # the missing study never arrives
    held = sorted(corpus.study_uids)[:2]
    missing = "1.2.826.0.1.3680043.8.498.999999999"
    dag = get_example_dag("dicom_retrieve")
    dag_run = dag.test(run_conf={"study_uids": [*held, missing], "service": "get", "batch_size": 5})
    states = task_states(dag_run)
    assert dag_run.state == "failed"
    assert states["find"] == "skipped" and states["retrieve_move"] == "skipped"
    assert states["report"] == "failed"
    report = xcom(dag_run, "report")
    assert (report["requested"], report["complete"], report["failed"]) == (3, 2, 1)
    assert list(report["failed_studies"]) == [missing]
    assert received_sop_uids(data / "received") == {
        i.sop_uid for uid in held for i in corpus.instances_of_study(uid)
    }
