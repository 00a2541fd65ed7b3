"""dicom_send: push a folder (or files, or a glob) of DICOM to a node with C-STORE; account for every file.

Trigger it with a conf such as ``{"path": "/data/outgoing/batch-42", "parallel": 4}``. Directories are
walked recursively; files that are not DICOM are skipped (and listed), compressed files are sent as
stored. The ``send`` task fails, listing each failed file with the status and its meaning, when any file
could not be stored; ``summary`` then still runs and logs the account.
The run then ends failed: ``run_failed`` (``trigger_rule="one_failed"``) fails whenever a task failed.

Params: ``path`` (file, directory or glob), ``parallel`` (associations at once, 1-32, default 2),
``dicom_conn_id`` (the destination connection, default ``dicom_default``).

XCom of ``send`` (and returned by ``summary``): ``files``, ``bytes``, ``sent``, ``warning``, ``failed``,
``skipped``, ``retried``, ``associations``, ``seconds``, ``node`` and the lists ``failures``,
``skipped_files``, ``warnings``.

Configuration: none from the environment; the destination is an Airflow connection of type ``dicom``.
"""

from __future__ import annotations

import logging
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_dicom.operators.store import DicomStoreOperator
from airflow_dicom.operators.watcher import fail_run_on_failure

log = logging.getLogger(__name__)

with DAG(
    dag_id="dicom_send",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["dicom", "example"],
    doc_md=__doc__,
    params={
        "path": Param(
            "",
            type="string",
            minLength=1,
            title="What to send",
            description="A DICOM file, a directory (walked recursively) or a glob such as /data/in/**/*.dcm.",
        ),
        "parallel": Param(2, type="integer", minimum=1, maximum=32, title="Associations at once"),
        "dicom_conn_id": Param("dicom_default", type="string", minLength=1, title="Destination connection"),
    },
) as dag:
    send = DicomStoreOperator(
        task_id="send",
        paths="{{ params.path }}",
        parallel="{{ params.parallel }}",
        dicom_conn_id="{{ params.dicom_conn_id }}",
    )

    @task(trigger_rule="all_done")
    def summary(**context: Any) -> dict[str, Any]:
        """Log the account of the send (also when it failed)."""
        result = context["ti"].xcom_pull(task_ids="send") or {}
        if not result:
            raise RuntimeError("the send task left no account (it failed before sending; see its log)")
        log.info(
            "%s files to %s: %s sent, %s with a warning, %s failed, %s skipped (not DICOM), "
            "%.1f MB in %.1f s",
            result["files"],
            result["node"],
            result["sent"],
            result["warning"],
            result["failed"],
            result["skipped"],
            result["bytes"] / 1e6,
            result["seconds"],
        )
        for failure in result.get("failures", []):
            log.info("failed %s: %s", failure.get("path"), failure.get("reason"))
        return result

    send >> summary()
    # the summary runs whatever happened; the run still ends failed when the send failed
    fail_run_on_failure(dag)
