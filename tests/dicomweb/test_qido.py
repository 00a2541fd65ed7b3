"""QIDO-RS find lands the same Parquet as C-FIND of the same Orthanc, also when the server caps results."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from harness.orthanc import OrthancServer
from harness.synth import Corpus

from airflow_dicom.dimse.errors import FindTruncatedError
from airflow_dicom.dimse.query import DEFAULT_RETURN_KEYS, build_query
from airflow_dicom.landing.results import find_and_land

from .conftest import dimse_node, web_node

pytestmark = pytest.mark.integration

YEAR = ("2024-01-01", "2024-12-31")


def _table(path: Path):  # noqa: ANN202 - a pyarrow Table
    table = pads.dataset(str(path), format="parquet", partitioning="hive").to_table()
    keys = [k for k in ("PatientID", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    return table.drop_columns(["source_node"]).sort_by(
        [(k, "ascending") for k in keys if k in table.column_names]
    )


@pytest.mark.parametrize("level", ["PATIENT", "STUDY", "SERIES", "IMAGE"])
def test_qido_lands_the_same_parquet_as_c_find(
    web_pacs: OrthancServer, corpus: Corpus, tmp_path: Path, level: str
) -> None:
    query = build_query(level, return_keys=DEFAULT_RETURN_KEYS[level], date_from=YEAR[0], date_to=YEAR[1])
    dimse = find_and_land(dimse_node(web_pacs), query, tmp_path / "dimse")
    web = find_and_land(web_node(web_pacs, page_size=7), query, tmp_path / "web")
    assert web.rows == dimse.rows > 0
    a, b = _table(tmp_path / "dimse"), _table(tmp_path / "web")
    assert a.schema == b.schema
    assert a.to_pylist() == b.to_pylist()
    if level == "STUDY":
        assert set(b.column("StudyInstanceUID").to_pylist()) == corpus.study_uids
    assert web.stats.queries > dimse.stats.queries  # paged: 7 results per request


def test_qido_is_complete_when_the_server_caps_results(
    web_limited: OrthancServer, corpus: Corpus, tmp_path: Path
) -> None:
    query = build_query("STUDY", return_keys=DEFAULT_RETURN_KEYS["STUDY"], date_from=YEAR[0], date_to=YEAR[1])
    # Orthanc's plugin answers at most 6 matches per search, silently: the node declares its cap
    node = web_node(web_limited, max_results=5, page_size=3)
    landing = find_and_land(node, query, tmp_path / "web")
    assert landing.stats.splits > 0
    table = _table(tmp_path / "web")
    assert set(table.column("StudyInstanceUID").to_pylist()) == corpus.study_uids
    assert table.num_rows == len(corpus.study_uids)
    # the same rows as C-FIND of the same capped Orthanc (which splits on its 0xFE00)
    dimse = find_and_land(dimse_node(web_limited), query, tmp_path / "dimse")
    assert dimse.stats.splits > 0
    assert _table(tmp_path / "dimse").to_pylist() == table.to_pylist()


def test_qido_fails_loudly_when_a_capped_query_cannot_be_split(
    web_limited: OrthancServer, tmp_path: Path
) -> None:
    query = build_query("STUDY", return_keys=("PatientID",))  # no date range: nothing to split on
    with pytest.raises(FindTruncatedError, match="DICOMweb http://127.0.0.1"):
        find_and_land(web_node(web_limited), query, tmp_path / "web", max_results_per_query=5)
    assert not (tmp_path / "web").exists()


def test_qido_patients_without_dates_match_c_find_patient_root(
    web_pacs: OrthancServer, corpus: Corpus, tmp_path: Path
) -> None:
    query = build_query(
        "PATIENT", return_keys=DEFAULT_RETURN_KEYS["PATIENT"]
    )  # DICOMweb has no patient search
    dimse = find_and_land(dimse_node(web_pacs), query, tmp_path / "dimse.csv", output_format="csv")
    web = find_and_land(web_node(web_pacs, page_size=9), query, tmp_path / "web.csv", output_format="csv")
    assert web.rows == dimse.rows == len(corpus.patient_ids)

    def rows(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as f:
            return sorted(
                ({k: v for k, v in r.items() if k != "source_node"} for r in csv.DictReader(f)), key=str
            )

    assert rows(tmp_path / "web.csv") == rows(tmp_path / "dimse.csv")
