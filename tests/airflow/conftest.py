"""Shared set-up for Airflow tests: a temporary AIRFLOW_HOME with a migrated metadata DB, created once.

The environment is set at import time of this conftest (before any test module imports Airflow, which
reads its configuration on import); ``airflow db migrate`` runs in a subprocess once per session.
DAG files live in ``tests/airflow/dags/`` (``dag.test()`` needs serialisable DAGs from the DAG folder);
pass run-specific values (ports, paths, connections) through environment variables or ``run_conf``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
_HOME = Path(tempfile.mkdtemp(prefix="airflow-home-"))

os.environ.setdefault("AIRFLOW_HOME", str(_HOME))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_HOME / 'airflow.db'}")


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> Iterator[Path]:
    """Migrate the temporary metadata DB once per session; yields AIRFLOW_HOME."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run(
        [str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy(), timeout=300
    )
    yield Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture
def load_dag():  # type: ignore[no-untyped-def]
    """Factory: ``load_dag("dag_id")`` loads a DAG from the test DAG folder (as ``dag.test()`` requires)."""
    from airflow.dag_processing.dagbag import DagBag

    def load(dag_id: str):  # type: ignore[no-untyped-def]
        bag = DagBag(dag_folder=str(DAGS_FOLDER))
        if dag_id not in bag.dags:
            raise LookupError(f"DAG {dag_id!r} not found in {DAGS_FOLDER}: {bag.import_errors}")
        return bag.dags[dag_id]

    return load


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
