"""Airflow test environment, shared by every ``tests/airflow`` module.

At import (before any test module imports Airflow) this points Airflow at a temporary ``AIRFLOW_HOME``
with its own SQLite metadata DB, the DAG folder ``tests/airflow/dags`` and no example DAGs. The
session fixture ``airflow_db`` runs ``airflow db migrate`` once, in a subprocess, before Airflow is
imported in the test process. Tests pass run-specific values (ports, paths) to the DAG files through
environment variables (``monkeypatch.setenv``) and connections as ``AIRFLOW_CONN_<ID>`` JSON.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"

if "airflow" in sys.modules and not os.environ.get("AIRFLOW_DICOM_TEST_HOME"):
    raise RuntimeError(
        "Airflow was imported before tests/airflow/conftest.py could set AIRFLOW_HOME; "
        "run the Airflow tests in their own pytest process or make sure nothing imports Airflow earlier"
    )

if not os.environ.get("AIRFLOW_DICOM_TEST_HOME"):
    _home = tempfile.mkdtemp(prefix="airflow-home-")
    os.environ["AIRFLOW_DICOM_TEST_HOME"] = _home
    os.environ["AIRFLOW_HOME"] = _home
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home}/airflow.db"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the temporary metadata DB once per session (in a subprocess); return AIRFLOW_HOME."""
    home = Path(os.environ["AIRFLOW_HOME"])
    marker = home / ".migrated"
    if not marker.exists():
        airflow = Path(sys.executable).parent / "airflow"
        proc = subprocess.run(
            [str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=600, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        marker.touch()
    return home


def load_dag(dag_id: str):  # type: ignore[no-untyped-def]
    """Parse the test DAG folder and return one DAG (call after ``airflow_db``)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)
