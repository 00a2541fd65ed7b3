"""One distributed retrieval, as ``make distributed`` and the distributed test run it, with its faults.

The PACS (Orthanc) and the receiver service (``airflow-dicom storescp``) listen on their own loopback
addresses; the PACS knows only the receiver service as a C-MOVE destination, never a worker. The receiver's
data directory is shared by the receiver, the workers and the triggerer.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg2
import pydicom
from harness.ports import free_port, wait_for_port

from distributed.services import Process
from distributed.stack import VENV_BIN, DistributedStack
from distributed.timings import phases

RECEIVER_AET = "RCVSERVICE"
RECEIVER_HOST = "127.0.0.3"
RETRIEVE = "dicom_retrieve"
FIND = "dicom_find_daily"
#: no XCom may be larger than this (bytes of its stored JSON)
XCOM_LIMIT = 64 * 1024


class ReceiverService(Process):
    """``airflow-dicom storescp`` on its own address, storing to the shared ``data_dir``.

    :param data_dir: the shared received directory.
    :param log: its log.
    """

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = free_port(RECEIVER_HOST)
        self.data_dir = data_dir
        argv = [str(VENV_BIN / "airflow-dicom"), "storescp", "--aet", RECEIVER_AET, "--host", RECEIVER_HOST]
        argv += ["--port", str(self.port), "--data-dir", str(data_dir), "--max-associations", "8"]
        super().__init__(argv, log, env={**os.environ, "TCP_NODELAY": "1"})

    def start(self) -> ReceiverService:
        """Start and wait until it listens."""
        super().start()
        if not wait_for_port(self.port, host=RECEIVER_HOST, timeout=30):
            raise RuntimeError(f"receiver service did not listen:\n{self.tail()}")
        return self

    def restart(self) -> None:
        """SIGTERM it and start it again on the same port (associations in flight are cut)."""
        self.stop()
        self.start()


def stack_env(host: str, port: int, aet: str, data_dir: Path) -> dict[str, str]:
    """The environment the example DAGs read in the distributed layout.

    :param host: the PACS's address.
    :param port: its DICOM port.
    :param aet: its AE title.
    :param data_dir: the shared data directory.
    """
    conn = {
        "conn_type": "dicom",
        "host": host,
        "port": port,
        "extra": {"called_ae_title": aet},
    }
    return {
        "AIRFLOW_CONN_DICOM_DEFAULT": json.dumps(conn),
        "AIRFLOW_DICOM_DATA_DIR": str(data_dir),
        "AIRFLOW_DICOM_DESTINATION_AET": RECEIVER_AET,
        "AIRFLOW_DICOM_QUIET_PERIOD": "5",
        "AIRFLOW_DICOM_ARRIVAL_TIMEOUT": "900",
        "AIRFLOW_DICOM_RETRIEVE_RETRIES": "3",
        "AIRFLOW_DICOM_RETRY_DELAY": "5",
        "TCP_NODELAY": "1",
    }


def received_files(received: Path) -> list[tuple[Path, str]]:
    """Every stored DICOM file under ``received`` with its SOP Instance UID (read from the file).

    :param received: the receiver's data directory (bookkeeping dot-folders are skipped).
    """
    out = []
    for path in sorted(received.rglob("*")):
        if not path.is_file() or any(p.startswith(".") for p in path.relative_to(received).parts):
            continue
        out.append((path, str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)))
    return out


def all_task_instances(stack: DistributedStack, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of a retrieval run, page by page (the API returns at most 100 at once).

    :param stack: the stack.
    :param run_id: the retrieval run.
    """
    path = f"/api/v2/dags/{RETRIEVE}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances"
    out: list[dict[str, Any]] = []
    while True:
        page = stack.api("GET", f"{path}?limit=100&offset={len(out)}")
        out += page["task_instances"]
        if not page["task_instances"] or len(out) >= page["total_entries"]:
            return out


def wait_running_on(stack: DistributedStack, run_id: str, host: str, task_id: str, timeout: float) -> bool:
    """Wait until a ``task_id`` instance of the run is running on ``host``.

    :param stack: the stack.
    :param run_id: the retrieval run.
    :param host: the worker host name.
    :param task_id: the task.
    :param timeout: seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ti in all_task_instances(stack, run_id):
            if ti["task_id"] == task_id and ti["state"] == "running" and ti.get("hostname") == host:
                return True
        time.sleep(0.5)
    return False


def xcom_sizes(stack: DistributedStack) -> dict[str, int]:
    """The largest stored XCom value per task (bytes), read from the metadata database."""
    with psycopg2.connect(stack.postgres.url.replace("postgresql+psycopg2", "postgresql")) as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT task_id, max(octet_length(value::text)) FROM xcom GROUP BY task_id")
            return {task: int(size or 0) for task, size in cursor.fetchall()}


def report_of(stack: DistributedStack, run_id: str) -> dict[str, Any]:
    """The ``report`` task's summary XCom.

    :param stack: the stack.
    :param run_id: the retrieval run.
    """
    path = (
        f"/api/v2/dags/{RETRIEVE}/dagRuns/{urllib.parse.quote(run_id)}"
        "/taskInstances/report/xcomEntries/return_value?deserialize=true"
    )
    value = stack.api("GET", path)["value"]
    return json.loads(value) if isinstance(value, str) else value


def summarise(stack: DistributedStack, run_id: str, received: Path, seconds: float) -> dict[str, Any]:
    """What the run did: studies, instances, bytes, wall time, which host ran which tasks, unfinished tasks.

    :param stack: the stack.
    :param run_id: the retrieval run.
    :param received: the receiver's data directory.
    :param seconds: the run's wall time.
    """
    tis = all_task_instances(stack, run_id)
    hosts: dict[str, Counter] = {}
    for ti in tis:
        hosts.setdefault(ti.get("hostname") or "-", Counter())[ti["task_id"]] += 1
    files = received_files(received)
    report = report_of(stack, run_id)
    return {
        "run_id": run_id,
        "state": stack.api("GET", f"/api/v2/dags/{RETRIEVE}/dagRuns/{urllib.parse.quote(run_id)}")["state"],
        "studies_found": report.get("requested"),
        "studies_complete": report.get("complete"),
        "instances": len(files),
        "distinct_instances": len({uid for _, uid in files}),
        "bytes": sum(path.stat().st_size for path, _ in files),
        "wall_seconds": round(seconds, 1),
        "hosts": {host: dict(tasks) for host, tasks in hosts.items()},
        "unfinished": [ti["task_id"] for ti in tis if ti["state"] in ("queued", "running", "scheduled")],
        "partial_files": [str(p) for p in received.rglob("*.tmp")],
        "largest_xcom": max(xcom_sizes(stack).values(), default=0),
        "phases": phases(tis),
        "report": report,
    }
