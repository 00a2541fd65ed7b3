"""A run-state watcher: the DAG run fails whenever a task the user asked for failed.

A task with ``trigger_rule="all_done"`` (a report or summary that must run whatever happened) succeeds
when its upstream failed, and as a leaf it decides the run state: the run would show green Success
although a find or a retrieval failed. :func:`fail_run_on_failure` adds Airflow's watcher pattern: a leaf
task with ``trigger_rule="one_failed"`` downstream of every other task, which fails (and names the failed
tasks) when any of them failed, and is skipped otherwise.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException

WATCHER_TASK_ID = "run_failed"


def fail_run_on_failure(dag: DAG, task_id: str = WATCHER_TASK_ID) -> Any:
    """Add the watcher to ``dag`` (call it last, after every other task was added).

    :param dag: the DAG.
    :param task_id: the watcher's task id.
    :return: the watcher task.
    """
    upstream = list(dag.tasks)
    watched = {t.task_id for t in upstream}

    @task(task_id=task_id, trigger_rule="one_failed", retries=0, dag=dag)
    def watcher(**context: Any) -> None:
        """Fail the run: an upstream task failed (this task is skipped when none did)."""
        ti, run_id = context["ti"], context["run_id"]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
        failed = sorted(
            {
                name if name in watched else name.rsplit("_", 1)[0]
                for name, state in states.items()
                if state == "failed" and name != task_id
            }
        )
        names = ", ".join(failed) or "(see the red tasks)"
        raise AirflowFailException(f"the run failed: task(s) {names} failed; see their logs")

    watch = watcher()
    upstream >> watch
    return watch
