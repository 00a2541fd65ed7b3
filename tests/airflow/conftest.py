"""Airflow test environment: a private AIRFLOW_HOME, the test DAG folder, a migrated metadata DB.

The environment is set when this conftest is imported, i.e. before any test module of this directory imports
Airflow. DAG files live in ``tests/airflow/dags`` (``dag.test()`` needs DAGs from the DAG folder); tests pass
run-specific values (ports, paths) through ``AIRFLOW_CONN_*`` / ``DICOM_TEST_*`` environment variables or
``run_conf``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from dagrun import airflow_cli

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-dicom-test-home-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__TRIGGERER__DEFAULT_CAPACITY": "100",
        # each test gives the example DAGs its own data directory, so a DAG's assets change between tests
        # seconds apart; by default Airflow keeps a DAG's serialization for 30 s after writing it, and a
        # dag.test() within that window ran the previous test's outlets (an inactive asset: the task failed)
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
    }
)


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> Path:
    """Migrate the private metadata DB once per session; returns AIRFLOW_HOME."""
    result = airflow_cli("db", "migrate")
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return AIRFLOW_HOME


@pytest.fixture
def load_dag():  # type: ignore[no-untyped-def]
    """Factory: ``load_dag("dag_id")`` loads a DAG from the test DAG folder (as ``dag.test()`` requires)."""
    from dagrun import get_dag

    return get_dag


@pytest.fixture
def dicom_connection(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Factory: ``dicom_connection("pacs", port, "ORTHANC")`` defines connection ``pacs`` via env."""
    import json

    def define(conn_id: str, port: int, called_aet: str, **extra: object) -> str:
        value = {
            "conn_type": "dicom",
            "host": "127.0.0.1",
            "port": port,
            "extra": {"called_ae_title": called_aet, **extra},
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))
        return conn_id

    return define
