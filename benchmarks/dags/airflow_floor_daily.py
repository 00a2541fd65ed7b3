"""airflow_floor_daily: what one daily task instance costs Airflow itself, with no DICOM in it.

The distributed benchmark backfills it over the same days as ``dicom_find_daily``: same timetable, one task
returning a small dict as XCom and emitting an asset event, like the find's task. Its backfill time is the
floor of any per-day backfill on that stack (scheduling, Celery, task process, API calls), against which the
find backfill's own cost is read.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable


def _summary() -> dict[str, int]:
    """A summary as small as the find's."""
    return {"rows": 0, "queries": 0}


with DAG(
    dag_id="airflow_floor_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["benchmark"],
    doc_md=__doc__,
):
    PythonOperator(
        task_id="noop",
        python_callable=_summary,
        outlets=[Asset(name="airflow_floor", uri="file:///tmp/airflow-dicom-floor")],
    )
