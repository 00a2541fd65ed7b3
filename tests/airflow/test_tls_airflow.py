"""TLS through an Airflow connection: the private key in the password field, a DAG run echoing over TLS."""

from __future__ import annotations

import json
from pathlib import Path

from dagrun import run_dag, xcom
from harness.disk import sop_uids_on_disk
from harness.synth import make_instance, write_dataset

from airflow_dicom.dimse.receiver import Receiver
from airflow_dicom.dimse.tls import ServerTls
from airflow_dicom.hooks.dicom import DicomHook


def test_dag_run_and_hook_over_mutual_tls_with_the_key_in_the_password(pki, monkeypatch, tmp_path) -> None:
    tls = ServerTls(pki.server.cert, pki.server.key, ca_file=pki.ca, require_client_cert=True)
    with Receiver(tmp_path / "data", ae_title="TLSRX", host="127.0.0.1", port=0, tls=tls) as rx:
        conn = {
            "conn_type": "dicom",
            "host": "localhost",
            "port": rx.port,
            "password": Path(pki.client.key).read_text(),
            "extra": {
                "called_ae_title": "TLSRX",
                "tls": True,
                "tls_ca_file": pki.ca,
                "tls_cert_file": pki.client.cert,
            },
        }
        monkeypatch.setenv("AIRFLOW_CONN_TEST_PACS", json.dumps(conn))
        dagrun = run_dag("test_echo")
        assert dagrun.state == "success"
        assert xcom(dagrun, "echo") > 0
        datasets = [make_instance(seed=4400 + i) for i in range(3)]
        files = [write_dataset(ds, tmp_path / f"f{i}.dcm") for i, ds in enumerate(datasets)]
        report = DicomHook("test_pacs").send(files)
        assert report.summary()["sent"] == 3
        assert sop_uids_on_disk(tmp_path / "data") == {str(ds.SOPInstanceUID) for ds in datasets}
        assert rx.refused == {}
