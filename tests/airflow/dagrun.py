"""Run the test DAGs with ``dag.test()`` and read what their tasks produced."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any


def get_dag(dag_id: str, filename: str | None = None) -> Any:
    """Load ``dag_id`` from the DAG folder (fails with the import errors if it cannot be loaded).

    :param dag_id: the DAG's id.
    :param filename: parse only this file of the DAG folder (faster).
    """
    from airflow.dag_processing.dagbag import DagBag

    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    bag = DagBag(dag_folder=str(folder / filename if filename else folder))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"DAG {dag_id!r} not found in {os.environ['AIRFLOW__CORE__DAGS_FOLDER']}"
    return dag


def run_dag(
    dag_id: str, *, logical_date: datetime | None = None, run_conf: dict[str, Any] | None = None
) -> Any:
    """``dag.test()`` one run of ``dag_id``; returns the DagRun (also when it failed).

    :param dag_id: the DAG's id.
    :param logical_date: the run's logical date (defaults to now).
    :param run_conf: the run's conf (Params).
    """
    dag = get_dag(dag_id)
    kwargs: dict[str, Any] = {}
    if logical_date is not None:
        kwargs["logical_date"] = logical_date
    if run_conf is not None:
        kwargs["run_conf"] = run_conf
    return dag.test(**kwargs)


def task_states(dagrun: Any) -> dict[str, str]:
    """``{task_id: state}`` for every task instance of ``dagrun`` (mapped ones as ``task_id[i]``)."""
    states = {}
    for ti in dagrun.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = str(ti.state)
    return states


def xcom(dagrun: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """The XCom ``key`` pushed by ``task_id`` in ``dagrun`` (deserialised), or ``None``.

    :param dagrun: a DagRun returned by :func:`run_dag`.
    :param task_id: the task.
    :param key: the XCom key.
    :param map_index: for mapped tasks, which instance.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(
                dag_id=dagrun.dag_id, run_id=dagrun.run_id, task_id=task_id, key=key, map_index=map_index
            )
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


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


#: the example DAGs users copy (``dags/`` at the repository root)
EXAMPLE_DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


def forget_active_assets() -> None:
    """Deactivate every asset of the session's metadata database.

    The example DAGs name their assets after what they write (``dicom_find_studies`` at
    ``<data dir>/find/studies``) and each test gives them its own data directory. Airflow keeps one active
    asset per name: once a test registered ``dicom_find_studies`` under its directory, the next test's
    asset of that name under another directory stays inactive and its task fails before it starts
    (``AirflowInactiveAssetInInletOrOutletException``). A deployment has one data directory; the tests drop
    the active marks so that ``dag.test()`` activates the assets of the DAG it writes.
    """
    from airflow.models.asset import AssetActive
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(AssetActive))


def get_example_dag(dag_id: str) -> Any:
    """Load ``dag_id`` from the repository's example DAG folder ``dags/`` (``<dag_id>.py``).

    Set the environment the DAG file reads (``AIRFLOW_DICOM_DATA_DIR``...) before calling this.

    :param dag_id: the DAG's id; its file is ``dags/<dag_id>.py``.
    """
    from airflow.dag_processing.dagbag import DagBag

    forget_active_assets()
    bag = DagBag(dag_folder=str(EXAMPLE_DAGS_FOLDER / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"DAG {dag_id!r} not found in {EXAMPLE_DAGS_FOLDER}"
    return dag
