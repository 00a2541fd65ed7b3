"""The receiver reads the identifiers it needs from the raw dataset bytes (fast scanner and pydicom agree)."""

from __future__ import annotations

import io

import pytest
from harness.hostile import hostile_bytes, make_hostile
from harness.synth import make_instance
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from airflow_dicom.dimse.errors import MalformedDicomError, UnreadableDatasetError
from airflow_dicom.dimse.receiver import identifiers, read_identifiers


def _body(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    return data[144 + int.from_bytes(data[140:144], "little") :]


def _with_sequences(ds: Dataset, undefined: bool) -> Dataset:
    inner = Dataset()
    inner.CodeValue = "X"
    inner.ConceptNameCodeSequence = Sequence([Dataset()])
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.3"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedStudySequence = Sequence([item, Dataset()])
    ds.ProcedureCodeSequence = Sequence([])
    ds.OtherPatientIDsSequence = Sequence([inner])
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = undefined
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
@pytest.mark.parametrize("undefined", [True, False])
def test_fast_scanner_agrees_with_pydicom(
    syntax: str, undefined: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = make_instance(
        transfer_syntax=syntax, patient_id="Müller/1", specific_character_set="ISO_IR 100", patient_name="A^B"
    )
    body = _body(_with_sequences(ds, undefined))
    fast = read_identifiers(body, syntax)
    assert fast.sop_uid == ds.SOPInstanceUID and fast.study_uid == ds.StudyInstanceUID
    assert fast.series_uid == ds.SeriesInstanceUID and fast.patient_id == "Müller/1"
    assert fast.sop_class_uid == ds.SOPClassUID

    def refuse(*args: object) -> dict:
        raise MalformedDicomError("refused")

    monkeypatch.setattr(identifiers, "_read_with_codec", refuse)
    assert read_identifiers(body, syntax) == fast  # the pydicom path reads the same


def test_hostile_values_are_read_as_they_are() -> None:
    ds = make_hostile(sop_uid="../x", study_uid="/etc/x", patient_id="..")
    fp = io.BytesIO(hostile_bytes(ds))
    fp.seek(132)
    _read_file_meta_info(fp)
    body = fp.read()
    ids = read_identifiers(body, ExplicitVRLittleEndian)
    assert (ids.sop_uid, ids.study_uid, ids.patient_id) == ("../x", "/etc/x", "..")


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 3, bytes(range(256)) * 8, b"\xff" * 1000])
def test_garbage_is_unreadable_or_has_no_identifiers(garbage: bytes) -> None:
    try:
        ids = read_identifiers(garbage, ExplicitVRLittleEndian)
    except UnreadableDatasetError:
        return
    assert ids.sop_uid is None
