"""The fast C-FIND path lands exactly what the pydicom path landed, on Orthanc and on pynetdicom's qrscp.

The pydicom path is the one every match took before: stock pynetdicom (``send_c_find``, pydicom decoding
every identifier), rows typed from pydicom values, the Parquet dataset written by ``pyarrow.dataset``'s
``write_dataset`` (``delete_matching``). It still runs whenever the pynetdicom extensions are off (here:
pynetdicom claims an unsupported version). Both paths query the same real peers; their Parquet files,
CSV files and SQL tables must be identical: rows, columns, types, file layout.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pynetdicom
import pytest
from harness.orthanc import OrthancServer
from harness.qrscp import QrscpPacs
from harness.synth import Corpus

from airflow_dicom.dimse import pynetdicom_ext
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.pynetdicom_ext.compat import StockAE
from airflow_dicom.dimse.query import DEFAULT_RETURN_KEYS, FindQuery, build_query
from airflow_dicom.dimse.query.walk import find_matches
from airflow_dicom.landing import find_and_land, read_find_dataset
from airflow_dicom.landing.parquet import PARTITIONING
from airflow_dicom.landing.table import TableBuilder

pytestmark = pytest.mark.integration

YEAR = {"date_from": "2024-01-01", "date_to": "2024-12-31"}
STUDY_KEYS = [*DEFAULT_RETURN_KEYS["STUDY"], "PatientBirthDate"]


def _stock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn the pynetdicom extensions off (the pydicom path), until the test ends."""
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    assert not pynetdicom_ext.recheck_version()
    assert type(pynetdicom_ext.make_requestor_ae("A")) is StockAE  # stock send_c_find, pydicom decoding


@pytest.fixture(autouse=True)
def _extensions_back() -> Iterator[None]:
    yield
    assert pynetdicom_ext.recheck_version()


def _old_landing(node: DicomNode, query: FindQuery, out: Path) -> pa.Table:
    """What find_and_land wrote before: pydicom Datasets typed per row, ``write_dataset`` by day."""
    builder = TableBuilder(query.columns, source_node="n", level=query.level, interval=query.date_range)
    builder.extend(match.dataset() for match in find_matches(node, query))
    table = builder.table()
    ds.write_dataset(
        table,
        str(out),
        format="parquet",
        partitioning=PARTITIONING,
        existing_data_behavior="delete_matching",
        basename_template="part-{i}.parquet",
    )
    return table


def _files(root: Path) -> dict[str, pa.Table]:
    return {str(p.relative_to(root)): pq.read_table(p) for p in sorted(root.rglob("*.parquet"))}


def _same_parquet(old: Path, new: Path) -> None:
    old_files, new_files = _files(old), _files(new)
    assert sorted(old_files) == sorted(new_files)  # the same day partitions, one part-0 file each
    for name, table in old_files.items():
        assert new_files[name].schema.equals(table.schema, check_metadata=True), name
        assert new_files[name].equals(table), name  # same rows in the same order
    assert read_find_dataset(new).equals(read_find_dataset(old))


QUERIES = [
    pytest.param("STUDY", {"return_keys": STUDY_KEYS}, id="study"),
    pytest.param("STUDY", {"return_keys": STUDY_KEYS, "modality": "CT"}, id="study-ct"),
    pytest.param("SERIES", {"return_keys": ["PatientName", "Modality", "SeriesNumber"]}, id="series"),
    pytest.param("IMAGE", {"return_keys": ["PatientID", "SOPClassUID", "InstanceNumber"]}, id="image"),
    pytest.param("PATIENT", {"return_keys": ["PatientName", "PatientSex"]}, id="patient-by-day"),
]


@pytest.mark.parametrize(("level", "kwargs"), QUERIES)
def test_orthanc_fast_path_lands_what_the_pydicom_path_landed(
    loaded_orthanc: tuple[OrthancServer, Corpus],
    level: str,
    kwargs: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pacs, corpus = loaded_orthanc
    node = DicomNode("127.0.0.1", pacs.dicom_port, pacs.aet)
    query = build_query(level, **YEAR, **kwargs)
    landed = find_and_land(node, query, tmp_path / "new", source_node="n")
    assert landed.rows > 0
    with monkeypatch.context() as patch:
        _stock(patch)
        old = _old_landing(node, query, tmp_path / "old")
    assert landed.rows == old.num_rows
    _same_parquet(tmp_path / "old", tmp_path / "new")


def test_truncated_and_split_queries_land_the_same(
    orthanc_limited: OrthancServer, corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orthanc_limited.clear()
    orthanc_limited.upload_files(corpus.paths[i.sop_uid] for i in corpus.instances)
    node = DicomNode("127.0.0.1", orthanc_limited.dicom_port, orthanc_limited.aet)
    query = build_query("STUDY", return_keys=STUDY_KEYS, **YEAR)
    landed = find_and_land(node, query, tmp_path / "new", source_node="n")
    assert landed.stats.splits > 0 and landed.rows == len(corpus.studies)
    with monkeypatch.context() as patch:
        _stock(patch)
        _old_landing(node, query, tmp_path / "old")
    _same_parquet(tmp_path / "old", tmp_path / "new")


def test_qrscp_dedupe_and_modality_fallback_land_the_same(
    qrscp: tuple[QrscpPacs, Corpus], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pacs, corpus = qrscp
    node = DicomNode("127.0.0.1", pacs.port, pacs.aet)
    modality = corpus.studies[0].modalities[0]
    query = build_query(
        "STUDY", return_keys=["PatientName", "StudyDescription"], modality=modality,
        date_from="2024-01-01", date_to="2024-01-07",
    )  # fmt: skip
    landed = find_and_land(node, query, tmp_path / "new", source_node="n")
    assert 0 < landed.rows < len(corpus.studies)
    assert landed.stats.matches > landed.rows  # qrscp answered once per instance: deduplicated
    with monkeypatch.context() as patch:
        _stock(patch)
        _old_landing(node, query, tmp_path / "old")
    _same_parquet(tmp_path / "old", tmp_path / "new")


def test_csv_and_sql_landings_are_the_same(
    loaded_orthanc: tuple[OrthancServer, Corpus], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pacs, _ = loaded_orthanc
    node = DicomNode("127.0.0.1", pacs.dicom_port, pacs.aet)
    query = build_query("STUDY", return_keys=STUDY_KEYS, **YEAR)
    outputs = {}
    for path in ("fast", "stock"):
        with monkeypatch.context() as patch:
            if path == "stock":
                _stock(patch)
            csv = tmp_path / f"{path}.csv"
            find_and_land(node, query, csv, output_format="csv", source_node="n")
            db = tmp_path / f"{path}.db"
            find_and_land(
                node, query, f"sqlite:///{db}", output_format="sql", sql_table="studies", source_node="n"
            )
            with sqlite3.connect(db) as conn:
                rows = sorted(conn.execute("SELECT * FROM studies").fetchall(), key=repr)
            outputs[path] = (sorted(csv.read_text().splitlines()), rows)
    assert outputs["fast"] == outputs["stock"]
    assert len(outputs["fast"][1]) > 10
