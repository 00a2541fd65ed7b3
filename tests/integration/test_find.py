"""C-FIND against real Orthanc servers: recall at every level, truncation, filters, nulls, CLI, findscu."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from harness.dcmtk import findscu_datasets
from harness.orthanc import OrthancServer
from harness.synth import Corpus, dataset_bytes, make_same_day_corpus

from airflow_dicom.dimse.errors import FindTruncatedError, InvalidRequestError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.query import FindStats, build_query, find_all
from airflow_dicom.landing import find_and_land, read_find_dataset

pytestmark = pytest.mark.integration

YEAR = {"date_from": "2024-01-01", "date_to": "2024-12-31"}
#: a day in 2025 where 8 studies share one StudyTime (more than LIMITED's 5)
CROWDED_DAY = date(2025, 6, 1)
#: a day in 2025 with 12 studies at different times (needs StudyTime splits)
BUSY_DAY = date(2025, 7, 1)


def _node(pacs: OrthancServer) -> DicomNode:
    return DicomNode("127.0.0.1", pacs.dicom_port, pacs.aet)


def _truth(corpus: Corpus, level: str) -> set[str]:
    return {
        "PATIENT": corpus.patient_ids,
        "STUDY": corpus.study_uids,
        "SERIES": corpus.series_uids,
        "IMAGE": corpus.sop_uids,
    }[level]


_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


@pytest.fixture(scope="module")
def limited(orthanc_limited: OrthancServer, corpus: Corpus) -> Iterator[tuple[OrthancServer, Corpus, Corpus]]:
    """LIMITED (LimitFindResults 5) holding the 2024 corpus, a crowded day and a busy day in 2025."""
    orthanc_limited.clear()
    crowded = make_same_day_corpus(8, day=CROWDED_DAY, study_time="120000", seed=11)
    busy = make_same_day_corpus(12, day=BUSY_DAY, study_time=None, seed=12)
    orthanc_limited.upload_files(corpus.paths[i.sop_uid] for i in corpus.instances)
    for ds in (*crowded.datasets(), *busy.datasets()):
        orthanc_limited.upload(dataset_bytes(ds))
    yield orthanc_limited, crowded, busy
    orthanc_limited.clear()


@pytest.mark.parametrize("level", ["PATIENT", "STUDY", "SERIES", "IMAGE"])
def test_full_recall_at_every_level_with_awkward_names(loaded_orthanc, level: str) -> None:
    pacs, corpus = loaded_orthanc
    stats = FindStats()
    rows = find_all(
        _node(pacs), build_query(level, return_keys=["PatientName", "PatientID"], **YEAR), stats=stats
    )
    assert {str(r[_KEY[level]].value) for r in rows} == _truth(corpus, level)
    assert stats.associations == 1
    names = {str(r.PatientID): str(r.PatientName) for r in rows}
    assert names == {p.patient_id: p.patient_name for p in corpus.patients if p.patient_id in names}
    # the names pacsanini's a*..z* walk never finds are all there
    assert {"3rd^Patient", "", "Müller^Jürgen", "李^雷", "smith^john", "Иванов^Иван"} <= set(names.values())


def test_plain_patient_level_without_dates(loaded_orthanc) -> None:
    pacs, corpus = loaded_orthanc
    rows = find_all(_node(pacs), build_query("PATIENT", return_keys=["PatientName"]))
    assert {str(r.PatientID) for r in rows} == corpus.patient_ids
    assert len(rows) == len(corpus.patient_ids)


@pytest.mark.parametrize("level", ["PATIENT", "STUDY", "SERIES", "IMAGE"])
def test_full_recall_when_the_pacs_truncates(limited, corpus: Corpus, level: str) -> None:
    pacs, _, _ = limited
    stats = FindStats()
    rows = find_all(_node(pacs), build_query(level, return_keys=["PatientName"], **YEAR), stats=stats)
    assert {str(r[_KEY[level]].value) for r in rows} == _truth(corpus, level)
    assert stats.splits > 0 and stats.truncated > 0
    assert stats.associations == 1


def test_landing_summary_shows_the_splits(limited, corpus: Corpus, tmp_path: Path) -> None:
    pacs, _, _ = limited
    out = tmp_path / "studies"
    landing = find_and_land(_node(pacs), build_query("STUDY", return_keys=["PatientName"], **YEAR), out)
    summary = landing.summary()
    assert summary["rows"] == len(corpus.studies)
    assert summary["splits"] > 0 and summary["queries"] > summary["splits"]
    assert (summary["interval_start"], summary["interval_end"]) == ("2024-01-01", "2024-12-31")
    frame = pd.read_parquet(out)
    assert set(frame["StudyInstanceUID"]) == corpus.study_uids
    dates = {s.study_uid: s.study_date.isoformat() for s in corpus.studies}
    assert {u: str(d) for u, d in zip(frame["StudyInstanceUID"], frame["StudyDate"], strict=True)} == dates


def test_a_busy_day_is_split_by_study_time(limited) -> None:
    pacs, _, busy = limited
    stats = FindStats()
    query = build_query("STUDY", date_from=BUSY_DAY, date_to=BUSY_DAY)
    rows = find_all(_node(pacs), query, stats=stats)
    assert {str(r.StudyInstanceUID) for r in rows} == busy.study_uids
    assert stats.splits >= 1


def test_more_studies_at_one_time_than_the_limit_fails_loudly(limited, tmp_path: Path) -> None:
    pacs, _, _ = limited
    out = tmp_path / "crowded"
    query = build_query("STUDY", date_from="2025-05-01", date_to="2025-06-30")
    with pytest.raises(FindTruncatedError) as caught:
        find_and_land(_node(pacs), query, out)
    message = str(caught.value)
    assert "2025-06-01" in message and "12:00:00" in message
    assert f"LIMITED@127.0.0.1:{pacs.dicom_port}" in message
    assert "LimitFindResults" in message and "cannot be split further" in message
    assert not out.exists() or not any(out.rglob("*.parquet"))  # nothing partial was written


def test_modality_filter_is_complete_even_when_the_pacs_truncates(limited, corpus: Corpus) -> None:
    # Orthanc applies LimitFindResults before matching ModalitiesInStudy and then answers Success
    # with fewer studies: the default local matching must still find every CT study.
    pacs, _, _ = limited
    expected = {s.study_uid for s in corpus.studies_with_modality("CT")}
    rows = find_all(_node(pacs), build_query("STUDY", modality="CT", **YEAR))
    assert {str(r.StudyInstanceUID) for r in rows} == expected
    series = find_all(_node(pacs), build_query("SERIES", modality="CT", **YEAR))
    assert {str(r.SeriesInstanceUID) for r in series} == {
        s.series_uid for s in corpus.series if s.modality == "CT"
    }


def test_modality_filter_sent_to_an_unlimited_node(loaded_orthanc) -> None:
    pacs, corpus = loaded_orthanc
    query = build_query("STUDY", modality=["MR", "US"], modality_match="node", **YEAR)
    rows = find_all(_node(pacs), query)
    expected = {s.study_uid for s in corpus.studies if {"MR", "US"} & set(s.modalities)}
    assert {str(r.StudyInstanceUID) for r in rows} == expected


def test_date_range_and_matching_keys(loaded_orthanc) -> None:
    pacs, corpus = loaded_orthanc
    first, last = date(2024, 3, 1), date(2024, 6, 30)
    rows = find_all(_node(pacs), build_query("STUDY", date_from=first, date_to=last))
    assert {str(r.StudyInstanceUID) for r in rows} == {
        s.study_uid for s in corpus.studies_between(first, last)
    }
    patient = corpus.patients[3]
    rows = find_all(_node(pacs), build_query("STUDY", matching={"PatientID": patient.patient_id}, **YEAR))
    assert {str(r.StudyInstanceUID) for r in rows} == {
        s.study_uid for s in corpus.studies if s.patient_id == patient.patient_id
    }


def test_keys_the_pacs_does_not_return_are_nulls(loaded_orthanc, tmp_path: Path) -> None:
    pacs, corpus = loaded_orthanc
    query = build_query("STUDY", return_keys=["PatientWeight", "OtherPatientIDs", "StudyDescription"], **YEAR)
    find_and_land(_node(pacs), query, tmp_path / "d")
    frame = read_find_dataset(tmp_path / "d")
    assert len(frame) == len(corpus.studies)
    assert frame["PatientWeight"].isna().all() and frame["OtherPatientIDs"].isna().all()
    # (the corpus writes non-ASCII descriptions into some files that declare no character set;
    # those are not comparable, every other description must arrive exactly)
    comparable = {
        s.study_uid: s.study_description or None
        for s in corpus.studies
        if s.study_description.isascii() or corpus.patient(s.patient_id).specific_character_set
    }
    landed = dict(zip(frame["StudyInstanceUID"], frame["StudyDescription"], strict=True))
    assert {u: landed[u] if isinstance(landed[u], str) else None for u in comparable} == comparable
    assert any(not (d or "").isascii() for d in comparable.values())


def test_unknown_keyword_fails_before_any_association(loaded_orthanc, tmp_path: Path) -> None:
    pacs, _ = loaded_orthanc
    before = pacs.get_json("/statistics")
    proc = _cli(pacs, "--level", "STUDY", "-k", "PatientNme", "--out", str(tmp_path / "x"))
    assert proc.returncode == 1
    assert "'PatientNme' is not a keyword of the DICOM dictionary" in proc.stderr
    assert "did you mean PatientName" in proc.stderr
    assert not (tmp_path / "x").exists()
    with pytest.raises(InvalidRequestError):
        build_query("STUDY", return_keys=["PatientNme"])
    assert pacs.get_json("/statistics") == before


def _cli(pacs: OrthancServer, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "airflow-dicom"), "find", "--host", "127.0.0.1"]
    command += ["--port", str(pacs.dicom_port), "--aet", pacs.aet, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_cli_writes_a_parquet_dataset_and_csv(limited, corpus: Corpus, tmp_path: Path) -> None:
    pacs, _, _ = limited
    out = tmp_path / "studies"
    proc = _cli(
        pacs,
        "--level",
        "STUDY",
        "--from",
        "2024-01-01",
        "--to",
        "2024-12-31",
        "-k",
        "PatientName",
        "-k",
        "ModalitiesInStudy",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{len(corpus.studies)} rows written to {out}")
    frame = pd.read_parquet(out)
    assert set(frame["StudyInstanceUID"]) == corpus.study_uids
    modalities = {s.study_uid: sorted(s.modalities) for s in corpus.studies}
    assert {
        u: sorted(m) for u, m in zip(frame["StudyInstanceUID"], frame["ModalitiesInStudy"], strict=True)
    } == modalities
    csv = tmp_path / "series.csv"
    proc = _cli(
        pacs,
        "--level",
        "SERIES",
        "--from",
        "2024-01-01",
        "--to",
        "2024-12-31",
        "-f",
        "Modality=CT\\MR",
        "--format",
        "csv",
        "--out",
        str(csv),
    )
    assert proc.returncode == 0, proc.stderr
    expected = {s.series_uid for s in corpus.series if s.modality in ("CT", "MR")}
    assert set(pd.read_csv(csv)["SeriesInstanceUID"]) == expected
    proc = _cli(pacs, "--from", "2025-06-01", "--to", "2025-06-01", "--out", str(tmp_path / "crowded"))
    assert proc.returncode == 1 and "cannot be split further" in proc.stderr


def test_same_studies_as_findscu(loaded_orthanc) -> None:
    pacs, corpus = loaded_orthanc
    proc, datasets = findscu_datasets(
        "127.0.0.1", pacs.dicom_port, pacs.aet, {"StudyDate": "20240101-20241231", "StudyInstanceUID": ""}
    )
    assert proc.returncode == 0, proc.stderr
    ours = find_all(_node(pacs), build_query("STUDY", **YEAR))
    assert (
        {str(d.StudyInstanceUID) for d in datasets}
        == {str(r.StudyInstanceUID) for r in ours}
        == corpus.study_uids
    )


def test_pacsanini_letter_walk_misses_studies(loaded_orthanc) -> None:
    """The motivating bug, measured: names starting with a digit, a non-ASCII letter or empty are missed."""
    pacs, corpus = loaded_orthanc
    found: set[str] = set()
    for letter in "abcdefghijklmnopqrstuvwxyz":
        query = build_query("STUDY", matching={"PatientName": f"{letter}*"}, **YEAR)
        found |= {str(r.StudyInstanceUID) for r in find_all(_node(pacs), query)}
    assert found < corpus.study_uids
    missed = {corpus.patient(corpus.study(u).patient_id).patient_name[:1] for u in corpus.study_uids - found}
    assert {"3", "", "李"} <= missed
