"""The receiver's pynetdicom adjustments still apply to the installed pynetdicom; fast file meta."""

from __future__ import annotations

from airflow_dicom.dimse.tuning import check_pynetdicom, check_receiver_adjustments


def test_pynetdicom_internals_are_as_expected() -> None:
    assert check_receiver_adjustments() == []
    assert check_pynetdicom() == []
