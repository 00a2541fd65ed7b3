"""dicom_find_daily: every night, list the previous day's studies on the PACS into a Parquet dataset.

One run per day (``CronDataIntervalTimetable("0 0 * * *", timezone="UTC")``): the run of 2024-03-02
queries the PACS (connection ``dicom_default``) at STUDY level for StudyDate 2024-03-02 and lands the
matches in ``<data>/find/studies``, a Parquet dataset partitioned by ``StudyDate``. A rerun of a day
replaces exactly that day's partition (a day that no longer has studies is cleared), so backfills are
idempotent::

    airflow backfill create --dag-id dicom_find_daily --from-date 2024-01-01 --to-date 2024-12-31

A run triggered with the params ``date_from`` and ``date_to`` (the trigger form's "Study dates" section,
or ``airflow dags trigger dicom_find_daily --conf '{"date_from": "2024-01-01", "date_to": "2024-12-31"}'``)
finds the whole range in one task and lands the same day partitions, replacing exactly the range's days:
a year in one C-FIND (split if the PACS truncates) instead of 366 runs. Use it for a first fill; keep the
per-day backfill when you want one retryable run, log and asset event per day.

Truncated answers (a PACS limit on results) are split by date and time; the run fails loudly when a
piece cannot be split rather than landing a partial day. Each successful run emits an event on the
``dicom_find_studies`` asset whose ``extra`` is the find summary (rows, path, interval, queries...).

Returned keys: StudyInstanceUID, StudyDate, StudyTime, PatientID, AccessionNumber, ModalitiesInStudy,
NumberOfStudyRelatedInstances, StudyDescription: what ``dicom_retrieve`` needs to pick studies and to
know how many instances each should bring.

Configuration (read when the DAG file is parsed):

* ``AIRFLOW_DICOM_DATA_DIR`` (default ``/tmp/airflow-dicom``): base directory (local path or fsspec URL);
  the dataset is ``<data>/find/studies``.
* connection ``dicom_default``: the PACS (connection type ``dicom``).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param

from airflow_dicom.operators.find import DicomFindOperator

DATA_DIR = os.environ.get("AIRFLOW_DICOM_DATA_DIR", "/tmp/airflow-dicom").rstrip("/")
STUDIES_PATH = f"{DATA_DIR}/find/studies"
STUDIES_ASSET = Asset(
    name="dicom_find_studies",
    uri=STUDIES_PATH if "://" in STUDIES_PATH else f"file://{STUDIES_PATH}",
)

with DAG(
    dag_id="dicom_find_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    tags=["dicom", "example"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "date_from": Param(
            None,
            type=["null", "string"],
            format="date",
            title="First study date",
            description="With the last date: find this range in one run instead of the run's day. Empty: "
            "the run's day.",
            section="Study dates",
        ),
        "date_to": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Last study date",
            description="Inclusive. Empty with a first date: from the first date on.",
            section="Study dates",
        ),
    },
):
    DicomFindOperator(
        task_id="find_studies",
        dicom_conn_id="dicom_default",
        level="STUDY",
        return_keys=[
            "PatientID",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
            "StudyDescription",
        ],
        date_from="{{ params.date_from or '' }}",
        date_to="{{ params.date_to or '' }}",
        output_path=STUDIES_PATH,
        asset=STUDIES_ASSET,
    )
