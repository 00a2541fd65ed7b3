"""Storage layout: which identifiers become path components, and that nothing can escape the data dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.hostile import HOSTILE_VALUES

from airflow_dicom.dimse.errors import UnsafeIdentifierError
from airflow_dicom.dimse.storage_layout import (
    Layout,
    checked_uid,
    is_valid_uid,
    patient_dir_name,
    relative_instance_path,
    resolve_inside,
)


@pytest.mark.parametrize("value", ["1.2.840.10008.5.1.4.1.1.2", "1", "0.0", "1.2.03", "9" * 64])
def test_valid_uids(value: str) -> None:
    assert is_valid_uid(value)
    assert checked_uid("SOPInstanceUID", value) == value


@pytest.mark.parametrize("name", sorted(HOSTILE_VALUES))
def test_hostile_uids_are_refused(name: str) -> None:
    value = HOSTILE_VALUES[name]
    assert not is_valid_uid(value)
    with pytest.raises(UnsafeIdentifierError) as info:
        checked_uid("StudyInstanceUID", value)
    assert info.value.field == "StudyInstanceUID"
    assert value not in str(info.value) or value == ""  # the message never echoes the value


def test_uid_of_65_characters_is_refused() -> None:
    assert not is_valid_uid("1" * 65)


@pytest.mark.parametrize(
    ("patient_id", "expected"),
    [
        ("PAT-00001", "PAT-00001"),
        ("00000042", "00000042"),
        ("..", "%2E%2E"),
        ("../x", "%2E%2E%2Fx"),
        ("/etc/x", "%2Fetc%2Fx"),
        ("123/45", "123%2F45"),
        ("a\\b", "a%5Cb"),
        ("Müller", "M%C3%BCller"),
        ("a_b", "a%5Fb"),
        ("50%", "50%25"),
        ("", "_"),
    ],
)
def test_patient_dir_name(patient_id: str, expected: str) -> None:
    assert patient_dir_name(patient_id) == expected


def test_patient_dir_names_never_collide_and_are_single_safe_components() -> None:
    ids = [
        "",
        "_",
        "%5F",
        "a_b",
        "a%5Fb",
        ".",
        "..",
        "%2E",
        "A",
        "a",
        "a b",
        "a  b",
        "x/y",
        "x%2Fy",
        "é",
        "e",
    ]
    unique_ids = set(ids) | set(HOSTILE_VALUES.values())
    names = [patient_dir_name(i) for i in unique_ids if len(i) <= 64]
    assert len(set(names)) == len(names)
    for name in names:
        assert name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def test_patient_id_longer_than_64_is_refused() -> None:
    with pytest.raises(UnsafeIdentifierError):
        patient_dir_name("x" * 200)


def test_layouts() -> None:
    ids = {"sop_uid": "1.2.3", "study_uid": "1.2", "series_uid": "1.2.4", "patient_id": "../P"}
    assert relative_instance_path(Layout.FLAT, **ids) == "1.2.3.dcm"
    assert relative_instance_path(Layout.STUDY, **ids) == "1.2/1.2.4/1.2.3.dcm"
    assert relative_instance_path(Layout.PATIENT, **ids) == "%2E%2E%2FP/1.2/1.2.4/1.2.3.dcm"
    assert Layout.parse("Patient") is Layout.PATIENT
    with pytest.raises(ValueError, match="unknown storage layout"):
        Layout.parse("by-date")


def test_flat_layout_needs_only_the_sop_uid() -> None:
    assert relative_instance_path(Layout.FLAT, sop_uid="1.2.3", study_uid="../x") == "1.2.3.dcm"
    with pytest.raises(UnsafeIdentifierError):
        relative_instance_path(Layout.STUDY, sop_uid="1.2.3", study_uid="../x", series_uid="1.2")


def test_resolve_inside_refuses_escapes_and_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "1.2").mkdir(parents=True)
    assert resolve_inside(root, "1.2/3.dcm") == root / "1.2" / "3.dcm"
    for bad in ("../x.dcm", "/etc/x", "a//b", "./x"):
        with pytest.raises(UnsafeIdentifierError):
            resolve_inside(root, bad)
    (root / "9.9").symlink_to(tmp_path)
    with pytest.raises(UnsafeIdentifierError, match="outside"):
        resolve_inside(root, "9.9/1.dcm")
