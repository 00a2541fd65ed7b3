"""Celery worker settings for the CeleryExecutor: the provider's modules imported once per worker, not per
task.

Airflow 3's Celery worker runs every task in a process forked from its pool process, and that process parses
the DAG file: with DICOM DAGs it imports the provider's operators and with them pandas, pyarrow, pydicom and
pynetdicom, about a second of CPU per task (on a loaded 2-core host most of a small task's run time). Point
Airflow's Celery configuration at this module on the workers::

    [celery]
    celery_config_options = airflow_dicom.celery_worker.CELERY_CONFIG

(``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS``). The Celery configuration stays Airflow's default
(:data:`CELERY_CONFIG` *is* it); what this adds is a ``worker_init`` handler that imports the provider's
operators, sensors, hooks, triggers and landing modules in the worker's main process before Celery forks its
pool, so every task process inherits them already imported. ``AIRFLOW_DICOM_WORKER_PRELOAD`` names more
modules (comma-separated, e.g. your own DAG helpers). The scheduler imports this module too but sends no
``worker_init``: it imports nothing more.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import time

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

log = logging.getLogger(__name__)

#: Airflow's own Celery configuration, unchanged (the same object, so team configurations still apply)
CELERY_CONFIG = DEFAULT_CELERY_CONFIG

#: the provider's packages whose modules a task process would import: the operators and sensors the DAG files
#: name, and what they import when they run (hooks, landing = pandas/pyarrow, dimse = pydicom/pynetdicom)
PACKAGES = (
    "airflow_dicom.operators",
    "airflow_dicom.sensors",
    "airflow_dicom.triggers",
    "airflow_dicom.hooks",
    "airflow_dicom.landing",
    "airflow_dicom.dimse",
)

#: libraries the provider imports inside the functions a task runs, not when its modules load (reading
#: retrieval reports, find results and arrival records: pyarrow.dataset, which imports pandas)
RUN_TIME_IMPORTS = ("pyarrow.dataset", "pandas")


def modules_to_preload(extra: str = "") -> list[str]:
    """Every module of :data:`PACKAGES` (recursively), :data:`RUN_TIME_IMPORTS`, then the ``extra`` ones.

    :param extra: comma-separated module names (``AIRFLOW_DICOM_WORKER_PRELOAD``).
    """
    names: list[str] = []
    for package in PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [info.name for info in pkgutil.walk_packages(path, prefix=package + ".")]
    return names + list(RUN_TIME_IMPORTS) + [name.strip() for name in extra.split(",") if name.strip()]


def preload(extra: str = "") -> tuple[int, list[str]]:
    """Import :func:`modules_to_preload`; a module that fails to import is logged and skipped.

    Then run the modules whose code :mod:`airflow_dicom.dimse.deferred_imports` deferred while pydicom was
    imported (numpy, requests, ...): a task process inherits them run, as it inherits everything else.
    Returns how many modules were imported and the names that failed.

    :param extra: comma-separated module names to import as well.
    """
    imported, failed = 0, []
    for name in modules_to_preload(extra):
        try:
            importlib.import_module(name)
            imported += 1
        except Exception as exc:  # an optional extra not installed must not stop the worker
            failed.append(name)
            log.warning("airflow-dicom worker preload: cannot import %s (%s)", name, exc)
    from airflow_dicom.dimse.deferred_imports import load_deferred

    load_deferred()
    return imported, failed


def warm_task_runner() -> None:
    """Build, once in the worker, what Airflow's task runner builds in every task process and then reuses.

    The task runner validates each rendered template field with ``TypeAdapter(JsonValue)``; pydantic builds
    that schema once per process (tens of milliseconds of CPU), so a forked task process inherits it built.
    """
    from pydantic import JsonValue, TypeAdapter

    TypeAdapter(JsonValue).validate_python({"warm": [1, "a", None]})


@worker_init.connect
def _preload_before_fork(**_: object) -> None:
    """Celery's ``worker_init``: runs in the worker's main process before the pool processes are forked."""
    started = time.monotonic()
    imported, failed = preload(os.environ.get("AIRFLOW_DICOM_WORKER_PRELOAD", ""))
    warm_task_runner()
    log.info(
        "airflow-dicom worker preload: %d modules in %.1f s%s",
        imported,
        time.monotonic() - started,
        f" ({len(failed)} failed)" if failed else "",
    )
