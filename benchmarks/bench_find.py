"""Benchmark: a year of STUDY-level C-FIND, ours vs dcmtk ``findscu`` vs pacsanini's strategy, one run.

* ours: ``airflow-dicom find --level STUDY --from 2024-01-01 --to 2024-12-31 --out DIR`` (the whole
  command: Python start-up, one association, one query, Parquet dataset written).
* dcmtk: ``findscu -S`` with the same keys for the same year, each match extracted to a file (``-X``).
* BASELINE (clearly not ours): a faithful small re-implementation of pacsanini's find strategy,
  :func:`pacsanini_strategy`: 15-day windows, 26 queries per window (``PatientName=a*`` ... ``z*``), a
  new association for each query (plain pynetdicom AE, as pacsanini does). It is run as its own
  process, start-up included, and its recall is reported (it cannot find names starting with a digit,
  a non-ASCII letter or empty ones).

Each command is timed best of three. ``rows(workdir)`` returns the rows for ``benchmarks/run.py``;
``python benchmarks/bench_find.py`` prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

#: the year queried and the corpus size
YEAR_FROM, YEAR_TO = date(2024, 1, 1), date(2024, 12, 31)
N_PATIENTS, STUDIES_PER_PATIENT = 300, 2
RETURN_KEYS = (
    "PatientID",
    "PatientName",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ModalitiesInStudy",
)


def pacsanini_strategy(host: str, port: int, date_from: date, date_to: date) -> set[str]:
    """pacsanini's find walk (BASELINE, re-implemented): 15-day windows x 26 PatientName letters.

    Every query opens its own association with a plain pynetdicom AE, as pacsanini does, and the
    final status is not checked. Returns the StudyInstanceUIDs found.

    :param host: the PACS host.
    :param port: the PACS port.
    :param date_from: first day.
    :param date_to: last day.
    """
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    found: set[str] = set()
    start = date_from
    while start <= date_to:
        end = min(start + timedelta(days=14), date_to)
        for letter in string.ascii_lowercase:
            ae = AE(ae_title="PACSANINI")
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
            assoc = ae.associate(host, port)  # pacsanini never sent the called AE title
            if not assoc.is_established:
                continue
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.PatientName = f"{letter}*"
            query.StudyDate = f"{start:%Y%m%d}-{end:%Y%m%d}"
            for keyword in ("StudyInstanceUID", *RETURN_KEYS):
                if keyword != "PatientName":
                    setattr(query, keyword, "")
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if identifier is not None and status and status.Status in (0xFF00, 0xFF01):
                    found.add(str(identifier.StudyInstanceUID))
            assoc.release()
        start = end + timedelta(days=1)
    return found


def _best_of(
    command: list[str], runs: int = 3, env: dict[str, str] | None = None, before: Any = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    best = float("inf")
    proc: subprocess.CompletedProcess[str] | None = None
    for _ in range(runs):
        if before is not None:
            before()
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=1800)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(
                f"{command[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
        best = min(best, elapsed)
    assert proc is not None
    return best, proc


def rows(workdir: Path) -> list[dict[str, Any]]:
    """Start an Orthanc, load a year of studies, time ours, findscu and the pacsanini baseline."""
    from harness.dcmtk import DCMTK_ENV, dcmtk_tool
    from harness.orthanc import OrthancServer

    from airflow_dicom.testing import dataset_bytes, make_corpus

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(
        n_patients=N_PATIENTS,
        studies_per_patient=STUDIES_PER_PATIENT,
        series_per_study=1,
        instances_per_series=1,
        pixel_bytes=256,
        seed=2024,
    )
    with OrthancServer(aet="BENCH") as pacs:
        for ds in corpus.datasets():
            pacs.upload(dataset_bytes(ds))
        n_studies = len(corpus.studies)
        host, port = "127.0.0.1", pacs.dicom_port

        out = workdir / "ours"
        ours_cmd = [
            str(Path(sys.executable).parent / "airflow-dicom"),
            "find",
            "--host",
            host,
            "--port",
            str(port),
        ]
        ours_cmd += ["--aet", pacs.aet, "--level", "STUDY", "--from", str(YEAR_FROM), "--to", str(YEAR_TO)]
        ours_cmd += [arg for k in RETURN_KEYS for arg in ("-k", k)] + ["--out", str(out)]
        ours_s, proc = _best_of(ours_cmd, before=lambda: shutil.rmtree(out, ignore_errors=True))
        ours_rows = int(proc.stdout.split()[0])

        rsp = workdir / "findscu"

        def fresh_rsp() -> None:
            shutil.rmtree(rsp, ignore_errors=True)
            rsp.mkdir()

        dcmtk_cmd = [dcmtk_tool("findscu"), "-S", "-aet", "FINDSCU", "-aec", pacs.aet, "-X", "-od", str(rsp)]
        dcmtk_cmd += [
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyDate={YEAR_FROM:%Y%m%d}-{YEAR_TO:%Y%m%d}",
        ]
        dcmtk_cmd += ["-k", "StudyInstanceUID"] + [arg for k in RETURN_KEYS for arg in ("-k", k)]
        dcmtk_cmd += [host, str(port)]
        dcmtk_s, _ = _best_of(dcmtk_cmd, env=DCMTK_ENV, before=fresh_rsp)
        dcmtk_rows = len(list(rsp.glob("rsp*.dcm")))

        base_cmd = [sys.executable, __file__, "pacsanini", "--host", host, "--port", str(port)]
        base_cmd += ["--from", str(YEAR_FROM), "--to", str(YEAR_TO)]
        base_s, proc = _best_of(base_cmd)
        base = json.loads(proc.stdout)
        base_found = len(set(base["studies"]) & corpus.study_uids)

    return [
        {
            "name": f"find STUDY, 1 year, {n_studies} studies -> Parquet (CLI)",
            "ours_s": round(ours_s, 3),
            "dcmtk_s": round(dcmtk_s, 3),
            "ratio": round(ours_s / dcmtk_s, 2),
            "note": f"findscu -X (file per match); rows: ours {ours_rows}, findscu {dcmtk_rows}; goal <= 10x",
        },
        {
            "name": "find STUDY, 1 year: vs pacsanini strategy (BASELINE re-implemented)",
            "ours_s": round(ours_s, 3),
            "dcmtk_s": round(base_s, 3),
            "ratio": round(ours_s / base_s, 4),
            "note": (
                f"dcmtk_s column = pacsanini-style walk, not dcmtk: {base['associations']} associations, "
                f"recall {base_found}/{n_studies}; ours is {base_s / ours_s:.0f}x faster (goal >= 100x)"
            ),
        },
    ]


#: GNU time: the peak RSS of the command itself (``wait4`` on our child would also count the RSS the
#: forked Python had before ``exec``: ~90 MB for findscu's 15 MB)
GNU_TIME = "/usr/bin/time"


def _timed(
    command: list[str], env: dict[str, str] | None = None, before: Any = None
) -> tuple[float, float, str]:
    """Run one whole command: wall seconds, its peak RSS in MB (GNU time) and its stdout.

    :param command: the command.
    :param env: its environment.
    :param before: called first (e.g. to empty the output directory), not timed.
    """
    if before is not None:
        before()
    with tempfile.NamedTemporaryFile("r") as rss:
        started = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", rss.name, *command],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=1800,
        )
        elapsed = time.perf_counter() - started
        peak_kb = int(rss.read().split()[-1])
    if proc.returncode != 0:
        raise RuntimeError(
            f"{command[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return elapsed, peak_kb / 1024, proc.stdout


def scale_rows(workdir: Path) -> list[dict[str, Any]]:
    """The scale set (2,000 studies in Orthanc): STUDY level for the year -> Parquet vs ``findscu -S``.

    ``findscu`` in its fastest form: one query with the keys ours returns, responses neither printed nor
    written (no ``-X``; its log at the default level). Ours: the whole command with the default STUDY
    keys. Best of three each, alternating; peak RSS of each command (GNU time).

    :param workdir: a scratch directory.
    """
    from harness.dcmtk import DCMTK_ENV, dcmtk_tool

    from airflow_dicom.dimse.query import DEFAULT_RETURN_KEYS
    from benchmarks.common import CLI
    from benchmarks.scale import YEAR, scale_pacs

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    keys = DEFAULT_RETURN_KEYS["STUDY"]
    with scale_pacs() as (pacs, corpus):
        n_studies = len(corpus.studies)  # type: ignore[attr-defined]
        host, port, aet = "127.0.0.1", str(pacs.dicom_port), pacs.aet  # type: ignore[attr-defined]
        out = workdir / "ours"
        ours_cmd = [CLI, "find", "--host", host, "--port", port, "--aet", aet, "--level", "STUDY"]
        ours_cmd += ["--from", f"{YEAR}-01-01", "--to", f"{YEAR}-12-31", "--out", str(out)]
        dcmtk_cmd = [dcmtk_tool("findscu"), "-S", "-aet", "FINDSCU", "-aec", aet]
        dcmtk_cmd += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyDate={YEAR}0101-{YEAR}1231"]
        dcmtk_cmd += ["-k", "StudyInstanceUID"] + [arg for k in keys for arg in ("-k", k)] + [host, port]
        ours_env = {**os.environ, "TCP_NODELAY": "1"}
        ours_s = dcmtk_s = float("inf")
        ours_mb = dcmtk_mb = 0.0
        for _ in range(3):  # back to back, each best of three
            seconds, mb, stdout = _timed(ours_cmd, env=ours_env, before=lambda: shutil.rmtree(out, True))
            ours_s, ours_mb = min(ours_s, seconds), max(ours_mb, mb)
            seconds, mb, _ = _timed(dcmtk_cmd, env=DCMTK_ENV)
            dcmtk_s, dcmtk_mb = min(dcmtk_s, seconds), max(dcmtk_mb, mb)
        ours_rows = int(stdout.split()[0])
    load = os.getloadavg()[0]
    return [
        {
            "name": f"find STUDY, 1 year, scale set ({n_studies} studies) -> Parquet (CLI)",
            "ours_s": round(ours_s, 3),
            "dcmtk_s": round(dcmtk_s, 3),
            "ratio": round(ours_s / dcmtk_s, 2),
            "goal": 3,
            "note": (
                f"findscu -S, one query, no -X; rows: ours {ours_rows}; peak RSS ours {ours_mb:.0f} MB "
                f"(goal < 150), findscu {dcmtk_mb:.0f} MB; load {load:.2f}"
            ),
        }
    ]


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what")
    sub.add_parser("scale", help="only the scale-set rows (python -m benchmarks.bench_find scale)")
    baseline = sub.add_parser("pacsanini", help="run the pacsanini-style baseline once; print JSON")
    baseline.add_argument("--host", required=True)
    baseline.add_argument("--port", type=int, required=True)
    baseline.add_argument("--from", dest="date_from", required=True)
    baseline.add_argument("--to", dest="date_to", required=True)
    args = parser.parse_args()
    if args.what == "pacsanini":
        first, last = date.fromisoformat(args.date_from), date.fromisoformat(args.date_to)
        found = pacsanini_strategy(args.host, args.port, first, last)
        windows = -(-((last - first).days + 1) // 15)
        print(json.dumps({"studies": sorted(found), "associations": windows * 26}))
        return
    with tempfile.TemporaryDirectory(prefix="bench-find-") as tmp:
        for row in (scale_rows if args.what == "scale" else rows)(Path(tmp)):
            print(json.dumps(row))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _main()
