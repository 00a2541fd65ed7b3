"""Test DAGs for DicomArrivalSensor: run-specific values come from ``dag.test(run_conf=...)``.

* ``dicom_arrival_from_find``: an upstream task returns C-FIND-like rows (StudyInstanceUID +
  NumberOfStudyRelatedInstances); the deferrable sensor takes the studies from its XCom; a last task
  writes the sensor's manifest to ``conf["out"]``.
* ``dicom_arrival_timeout``: studies and expected counts templated from the conf; 6 s timeout.
* ``dicom_arrival_poke``: the same in ``poke`` mode (not deferred), quiet-period completion.
* ``dicom_study_arrived``: scheduled on an Asset whose ``AssetWatcher`` runs DicomStudyArrivedTrigger.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_dicom.sensors.arrival import DicomArrivalSensor
from airflow_dicom.triggers.arrival import DicomStudyArrivedTrigger

START = pendulum.datetime(2024, 1, 1, tz="UTC")


@task
def find_rows(**context):
    """Stands in for a C-FIND task: the rows of the studies to wait for."""
    return {"rows": context["params"]["rows"]}


@task
def write_manifest(manifest, **context):
    """Write the sensor's manifest where the test reads it."""
    Path(context["params"]["out"]).write_text(json.dumps(manifest))


with DAG(
    "dicom_arrival_from_find",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"data_dir": "", "rows": [], "out": ""},
):
    wait = DicomArrivalSensor(
        task_id="wait",
        data_dir="{{ params.data_dir }}",
        studies_from_task="find_rows",
        poke_interval=0.5,
        timeout=120,
    )
    find_rows() >> wait
    write_manifest(wait.output)


with DAG(
    "dicom_arrival_timeout",
    schedule=None,
    start_date=START,
    catchup=False,
    render_template_as_native_obj=True,
    params={"data_dir": "", "studies": [], "expected": {}},
):
    DicomArrivalSensor(
        task_id="wait",
        data_dir="{{ params.data_dir }}",
        studies="{{ params.studies }}",
        expected_instances="{{ params.expected }}",
        poke_interval=0.5,
        timeout=6,
    )


with DAG(
    "dicom_arrival_poke",
    schedule=None,
    start_date=START,
    catchup=False,
    render_template_as_native_obj=True,
    params={"data_dir": "", "studies": [], "out": ""},
):
    waited = DicomArrivalSensor(
        task_id="wait",
        data_dir="{{ params.data_dir }}",
        studies="{{ params.studies }}",
        quiet_period=1.5,
        deferrable=False,
        mode="poke",
        poke_interval=0.5,
        timeout=60,
    )
    write_manifest(waited.output)


# Scheduled on "a study finished arriving": the watcher's trigger runs in the triggerer. The data
# directory comes from the environment of the DAG processor / triggerer.
_WATCHED = Asset(
    "dicom-receiver-studies",
    watchers=[
        AssetWatcher(
            name="dicom_study_arrived",
            trigger=DicomStudyArrivedTrigger(
                data_dir=os.environ.get("DICOM_RECEIVER_DATA_DIR", "/var/lib/dicom"), quiet_period=60
            ),
        )
    ],
)

with DAG("dicom_study_arrived", schedule=[_WATCHED], start_date=START, catchup=False):

    @task(inlets=[_WATCHED])
    def process(**context):
        """Each triggering event names a study that finished arriving."""
        events = context["triggering_asset_events"][_WATCHED]
        return [event.extra["payload"]["study_uid"] for event in events]

    process()


with DAG(
    "dicom_arrival_reschedule",
    schedule=None,
    start_date=START,
    catchup=False,
    render_template_as_native_obj=True,
    params={"data_dir": "", "studies": [], "out": ""},
):
    rescheduled = DicomArrivalSensor(
        task_id="wait",
        data_dir="{{ params.data_dir }}",
        studies="{{ params.studies }}",
        expected_instances=3,
        deferrable=False,
        mode="reschedule",
        poke_interval=1,
        timeout=60,
    )
    write_manifest(rescheduled.output)
