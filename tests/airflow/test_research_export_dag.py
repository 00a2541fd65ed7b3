"""The example DAG ``dicom_research_export`` with dag.test(): find and C-GET from the ``loaded_orthanc`` PACS,
pseudonymise, send to a dcmtk storescp research node; what the research node holds is checked."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from dagrun import EXAMPLE_DAGS_FOLDER, get_example_dag, task_states, xcom

from airflow_dicom.deid.keys import PseudonymKey

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

SECRET = "research-export-key-0123456789abcdef"


def test_research_export(loaded_orthanc, dcmtk_storescp, monkeypatch, tmp_path: Path) -> None:
    from airflow import settings

    server, corpus = loaded_orthanc
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(EXAMPLE_DAGS_FOLDER))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(EXAMPLE_DAGS_FOLDER))
    monkeypatch.setenv("AIRFLOW_DICOM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AIRFLOW_DICOM_RESEARCH_MAPPING", str(tmp_path / "dpo" / "mapping.parquet"))
    pacs = {"called_ae_title": server.aet, "calling_ae_title": "AIRFLOWEX"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_DICOM_DEFAULT",
        json.dumps({"conn_type": "dicom", "host": server.host, "port": server.dicom_port, "extra": pacs}),
    )
    scp = dcmtk_storescp("RESEARCH")
    monkeypatch.setenv(
        "AIRFLOW_CONN_DICOM_RESEARCH",
        json.dumps(
            {
                "conn_type": "dicom",
                "host": "127.0.0.1",
                "port": scp.port,
                "extra": {"called_ae_title": "RESEARCH"},
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_DICOM_RESEARCH_KEY", json.dumps({"conn_type": "generic", "password": SECRET})
    )
    dates = sorted(s.study_date for s in corpus.studies)
    first, last = dates[0], dates[3]
    studies = corpus.studies_between(first, last)
    run = get_example_dag("dicom_research_export").test(
        run_conf={"date_from": first.isoformat(), "date_to": last.isoformat()}
    )
    assert run.state == "success", task_states(run)
    key = PseudonymKey.from_text(SECRET)
    wanted = [i for s in studies for i in corpus.instances_of_study(s.study_uid)]
    # secondary capture instances of the corpus are held back
    held = [i for i in wanted if i.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.7")]
    summary = xcom(run, "pseudonymize")
    assert summary["processed"] == len(wanted) and summary["written"] == len(wanted) - len(held)
    received = scp.received_datasets()
    assert set(received) == {key.uid(i.sop_uid) for i in wanted if i not in held}
    assert {str(ds.StudyInstanceUID) for ds in received.values()} <= {key.uid(s.study_uid) for s in studies}
    for ds in received.values():
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.PatientID) not in {s.patient_id for s in studies}
    mapping = pd.read_parquet(tmp_path / "dpo" / "mapping.parquet")
    assert set(mapping["study_uid"]) <= {s.study_uid for s in studies}
    assert not list((tmp_path / "data" / "research").glob("*/clear"))  # the clear copy is removed
