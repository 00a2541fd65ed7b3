"""Test DAG for the transport choice: a plain DicomGetOperator on connection ``retrieve_pacs``.

The tests point ``retrieve_pacs`` at a ``dicomweb`` node, a ``dicom`` node linked to one, or a ``dicom`` node
alone; the operator picks WADO-RS, then C-GET.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_dicom.operators.retrieve import DicomGetOperator

with DAG(
    "test_retrieve_transport",
    params={"uids": [], "data_dir": ""},
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["test"],
):
    DicomGetOperator(
        task_id="get",
        dicom_conn_id="retrieve_pacs",
        uids="{{ params.uids }}",
        data_dir="{{ params.data_dir }}",
    )
