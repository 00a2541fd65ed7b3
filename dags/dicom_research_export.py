"""dicom_research_export: find -> retrieve -> pseudonymise -> send to a research node.

Trigger it with a conf such as ``{"date_from": "2024-03-01", "date_to": "2024-03-14", "modality": "CT"}``.

Tasks:

1. ``find``: C-FIND (STUDY level, connection ``dicom_default``) of the date range into Parquet.
2. ``retrieve``: C-GET of every study found into ``<data>/research/<run>/clear`` (a private working
   directory: identifiable data never leaves it).
3. ``pseudonymize``: PS3.15 E.1-1 Basic Profile with keyed deterministic UIDs and pseudonyms, per-patient
   date shifts (``DicomPseudonymizeOperator``) into ``<data>/research/<run>/pseudonymised``; the key is
   the password of connection ``dicom_research_key``, so a series exported next month joins its study.
   Instances that may carry burned-in text are held back and counted in the task's summary.
4. ``send``: C-STORE of the pseudonymised instances to connection ``dicom_research``.
5. ``remove_clear`` (whatever happened upstream): deletes the clear working copy.

Configuration (environment, read when the DAG file is parsed):

* ``AIRFLOW_DICOM_DATA_DIR`` (default ``/tmp/airflow-dicom``): base directory.
* ``AIRFLOW_DICOM_RESEARCH_MAPPING``: where the data-protection officer's Parquet mapping (original ->
  pseudonym, identifying!) is written; empty (default): no mapping.
* ``AIRFLOW_DICOM_RESEARCH_OPTIONS`` (default ``patient-characteristics``): comma-separated profile options.
* connections ``dicom_default`` (the PACS), ``dicom_research`` (the research node), ``dicom_research_key``
  (any type; the key in its password).
"""

from __future__ import annotations

import os
import shutil

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_dicom.operators.find import DicomFindOperator
from airflow_dicom.operators.pseudonymize import DicomPseudonymizeOperator
from airflow_dicom.operators.retrieve import DicomGetOperator
from airflow_dicom.operators.store import DicomStoreOperator

DATA_DIR = os.environ.get("AIRFLOW_DICOM_DATA_DIR", "/tmp/airflow-dicom").rstrip("/")
MAPPING = os.environ.get("AIRFLOW_DICOM_RESEARCH_MAPPING", "") or None
OPTIONS = [
    o for o in os.environ.get("AIRFLOW_DICOM_RESEARCH_OPTIONS", "patient-characteristics").split(",") if o
]
RUN_DIR = DATA_DIR + "/research/{{ run_id | replace(':', '') | replace('+', '_') }}"

with DAG(
    dag_id="dicom_research_export",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["dicom", "example", "research", "pseudonymisation"],
    doc_md=__doc__,
    params={
        "date_from": Param(None, type=["null", "string"], format="date"),
        "date_to": Param(None, type=["null", "string"], format="date"),
        "modality": Param("", type="string"),
    },
):
    find = DicomFindOperator(
        task_id="find",
        dicom_conn_id="dicom_default",
        level="STUDY",
        date_from="{{ params.date_from or '' }}",
        date_to="{{ params.date_to or '' }}",
        modality="{{ params.modality }}",
        output_path=RUN_DIR + "/find",
    )
    retrieve = DicomGetOperator(
        task_id="retrieve",
        dicom_conn_id="dicom_default",
        find_results=find.output,
        data_dir=RUN_DIR + "/clear",
        layout="study",
    )
    pseudonymize = DicomPseudonymizeOperator(
        task_id="pseudonymize",
        paths=RUN_DIR + "/clear",
        out_dir=RUN_DIR + "/pseudonymised",
        key_conn_id="dicom_research_key",
        profile_options=OPTIONS,
        mapping_path=MAPPING,
    )
    send = DicomStoreOperator(
        task_id="send", paths=RUN_DIR + "/pseudonymised", dicom_conn_id="dicom_research"
    )

    @task(trigger_rule="all_done")
    def remove_clear(run_id: str | None = None) -> str:
        """Delete the identifiable working copy, whatever happened upstream."""
        clear = f"{DATA_DIR}/research/{str(run_id).replace(':', '').replace('+', '_')}/clear"
        shutil.rmtree(clear, ignore_errors=True)
        return clear

    find >> retrieve >> pseudonymize >> send >> remove_clear()
