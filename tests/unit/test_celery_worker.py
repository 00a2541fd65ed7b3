"""The Celery worker preload: what a task process would import when it parses the example DAGs is imported
once in the worker before its pool forks (``airflow_dicom.celery_worker``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"

# In a fresh interpreter: send Celery's worker_init as a worker does, then import every example DAG file and
# report which modules of the provider and of its heavy dependencies the DAG files still had to import.
PROBE = """
import importlib.util, json, sys
from pathlib import Path
from celery.signals import worker_init
import airflow_dicom.celery_worker as cw
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
heavy = ("airflow_dicom", "pandas", "pyarrow", "pydicom", "pynetdicom")
worker_init.send(sender=None)
preloaded = {m for m in sys.modules if m.split(".")[0] in heavy}
for path in sorted(Path(sys.argv[1]).glob("*.py")):
    spec = importlib.util.spec_from_file_location("probe_" + path.stem, path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
after = {m for m in sys.modules if m.split(".")[0] in heavy}
same = cw.CELERY_CONFIG is DEFAULT_CELERY_CONFIG
from airflow_dicom.dimse.deferred_imports import deferred_modules
print(json.dumps({"preloaded": sorted(preloaded), "missing": sorted(after - preloaded), "same_config": same,
                  "deferred": deferred_modules()}))
"""


def test_worker_init_imports_everything_the_example_dags_import() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAGS)], capture_output=True, text=True, timeout=180, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    preloaded = set(result["preloaded"])
    assert {
        "pandas",
        "pyarrow.dataset",
        "pydicom",
        "pynetdicom",
        "airflow_dicom.operators.retrieve",
    } <= preloaded
    assert result["missing"] == []
    assert result["same_config"] is True
    assert result["deferred"] == []  # numpy, requests...: run in the worker, not in every task process


def test_a_module_that_cannot_be_imported_is_reported_and_the_rest_still_load() -> None:
    from airflow_dicom.celery_worker import preload

    imported, failed = preload("airflow_dicom.no_such_module, json")
    assert failed == ["airflow_dicom.no_such_module"]
    assert imported > 10
    assert "json" in sys.modules
