"""``airflow-dicom send`` as a user runs it (a subprocess) against dcmtk storescp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness.synth import make_instance, write_dataset

pytestmark = pytest.mark.integration

CLI = [str(Path(sys.executable).with_name("airflow-dicom"))]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def test_cli_send_reports_and_exit_codes(tmp_path: Path, dcmtk_storescp) -> None:
    uids = set()
    for n in range(5):
        ds = make_instance(seed=n)
        (tmp_path / "in").mkdir(exist_ok=True)
        write_dataset(ds, tmp_path / "in" / f"{n}.dcm")
        uids.add(ds.SOPInstanceUID)
    (tmp_path / "in" / "junk.bin").write_bytes(b"x" * 50)
    scp = dcmtk_storescp("DEST")
    node = ["--host", "127.0.0.1", "--port", str(scp.port), "--aet", "DEST"]
    ok = _run("send", str(tmp_path / "in"), *node, "--parallel", "2", "--json")
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert (summary["sent"], summary["skipped"], summary["failed"]) == (5, 1, 0)
    assert scp.received_sop_uids() == uids

    raw = (tmp_path / "in" / "0.dcm").read_bytes()
    (tmp_path / "in" / "cut.dcm").write_bytes(raw[:-100])
    failed = _run("send", str(tmp_path / "in" / "*.dcm"), *node)
    assert failed.returncode == 1
    assert "5 sent" in failed.stdout and "1 failed" in failed.stdout
    assert "cut.dcm" in failed.stderr and "truncated" in failed.stderr
    tolerated = _run("send", str(tmp_path / "in"), *node, "--max-failed", "1")
    assert tolerated.returncode == 0

    missing = _run("send", str(tmp_path / "nope"), *node)
    assert missing.returncode == 1 and "nothing to send" in missing.stderr
