"""The test harness against the real peers it drives: Orthanc 1.10 and dcmtk 3.6.7 over loopback."""

from __future__ import annotations

import collections
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pydicom
import pytest
from harness.dcmtk import DcmtkStorescp, echoscu, findscu_datasets, getscu, movescu, storescu
from harness.hostile import HOSTILE_VALUES, make_hostile, validation_off, write_hostile
from harness.orthanc import OrthancError, OrthancServer
from harness.ports import free_port
from harness.synth import SOP_CLASSES, Corpus, make_corpus, make_same_day_corpus
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------------- ports / synth


def test_free_port_never_repeats() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_corpus_is_deterministic_and_awkward(corpus: Corpus) -> None:
    again = make_corpus(
        n_patients=20, studies_per_patient=2, series_per_study=(1, 2), instances_per_series=(1, 3)
    )
    assert [i.sop_uid for i in again.instances] == [i.sop_uid for i in corpus.instances]
    assert not make_corpus(n_patients=20, seed=1).sop_uids & corpus.sop_uids

    assert len(corpus.patients) == 20 and len(corpus.studies) == 40
    assert len({i.sop_class_uid for i in corpus.instances}) >= 4
    assert {i.sop_class_uid for i in corpus.instances} <= set(SOP_CLASSES)
    syntaxes = collections.Counter(i.transfer_syntax for i in corpus.instances)
    assert syntaxes[RLELossless] and syntaxes[ImplicitVRLittleEndian]
    names = {p.patient_name for p in corpus.patients}
    assert {"3rd^Patient", "Müller^Jürgen", "李^雷", "smith^john", ""} <= names
    assert any(len(s.modalities) > 1 for s in corpus.studies)
    assert len({s.study_date.month for s in corpus.studies}) >= 6
    assert sum(s.n_instances for s in corpus.studies) == len(corpus.instances)


def test_written_files_match_truth(corpus: Corpus) -> None:
    for inst in corpus.instances:
        ds = pydicom.dcmread(corpus.paths[inst.sop_uid])
        assert ds.SOPInstanceUID == inst.sop_uid == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == inst.transfer_syntax
        assert ds.SOPClassUID == inst.sop_class_uid
        assert str(ds.PatientName) == corpus.patient(inst.patient_id).patient_name
        assert ds.pixel_array.size > 0  # decodes, incl. RLE


def test_pixel_size_option() -> None:
    big = make_corpus(
        n_patients=1,
        studies_per_patient=1,
        series_per_study=1,
        instances_per_series=1,
        pixel_bytes=512 * 1024,
        transfer_syntaxes=("1.2.840.10008.1.2.1",),
    )
    ds = big.dataset(big.instances[0].sop_uid)
    assert 500 * 1024 <= len(ds.PixelData) <= 512 * 1024


def test_same_day_corpus() -> None:
    same = make_same_day_corpus(12, day=date(2024, 3, 3), study_time="101010")
    assert {(s.study_date, s.study_time) for s in same.studies} == {(date(2024, 3, 3), "101010")}
    assert len(same.study_uids) == 12


def test_hostile_values_survive_writing(tmp_path: Path) -> None:
    for name, value in HOSTILE_VALUES.items():
        ds = make_hostile(sop_uid=value, study_uid=value, series_uid=value, patient_id=value)
        path = write_hostile(ds, tmp_path / f"{name}.dcm")
        with validation_off():
            back = pydicom.dcmread(path)
            assert back.get("SOPInstanceUID") == ds.SOPInstanceUID
            assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


# ---------------------------------------------------------------------------- Orthanc


def test_orthanc_starts_and_answers(orthanc: OrthancServer) -> None:
    system = orthanc.get_json("/system")
    assert system["DicomAet"] == orthanc.aet == "ORTHANC"
    assert system["DicomPort"] == orthanc.dicom_port
    assert system["HttpPort"] == orthanc.http_port
    assert orthanc.get_json("/plugins") == ["explorer.js"]  # built in, not a plugin
    assert orthanc.url == f"http://127.0.0.1:{orthanc.http_port}"


