"""Distributed benchmark: ``make distributed`` without faults (2,000 studies) against one process on one host.

Rows (one run each; the distributed stack is started, measured and stopped inside):

* the retrieval of every study by ``dicom_retrieve`` on CeleryExecutor (two workers, an Airflow pool of 2
  associations on the PACS, C-MOVE to the receiver service; from trigger to the run's end) vs
  ``airflow-dicom move`` of the same studies from one shell (2 associations, embedded receiver): goal 2x;
* the ``dicom_find_daily`` backfill of every day (from its creation to the last run's end) vs one
  ``airflow-dicom find`` over the whole range: goal 3x.

``AIRFLOW_DICOM_BENCH_STUDIES`` changes the number of studies. Needs root or a user PostgreSQL accepts.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import CLI, row

STUDIES = int(os.environ.get("AIRFLOW_DICOM_BENCH_STUDIES", "2000"))
GOAL_RETRIEVE = 2.0
GOAL_FIND = 3.0


def _timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})
    return time.monotonic() - started


def rows(workdir: Path) -> list[dict[str, Any]]:
    """Run the stack, then the one-process commands against the same PACS; return the rows.

    :param workdir: a scratch directory.
    """
    from distributed.run import main as distributed
    from harness.ports import free_port

    state = workdir / "state"
    try:
        distributed(["up", "--dir", str(state), "--studies", str(STUDIES), "--faults", ""])
        summary = json.loads((state / "summary.json").read_text())
        endpoints = json.loads((state / "endpoints.json").read_text())
        host, port, aet = endpoints["orthanc_dicom"].split(":")
        node = ["--host", host, "--port", port, "--aet", aet]
        first, last = summary["dates"]
        find_out = workdir / "find"
        find_s = _timed([CLI, "find", *node, "--from", first, "--to", last, "--out", str(find_out)])
        receive_port = free_port()
        body = json.dumps({"AET": "BENCHMOVE", "Host": "127.0.0.1", "Port": receive_port}).encode()
        request = urllib.request.Request(
            f"{endpoints['orthanc_url']}/modalities/bench-move", body, method="PUT"
        )
        urllib.request.urlopen(request, timeout=30).read()
        move = [CLI, "move", *node, "--from-parquet", str(find_out), "--parallel", "2", "--quiet"]
        move += [
            "--dest-aet",
            "BENCHMOVE",
            "--receive-port",
            str(receive_port),
            "--data-dir",
            str(workdir / "rx"),
        ]
        move_s = _timed(move)
    finally:
        distributed(["stop", "--dir", str(state)])
    hosts = ", ".join(f"{h}: {t.get('retrieve_move', 0)}" for h, t in summary["hosts"].items() if h != "-")
    note = (
        f"{summary['studies_complete']}/{summary['studies_found']} studies, "
        f"{summary['instances']} instances, {summary['bytes']} B; retrieval tasks per host: {hosts}; "
        f"largest XCom {summary['largest_xcom']} B"
    )
    return [
        row(
            f"retrieve {STUDIES} studies: CeleryExecutor vs one `move`",
            summary["wall_seconds"],
            move_s,
            note,
            GOAL_RETRIEVE,
        ),
        row(
            f"find backfill ({first}..{last}) vs one `find`",
            summary["find_backfill"]["seconds"],
            find_s,
            "",
            GOAL_FIND,
        ),
    ]
