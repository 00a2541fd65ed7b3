"""Airflow test environment shared by every ``tests/airflow`` test (any issue's DAGs).

At import (before any test module of this directory imports Airflow) it points Airflow at a fresh
temporary ``AIRFLOW_HOME`` and at ``tests/airflow/dags`` as the DAG folder; the session fixture
``airflow_db`` (autouse here) runs ``airflow db migrate`` once in a subprocess. Test DAG files live in
``tests/airflow/dags/`` (``dag.test()`` needs the DAG in the DAG folder); tests load them with
:func:`load_dag` and pass run-specific values with ``dag.test(run_conf=...)``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"

if "airflow" in sys.modules:  # pragma: no cover - collection order changed
    warnings.warn("airflow was imported before tests/airflow/conftest.py set AIRFLOW_HOME", stacklevel=1)

_HOME = Path(tempfile.mkdtemp(prefix="airflow-home-"))
atexit.register(shutil.rmtree, _HOME, True)  # also when no test here ran (deselected)
_ENV = {
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
}
os.environ.update(_ENV)


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> Iterator[Path]:
    """Migrate the temporary Airflow metadata database once per session; yield AIRFLOW_HOME."""
    airflow = Path(sys.executable).parent / "airflow"
    proc = subprocess.run(
        [str(airflow), "db", "migrate"],
        env={**os.environ, **_ENV},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    yield _HOME
    shutil.rmtree(_HOME, ignore_errors=True)


def _load_dag(dag_id: str, filename: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / filename))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"no DAG {dag_id!r} in {filename}"
    return dag


@pytest.fixture
def load_dag() -> Callable[[str, str], Any]:
    """``load_dag(dag_id, filename)``: the DAG parsed from ``tests/airflow/dags/<filename>``.

    (No ``__init__.py`` in ``tests/airflow``: with ``tests/`` on ``sys.path`` it would shadow Airflow.)
    """
    return _load_dag
