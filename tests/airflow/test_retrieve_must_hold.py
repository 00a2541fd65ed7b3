"""``dicom_retrieve`` as the trigger form runs it: only a date range, or dates and a modality, everything else
left at its (null) default; on pynetdicom's qrscp (the demo PACS, no ModalitiesInStudy) and on Orthanc. With
the PACS down the run state is ``failed`` although the report (the audit) still ran.

Runs with ``dag.test()`` (the arrival sensor reschedules there; the deferrable path is in tests/e2e).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dagrun import EXAMPLE_DAGS_FOLDER, get_example_dag, task_states, xcom
from harness.ports import free_port
from harness.qrscp import QrscpPacs
from harness.synth import Corpus, make_corpus
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

RECEIVER_AET = "MUSTHOLDRCV"


@pytest.fixture(scope="module")
def qrscp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[QrscpPacs, Corpus, int]]:
    """qrscp holding a week of studies, knowing our embedded receiver (AE, port) as move destination."""
    work = tmp_path_factory.mktemp("qrscp-must-hold")
    corpus = make_corpus(
        n_patients=5,
        studies_per_patient=2,
        series_per_study=(1, 2),
        instances_per_series=(1, 3),
        start=date(2024, 1, 1),
        days=7,
        seed=21,
        transfer_syntaxes=(ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    )
    corpus.write(work / "source")
    port = free_port()
    with QrscpPacs(work / "pacs", destinations={RECEIVER_AET: port}) as pacs:
        pacs.seed(work / "source")
        yield pacs, corpus, port


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(monkeypatch: pytest.MonkeyPatch, data: Path, conn: dict[str, Any], port: int) -> None:
    """What the example DAG reads when parsed, as ``make ui`` sets it (but the sensor reschedules)."""
    from airflow import settings

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(EXAMPLE_DAGS_FOLDER))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(EXAMPLE_DAGS_FOLDER))
    monkeypatch.setenv("AIRFLOW_DICOM_DATA_DIR", str(data))
    monkeypatch.setenv("AIRFLOW_CONN_DICOM_DEFAULT", json.dumps(conn))
    down = {**conn, "port": _closed_port(), "extra": {**conn["extra"], "acse_timeout": 5}}
    monkeypatch.setenv("AIRFLOW_CONN_DICOM_DOWN", json.dumps(down))
    monkeypatch.setenv("AIRFLOW_DICOM_RECEIVER_AET", RECEIVER_AET)
    monkeypatch.setenv("AIRFLOW_DICOM_RECEIVER_PORT", str(port))
    monkeypatch.setenv("AIRFLOW_DICOM_QUIET_PERIOD", "2")
    monkeypatch.setenv("AIRFLOW_DICOM_ARRIVAL_TIMEOUT", "30")
    monkeypatch.setenv("AIRFLOW_DICOM_ARRIVAL_MODE", "reschedule")


def _received(directory: Path) -> set[str]:
    """SOPInstanceUIDs of the files stored under ``directory`` (bookkeeping dot-folders excluded)."""
    found = set()
    for path in directory.rglob("*.dcm"):
        if not any(part.startswith(".") for part in path.relative_to(directory).parts):
            found.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return found


def _assert_retrieved(dag_run: Any, corpus: Corpus, studies: list[Any], data: Path) -> None:
    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert states["run_failed"] == "skipped"
    wanted = {i.sop_uid for s in studies for i in corpus.instances_of_study(s.study_uid)}
    assert _received(data / "received") == wanted
    report = xcom(dag_run, "report")
    assert (report["requested"], report["complete"], report["failed"]) == (len(studies), len(studies), 0)


@pytest.mark.parametrize("with_modality", [False, True], ids=["dates-only", "dates-and-modality"])
def test_form_defaults_on_the_demo_pacs(qrscp, monkeypatch, tmp_path: Path, with_modality: bool) -> None:
    pacs, corpus, port = qrscp
    _environment(monkeypatch, tmp_path / "data", pacs.connection(), port)
    conf: dict[str, Any] = {"date_from": "2024-01-01", "date_to": "2024-01-07"}
    studies = corpus.studies_between(date(2024, 1, 1), date(2024, 1, 7))
    if with_modality:
        modality = corpus.studies[0].modalities[0]
        conf["modality"] = modality
        studies = [s for s in studies if modality in s.modalities]
        assert 0 < len(studies) < len(corpus.studies)  # the filter really filters
    dag_run = get_example_dag("dicom_retrieve").test(run_conf=conf)
    _assert_retrieved(dag_run, corpus, studies, tmp_path / "data")


def test_form_defaults_with_a_modality_on_orthanc(loaded_orthanc, monkeypatch, tmp_path: Path) -> None:
    server, corpus = loaded_orthanc
    port = free_port()
    server.register_modality("must-hold-receiver", RECEIVER_AET, "127.0.0.1", port)
    conn = {"conn_type": "dicom", "host": server.host, "port": server.dicom_port}
    _environment(monkeypatch, tmp_path / "data", {**conn, "extra": {"called_ae_title": server.aet}}, port)
    dates = sorted(s.study_date for s in corpus.studies)
    first, last = dates[0], dates[min(7, len(dates) - 1)]
    modality = corpus.studies[0].modalities[0]
    studies = [s for s in corpus.studies_between(first, last) if modality in s.modalities]
    conf = {"date_from": first.isoformat(), "date_to": last.isoformat(), "modality": modality}
    dag_run = get_example_dag("dicom_retrieve").test(run_conf=conf)
    _assert_retrieved(dag_run, corpus, studies, tmp_path / "data")


def test_pacs_down_the_run_fails_and_the_report_still_runs(qrscp, monkeypatch, tmp_path: Path) -> None:
    pacs, _, port = qrscp
    _environment(monkeypatch, tmp_path / "data", pacs.connection(), port)
    conf = {"date_from": "2024-01-01", "date_to": "2024-01-07", "dicom_conn_id": "dicom_down"}
    dag_run = get_example_dag("dicom_retrieve").test(run_conf=conf)
    states = task_states(dag_run)
    assert dag_run.state == "failed", states
    assert states["find"] == "failed"
    assert states["report"] == "success"  # the audit: nothing was requested
    assert states["run_failed"] == "failed"  # ...and the run is red all the same
    assert xcom(dag_run, "report")["requested"] == 0
