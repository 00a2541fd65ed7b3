"""Arrival records: concurrent writers, partial lines, duplicates, per-study queries."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from airflow_dicom.dimse.arrivals import (
    ARRIVALS_DIR,
    ArrivalLog,
    ArrivalRecord,
    recorded_studies,
    study_arrivals,
)


def _record(study: str, sop: str, size: int = 100, t: float = 1000.0) -> ArrivalRecord:
    return ArrivalRecord(
        study_uid=study,
        series_uid=study + ".1",
        sop_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        path=f"{study}/{study}.1/{sop}.dcm",
        bytes=size,
        calling_ae="SENDER",
        time=t,
    )


def _write_many(data_dir: str, study: str, prefix: str, count: int) -> None:
    log = ArrivalLog(data_dir)
    for i in range(count):
        log.append(_record(study, f"{prefix}.{i}", size=i))


def test_threads_and_processes_append_without_losing_or_mixing_lines(tmp_path: Path) -> None:
    study = "1.2.3"
    log = ArrivalLog(tmp_path)
    threads = [
        threading.Thread(target=lambda p=p: [log.append(_record(study, f"1.{p}.{i}")) for i in range(200)])
        for p in range(4)
    ]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), study, f"2.{p}", 200)) for p in range(3)]
    for worker in [*threads, *procs]:
        worker.start()
    for worker in [*threads, *procs]:
        worker.join(60)
    state = study_arrivals(tmp_path, study)
    expected = {f"1.{p}.{i}" for p in range(4) for i in range(200)} | {
        f"2.{p}.{i}" for p in range(3) for i in range(200)
    }
    assert state.sop_uids == expected
    files = list((tmp_path / ARRIVALS_DIR / study).iterdir())
    assert len(files) == 4  # one file per writing process: this one and the three children


def test_partial_last_line_and_garbage_are_ignored(tmp_path: Path) -> None:
    log = ArrivalLog(tmp_path)
    log.append(_record("1.2", "1.2.1", size=10, t=5.0))
    log.append(_record("1.2", "1.2.2", size=20, t=7.0))
    (tmp_path / ARRIVALS_DIR / "1.2" / "other-1-x.jsonl").write_bytes(
        b'not json\n{"study_uid": "1.2"}\n' + _record("1.2", "1.2.3").to_line()[:40]
    )
    state = study_arrivals(tmp_path, "1.2")
    assert state.sop_uids == {"1.2.1", "1.2.2"}
    assert state.bytes == 30 and state.last_arrival == 7.0 and state.first_arrival == 5.0


def test_duplicates_count_once_latest_wins(tmp_path: Path) -> None:
    log = ArrivalLog(tmp_path)
    log.append(_record("1.2", "1.2.1", size=10, t=1.0))
    log.append(_record("1.2", "1.2.1", size=15, t=2.0))
    state = study_arrivals(tmp_path, "1.2")
    assert state.received == 1 and state.bytes == 15
    assert state.summary(tmp_path)["files"] == [str(tmp_path / "1.2" / "1.2.1" / "1.2.1.dcm")]


def test_queries(tmp_path: Path) -> None:
    assert study_arrivals(tmp_path, "1.9").received == 0
    assert recorded_studies(tmp_path) == []
    log = ArrivalLog(tmp_path)
    log.append(_record("1.3", "1.3.1"))
    log.append(_record("1.2", "1.2.1"))
    assert recorded_studies(tmp_path) == ["1.2", "1.3"]
    with pytest.raises(ValueError):
        study_arrivals(tmp_path, "../1.2")
    with pytest.raises(ValueError):
        log.append(_record("../x", "1.2.1"))
