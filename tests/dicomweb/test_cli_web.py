"""``airflow-dicom find/get/send`` with ``--url`` or a ``dicomweb`` ``--conn-id``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pydicom
import pytest
from harness.orthanc import OrthancServer
from harness.synth import Corpus

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("airflow-dicom"))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def _rows(path: Path) -> list[dict]:  # type: ignore[type-arg]
    table = pads.dataset(path, format="parquet", partitioning="hive").to_table().drop_columns(["source_node"])
    return sorted(table.to_pylist(), key=lambda r: r["StudyInstanceUID"])


def test_find_with_url_writes_what_c_find_writes(web_pacs: OrthancServer, tmp_path: Path) -> None:
    dates = ("--from", "2024-01-01", "--to", "2024-12-31")
    web = cli("find", "--url", web_pacs.dicomweb_url, *dates, "--out", str(tmp_path / "web"))
    assert web.returncode == 0, web.stderr
    dimse = cli(
        "find", "--host", web_pacs.host, "--port", str(web_pacs.dicom_port), "--aet", web_pacs.aet, *dates,
        "--out", str(tmp_path / "dimse"),
    )  # fmt: skip
    assert dimse.returncode == 0, dimse.stderr
    assert _rows(tmp_path / "web") == _rows(tmp_path / "dimse") != []


def test_get_and_send_with_a_dicomweb_connection(
    web_pacs: OrthancServer, web_scratch: OrthancServer, corpus: Corpus, tmp_path: Path
) -> None:
    studies = sorted(corpus.study_uids)[:3]
    conn = {"conn_type": "dicomweb", "host": web_pacs.dicomweb_url}
    env = {"AIRFLOW_CONN_PACS_WEB": json.dumps(conn)}
    got = cli("get", "--conn-id", "pacs_web", *studies, "--data-dir", str(tmp_path / "data"), env=env)
    assert got.returncode == 0, got.stderr
    assert "WADO-RS: 3 requested, 3 complete" in got.stdout
    wanted = {i.sop_uid for s in studies for i in corpus.instances_of_study(s)}
    on_disk = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in (tmp_path / "data").rglob("*.dcm")
        if not any(part.startswith(".") for part in p.relative_to(tmp_path / "data").parts)
    }
    assert on_disk == wanted
    (tmp_path / "data" / "notes.txt").write_text("not DICOM")
    sent = cli("send", str(tmp_path / "data"), "--url", web_scratch.dicomweb_url, "--json")
    assert sent.returncode == 0, sent.stderr
    summary = json.loads(sent.stdout)
    assert (summary["sent"], summary["failed"]) == (len(wanted), 0)
    assert summary["skipped"] >= 1  # the text file (and the arrival records) are not DICOM
    assert web_scratch.instance_uids() == wanted


def test_url_errors_are_one_line_naming_the_node(tmp_path: Path) -> None:
    bad = cli("find", "--url", "http://127.0.0.1:9/dicom-web", "--timeout", "2", "--out", str(tmp_path / "x"))
    assert bad.returncode == 1 and "DICOMweb http://127.0.0.1:9/dicom-web" in bad.stderr
    assert "Traceback" not in bad.stderr
    echo = cli("echo", "--url", "http://127.0.0.1:9/dicom-web")
    assert echo.returncode == 2 and "DICOMweb serves find, get and send" in echo.stderr
