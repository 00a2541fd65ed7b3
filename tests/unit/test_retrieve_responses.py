"""C-MOVE-RSP / C-GET-RSP decoded by the codec (pynetdicom_ext.retrieval) give pynetdicom's own primitives."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_GET, C_MOVE

from airflow_dicom.dimse.pynetdicom_ext.retrieval import decode_retrieve_response

STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
FIELDS = (
    "MessageIDBeingRespondedTo",
    "AffectedSOPClassUID",
    "Status",
    "ErrorComment",
    "NumberOfRemainingSuboperations",
    "NumberOfCompletedSuboperations",
    "NumberOfFailedSuboperations",
    "NumberOfWarningSuboperations",
)


def _encoded(primitive: object, message_class: type) -> tuple[bytes, object]:
    """The command set pynetdicom sends for ``primitive``, and pynetdicom's decoding of that message."""
    message = message_class()
    message.primitive_to_message(primitive)
    pdatas = list(message.encode_msg(3, 16384))
    command = pdatas[0].presentation_data_value_list[0][1][1:]
    received = DIMSEMessage()
    assert any(received.decode_msg(pdata) for pdata in pdatas)
    return command, received.message_to_primitive()


@pytest.mark.parametrize(
    ("kind", "message_class", "model"),
    [(C_MOVE, C_MOVE_RSP, STUDY_ROOT_MOVE), (C_GET, C_GET_RSP, STUDY_ROOT_GET)],
)
@pytest.mark.parametrize(
    ("status", "counts", "comment"),
    [
        (0xFF00, (4, 1, 0, 0), None),  # pending
        (0x0000, (None, 7, 0, 0), None),  # success (no remaining count, as Orthanc sends it)
        (0xA702, (0, 2, 3, 0), "out of resources"),  # failure with a comment
        (0xFE00, (0, 1, 0, 0), None),  # cancel
    ],
)
def test_responses_without_identifier_decode_as_pynetdicom_decodes_them(
    kind: type, message_class: type, model: str, status: int, counts: tuple, comment: str | None
) -> None:
    primitive = kind()
    primitive.MessageIDBeingRespondedTo = 17
    primitive.AffectedSOPClassUID = model
    primitive.Status = status
    primitive.ErrorComment = comment
    for keyword, value in zip(FIELDS[4:], counts, strict=True):
        setattr(primitive, keyword, value)
    command, reference = _encoded(primitive, message_class)
    decoded = decode_retrieve_response(command)
    assert isinstance(decoded, kind)
    for field in FIELDS:
        assert getattr(decoded, field) == getattr(reference, field), field
    assert decoded.is_valid_response


def test_responses_with_an_identifier_and_other_messages_are_left_to_pynetdicom() -> None:
    failed = Dataset()
    failed.FailedSOPInstanceUIDList = ["1.2.3.4", "1.2.3.5"]
    primitive = C_MOVE()
    primitive.MessageIDBeingRespondedTo = 2
    primitive.Status = 0xB000
    primitive.NumberOfCompletedSuboperations = 3
    primitive.NumberOfFailedSuboperations = 2
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, failed)
    primitive.Identifier = io.BytesIO(buffer.getvalue())
    command, _ = _encoded(primitive, C_MOVE_RSP)
    assert decode_retrieve_response(command) is None  # a data set follows: pynetdicom decodes it
    assert decode_retrieve_response(command[:-4]) is None  # truncated
    assert decode_retrieve_response(b"") is None
