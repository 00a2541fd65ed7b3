"""Test DAGs for DicomFindOperator (paths and connections come from the test via env vars)."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable

from airflow_dicom.operators.find import DicomFindOperator

FIND_ASSET = Asset(name="pacs_studies", uri="file:///airflow-dicom-tests/pacs-studies")

with DAG(
    dag_id="test_find_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-dicom-tests"],
):
    DicomFindOperator(
        task_id="find_studies",
        dicom_conn_id="find_pacs",
        level="STUDY",
        return_keys=["PatientID", "StudyTime", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"],
        output_path=os.environ.get("DICOM_FIND_DAG_OUT", "/nonexistent/airflow-dicom-find"),
        asset=FIND_ASSET,
    )

with DAG(
    dag_id="dicom_find_crowded",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-dicom-tests"],
):
    DicomFindOperator(
        task_id="find_studies",
        dicom_conn_id="find_limited",
        level="STUDY",
        date_from="{{ params.day }}",
        date_to="{{ params.day }}",
        params={"day": "2025-06-01"},
        output_path=os.environ.get("DICOM_FIND_DAG_OUT", "/nonexistent/airflow-dicom-find") + "/{{ ds }}",
    )
