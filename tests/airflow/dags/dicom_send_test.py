"""Test DAG for DicomStoreOperator: push a templated path, and forward an arrival-style manifest."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_dicom.operators.store import DicomStoreOperator

with DAG(
    dag_id="dicom_send_test",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "source": Param("/nonexistent", type="string"),
        "manifest_files": Param([], type="array"),
    },
):

    @task
    def arrival_manifest(params=None) -> dict:  # type: ignore[no-untyped-def]
        """Stand-in for DicomArrivalSensor's manifest: one study holding the listed files."""
        files = list(params["manifest_files"])
        return {"studies": {"1.2.3": {"files": files, "instances": len(files), "bytes": 0}}}

    push = DicomStoreOperator(task_id="push", paths="{{ params.source }}/**", dicom_conn_id="send_dest")
    forward = DicomStoreOperator(
        task_id="forward", manifest=arrival_manifest(), dicom_conn_id="forward_dest", parallel=1
    )
    push >> forward
