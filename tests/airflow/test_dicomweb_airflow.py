"""The same operators and DAGs on a ``dicomweb`` connection: QIDO-RS find, WADO-RS get, STOW-RS send."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.dataset as pads
import pydicom
import pytest
from dagrun import EXAMPLE_DAGS_FOLDER, get_example_dag, run_dag, task_states, xcom
from harness.orthanc import OrthancServer
from harness.synth import Corpus

from airflow_dicom.dimse.arrivals import study_arrivals
from airflow_dicom.hooks.dicomweb import DicomWebHook
from airflow_dicom.landing.report import read_report

pytestmark = [pytest.mark.airflow, pytest.mark.integration]


@pytest.fixture(scope="module")
def web_orthanc(corpus: Corpus) -> Iterator[OrthancServer]:
    """Orthanc with the DICOMweb plugin holding ``corpus`` (and basic authentication)."""
    server = OrthancServer(
        aet="AFWEB",
        dicomweb=True,
        extra_config={"AuthenticationEnabled": True, "RegisteredUsers": {"airflow": "pw-123"}},
    ).start()
    try:
        server.upload_files(corpus.paths[i.sop_uid] for i in corpus.instances)
        yield server
    finally:
        server.stop()


def sop_uids_on_disk(directory: Path) -> set[str]:
    """SOPInstanceUIDs of the files under ``directory`` (hidden dirs such as .arrivals excluded)."""
    found = set()
    for path in directory.rglob("*.dcm"):
        if not any(part.startswith(".") for part in path.relative_to(directory).parts):
            found.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return found


def web_conn(server: OrthancServer, **extra: object) -> str:
    """A ``dicomweb`` connection (JSON form) with basic authentication."""
    return json.dumps(
        {
            "conn_type": "dicomweb",
            "host": server.dicomweb_url,
            "login": "airflow",
            "password": "pw-123",
            "extra": {"auth": "basic", **extra},
        }
    )


def test_the_test_button_runs_a_cheap_qido(
    web_orthanc: OrthancServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WEB_OK", web_conn(web_orthanc))
    ok, message = DicomWebHook("web_ok").test_connection()
    assert ok and "QIDO-RS" in message
    bad = json.loads(web_conn(web_orthanc))
    bad["password"] = "wrong"
    monkeypatch.setenv("AIRFLOW_CONN_WEB_BAD", json.dumps(bad))
    ok, message = DicomWebHook("web_bad").test_connection()
    assert not ok and "401" in message and "web_bad" in message and "wrong" not in message


def test_find_daily_example_dag_works_unchanged_with_a_dicomweb_connection(
    web_orthanc: OrthancServer, corpus: Corpus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow import settings

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(EXAMPLE_DAGS_FOLDER))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(EXAMPLE_DAGS_FOLDER))
    monkeypatch.setenv("AIRFLOW_DICOM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AIRFLOW_CONN_DICOM_DEFAULT", web_conn(web_orthanc))
    day = max(sorted({s.study_date for s in corpus.studies}), key=lambda d: len(corpus.studies_between(d, d)))
    dag = get_example_dag("dicom_find_daily")
    dag_run = dag.test(
        logical_date=datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
    )
    assert dag_run.state == "success", task_states(dag_run)
    rows = pads.dataset(tmp_path / "data" / "find" / "studies", format="parquet", partitioning="hive")
    rows = rows.to_table().to_pylist()
    expected = corpus.studies_between(day, day)
    assert sorted(r["StudyInstanceUID"] for r in rows) == sorted(s.study_uid for s in expected)
    by_uid = {r["StudyInstanceUID"]: r for r in rows}
    for study in expected:
        row = by_uid[study.study_uid]
        assert row["PatientID"] == study.patient_id
        assert row["NumberOfStudyRelatedInstances"] == study.n_instances
        assert set(row["ModalitiesInStudy"]) == set(study.modalities)
    assert xcom(dag_run, "find_studies")["rows"] == len(expected)


def test_find_then_get_over_qido_and_wado(
    web_orthanc: OrthancServer, corpus: Corpus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_RETRIEVE_PACS", web_conn(web_orthanc))
    conf = {"find_dir": str(tmp_path / "find"), "data_dir": str(tmp_path / "data")}
    dag_run = run_dag("test_retrieve_find_then_get", run_conf=conf)
    assert dag_run.state == "success", task_states(dag_run)
    ct = [s for s in corpus.studies if "CT" in s.modalities]
    wanted = {i.sop_uid for s in ct for i in corpus.instances_of_study(s.study_uid)}
    assert ct and sop_uids_on_disk(tmp_path / "data") == wanted
    for study in ct:  # what the arrival sensor reads
        assert study_arrivals(tmp_path / "data", study.study_uid).received == study.n_instances
    report = read_report(xcom(dag_run, "get")["report_path"])
    assert set(report["service"]) == {"WADO-RS"} and set(report["status"]) == {"complete"}


def test_a_dicom_connection_linked_to_its_dicomweb_service_prefers_wado(
    web_orthanc: OrthancServer, corpus: Corpus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PACS_WEB", web_conn(web_orthanc))
    dimse = {
        "conn_type": "dicom",
        "host": web_orthanc.host,
        "port": web_orthanc.dicom_port,
        "extra": {"called_ae_title": web_orthanc.aet, "dicomweb_conn_id": "pacs_web"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_RETRIEVE_PACS", json.dumps(dimse))
    studies = sorted(corpus.study_uids)[:3]
    conf = {"uids": studies, "data_dir": str(tmp_path / "web")}
    dag_run = run_dag("test_retrieve_transport", run_conf=conf)
    assert dag_run.state == "success", task_states(dag_run)
    assert set(read_report(xcom(dag_run, "get")["report_path"])["service"]) == {"WADO-RS"}
    # the same node without its DICOMweb link: C-GET; declared C-MOVE only: a clear refusal
    dimse["extra"] = {"called_ae_title": web_orthanc.aet}
    monkeypatch.setenv("AIRFLOW_CONN_RETRIEVE_PACS", json.dumps(dimse))
    conf["data_dir"] = str(tmp_path / "dimse")
    dag_run = run_dag("test_retrieve_transport", run_conf=conf)
    assert dag_run.state == "success", task_states(dag_run)
    assert set(read_report(xcom(dag_run, "get")["report_path"])["service"]) == {"C-GET"}
    assert sop_uids_on_disk(tmp_path / "dimse") == sop_uids_on_disk(tmp_path / "web")
    dimse["extra"] = {"called_ae_title": web_orthanc.aet, "capabilities": "C-FIND C-MOVE"}
    monkeypatch.setenv("AIRFLOW_CONN_RETRIEVE_PACS", json.dumps(dimse))
    conf["data_dir"] = str(tmp_path / "none")
    dag_run = run_dag("test_retrieve_transport", run_conf=conf)
    assert task_states(dag_run)["get"] == "failed"
    assert not (tmp_path / "none").exists() or not sop_uids_on_disk(tmp_path / "none")


def test_store_operator_sends_over_stow(
    web_orthanc: OrthancServer, corpus: Corpus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, load_dag
) -> None:
    source = tmp_path / "src"
    studies = sorted(corpus.study_uids)[:3]
    for study in studies:
        for path in corpus.files_of_study(study):
            (source / study[-8:]).mkdir(parents=True, exist_ok=True)
            (source / study[-8:] / path.name).write_bytes(path.read_bytes())
    (source / "notes.txt").write_text("not DICOM")
    scratch = OrthancServer(aet="AFSTOW", dicomweb=True).start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SEND_DEST", web_conn(scratch, auth="none"))
        monkeypatch.setenv("AIRFLOW_CONN_FORWARD_DEST", web_conn(scratch, auth="none"))
        run = load_dag("dicom_send_test").test(run_conf={"source": str(source), "manifest_files": []})
        assert run.state == "success", task_states(run)
        push = xcom(run, "push")
        sent = {i.sop_uid for s in studies for i in corpus.instances_of_study(s)}
        assert (push["sent"], push["failed"], push["skipped"]) == (len(sent), 0, 1)
        assert push["skipped_files"][0]["path"].endswith("notes.txt")
        assert scratch.instance_uids() == sent
    finally:
        scratch.stop()
