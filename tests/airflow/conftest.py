"""Airflow test environment: a private AIRFLOW_HOME, the test DAG folder, a migrated metadata DB.

The environment is set when this conftest is imported, i.e. before any test module of this directory imports
Airflow. DAG files live in ``tests/airflow/dags`` (``dag.test()`` needs DAGs from the DAG folder); tests pass
run-specific values (ports, paths) through ``AIRFLOW_CONN_*`` / ``DICOM_TEST_*`` environment variables or
``run_conf``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

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
    }
)


def airflow_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the ``airflow`` command of this venv with the test environment (plus ``env``).

    :param args: the command's arguments, e.g. ``"providers", "list"``.
    :param env: extra environment variables.
    :param timeout: seconds before the command is killed.
    """
    airflow = str(Path(sys.executable).with_name("airflow"))
    return subprocess.run(
        [airflow, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> Path:
    """Migrate the private metadata DB once per session; returns AIRFLOW_HOME."""
    result = airflow_cli("db", "migrate")
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return AIRFLOW_HOME
