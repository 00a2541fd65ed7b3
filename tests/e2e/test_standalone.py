"""End to end on a real ``airflow standalone``: the example DAGs, the connection form, connection tests."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from standalone import AirflowStandalone

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAGS = Path(__file__).resolve().parents[2] / "dags"
EXAMPLE_DAGS = {"dicom_echo"}


@pytest.fixture(scope="module")
def airflow(orthanc) -> Iterator[AirflowStandalone]:
    conn = {
        "conn_type": "dicom",
        "host": orthanc.host,
        "port": orthanc.dicom_port,
        "extra": {"called_ae_title": orthanc.aet},
    }
    home = Path(tempfile.mkdtemp(prefix="airflow-dicom-e2e-"))
    env = {
        "AIRFLOW_CONN_DICOM_DEFAULT": json.dumps(conn),
        "AIRFLOW_CONN_DICOM_WRONG": json.dumps({**conn, "extra": {"called_ae_title": "NOBODY"}, "port": 1}),
    }
    with AirflowStandalone(home, DAGS, env) as instance:
        yield instance


def test_example_dags_import_without_errors(airflow: AirflowStandalone) -> None:
    dags = airflow.wait_for_dags(EXAMPLE_DAGS)
    assert EXAMPLE_DAGS <= set(dags)
    errors = airflow.api("GET", "/api/v2/importErrors")
    assert errors["total_entries"] == 0, errors


def test_connection_form_fields_are_served(airflow: AirflowStandalone) -> None:
    hooks = {h["connection_type"]: h for h in airflow.api("GET", "/ui/connections/hook_meta")}
    dicom = hooks["dicom"]
    assert dicom["hook_name"] == "DICOM node"
    assert {"called_ae_title", "calling_ae_title", "acse_timeout", "dimse_timeout", "max_pdu"} <= set(
        dicom["extra_fields"]
    )
    assert dicom["standard_fields"]["login"]["hidden"] is True
    assert dicom["standard_fields"]["port"]["placeholder"] == "104 or 11112"


def test_airflow_connections_test(airflow: AirflowStandalone) -> None:
    ok = airflow.cli("connections", "test", "dicom_default")
    assert ok.returncode == 0 and "Connection success!" in ok.stdout, ok.stdout + ok.stderr
    bad = airflow.cli("connections", "test", "dicom_wrong")
    assert "Connection failed!" in bad.stdout
    assert "unreachable" in bad.stdout


def test_echo_dag_runs_in_the_real_scheduler(airflow: AirflowStandalone) -> None:
    airflow.wait_for_dags({"dicom_echo"})
    airflow.unpause("dicom_echo")
    run_id = airflow.trigger("dicom_echo")
    assert airflow.wait_for_run("dicom_echo", run_id, timeout=180) == "success", airflow.log_tail()
    (ti,) = airflow.task_instances("dicom_echo", run_id)
    assert ti["state"] == "success"
