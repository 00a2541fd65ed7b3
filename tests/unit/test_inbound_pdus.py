"""The acceptor's own PDU reading and C-STORE-RSP writing match pynetdicom's byte for byte."""

from __future__ import annotations

import struct

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from airflow_dicom.dimse.codec import encode_c_store_rsp, pdata_pdus
from airflow_dicom.dimse.pynetdicom_ext.inbound import _presentation_data_values

CT = "1.2.840.10008.5.1.4.1.1.2"


def _pdu(values: list[tuple[int, bytes]]) -> bytes:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[cx, data] for cx, data in values]
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    return pdu.encode()


@pytest.mark.parametrize(
    "values",
    [
        [(1, b"\x03" + b"command")],
        [(3, b"\x00" + bytes(range(256)) * 20)],
        [(1, b"\x01" + b"first"), (1, b"\x03" + b"last"), (5, b"\x02" + b"data set end")],
        [(7, b"\x02")],  # a last data set fragment with nothing after its control header
    ],
)
def test_presentation_data_values_are_what_pynetdicom_decodes(values: list[tuple[int, bytes]]) -> None:
    encoded = _pdu(values)
    theirs = P_DATA_TF()
    theirs.decode(encoded)
    expected = [list(item) for item in theirs.to_primitive().presentation_data_value_list]
    assert _presentation_data_values(encoded[6:]) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no item
        struct.pack(">L", 1) + b"\x01",  # an item without a message control header
        struct.pack(">L", 20) + b"\x01\x03abc",  # an item longer than the PDU
        _pdu([(1, b"\x03abc")])[6:] + b"\x00\x00",  # trailing bytes that are no item
    ],
)
def test_malformed_p_data_is_left_to_pynetdicom(body: bytes) -> None:
    assert _presentation_data_values(body) is None


@pytest.mark.parametrize(("status", "instance"), [(0x0000, "1.2.3.4"), (0xA700, "1.2.3.45"), (0xC211, None)])
@pytest.mark.parametrize("max_pdu", [0, 16384])
def test_c_store_rsp_pdu_is_what_pynetdicom_sends(status: int, instance: str | None, max_pdu: int) -> None:
    """The whole PDU the DUL thread writes for a C-STORE answer (command + PDV + PDU headers)."""
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 77
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = instance
    rsp.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    theirs = []
    for primitive in message.encode_msg(9, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        theirs.append(pdu.encode())
    command = encode_c_store_rsp(77, status, CT, instance)
    ours = b"".join(pdata_pdus(9, memoryview(command), command=True, max_pdu=max_pdu))
    assert ours == b"".join(theirs)
