"""Test DAG for pseudonymisation: DicomPseudonymizeOperator into a data directory, the arrival sensor on it,
and DicomStoreOperator(pseudonymize=...) sending the identified source pseudonymised on the way out."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_dicom.operators.pseudonymize import DicomPseudonymizeOperator
from airflow_dicom.operators.store import DicomStoreOperator
from airflow_dicom.sensors.arrival import DicomArrivalSensor

with DAG(
    dag_id="dicom_pseudonymize_test",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "source": Param("/nonexistent", type="string"),
        "out": Param("/nonexistent", type="string"),
        "work": Param("/nonexistent", type="string"),
    },
):
    pseudonymize = DicomPseudonymizeOperator(
        task_id="pseudonymize",
        paths="{{ params.source }}",
        out_dir="{{ params.out }}",
        key_conn_id="research_key",
        mapping_path="{{ params.work }}/audit/mapping.parquet",
        profile_options=["patient-characteristics"],
    )
    arrived = DicomArrivalSensor(
        task_id="arrived",
        data_dir="{{ params.out }}",
        studies_from_task="pseudonymize",
        studies_xcom_key="studies",
        quiet_period=0,
        deferrable=False,
        poke_interval=1,
        timeout=60,
    )
    send = DicomStoreOperator(
        task_id="send",
        paths="{{ params.source }}",
        dicom_conn_id="research_node",
        pseudonymize={"key_conn_id": "research_key", "work_dir": "{{ params.work }}"},
    )
    pseudonymize >> arrived >> send
