"""The receiver's pynetdicom adjustments still apply to the installed pynetdicom; fast file meta."""

from __future__ import annotations

import io

from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_preamble
from pydicom.filewriter import write_file_meta_info

from airflow_dicom.dimse.tuning import check_pynetdicom, check_receiver_adjustments, encode_file_meta


def test_pynetdicom_internals_are_as_expected() -> None:
    assert check_receiver_adjustments() == []
    assert check_pynetdicom() == []


def test_encode_file_meta_is_what_pydicom_writes() -> None:
    ours = encode_file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2.5", "SENDER")
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = "1.2.3.45"
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.9.3811.3.0.4"
    meta.ImplementationVersionName = "AIRFLOW_DICOM"
    meta.SourceApplicationEntityTitle = "SENDER"
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    assert ours == buf.getvalue()
    assert read_preamble(io.BytesIO(ours), False) == b"\x00" * 128
