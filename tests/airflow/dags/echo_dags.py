"""Test DAGs for the foundation: C-ECHO through the operator (connections come from env vars)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_dicom.operators.echo import DicomEchoOperator

with DAG("test_echo", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["test"]):
    DicomEchoOperator(task_id="echo", dicom_conn_id="test_pacs")

with DAG("test_echo_wrong_aet", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["test"]):
    DicomEchoOperator(task_id="echo", dicom_conn_id="test_pacs_wrong_aet")
