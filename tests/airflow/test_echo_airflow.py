"""The hook, the operator in a DAG run, `airflow connections test` and the provider registration."""

from __future__ import annotations

import json
import os

import pytest
from dagrun import airflow_cli, run_dag, xcom

from airflow_dicom.dimse.errors import AssociationRejectedError
from airflow_dicom.hooks.dicom import DicomHook


def _json_conn(server, called_aet: str | None = None, **extra) -> str:
    extra = {"called_ae_title": called_aet or server.aet, **extra}
    return json.dumps({"conn_type": "dicom", "host": server.host, "port": server.dicom_port, "extra": extra})


@pytest.fixture
def strict_conns(orthanc_strict, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TEST_PACS", _json_conn(orthanc_strict, calling_ae_title="TESTER"))
    monkeypatch.setenv("AIRFLOW_CONN_TEST_PACS_WRONG_AET", _json_conn(orthanc_strict, called_aet="WRONGAET"))
    return orthanc_strict


def test_json_and_uri_connections_give_the_same_node(orthanc, monkeypatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AS_JSON",
        _json_conn(orthanc, calling_ae_title="ME", dimse_timeout=12, max_pdu=65536),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_AS_URI",
        f"dicom://{orthanc.host}:{orthanc.dicom_port}/?called_ae_title={orthanc.aet}"
        "&calling_ae_title=ME&dimse_timeout=12&max_pdu=65536",
    )
    from_json, from_uri = DicomHook("as_json").node, DicomHook("as_uri").node
    assert from_json == from_uri
    assert (from_uri.calling_ae_title, from_uri.dimse_timeout, from_uri.max_pdu) == ("ME", 12.0, 65536)
    assert DicomHook("as_uri").echo().round_trip > 0


def test_echo_operator_in_a_dag_run(strict_conns) -> None:
    dagrun = run_dag("test_echo")
    assert dagrun.state == "success"
    round_trip = xcom(dagrun, "echo")
    assert isinstance(round_trip, float) and round_trip > 0


def test_echo_operator_fails_the_task_on_rejection(strict_conns) -> None:
    dagrun = run_dag("test_echo_wrong_aet")
    assert dagrun.state == "failed"
    (ti,) = dagrun.get_task_instances()
    assert ti.state == "failed"
    # the reason the task failed with (same code path the operator runs)
    with pytest.raises(AssociationRejectedError, match="called AE title not recognised"):
        DicomHook("test_pacs_wrong_aet").echo()


def test_hook_test_connection_reports_latency_or_reason(strict_conns) -> None:
    ok, message = DicomHook("test_pacs").test_connection()
    assert ok, message
    assert "C-ECHO to STRICTPACS@" in message and " ms" in message
    ok, message = DicomHook("test_pacs_wrong_aet").test_connection()
    assert not ok
    assert "called AE title not recognised" in message


def test_airflow_connections_test_runs_a_real_echo(strict_conns) -> None:
    env = {key: os.environ[key] for key in ("AIRFLOW_CONN_TEST_PACS", "AIRFLOW_CONN_TEST_PACS_WRONG_AET")}
    good = airflow_cli("connections", "test", "test_pacs", env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Connection success!" in good.stdout
    bad = airflow_cli("connections", "test", "test_pacs_wrong_aet", env=env)
    assert "Connection failed!" in bad.stdout
    assert "called AE title not recognised" in bad.stdout


def test_provider_is_listed_with_its_connection_type() -> None:
    providers = airflow_cli("providers", "list")
    assert providers.returncode == 0, providers.stderr
    assert "airflow-dicom" in providers.stdout
    hooks = airflow_cli("providers", "hooks")
    assert "airflow_dicom.hooks.dicom.DicomHook" in hooks.stdout

    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = {name for name in manager.connection_form_widgets if name.startswith("extra__dicom__")}
    assert {
        "extra__dicom__called_ae_title",
        "extra__dicom__calling_ae_title",
        "extra__dicom__acse_timeout",
        "extra__dicom__dimse_timeout",
        "extra__dicom__network_timeout",
        "extra__dicom__max_pdu",
        "extra__dicom__tls_ca_file",
        "extra__dicom__tls_cert_file",
        "extra__dicom__tls_verify_hostname",
        "extra__dicom__tls_min_version",
    } <= widgets
    behaviour = manager.field_behaviours["dicom"]
    # the password field holds the TLS private key (path or PEM text), a secret
    assert set(behaviour["hidden_fields"]) == {"schema", "login"}
    assert "TLS private key" in behaviour["relabeling"]["password"]
    assert behaviour["placeholders"]["port"] == "104 or 11112"
