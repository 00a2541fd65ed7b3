"""Airflow as hospitals deploy it: CeleryExecutor, PostgreSQL, Redis, the API server, scheduler, DAG processor
and triggerer, and two Celery workers each standing for its own host.

Each worker has its own log-server port, Celery hostname and ``hostname_callable`` result (the task
instance's ``hostname`` in the API tells which host ran it); every component shares the database, the
broker, ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL`` and one ``AIRFLOW__API_AUTH__JWT_SECRET``. Every process
runs in its own process group in a temporary directory, killed by group on :meth:`DistributedStack.stop`.
"""

from __future__ import annotations

import secrets
import time
import urllib.error
from pathlib import Path

from e2e.standalone import VENV_BIN, AirflowStandalone

from distributed.services import Postgres, Process, Redis

WORKERS = ("worker-a", "worker-b")


class DistributedStack(AirflowStandalone):
    """The distributed stack; the REST helpers are :class:`AirflowStandalone`'s.

    :param home: the AIRFLOW_HOME (every service's files live below it).
    :param dags_folder: the DAG folder.
    :param env: extra environment (connections, settings the DAGs read).
    :param concurrency: task slots per worker.
    """

    def __init__(
        self, home: Path, dags_folder: Path, env: dict[str, str] | None = None, concurrency: int = 2
    ) -> None:
        super().__init__(home, dags_folder, env)
        self.postgres = Postgres(home / "postgres")
        self.redis = Redis(home / "redis")
        self.concurrency = concurrency
        self.env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                # running + queued tasks: four times the workers' slots, so tasks wait in the broker for a
                # free slot (taken at once) rather than in the scheduler for its next loop
                "AIRFLOW__CORE__PARALLELISM": str(4 * concurrency * len(WORKERS)),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
                # DAG files re-parsed every 30 s (Airflow's default), not every 5 s as the one-host tests do:
                # each parse is a process importing the provider, CPU taken from the tasks on a small host
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                # every running run of a backfill gets its tasks scheduled in one scheduler loop (default 20)
                "AIRFLOW__SCHEDULER__MAX_DAGRUNS_PER_LOOP_TO_SCHEDULE": "64",
                # stated, not left to the provider's default: retrieval tasks time out well before it
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "distributed.hostname.worker_hostname",
                "AIRFLOW_DICOM_HOSTNAME": "airflow-main",
                # a lost worker's tasks are failed (and retried) after 30 s without a heartbeat, not 300 s
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                # a task a lost worker had taken from the broker (unacknowledged, so Redis holds it until its
                # visibility timeout) is queued again after 60 s instead of 600 s; no prefetching beyond it
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
                "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
                # the workers import the provider (pandas, pyarrow, pynetdicom) once, before Celery forks its
                # pool: a task process inherits it instead of importing it again when it parses the DAG file
                "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "airflow_dicom.celery_worker.CELERY_CONFIG",
                "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            }
        )
        self.env.update(env or {})
        self.services: dict[str, Process] = {}
        self.workers: dict[str, Process] = {}

    def _service(self, name: str, *args: str, env: dict[str, str] | None = None) -> Process:
        # at the caller's priority (make distributed runs it under nice), as the PACS, the receiver and any
        # one-process command it is compared with: a second nice would starve the stack on a busy machine
        process = Process(
            [str(VENV_BIN / "airflow"), *args],
            self.home / f"{name}.log",
            env={**self.env, **(env or {})},
            cwd=self.home,
        )
        self.services[name] = process.start()
        return process

    def start_worker(self, name: str) -> Process:
        """Start (or start again) the Celery worker ``name`` with its own host name and log-server port.

        :param name: one of :data:`WORKERS`.
        """
        from harness.ports import free_port

        old = self.workers.get(name)
        if old is not None:
            old.stop()
        process = self._service(
            name,
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            str(self.concurrency),
            env={
                "AIRFLOW_DICOM_HOSTNAME": name,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            },
        )
        self.workers[name] = process
        return process

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker ``name`` and its task processes (a lost machine).

        :param name: one of :data:`WORKERS`.
        """
        self.workers[name].kill()

    def start(self, timeout: float = 240) -> DistributedStack:
        """Start PostgreSQL, Redis, migrate, then every Airflow service; wait until healthy.

        :param timeout: seconds to wait for health.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            self.postgres.start()
            self.redis.start()
            migrate = self.cli("db", "migrate", timeout=600)
            if migrate.returncode != 0:
                raise RuntimeError(
                    f"airflow db migrate failed:\n{migrate.stdout[-3000:]}{migrate.stderr[-3000:]}"
                )
            self._service("api-server", "api-server", "--port", str(self.port))
            self._service("scheduler", "scheduler")
            self._service("dag-processor", "dag-processor")
            self._service("triggerer", "triggerer")
            for name in WORKERS:
                self.start_worker(name)
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.services.items():
                if not process.running and name not in self.workers:
                    raise RuntimeError(f"{name} exited:\n{process.tail()}")
            try:
                health = self.api("GET", "/api/v2/monitor/health")
                healthy = all(
                    health.get(part, {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                )
                if healthy and all(self._worker_ready(name) for name in self.workers):
                    return
            except (OSError, urllib.error.URLError, ValueError, RuntimeError):
                pass
            time.sleep(2)
        raise RuntimeError(f"stack not healthy after {timeout} s:\n{self.log_tail()}")

    def _worker_ready(self, name: str) -> bool:
        return " ready." in self.workers[name].tail(200_000)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of every service's log."""
        return "\n".join(f"--- {name}\n{p.tail(chars)}" for name, p in self.services.items())

    def stop(self) -> None:
        """Stop every Airflow service, then Redis and PostgreSQL (each by process group)."""
        for process in reversed(list(self.services.values())):
            process.stop()
        self.services.clear()
        self.workers.clear()
        self.redis.stop()
        self.postgres.stop()
