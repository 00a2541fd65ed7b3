"""The receiver's pynetdicom adjustments still apply to the installed pynetdicom; fast file meta."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_preamble
from pydicom.filewriter import write_file_meta_info
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from airflow_dicom.dimse.tuning import (
    check_pynetdicom,
    check_receiver_adjustments,
    decode_command_set,
    encode_c_store_rsp,
    encode_file_meta,
)


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


@pytest.mark.parametrize(
    ("status", "sop_class", "sop_instance"),
    [
        (0x0000, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"),
        (0xC210, "1.2.840.10008.5.1.4.1.1.2", None),
        (0xA700, None, None),
        (0xC211, "1.2.840.10008.5.1.4.1.1.7", "1.2.3.45"),
    ],
)
def test_encode_c_store_rsp_is_what_pynetdicom_encodes(
    status: int, sop_class: str, sop_instance: str
) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 513
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    (pdata,) = message.encode_msg(1, 16384)
    ((_, pdv),) = pdata.presentation_data_value_list
    assert pdv[0] == 0x03
    assert encode_c_store_rsp(513, status, sop_class, sop_instance) == pdv[1:]


def test_decode_command_set_reads_what_pynetdicom_encodes() -> None:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    primitive.AffectedSOPInstanceUID = "1.2.3"
    primitive.Priority = 2
    primitive.MoveOriginatorApplicationEntityTitle = "MOVER"
    primitive.MoveOriginatorMessageID = 3
    primitive.DataSet = io.BytesIO(b"\x08\x00\x18\x00\x02\x00\x00\x001\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    (command_pdata, *_rest) = message.encode_msg(1, 16384)
    ((_, pdv),) = command_pdata.presentation_data_value_list
    elements = decode_command_set(pdv[1:])
    assert elements is not None
    assert elements[0x1000].rstrip(b"\0") == b"1.2.3" and elements[0x1030].strip() == b"MOVER"
    assert decode_command_set(b"\x08\x00\x00\x00") is None
