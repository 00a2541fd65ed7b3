"""DicomMoveOperator / DicomGetOperator in DAG runs: failures named, resume, window deferral, expand."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pydicom
import pytest
from dagrun import run_dag, task_states, xcom
from harness.ports import free_port

from airflow_dicom.landing.report import read_report

pytestmark = pytest.mark.airflow


def _conn(server) -> str:
    extra = {"called_ae_title": server.aet, "calling_ae_title": "AIRFLOWRT"}
    return json.dumps({"conn_type": "dicom", "host": server.host, "port": server.dicom_port, "extra": extra})


def sop_uids_on_disk(directory: Path) -> set[str]:
    found = set()
    for path in directory.rglob("*.dcm"):
        if not any(part.startswith(".") for part in path.relative_to(directory).parts):
            found.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return found


def _sops(corpus, study_uids) -> set[str]:
    return {i.sop_uid for uid in study_uids for i in corpus.instances_of_study(uid)}


@pytest.fixture
def loaded_conn(loaded_orthanc, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RETRIEVE_PACS", _conn(loaded_orthanc.server))
    return loaded_orthanc


def test_move_task_fails_naming_the_missing_uid_and_the_rerun_moves_only_it(
    orthanc, corpus, monkeypatch, tmp_path
) -> None:
    orthanc.clear()
    held = sorted(corpus.study_uids)[:4]
    missing = sorted(corpus.study_uids)[4]
    orthanc.upload_files(p for uid in held for p in corpus.files_of_study(uid))
    monkeypatch.setenv("AIRFLOW_CONN_RETRIEVE_PACS", _conn(orthanc))
    port = free_port()
    orthanc.register_modality("retrieve-dag", "RTDAG", "127.0.0.1", port)
    conf = {"uids": [*held, missing], "data_dir": str(tmp_path / "data"), "receive_port": port}

    first = run_dag(
        "test_retrieve_move", run_conf=conf, logical_date=datetime(2026, 1, 1, tzinfo=timezone.utc)
    )
    assert first.state == "failed"
    summary = xcom(first, "move", key="summary")
    assert (summary["requested"], summary["complete"], summary["failed"]) == (5, 4, 1)
    assert list(summary["failed_uids"]) == [missing] and "0xC000" in summary["failed_uids"][missing]
    assert sop_uids_on_disk(tmp_path / "data") == _sops(corpus, held)  # the rest was completed
    report = read_report(summary["report_path"])
    assert report.loc[report.uid == missing, "status"].tolist() == ["failed"]

    orthanc.upload_files(corpus.files_of_study(missing))  # fix the cause, run again
    second = run_dag(
        "test_retrieve_move", run_conf=conf, logical_date=datetime(2026, 1, 2, tzinfo=timezone.utc)
    )
    assert second.state == "success"
    summary = xcom(second, "move")
    assert (summary["complete"], summary["skipped"], summary["failed"]) == (1, 4, 0)
    assert summary["instances"] == corpus.study(missing).n_instances
    assert sop_uids_on_disk(tmp_path / "data") == _sops(corpus, [*held, missing])
    rows = read_report(summary["report_path"])
    assert set(rows.loc[rows.run_id == second.run_id, "status"]) == {"complete", "skipped"}


def test_move_task_with_its_receiver_in_a_process_of_its_own(loaded_conn, tmp_path) -> None:
    server, corpus = loaded_conn
    studies = sorted(corpus.study_uids)[20:26]
    port = free_port()
    server.register_modality("retrieve-dag-process", "RTDAGP", "127.0.0.1", port)
    conf = {"uids": studies, "data_dir": str(tmp_path / "data"), "receive_port": port}
    run = run_dag(
        "test_retrieve_move_own_process",
        run_conf=conf,
        logical_date=datetime(2026, 1, 3, tzinfo=timezone.utc),
    )
    assert run.state == "success"
    summary = xcom(run, "move")
    assert (summary["requested"], summary["complete"], summary["failed"]) == (6, 6, 0)
    assert summary["instances"] == len(_sops(corpus, studies))
    assert sop_uids_on_disk(tmp_path / "data") == _sops(corpus, studies)


def test_get_task_defers_until_the_window_opens(loaded_conn, tmp_path) -> None:
    server, corpus = loaded_conn
    studies = sorted(corpus.study_uids)[:3]
    paris = ZoneInfo("Europe/Paris")
    opens = datetime.now(paris).replace(microsecond=0) + timedelta(seconds=6)
    closes = opens + timedelta(hours=2)
    conf = {
        "uids": studies,
        "data_dir": str(tmp_path / "data"),
        "window_start": opens.strftime("%H:%M:%S"),
        "window_end": closes.strftime("%H:%M:%S"),
        "timezone": "Europe/Paris",
    }
    dagrun = run_dag("test_retrieve_window", run_conf=conf)
    assert dagrun.state == "success", task_states(dagrun)
    assert sop_uids_on_disk(tmp_path / "data") == _sops(corpus, studies)
    rows = read_report(xcom(dagrun, "get")["report_path"])
    assert len(rows) == 3
    # nothing was requested before the window opened: the task deferred and resumed in it
    assert rows.started.min().to_pydatetime() >= opens.astimezone(timezone.utc)


def test_mapped_get_batches_from_an_upstream_task(loaded_conn, tmp_path) -> None:
    server, corpus = loaded_conn
    studies = sorted(corpus.study_uids)[10:17]
    dagrun = run_dag(
        "test_retrieve_expand", run_conf={"uids": studies, "data_dir": str(tmp_path), "batch": 3}
    )
    assert dagrun.state == "success", task_states(dagrun)
    states = task_states(dagrun)
    assert [states[f"get[{n}]"] for n in range(3)] == ["success"] * 3
    summaries = [xcom(dagrun, "get", map_index=n) for n in range(3)]
    assert [s["requested"] for s in summaries] == [3, 3, 1]
    assert sum(s["complete"] for s in summaries) == 7
    assert sop_uids_on_disk(tmp_path) == _sops(corpus, studies)


def test_find_then_get_from_the_parquet_results(loaded_conn, tmp_path) -> None:
    server, corpus = loaded_conn
    conf = {"find_dir": str(tmp_path / "find"), "data_dir": str(tmp_path / "data")}
    dagrun = run_dag("test_retrieve_find_then_get", run_conf=conf)
    assert dagrun.state == "success", task_states(dagrun)
    ct_studies = [s.study_uid for s in corpus.studies_with_modality("CT")]
    assert ct_studies
    assert sop_uids_on_disk(tmp_path / "data") == _sops(corpus, ct_studies)
    rows = read_report(xcom(dagrun, "get")["report_path"])
    # expected counts came from the find results (NumberOfStudyRelatedInstances)
    assert dict(zip(rows.uid, rows.expected, strict=True)) == {
        uid: corpus.study(uid).n_instances for uid in ct_studies
    }


def test_a_retried_batch_skips_the_studies_the_receiver_already_holds(
    orthanc, corpus, monkeypatch, tmp_path
) -> None:
    """A lost worker's batch is retried after its studies arrived but before its report rows were written: the
    batch file's expected counts let the retry skip them from the receiver's arrival records."""
    from airflow_dicom.dimse.receiver import Receiver
    from airflow_dicom.landing.claims import read_batch, write_batch
    from airflow_dicom.operators.retrieve import DicomMoveOperator

    orthanc.clear()
    studies = sorted(corpus.study_uids)[:4]
    orthanc.upload_files(p for uid in studies for p in corpus.files_of_study(uid))
    monkeypatch.setenv("AIRFLOW_CONN_RETRIEVE_PACS", _conn(orthanc))
    port = free_port()
    orthanc.register_modality("retrieve-service", "RTSERVICE", "127.0.0.1", port)
    data = tmp_path / "received"
    batch = str(tmp_path / "00000.txt")
    write_batch(batch, {uid: corpus.study(uid).n_instances for uid in studies})
    assert read_batch(batch) == studies

    def move(report: str) -> DicomMoveOperator:
        return DicomMoveOperator(
            task_id="retrieve_move",
            dicom_conn_id="retrieve_pacs",
            uids_file=batch,
            move_destination="RTSERVICE",
            data_dir=str(data),
            report_path=str(tmp_path / report),
            parallel=1,
        )

    with Receiver(data, ae_title="RTSERVICE", host="127.0.0.1", port=port):  # the receiver service
        first = move("lost-report").execute({"run_id": "first"})
    assert first["complete"] == len(studies)
    assert sop_uids_on_disk(data) == _sops(corpus, studies)
    # the retry writes to a report without the first try's rows (they were never flushed), and the receiver
    # service is down: a request for any study would fail
    retry = move("report").execute({"run_id": "retry"})
    assert (retry["skipped"], retry["failed"]) == (len(studies), 0)
    rows = read_report(retry["report_path"])
    assert set(rows.status) == {"skipped"}
    assert rows.reason.str.contains("expected instances already received").all()
    assert sop_uids_on_disk(data) == _sops(corpus, studies)
