"""DicomPseudonymizeOperator, the arrival sensor on its output and DicomStoreOperator(pseudonymize=...) in a
real DAG run (dag.test) against dcmtk storescp; the key comes from a connection's password."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from airflow_dicom.deid.keys import PseudonymKey
from airflow_dicom.testing.identified import patient, write_study

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

SECRET = "airflow-test-key-0123456789abcdef"


def _xcom(dag_run, task_id: str, key: str = "return_value"):  # type: ignore[no-untyped-def]
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key)
            .one()
        )
        return XComModel.deserialize_value(row)


def test_pseudonymize_sense_and_send(
    tmp_path: Path, dcmtk_storescp, dicom_connection, load_dag, monkeypatch, caplog
) -> None:
    study = write_study(tmp_path / "src", patient(11), series=2, instances=2, burned_in=1)
    monkeypatch.setenv("AIRFLOW_CONN_RESEARCH_KEY", json.dumps({"conn_type": "generic", "password": SECRET}))
    scp = dcmtk_storescp("RESEARCH")
    dicom_connection("research_node", scp.port, "RESEARCH")
    (tmp_path / "work").mkdir()
    run = load_dag("dicom_pseudonymize_test").test(
        run_conf={
            "source": str(tmp_path / "src"),
            "out": str(tmp_path / "out"),
            "work": str(tmp_path / "work"),
        }
    )
    assert run.state == "success"
    key = PseudonymKey.from_text(SECRET)
    summary = _xcom(run, "pseudonymize")
    assert (summary["processed"], summary["written"]) == (4, 3)
    assert summary["held_back"] == {"burned-in annotation": 1}
    assert summary["studies"] == {key.uid(study.study_uid): 3}
    manifest = _xcom(run, "arrived")
    assert manifest["instances"] == 3
    assert {Path(f).name for f in manifest["studies"][key.uid(study.study_uid)]["files"]} == {
        key.uid(u) + ".dcm" for u in study.sop_uids if u not in study.burned_in_sop_uids
    }
    send = _xcom(run, "send")
    assert (send["sent"], send["failed"], send["skipped"]) == (3, 0, 0)
    assert send["pseudonymized"]["held_back"] == {"burned-in annotation": 1}
    assert scp.received_sop_uids() == {
        key.uid(u) for u in study.sop_uids if u not in study.burned_in_sop_uids
    }
    mapping = pd.read_parquet(tmp_path / "work" / "audit" / "mapping.parquet")
    assert set(mapping["pseudo_series_uid"]) == {key.uid(u) for u in study.series_uids}
    assert list((tmp_path / "work").iterdir()) == [tmp_path / "work" / "audit"]  # send copies removed
    outputs = [p for p in (tmp_path / "out").rglob("*") if p.is_file()] + scp.files()
    blob = b"".join(p.read_bytes() for p in outputs)
    for secret in study.secrets():
        assert secret.encode() not in blob, secret
    assert SECRET not in caplog.text and study.patient.patient_id not in caplog.text
