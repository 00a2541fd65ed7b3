"""The retrieval report's rows become the same Arrow table as ``pyarrow.Table.from_pydict`` gives, without
pandas: a first retrieval run (no report yet) writes its report and never imports pandas (~0.3 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from airflow_dicom.landing.report import REPORT_SCHEMA, read_report, report_table

ROWS = [
    {
        "uid": "1.2.3",
        "level": "STUDY",
        "study_uid": "1.2.3",
        "series_uid": None,
        "service": "C-MOVE",
        "status": "complete",
        "reason": "",
        "dimse_status": 0,
        "expected": 50,
        "completed": 50,
        "failed": 0,
        "warning": 0,
        "received": 50,
        "bytes": 123_456_789_012,
        "attempt": 1,
        "started": datetime(2026, 12, 3, 12, 0, 0, 123_456, tzinfo=timezone.utc),
        "finished": datetime(2026, 12, 3, 14, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=2))),
        "seconds": 1.5,
        "node": "PACS@pacs.example:104",
        "destination": "OURS",
        "run_id": "manual__2026-12-03",
    },
    {  # a failed series: nulls, a non-ASCII reason, a naive datetime (taken as UTC, as pyarrow takes it)
        "uid": "1.2.3.4",
        "level": "SERIES",
        "status": "failed",
        "reason": "Zürich PACS refused: ✗ 0xA702",
        "dimse_status": 0xA702,
        "expected": None,
        "attempt": 3,
        "started": datetime(1999, 1, 1, 0, 0, 0, 1),
        "finished": None,
        "seconds": None,
    },
]


def test_report_rows_make_the_table_pyarrow_would_make() -> None:
    expected = pa.Table.from_pydict({n: [r.get(n) for r in ROWS] for n in REPORT_SCHEMA.names}, REPORT_SCHEMA)
    table = report_table(ROWS)
    assert table.schema == REPORT_SCHEMA
    assert table.equals(expected)
    assert report_table([]).num_rows == 0


FIRST_RUN = """
import json, sys
from datetime import datetime, timezone
from airflow_dicom.landing.report import ReportWriter, completed_items
report = sys.argv[1]
resume = completed_items(report)  # nothing to resume on a first run
rows = json.loads(sys.argv[2])
for row in rows:
    for key in ("started", "finished"):
        if row.get(key):
            row[key] = datetime.fromisoformat(row[key])
with ReportWriter(report, "first-run") as writer:
    for row in rows:
        writer.add(row)
print(json.dumps({"resume": len(resume), "pandas": "pandas" in sys.modules, "files": writer.files,
                  "compute": "pyarrow.compute" in sys.modules}))
"""


def test_a_first_run_writes_its_report_without_pandas(tmp_path: Path) -> None:
    report = tmp_path / "reports" / "retrieval"
    rows = [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()} for row in ROWS]
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_RUN, str(report), json.dumps(rows)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["resume"] == 0
    assert result["pandas"] is False
    assert result["compute"] is False  # no casts either (~30 ms of imports)
    assert len(result["files"]) == 1
    frame = read_report(str(report))
    assert sorted(frame.uid) == ["1.2.3", "1.2.3.4"]
    by_uid = frame.set_index("uid")
    assert by_uid.loc["1.2.3", "bytes"] == 123_456_789_012
    assert by_uid.loc["1.2.3", "finished"] == datetime(2026, 12, 3, 12, 0, 0, 999_000, tzinfo=timezone.utc)
    assert by_uid.loc["1.2.3.4", "reason"] == "Zürich PACS refused: ✗ 0xA702"
    assert by_uid.loc["1.2.3.4", "dimse_status"] == 0xA702
    assert set(frame.run_id) == {"manual__2026-12-03", "first-run"}
