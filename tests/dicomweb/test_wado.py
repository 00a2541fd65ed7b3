"""WADO-RS retrieval lands every instance byte for byte through the receiver's store core."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from harness.orthanc import OrthancServer
from harness.synth import Corpus, make_corpus

from airflow_dicom.dicomweb.wado import WADO, split_part, wado_retrieve
from airflow_dicom.dimse.arrivals import study_arrivals
from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.retrieve import RetrieveItem, make_items
from airflow_dicom.landing.report import completed_items, read_report, write_report

from .conftest import web_node

pytestmark = pytest.mark.integration

#: run in a child process whose address space is capped at its size after start-up plus a budget
CHILD = """
import resource, sys
from airflow_dicom.dicomweb.node import DicomWebNode
from airflow_dicom.dicomweb.wado import wado_retrieve
from airflow_dicom.dimse.retrieve import RetrieveItem
url, study, out, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (size + budget, size + budget))
result = wado_retrieve(DicomWebNode(url=url), [RetrieveItem("STUDY", study)], out)
print(result.summary()["instances"])
"""


def files_on_disk(directory: Path) -> dict[str, Path]:
    """SOPInstanceUID -> file under ``directory`` (hidden dirs such as .arrivals excluded)."""
    found = {}
    for path in directory.rglob("*.dcm"):
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        found[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    return found


def test_wado_retrieves_24_studies_byte_for_byte(
    web_pacs: OrthancServer, corpus: Corpus, tmp_path: Path
) -> None:
    studies = sorted(corpus.study_uids)[:24]
    expected = {i.sop_uid for i in corpus.instances if i.study_uid in set(studies)}
    counts = {s: len(corpus.instances_of_study(s)) for s in studies}
    items = [RetrieveItem("STUDY", s, expected=counts[s]) for s in studies]
    data = tmp_path / "data"
    result = wado_retrieve(web_node(web_pacs), items, data, layout="study")
    assert result.ok, result.summary()
    assert {a.service for a in result.final.values()} == {WADO}
    on_disk = files_on_disk(data)
    assert set(on_disk) == expected
    for sop_uid, path in on_disk.items():
        held = split_part(web_pacs.instance_file(sop_uid))
        ours = split_part(path.read_bytes())
        assert ours[:3] == held[:3]  # SOP class, SOP instance, transfer syntax (no transcoding)
        assert bytes(ours[3]) == bytes(held[3]), sop_uid  # the data set, byte for byte
    # what the arrival sensor reads: the arrival records of each study
    for study in studies:
        assert study_arrivals(data, study).received == counts[study]
    # the retrieval report: rows as for C-GET, the service says WADO-RS; a rerun skips everything
    report = tmp_path / "report"
    write_report((a.row("run-1") for a in result.attempts), str(report))
    frame = read_report(str(report))
    assert set(frame["service"]) == {WADO} and set(frame["status"]) == {"complete"}
    again = wado_retrieve(web_node(web_pacs), items, data, completed=completed_items(str(report)))
    assert {a.status for a in again.final.values()} == {"skipped"}


def test_wado_series_and_instance_levels(web_pacs: OrthancServer, corpus: Corpus, tmp_path: Path) -> None:
    series = corpus.series[0]
    instance = corpus.instances_of_study(corpus.studies[1].study_uid)[0]
    items = [
        RetrieveItem("SERIES", series.series_uid, study_uid=series.study_uid),
        RetrieveItem("IMAGE", instance.sop_uid, study_uid=instance.study_uid, series_uid=instance.series_uid),
    ]
    result = wado_retrieve(web_node(web_pacs), items, tmp_path / "data", layout="flat")
    assert result.ok, result.summary()
    wanted = {i.sop_uid for i in corpus.instances if i.series_uid == series.series_uid} | {instance.sop_uid}
    assert set(files_on_disk(tmp_path / "data")) == wanted


def test_wado_unknown_study_fails_with_the_node(web_pacs: OrthancServer, tmp_path: Path) -> None:
    result = wado_retrieve(web_node(web_pacs), make_items(["1.2.3.4.5"]), tmp_path / "data")
    attempt = result.final[("STUDY", "1.2.3.4.5")]
    assert attempt.status == "failed"
    assert "DICOMweb http://127.0.0.1" in attempt.reason and "404" in attempt.reason


def test_wado_refuses_patient_items(web_pacs: OrthancServer, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="no patient resource"):
        wado_retrieve(web_node(web_pacs), [RetrieveItem("PATIENT", "P1")], tmp_path / "data")


def test_wado_streams_a_study_larger_than_the_memory_limit(
    web_scratch: OrthancServer, tmp_path: Path
) -> None:
    big = make_corpus(
        n_patients=1,
        studies_per_patient=1,
        series_per_study=1,
        instances_per_series=24,
        pixel_bytes=6 * 1024 * 1024,
        transfer_syntaxes=("1.2.840.10008.1.2.1",),
    )
    big.write(tmp_path / "big")
    web_scratch.upload_files(big.paths[i.sop_uid] for i in big.instances)
    study = big.studies[0].study_uid
    budget = 64 * 1024 * 1024  # the study is ~150 MB
    env = dict(os.environ, MALLOC_ARENA_MAX="2")  # one malloc arena per thread would reserve 64 MB each
    done = subprocess.run(
        [sys.executable, "-c", CHILD, web_scratch.dicomweb_url, study, str(tmp_path / "data"), str(budget)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "24"
    assert set(files_on_disk(tmp_path / "data")) == {i.sop_uid for i in big.instances}
    assert sum(p.stat().st_size for p in files_on_disk(tmp_path / "data").values()) > 2 * budget
