"""Distributed benchmark: ``make distributed`` without faults (2,000 studies) against one process on one host.

Rows (one run each; the distributed stack is started, measured and stopped inside):

* the retrieval of every study by ``dicom_retrieve`` on CeleryExecutor (two workers, an Airflow pool of 2
  associations on the PACS, C-MOVE to the receiver service; from trigger to the run's end) vs
  ``airflow-dicom move`` of the same studies from one shell (2 associations, embedded receiver): goal 2x;
* the ``dicom_find_daily`` backfill of every day (from its creation to the last run's end, server times) vs
  one ``airflow-dicom find`` over the whole range: goal 3x;
* beside it, in the same rounds: the backfill of ``benchmarks/dags/airflow_floor_daily.py`` over the same
  days (one no-op task per day: Airflow's own floor for a per-day backfill on this stack), and one run of
  ``dicom_find_daily`` with ``date_from``/``date_to`` over the whole range (the range in one task).

The find rows take turns in three rounds on the live stack (one ``find``, the find backfill again with
``reprocess_behavior: completed``, the floor backfill, the range run), best of three each.

``AIRFLOW_DICOM_BENCH_STUDIES`` changes the number of studies. Needs root or a user PostgreSQL accepts.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import CLI, row

STUDIES = int(os.environ.get("AIRFLOW_DICOM_BENCH_STUDIES", "2000"))
GOAL_RETRIEVE = 2.0
GOAL_FIND = 3.0
FLOOR_DAGS = Path(__file__).resolve().parent / "dags"
FIND_DAG = "dicom_find_daily"
FLOOR_DAG = "airflow_floor_daily"
ROUNDS = 3


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
        distributed(
            [
                "up",
                "--dir",
                str(state),
                "--studies",
                str(STUDIES),
                "--faults",
                "",
                "--extra-dags",
                str(FLOOR_DAGS),
            ]
        )
        summary = json.loads((state / "summary.json").read_text())
        endpoints = json.loads((state / "endpoints.json").read_text())
        host, port, aet = endpoints["orthanc_dicom"].split(":")
        node = ["--host", host, "--port", port, "--aet", aet]
        first, last = summary["dates"]
        find_out = workdir / "find"
        find_cmd = [CLI, "find", *node, "--from", first, "--to", last, "--out", str(find_out)]
        api = _Api(endpoints["api_url"])
        api.wait_for_dag(FLOOR_DAG)
        times: dict[str, list[float]] = {"find": [], "backfill": [], "floor": [], "range": []}
        for _ in range(ROUNDS):
            times["find"].append(_timed(find_cmd))
            times["backfill"].append(api.backfill_seconds(FIND_DAG, first, last))
            times["floor"].append(api.backfill_seconds(FLOOR_DAG, first, last))
            times["range"].append(api.range_run_seconds(FIND_DAG, first, last))
        best = {k: min(v) for k, v in times.items()}
        find_s = best["find"]
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
    days = (date.fromisoformat(last) - date.fromisoformat(first)).days + 1
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
            f"find backfill ({first}..{last}, {days} runs) vs one `find`",
            best["backfill"],
            find_s,
            f"first backfill (cold) {summary['find_backfill']['seconds']} s; "
            f"rounds {_rounds(times['backfill'])}",
            GOAL_FIND,
        ),
        row(
            f"{days} no-op task instances (`{FLOOR_DAG}` backfill: Airflow's floor) vs one `find`",
            best["floor"],
            find_s,
            f"the find backfill's own cost above the floor: {best['backfill'] - best['floor']:.1f} s; "
            f"rounds {_rounds(times['floor'])}",
        ),
        row(
            f"`{FIND_DAG}` run with date_from/date_to over the range vs one `find`",
            best["range"],
            find_s,
            f"rounds {_rounds(times['range'])}; one `find`: {_rounds(times['find'])}",
            GOAL_FIND,
        ),
    ]


def _rounds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class _Api:
    """The live stack's REST API (every user is admin there), timed by the server's own timestamps.

    :param url: the API server's base URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call; returns the decoded JSON.

        :param method: HTTP method.
        :param path: path starting with ``/``.
        :param body: JSON body.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Wait until the DAG processor parsed ``dag_id``, then unpause it.

        :param dag_id: the DAG.
        :param timeout: seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(1)

    def _runs_since(self, dag_id: str, since: float, count: int) -> list[dict[str, Any]]:
        def ended() -> list[dict[str, Any]] | None:
            runs = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1000")["dag_runs"]
            mine = [r for r in runs if r.get("queued_at") and _ts(r["queued_at"]) >= since]
            done = len(mine) >= count and all(r["state"] in ("success", "failed") for r in mine)
            return mine if done else None

        runs = _poll(ended, 900, f"{dag_id}: {count} runs did not end")
        failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
        if failed:
            raise RuntimeError(f"{dag_id}: runs failed: {failed}")
        return runs

    def backfill_seconds(self, dag_id: str, first: str, last: str) -> float:
        """Backfill every day ``first``..``last`` (again); seconds from its creation to the last run's end.

        :param dag_id: a daily DAG.
        :param first: first day, ISO.
        :param last: last day, ISO.
        """
        days = (date.fromisoformat(last) - date.fromisoformat(first)).days + 1
        start = date.fromisoformat(first) + timedelta(days=1)
        end = date.fromisoformat(last) + timedelta(days=1)
        body = {
            "dag_id": dag_id,
            "from_date": f"{start}T00:00:00Z",
            "to_date": f"{end}T00:00:00Z",
            "max_active_runs": days,
            "reprocess_behavior": "completed",
        }
        self._wait_backfills_completed(dag_id)
        created = _ts(self.call("POST", "/api/v2/backfills", body)["created_at"])
        runs = self._runs_since(dag_id, created, days)
        self._wait_backfills_completed(dag_id)
        return max(_ts(r["end_date"]) for r in runs) - created

    def _wait_backfills_completed(self, dag_id: str) -> None:
        # the scheduler marks a backfill completed a little after its last run; a new one is refused before
        def completed() -> bool:
            backfills = self.call("GET", f"/api/v2/backfills?dag_id={dag_id}")["backfills"]
            return all(b.get("completed_at") for b in backfills)

        _poll(completed, 120, f"{dag_id}: a backfill is still not completed")

    def range_run_seconds(self, dag_id: str, first: str, last: str) -> float:
        """Trigger ``dag_id`` with ``date_from``/``date_to``; seconds from its queueing to its end.

        :param dag_id: the find DAG.
        :param first: first day, ISO.
        :param last: last day, ISO.
        """
        conf = {"date_from": first, "date_to": last}
        run = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        queued = _ts(run["queued_at"])
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}"

        def ended() -> dict[str, Any] | None:
            now = self.call("GET", path)
            return now if now["state"] in ("success", "failed") else None

        run = _poll(ended, 600, f"{dag_id}: the range run did not end")
        if run["state"] != "success":
            raise RuntimeError(f"{dag_id}: run {run['dag_run_id']} failed")
        return _ts(run["end_date"]) - queued


def _poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``check`` every 0.3 s until it returns something truthy; return that.

    :param check: the condition.
    :param timeout: seconds.
    :param what: the error's message when it never holds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise TimeoutError(f"{what} in {timeout:.0f} s")
