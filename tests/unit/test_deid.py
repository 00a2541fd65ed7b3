"""Pseudonymisation (airflow_dicom.deid) of identified synthetic studies: what survives in the output."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    UID_dictionary,
)

from airflow_dicom.deid.keys import InvalidKeyError, PseudonymKey
from airflow_dicom.deid.options import ProfileOptions
from airflow_dicom.deid.pipeline import PseudonymisationError, Pseudonymiser
from airflow_dicom.testing.identified import SAFE_CREATOR, UNSAFE_CREATOR, patient, write_study

KEY = PseudonymKey(b"unit-test-key-0123456789abcdef")
#: string values of the input that the profile keeps on purpose (not identifying)
EXPECTED_TO_SURVIVE = {"CT", "MONOCHROME2", "airflow-dicom synth", "ORIGINAL", "NO", "1", "2", "3"}


def _all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def _string_values(ds: pydicom.Dataset) -> set[str]:
    """Every string value of ``ds`` (nested too), the independent list of what the input discloses."""
    out: set[str] = set()
    for elem in ds.iterall():
        if elem.VR in ("SQ", "OB", "OW", "UN", "US", "SS", "UL", "SL", "FL", "FD") or elem.value in (
            None,
            "",
        ):
            continue
        values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
        out.update(str(v) for v in values)
    return out


@pytest.fixture
def study(tmp_path: Path):
    return write_study(tmp_path / "in", patient(7), series=2, instances=3, burned_in=1)


def test_no_identifying_value_survives_anywhere(tmp_path: Path, study) -> None:
    summary = Pseudonymiser(KEY, tmp_path / "out").run([tmp_path / "in"])
    assert (summary.processed, summary.written, summary.held_back) == (6, 5, {"burned-in annotation": 1})
    blob = _all_bytes(tmp_path / "out")
    for secret in study.secrets():
        assert secret.encode() not in blob, secret
    # independent of the tables: every string value of the input except the harmless ones must be gone
    for value in _string_values(pydicom.dcmread(study.files[0])) - EXPECTED_TO_SURVIVE:
        if len(value) >= 4 and not value.replace(".", "").isdigit() or value in study.secrets():
            assert value.encode() not in blob, value
    # private blocks gone
    out = pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))
    assert not any(elem.tag.is_private for elem in out)
    assert out.PatientIdentityRemoved == "YES"
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_uids_keyed_references_consistent_pixels_identical(tmp_path: Path, study) -> None:
    Pseudonymiser(KEY, tmp_path / "out", ProfileOptions(include_burned_in=True)).run([tmp_path / "in"])
    outputs = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, (tmp_path / "out").rglob("*.dcm"))}
    assert len(outputs) == 6
    assert {str(ds.StudyInstanceUID) for ds in outputs.values()} == {KEY.uid(study.study_uid)}
    assert {str(ds.SeriesInstanceUID) for ds in outputs.values()} == {KEY.uid(u) for u in study.series_uids}
    originals = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, study.files)}
    for sop, original in originals.items():
        out = outputs[KEY.uid(sop)]
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert out.SOPClassUID == original.SOPClassUID and out.SOPClassUID in UID_dictionary
        assert out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert out.PixelData == original.PixelData
        assert out.FrameOfReferenceUID == KEY.uid(study.frame_of_reference_uid)
        for name in ("ReferencedImageSequence", "SourceImageSequence"):
            if name in original:
                ref = getattr(out, name)[0]
                assert ref.ReferencedSOPInstanceUID in outputs  # points at a remapped instance
                assert ref.ReferencedSOPClassUID == original.SOPClassUID
        assert len(str(out.SOPInstanceUID)) <= 64 and str(out.SOPInstanceUID).startswith("2.25.")


def test_dates_shift_per_patient_and_options(tmp_path: Path, study) -> None:
    other = write_study(tmp_path / "in2", patient(8), series=1, instances=1, study_date="20240315")
    options = ProfileOptions.from_names(
        ["patient-characteristics", "device-identity", "clean-descriptors"], [f"{SAFE_CREATOR}:10"]
    )
    Pseudonymiser(KEY, tmp_path / "out", options).run([tmp_path / "in", tmp_path / "in2"])
    by_patient: dict[str, set[str]] = {}
    for path in (tmp_path / "out").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        by_patient.setdefault(str(ds.PatientID), set()).add(ds.StudyDate)
        assert ds.ContentDate == ds.StudyDate and ds.AcquisitionDateTime[:8] == ds.StudyDate
        assert ds.PatientBirthDate == ""
        assert ds.PatientAge == "054Y" and ds.PatientWeight == 71.5  # patient characteristics kept
        assert ds.StationName == "SCANNER-ROOM-7"  # device identity kept
        assert "Zyxwood" not in ds.StudyDescription and ds.StudyDescription.startswith("CT for")
        assert "Zyxwood" not in ds.ImageComments and "MRN" not in ds.ImageComments
        block = ds.private_block(0x0013, SAFE_CREATOR)
        assert block[0x10].value == 42.5
        with pytest.raises(KeyError):
            ds.private_block(0x0011, UNSAFE_CREATOR)
        codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
        assert codes == {"113100", "113105", "113107", "113108", "113109", "113111"}
    pseudo = {
        KEY.pseudonym("patient", study.patient.patient_id),
        KEY.pseudonym("patient", other.patient.patient_id),
    }
    assert set(by_patient) == pseudo
    # one shifted date per patient, not the original, and the shift differs between patients
    dates = {pid: next(iter(d)) for pid, d in by_patient.items() if len(d) == 1}
    assert len(dates) == 2 and "20240315" not in dates.values()
    assert len(set(dates.values())) == 2


@pytest.mark.parametrize(
    "transfer_syntax",
    [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless, ExplicitVRLittleEndian],
)
def test_transfer_syntaxes_and_large_pixel_data(tmp_path: Path, transfer_syntax: str) -> None:
    study = write_study(
        tmp_path / "in",
        patient(9),
        series=1,
        instances=2,
        pixel_bytes=200 * 1024,
        transfer_syntax=transfer_syntax,
    )
    summary = Pseudonymiser(KEY, tmp_path / "out").run([tmp_path / "in"])
    assert summary.written == 2 and not summary.failed
    blob = _all_bytes(tmp_path / "out")
    for secret in study.secrets():
        assert secret.encode() not in blob, secret
    for path in study.files:
        original = pydicom.dcmread(path)
        out = pydicom.dcmread(next((tmp_path / "out").rglob(KEY.uid(str(original.SOPInstanceUID)) + ".dcm")))
        assert out.file_meta.TransferSyntaxUID == transfer_syntax
        assert out.PixelData == original.PixelData
        if "ReferencedImageSequence" in original:
            ref = original.ReferencedImageSequence[0].ReferencedSOPInstanceUID
            assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == KEY.uid(ref)
        assert out.PatientID == KEY.pseudonym("patient", study.patient.patient_id)


def test_keys(tmp_path: Path) -> None:
    other = PseudonymKey(b"another-key-0123456789abcdef")
    uid = "1.2.826.0.1.3680043.8.498.12345"
    assert KEY.uid(uid) == PseudonymKey(b"unit-test-key-0123456789abcdef").uid(uid)
    assert KEY.uid(uid) != other.uid(uid)
    assert KEY.uid("1.2.840.10008.1.2.1") == "1.2.840.10008.1.2.1"  # transfer syntax
    assert KEY.uid("1.2.840.10008.2.16.4") == "1.2.840.10008.2.16.4"  # DCM coding scheme
    # every UID pydicom knows is kept (the rule is the standard's root, which also covers newer ones)
    assert all(KEY.uid(known) == known for known in UID_dictionary)
    assert KEY.fingerprint != other.fingerprint and "unit-test" not in repr(KEY)
    assert -3651 <= KEY.date_shift_days("X") <= -365
    with pytest.raises(InvalidKeyError, match="at least 16"):
        PseudonymKey(b"short")
    (tmp_path / "key").write_text("0123456789abcdef0123\n")
    assert (
        PseudonymKey.from_file(tmp_path / "key").fingerprint
        == PseudonymKey(b"0123456789abcdef0123").fingerprint
    )
    with pytest.raises(ValueError, match="unknown profile option"):
        ProfileOptions.from_names(["retain-everything"])
    with pytest.raises(ValueError, match="CREATOR:EE"):
        ProfileOptions.from_names([], ["no-colon"])


def test_hostile_input_is_reported_and_nothing_written(tmp_path: Path, study) -> None:
    bad = tmp_path / "bad" / "PID-4711-SECRET"  # a patient-layout directory is named after the PatientID
    bad.mkdir(parents=True)
    raw = study.files[0].read_bytes()
    (bad / "truncated.dcm").write_bytes(raw[: len(raw) // 3])
    (bad / "text.dcm").write_bytes(b"not dicom at all" * 20)
    (bad / "header-only.dcm").write_bytes(raw[:200])
    summary = Pseudonymiser(KEY, tmp_path / "out").run([bad])
    assert (summary.processed, summary.written, len(summary.failed)) == (3, 0, 3)
    reasons = sorted(summary.failed)
    assert "header-only.dcm: file meta information is truncated" in reasons[0]
    assert "text.dcm: not a DICOM Part 10 file" in reasons[1]
    assert "truncated.dcm: not readable DICOM (data set is truncated" in reasons[2]
    assert not any("PID-4711" in reason for reason in reasons)
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
    with pytest.raises(PseudonymisationError, match="inside the input"):
        Pseudonymiser(KEY, tmp_path / "in" / "out").run([tmp_path / "in"])
    with pytest.raises(PseudonymisationError, match="does not exist"):
        Pseudonymiser(KEY, tmp_path / "out").run([tmp_path / "missing"])
