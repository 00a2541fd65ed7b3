"""Test DAGs for retrieval: C-MOVE to an embedded receiver, C-GET in a window, mapped batches, find -> get.

The PACS connection is ``retrieve_pacs`` (an ``AIRFLOW_CONN_RETRIEVE_PACS`` env var set by the tests); run
specific values (UIDs, ports, directories, window) come from ``run_conf`` (Params).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_dicom.operators.find import DicomFindOperator
from airflow_dicom.operators.retrieve import DicomGetOperator, DicomMoveOperator

COMMON = {"schedule": None, "start_date": datetime(2024, 1, 1), "catchup": False, "tags": ["test"]}

# the second: the receiver in a process of its own, as a long retrieval runs it (receiver_process=True)
for dag_id, destination, own_process in (
    ("test_retrieve_move", "RTDAG", None),
    ("test_retrieve_move_own_process", "RTDAGP", True),
):
    with DAG(dag_id, params={"uids": [], "data_dir": "", "receive_port": 0}, **COMMON):
        DicomMoveOperator(
            task_id="move",
            dicom_conn_id="retrieve_pacs",
            uids="{{ params.uids }}",
            move_destination=destination,
            receive_port="{{ params.receive_port }}",
            receive_host="127.0.0.1",
            data_dir="{{ params.data_dir }}",
            backoff=0.2,
            receiver_process=own_process,
        )

with DAG(
    "test_retrieve_window",
    params={"uids": [], "data_dir": "", "window_start": "", "window_end": "", "timezone": "UTC"},
    **COMMON,
):
    DicomGetOperator(
        task_id="get",
        dicom_conn_id="retrieve_pacs",
        uids="{{ params.uids }}",
        data_dir="{{ params.data_dir }}",
        window=("{{ params.window_start }}", "{{ params.window_end }}"),
        timezone="{{ params.timezone }}",
    )

with DAG("test_retrieve_expand", params={"uids": [], "data_dir": "", "batch": 3}, **COMMON):

    @task
    def batches(params=None) -> list[list[str]]:
        uids, size = list(params["uids"]), int(params["batch"])
        return [uids[n : n + size] for n in range(0, len(uids), size)]

    DicomGetOperator.partial(
        task_id="get", dicom_conn_id="retrieve_pacs", data_dir="{{ params.data_dir }}", parallel=1
    ).expand(uids=batches())

with DAG("test_retrieve_find_then_get", params={"find_dir": "", "data_dir": ""}, **COMMON):
    find = DicomFindOperator(
        task_id="find",
        dicom_conn_id="retrieve_pacs",
        date_from="2024-01-01",
        date_to="2024-12-31",
        output_path="{{ params.find_dir }}",
    )
    DicomGetOperator(
        task_id="get",
        dicom_conn_id="retrieve_pacs",
        find_results=find.output,
        find_filter={"ModalitiesInStudy": "CT"},
        data_dir="{{ params.data_dir }}",
    )
