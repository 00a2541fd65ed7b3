"""dicom_on_arrival: each time a study finishes arriving at our receiver, forward it to another node.

Scheduled on the ``dicom_received_studies`` asset, watched by an ``AssetWatcher`` whose
``DicomStudyArrivedTrigger`` runs in the triggerer and reads the receiver's arrival records in
``<data>/received``: when a study has had no new instance for ``AIRFLOW_DICOM_QUIET_PERIOD`` seconds, an
asset event (``extra["payload"]``: ``study_uid``, ``instances``, ``bytes``, ``series``, ``last_arrival``,
``data_dir``) starts a run. If more instances of the study arrive later, it fires again once they stop.

The receiver is whatever writes ``<data>/received``: the long-running ``airflow-dicom storescp`` service,
or the embedded receiver of ``dicom_retrieve``. Use your own processing instead of the forward: this DAG
shows where the study's files are (the ``study_manifest`` XCom).

Tasks: ``study_manifest`` (the files of the study(ies) of the triggering events) -> ``forward``
(``DicomStoreOperator`` to the connection ``dicom_forward``, fed with that manifest).

Configuration (environment, read when the DAG file is parsed, also by the triggerer):

* ``AIRFLOW_DICOM_DATA_DIR`` (default ``/tmp/airflow-dicom``): base directory; watched: ``<data>/received``.
* ``AIRFLOW_DICOM_QUIET_PERIOD`` (default ``60``): seconds without a new instance that end a study.
* connection ``dicom_forward``: where studies are forwarded.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_dicom.operators.store import DicomStoreOperator
from airflow_dicom.triggers.arrival import DicomStudyArrivedTrigger

DATA_DIR = os.environ.get("AIRFLOW_DICOM_DATA_DIR", "/tmp/airflow-dicom").rstrip("/")
RECEIVED_DIR = f"{DATA_DIR}/received"
QUIET_PERIOD = float(os.environ.get("AIRFLOW_DICOM_QUIET_PERIOD", "60"))

RECEIVED_STUDIES = Asset(
    name="dicom_received_studies",
    uri=RECEIVED_DIR if "://" in RECEIVED_DIR else f"file://{RECEIVED_DIR}",
    watchers=[
        AssetWatcher(
            name="dicom_study_arrived",
            trigger=DicomStudyArrivedTrigger(data_dir=RECEIVED_DIR, quiet_period=QUIET_PERIOD),
        )
    ],
)

with DAG(
    dag_id="dicom_on_arrival",
    schedule=[RECEIVED_STUDIES],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["dicom", "example"],
    doc_md=__doc__,
):

    @task(inlets=[RECEIVED_STUDIES])
    def study_manifest(**context: Any) -> dict[str, Any]:
        """The files of the study(ies) that finished arriving, as a DicomArrivalSensor-style manifest."""
        from airflow_dicom.dimse.arrivals import assess_studies, manifest

        events = context["triggering_asset_events"][RECEIVED_STUDIES]
        study_uids = sorted({event.extra["payload"]["study_uid"] for event in events})
        if not study_uids:
            raise ValueError("this run was not started by a study-arrived event: nothing to forward")
        progress = assess_studies(RECEIVED_DIR, dict.fromkeys(study_uids), quiet_period=0)
        result = manifest(RECEIVED_DIR, progress)
        print(f"forwarding {len(study_uids)} study(ies): {result['instances']} instances")
        return result

    DicomStoreOperator(task_id="forward", manifest=study_manifest(), dicom_conn_id="dicom_forward")
