"""Test DAGs for DicomArrivalSensor: run-specific values come from ``dag.test(run_conf=...)``.

* ``dicom_arrival_from_find``: an upstream task returns C-FIND-like rows (StudyInstanceUID +
  NumberOfStudyRelatedInstances); the deferrable sensor takes the studies from its XCom; a last task
  writes the sensor's manifest to ``conf["out"]``.
* ``dicom_arrival_timeout``: studies and expected counts templated from the conf; 6 s timeout.
* ``dicom_arrival_poke``: the same in ``poke`` mode (not deferred), quiet-period completion.
"""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from airflow_dicom.sensors.arrival import DicomArrivalSensor

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
