"""dicom_echo: check every 15 minutes that the PACS answers a C-ECHO (connection ``dicom_default``).

Copy it, point ``dicom_conn_id`` at your node, and alert on failures (``on_failure_callback``) to learn
about an unreachable PACS before the nightly jobs do.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_dicom.operators.echo import DicomEchoOperator

with DAG(
    dag_id="dicom_echo",
    schedule=timedelta(minutes=15),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dicom", "example"],
    doc_md=__doc__,
):
    DicomEchoOperator(
        task_id="echo", dicom_conn_id="dicom_default", retries=2, retry_delay=timedelta(minutes=1)
    )
