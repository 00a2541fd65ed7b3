"""A real ``airflow standalone`` (scheduler, triggerer, DAG processor, API server) for end-to-end tests.

Started with ``setsid`` in a private AIRFLOW_HOME on a free port with small parallelism, driven through
the REST API (``/api/v2``, every user an admin via the simple auth manager) and the ``airflow`` CLI, and
stopped by killing its whole process group (standalone leaves orphans on SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness.ports import free_port

VENV_BIN = Path(sys.executable).parent
SQLITE_LOCKED_ATTEMPTS = 5


class AirflowStandalone:
    """One ``airflow standalone`` process group.

    :param home: the AIRFLOW_HOME to use (created if missing).
    :param dags_folder: the DAG folder.
    :param env: extra environment (connections as ``AIRFLOW_CONN_*``, settings the DAGs read).
    """

    def __init__(self, home: Path, dags_folder: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.dags_folder = dags_folder
        self.port = free_port()
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # a loaded CI machine answers the task runner's Execution API calls slower than the 5 s default
            # (a task then fails before its first line with httpx.ReadTimeout)
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            **(env or {}),
        }
        self.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        self.process: subprocess.Popen | None = None
        self.log_path = home / "standalone.log"

    @property
    def url(self) -> str:
        """Base URL of the API server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> AirflowStandalone:
        """Start and wait until every component reports healthy.

        :param timeout: seconds to wait for health.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["setsid", str(VENV_BIN / "airflow"), "standalone"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.home,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"airflow standalone exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                health = self.api("GET", "/api/v2/monitor/health")
                if all(
                    health.get(part, {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                ):
                    return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"airflow standalone not healthy after {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Kill the whole process group and wait for it."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        self.process = None

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the standalone log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        """Call the REST API; returns the decoded JSON (raises with the body on HTTP errors).

        :param method: HTTP method.
        :param path: path starting with ``/``.
        :param body: JSON body.
        :param timeout: seconds.
        """
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(1, SQLITE_LOCKED_ATTEMPTS + 1):
            request = urllib.request.Request(self.url + path, data=data, method=method)
            request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as exc:
                text = exc.read().decode(errors="replace")
                # standalone keeps its metadata in SQLite: a write that meets the scheduler's lock for longer
                # than SQLite's busy timeout is rolled back whole and answered 500 ("database is locked"; a
                # backfill's creation answers 503 "Database is locked. ..."); it is safe to send again.
                locked = exc.code >= 500 and "database is locked" in text.lower()
                if locked and attempt < SQLITE_LOCKED_ATTEMPTS:
                    time.sleep(attempt)
                    continue
                raise RuntimeError(f"{method} {path} -> {exc.code}: {text}") from exc
            return json.loads(payload) if payload else None
        raise AssertionError("unreachable")

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``airflow ARGS`` with this instance's environment.

        :param args: CLI arguments.
        :param timeout: seconds.
        """
        return subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 120) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_ids``; returns ``{dag_id: dag}``.

        :param dag_ids: the DAGs expected.
        :param timeout: seconds.
        """
        deadline = time.monotonic() + timeout
        found: dict[str, Any] = {}
        while time.monotonic() < deadline:
            found = {d["dag_id"]: d for d in self.api("GET", "/api/v2/dags?limit=100")["dags"]}
            if dag_ids <= set(found):
                return found
            time.sleep(1)
        raise RuntimeError(
            f"DAGs {sorted(dag_ids - set(found))} not parsed in {timeout} s:\n{self.log_tail()}"
        )

    def unpause(self, dag_id: str) -> None:
        """Unpause ``dag_id``."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def backfill(
        self, dag_id: str, from_date: str, to_date: str, max_active_runs: int | None = None
    ) -> dict[str, Any]:
        """Create a backfill through the REST API (the ``airflow backfill create`` CLI writes to standalone's
        SQLite from a third process and fails with "database is locked" when the scheduler holds it).

        :param dag_id: the DAG.
        :param from_date: first logical date, ISO.
        :param to_date: last logical date, ISO.
        :param max_active_runs: runs of the backfill at once (Airflow's default: 10).
        """
        body: dict[str, Any] = {"dag_id": dag_id, "from_date": from_date, "to_date": to_date}
        if max_active_runs is not None:
            body["max_active_runs"] = max_active_runs
        return self.api("POST", "/api/v2/backfills", body)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a run through the REST API; returns its run id.

        :param dag_id: the DAG.
        :param conf: the run's conf (Params).
        """
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Wait until the run ends; returns its final state.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param timeout: seconds.
        """
        deadline = time.monotonic() + timeout
        state = "unknown"
        while time.monotonic() < deadline:
            state = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id)}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        raise RuntimeError(f"run {run_id} of {dag_id} still {state} after {timeout} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run (mapped ones included).

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id)}/taskInstances?limit=1000"
        return self.api("GET", path)["task_instances"]

    def __enter__(self) -> AirflowStandalone:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
