"""The console entry point (``airflow-dicom``, ``python -m airflow_dicom``): the same exit statuses and
messages as :func:`airflow_dicom.cli.main`, and the garbage collector still collects while and after a command
runs (it is only kept off the modules the command imports, see :func:`airflow_dicom.cli.console`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import gc, json, sys, weakref
from airflow_dicom.cli import console

sys.argv = ["airflow-dicom", *sys.argv[1:]]
code = console()

class Node:
    pass

first, second = Node(), Node()
first.other, second.other = second, first  # a reference cycle, unreachable once the names go
gone = weakref.ref(first)
del first, second
gc.collect()
print(json.dumps({"code": code, "enabled": gc.isenabled(), "cycle_collected": gone() is None,
                  "stack_imported": "pynetdicom" in sys.modules}))
"""


def _console(*args: str) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_a_command_that_fails_reports_as_main_does_and_collection_goes_on(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    result, stderr = _console("send", str(missing), "--host", "127.0.0.1", "--port", "104", "--aet", "PACS")
    assert result["code"] == 1  # a DICOM failure: nothing to send there
    assert f"airflow-dicom send: nothing to send at: {missing}" in stderr
    assert result["stack_imported"] is True  # the command's imports ran before it did
    assert result["enabled"] is True
    assert result["cycle_collected"] is True


def test_a_usage_error_exits_2_through_python_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_dicom", "echo", "--host", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "no node given" in proc.stderr and "--port" in proc.stderr