def test_orthanc_start_failure_reports_log(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    server = OrthancServer(extra_config={"IndexDirectory": str(blocker / "index")}, startup_timeout=5)
    with pytest.raises(OrthancError, match="Orthanc"):
        server.start()
    assert not server.running


def test_loaded_orthanc_holds_exactly_the_corpus(loaded_orthanc: tuple[OrthancServer, Corpus]) -> None:
    pacs, corpus = loaded_orthanc
    assert pacs.instance_uids() == corpus.sop_uids
    assert pacs.study_uids() == corpus.study_uids
    assert pacs.series_uids() == corpus.series_uids
    assert pacs.patient_ids() == corpus.patient_ids
    assert pacs.count_instances() == len(corpus.instances)
    rle = next(i for i in corpus.instances if i.transfer_syntax == RLELossless)
    assert pacs.instance_file(rle.sop_uid) == corpus.paths[rle.sop_uid].read_bytes()


def test_orthanc_clear_and_upload(orthanc: OrthancServer, corpus: Corpus) -> None:
    orthanc.clear()
    study = corpus.studies[0]
    orthanc.upload_files(corpus.files_of_study(study.study_uid))
    assert orthanc.study_uids() == {study.study_uid}
    orthanc.clear()
    assert orthanc.count_instances() == 0


def test_cfind_answers_non_ascii_names(loaded_orthanc: tuple[OrthancServer, Corpus]) -> None:
    pacs, corpus = loaded_orthanc
    proc, answers = findscu_datasets(
        pacs.host, pacs.dicom_port, pacs.aet, {"PatientName": "", "PatientID": "", "StudyInstanceUID": ""}
    )
    assert proc.returncode == 0, proc.stderr
    found = {(str(ds.PatientID), str(ds.PatientName)) for ds in answers}
    assert found == {
        (corpus.study(s).patient_id, corpus.patient(corpus.study(s).patient_id).patient_name)
        for s in corpus.study_uids
    }


def test_orthanc_limited_truncates(orthanc_limited: OrthancServer, tmp_path: Path) -> None:
    same = make_same_day_corpus(8, seed=7)
    orthanc_limited.upload_files(same.write(tmp_path))
    try:
        proc, answers = findscu_datasets(
            orthanc_limited.host, orthanc_limited.dicom_port, orthanc_limited.aet, {"StudyInstanceUID": ""}
        )
        assert len(answers) == 5
        assert "Cancel" in proc.stderr + proc.stdout
    finally:
        orthanc_limited.clear()


# ---------------------------------------------------------------------------- dcmtk


def test_echoscu_against_orthanc(orthanc: OrthancServer) -> None:
    proc = echoscu(orthanc.host, orthanc.dicom_port, orthanc.aet)
    assert proc.returncode == 0, proc.stderr


def test_strict_orthanc_refuses_wrong_called_aet(orthanc_strict: OrthancServer) -> None:
    wrong = echoscu(orthanc_strict.host, orthanc_strict.dicom_port, "NOTSTRICT")
    assert wrong.returncode != 0
    assert "Rejected" in wrong.stderr + wrong.stdout
    right = echoscu(orthanc_strict.host, orthanc_strict.dicom_port, "STRICTPACS")
    assert right.returncode == 0, right.stderr


def test_storescu_delivers_mixed_corpus_unchanged(
    corpus: Corpus, dcmtk_storescp: Callable[..., DcmtkStorescp]
) -> None:
    scp = dcmtk_storescp("HARNESSSCP")
    proc = storescu(scp.host, scp.port, scp.aet, [corpus.paths[i.sop_uid] for i in corpus.instances])
    assert proc.returncode == 0, proc.stderr[-2000:]
    received = scp.received_datasets()
    assert set(received) == corpus.sop_uids
    for inst in corpus.instances:
        original = pydicom.dcmread(corpus.paths[inst.sop_uid])
        got = received[inst.sop_uid]
        assert got.file_meta.TransferSyntaxUID == inst.transfer_syntax
        assert got.PixelData == original.PixelData
        assert got == original


def test_storescu_directory_and_explicit_proposal(
    corpus: Corpus, dcmtk_storescp: Callable[..., DcmtkStorescp], tmp_path: Path
) -> None:
    study = next(s for s in corpus.studies if s.n_instances > 1)
    folder = tmp_path / "study" / "nested"
    folder.mkdir(parents=True)
    for path in corpus.files_of_study(study.study_uid):
        (folder / path.name).write_bytes(path.read_bytes())
    scp = dcmtk_storescp("DIRSCP")
    proc = storescu(scp.host, scp.port, scp.aet, [tmp_path / "study"], propose="-xr")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert scp.received_sop_uids() == {i.sop_uid for i in corpus.instances_of_study(study.study_uid)}


def test_movescu_from_orthanc_to_storescp(
    loaded_orthanc: tuple[OrthancServer, Corpus], dcmtk_storescp: Callable[..., DcmtkStorescp]
) -> None:
    pacs, corpus = loaded_orthanc
    study = max(corpus.studies, key=lambda s: (len(s.modalities), s.n_instances))
    expected = {i.sop_uid: i.transfer_syntax for i in corpus.instances_of_study(study.study_uid)}
    scp = dcmtk_storescp("HARNESSDEST")
    pacs.register_modality("harness-movedest", scp.aet, scp.host, scp.port)
    proc = movescu(pacs.host, pacs.dicom_port, pacs.aet, scp.aet, {"StudyInstanceUID": study.study_uid})
    assert proc.returncode == 0, proc.stderr[-2000:]
    received = scp.received_datasets()
    assert set(received) == set(expected)
    assert {uid: ds.file_meta.TransferSyntaxUID for uid, ds in received.items()} == expected


def test_getscu_from_orthanc(loaded_orthanc: tuple[OrthancServer, Corpus], tmp_path: Path) -> None:
    pacs, corpus = loaded_orthanc
    study = max(corpus.studies, key=lambda s: s.n_instances)
    proc = getscu(pacs.host, pacs.dicom_port, pacs.aet, {"StudyInstanceUID": study.study_uid}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in tmp_path.iterdir()}
    assert got == {i.sop_uid for i in corpus.instances_of_study(study.study_uid)}
