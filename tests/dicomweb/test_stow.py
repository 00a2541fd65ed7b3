"""STOW-RS send of a mixed directory: the per-file account of a C-STORE send."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from harness.orthanc import OrthancServer
from harness.synth import Corpus

from airflow_dicom.dicomweb.stow import stow_send
from airflow_dicom.dicomweb.wado import split_part

from .conftest import web_node

pytestmark = pytest.mark.integration


def _mixed_directory(corpus: Corpus, root: Path) -> tuple[Path, set[str], Path, Path]:
    """Several SOP classes and transfer syntaxes (RLE included), a text file, and a file Orthanc refuses."""
    studies = sorted(corpus.study_uids)[:6]
    for study in studies:
        for path in corpus.files_of_study(study):
            target = root / study[-6:] / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    sent = {i.sop_uid for i in corpus.instances if i.study_uid in set(studies)}
    notes = root / "README.txt"
    notes.write_text("not DICOM")
    refused = root / "refused.dcm"
    ds = pydicom.dcmread(corpus.paths[corpus.instances[0].sop_uid])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    del ds.StudyInstanceUID  # Orthanc cannot index an instance without a study
    ds.save_as(refused)
    return root, sent, notes, refused


def test_stow_sends_a_mixed_directory_with_a_per_file_account(
    web_scratch: OrthancServer, corpus: Corpus, tmp_path: Path
) -> None:
    root, sent, notes, refused = _mixed_directory(corpus, tmp_path / "in")
    syntaxes = {str(corpus.dataset(uid).file_meta.TransferSyntaxUID) for uid in sent}
    classes = {str(corpus.dataset(uid).SOPClassUID) for uid in sent}
    assert len(classes) > 1 and "1.2.840.10008.1.2.5" in syntaxes  # the mix the test is about
    report = stow_send(web_node(web_scratch), root, batch_files=5)
    by_path = {r.path: r for r in report.results}
    assert web_scratch.instance_uids() == sent
    assert {r.sop_instance_uid for r in report.sent} == sent
    assert by_path[str(notes)].outcome == "skipped"
    failed = by_path[str(refused)]
    assert failed.outcome == "failed" and failed.status == 0xC000 and "STOW-RS" in failed.reason
    assert report.summary()["failed"] == 1 and report.summary()["skipped"] == 1
    for uid in list(sent)[:10]:  # stored as sent: same transfer syntax and data set bytes
        held = split_part(web_scratch.instance_file(uid))
        assert held[2] == str(corpus.dataset(uid).file_meta.TransferSyntaxUID)
        assert bytes(held[3]) == bytes(split_part(corpus.paths[uid].read_bytes())[3])


def test_stow_reports_a_server_error_for_each_file(
    web_scratch: OrthancServer, corpus: Corpus, tmp_path: Path
) -> None:
    root, sent, _notes, _refused = _mixed_directory(corpus, tmp_path / "in")
    node = web_node(web_scratch, stow_prefix="no-such-service")
    report = stow_send(node, root, batch_files=4)
    assert {r.sop_instance_uid for r in report.failed} >= sent
    assert all("HTTP 404" in r.reason and "DICOMweb http://127.0.0.1" in r.reason for r in report.failed)
    assert web_scratch.instance_uids() == set()
