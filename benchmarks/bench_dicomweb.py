"""DICOMweb benchmark: QIDO-RS / WADO-RS / STOW-RS vs our DIMSE commands vs dcmtk, same run, same Orthanc.

One Orthanc with the DICOMweb plugin holds a year of small studies (the find benchmark's corpus, 600
studies) and the retrieval benchmark's 24 studies / 1,200 instances (8 KB and 512 KB). Whole commands,
start-up included, best of three:

* find a year at STUDY level into Parquet: ``airflow-dicom find --url`` (QIDO-RS) vs ``airflow-dicom find
  --host`` (C-FIND) — goal within 2x — and vs ``findscu -X``;
* retrieve the 24 studies: ``airflow-dicom get --url`` (WADO-RS) vs ``airflow-dicom get --host`` (C-GET) —
  goal within 1.5x — and vs ``getscu`` (once per study);
* send 600 files (12 studies of 8 KB instances) to an emptied Orthanc: ``airflow-dicom send --url``
  (STOW-RS) vs ``airflow-dicom send --host`` (C-STORE) vs ``storescu`` given the file list.

The column "dcmtk (s)" holds the reference named in each row (our DIMSE command or the dcmtk tool).
Run alone with ``python -m benchmarks.bench_dicomweb [WORKDIR]``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads

from benchmarks.bench_retrieve import _best, _corpora, _count, _fresh, _run
from benchmarks.common import CLI, DCMTK_ENV, row

RUNS = 3
YEAR = ("2024-01-01", "2024-12-31")
RETURN_KEYS = (
    "PatientID",
    "PatientName",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ModalitiesInStudy",
)
GOAL_WADO_VS_GET = 1.5
GOAL_QIDO_VS_FIND = 2.0


def _timed(func: Callable[[], Any], check: Callable[[], None]) -> Callable[[], float]:
    def once() -> float:
        started = time.perf_counter()
        func()
        elapsed = time.perf_counter() - started
        check()
        return elapsed

    return once


def rows(workdir: Path) -> list[dict[str, Any]]:
    """Measure and return the rows (see the module docstring).

    :param workdir: scratch directory.
    """
    from harness.orthanc import OrthancServer

    from airflow_dicom.testing import make_corpus

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    workdir = Path(workdir)
    uids, counts, files = _corpora(workdir)
    total = sum(counts.values())
    year = make_corpus(n_patients=300, studies_per_patient=2, series_per_study=1, instances_per_series=1,
                       pixel_bytes=256, seed=2024)  # fmt: skip
    year_files = year.write(workdir / "year")
    small = [f for f in files if "corpus-8192" in str(f)]
    with (
        OrthancServer(aet="WEBBENCH", dicomweb=True, workdir=workdir / "orthanc") as pacs,
        OrthancServer(aet="WEBSINK", dicomweb=True, workdir=workdir / "sink") as sink,
    ):
        pacs.upload_files([*files, *year_files])
        n_studies = len(pacs.study_uids())
        node = ["--host", pacs.host, "--port", str(pacs.dicom_port), "--aet", pacs.aet]
        peer = [pacs.host, str(pacs.dicom_port)]

        # -- find a year
        keys = [arg for k in RETURN_KEYS for arg in ("-k", k)]
        found: dict[str, int] = {}

        def find(kind: str, where: list[str]) -> Callable[[], float]:
            out = workdir / f"find-{kind}"

            def go() -> None:
                shutil.rmtree(out, ignore_errors=True)
                _run(
                    [CLI, "find", *where, "--from", YEAR[0], "--to", YEAR[1], *keys, "--out", str(out)],
                    DCMTK_ENV,
                )

            def check() -> None:
                found[kind] = pads.dataset(out, format="parquet", partitioning="hive").count_rows()

            return _timed(go, check)

        qido = _best(RUNS, find("qido", ["--url", pacs.dicomweb_url]))
        cfind = _best(RUNS, find("cfind", node))
        if not found["qido"] == found["cfind"] == len(year.studies) + len(uids):
            raise RuntimeError(f"rows differ: {found} (expected {len(year.studies) + len(uids)})")
        rsp = workdir / "findscu"

        def findscu() -> None:
            _fresh(rsp)
            dates = f"StudyDate={YEAR[0].replace('-', '')}-{YEAR[1].replace('-', '')}"
            cmd = ["/usr/bin/findscu", "-S", "-aec", pacs.aet, "-X", "-od", str(rsp)]
            cmd += ["-k", "QueryRetrieveLevel=STUDY", "-k", dates, "-k", "StudyInstanceUID", *keys, *peer]
            _run(cmd, DCMTK_ENV)

        dfind = _best(RUNS, _timed(findscu, lambda: None))

        # -- retrieve 24 studies
        def get(kind: str, where: list[str]) -> Callable[[], float]:
            data = workdir / f"get-{kind}"

            def go() -> None:
                _fresh(data)
                _run([CLI, "get", *where, "--data-dir", str(data), "--quiet", *uids], DCMTK_ENV)

            def check() -> None:
                if _count(data) != total:
                    raise RuntimeError(f"{kind} stored {_count(data)} of {total}")

            return _timed(go, check)

        wado = _best(RUNS, get("wado", ["--url", pacs.dicomweb_url]))
        cget = _best(RUNS, get("cget", node))
        gdata = workdir / "getscu"

        def getscu() -> None:
            _fresh(gdata)
            for uid in uids:  # getscu 3.6.7 crashes when given several query files
                study = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}"]
                _run(["/usr/bin/getscu", "-S", "-aec", pacs.aet, "-od", str(gdata), *study, *peer], DCMTK_ENV)

        def getscu_check() -> None:
            if _count(gdata) != total:
                raise RuntimeError(f"getscu stored {_count(gdata)} of {total}")

        dget = _best(RUNS, _timed(getscu, getscu_check))

        # -- send 600 files
        def sent_check() -> None:
            if sink.count_instances() != len(small):
                raise RuntimeError(f"the sink holds {sink.count_instances()} of {len(small)}")

        def send(where: list[str]) -> Callable[[], float]:
            return _timed(
                lambda: _run([CLI, "send", *(str(f) for f in small), *where], DCMTK_ENV), sent_check
            )

        def emptied(measure: Callable[[], float]) -> Callable[[], float]:
            def once() -> float:
                sink.clear()
                return measure()

            return once

        sink_node = ["--host", sink.host, "--port", str(sink.dicom_port), "--aet", sink.aet]
        stow = _best(RUNS, emptied(send(["--url", sink.dicomweb_url])))
        cstore = _best(RUNS, emptied(send(sink_node)))
        storescu_cmd = [
            "/usr/bin/storescu",
            "-aec",
            sink.aet,
            sink.host,
            str(sink.dicom_port),
            *map(str, small),
        ]
        dstore = _best(RUNS, emptied(_timed(lambda: _run(storescu_cmd, DCMTK_ENV), sent_check)))

    what = f"{len(uids)} studies / {total} instances (8 KB and 512 KB)"
    return [
        row(
            f"QIDO-RS find, 1 year ({n_studies} studies) -> Parquet: `find --url` vs our C-FIND "
            "(`find --host`)",
            qido,
            cfind,
            f"same Orthanc, whole commands, best of 3; rows: {found['qido']} both",
            GOAL_QIDO_VS_FIND,
        ),  # fmt: skip
        row("QIDO-RS find, 1 year -> Parquet: `find --url` vs findscu -X", qido, dfind, "best of 3"),
        row(
            f"WADO-RS get {what}: `get --url` vs our C-GET (`get --host`)",
            wado,
            cget,
            "same Orthanc, whole commands, 2 parallel requests each, best of 3",
            GOAL_WADO_VS_GET,
        ),  # fmt: skip
        row(f"WADO-RS get {what}: `get --url` vs getscu", wado, dget, "getscu once per study, best of 3"),
        row(
            f"STOW-RS send {len(small)} files (8 KB): `send --url` vs our C-STORE (`send --host`)",
            stow,
            cstore,
            "emptied Orthanc before each run, best of 3",
        ),  # fmt: skip
        row(f"STOW-RS send {len(small)} files (8 KB): `send --url` vs storescu", stow, dstore, "best of 3"),
    ]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bench-dicomweb-") as tmp:
        for result in rows(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp)):
            print(result)
