"""The codec's fast paths, byte for byte against pydicom's and pynetdicom's encoders and decoders."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from harness.synth import make_instance, write_dataset
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from airflow_dicom.dimse.codec import (
    ElementWalker,
    decode_c_store_rsp,
    decode_command_set,
    encode_c_store_rq,
    encode_c_store_rsp,
    encode_file_meta,
    pdata_pdus,
)
from airflow_dicom.dimse.errors import MalformedDicomError

CT = "1.2.840.10008.5.1.4.1.1.2"
LONG_UID = "1.2.840.113619.2.55.3.604688119.971.1234567890.12"


def _store_rq(
    msg_id: int, sop_instance: str, dataset: bytes = b"\x08\x00\x16\x00\x02\x00\x00\x001\x00"
) -> C_STORE:
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = 2
    req.AffectedSOPClassUID = CT
    req.AffectedSOPInstanceUID = sop_instance
    req.DataSet = io.BytesIO(dataset)
    return req


@pytest.mark.parametrize("sop_instance", ["1.2.3.4", LONG_UID])
def test_c_store_rq_is_what_pynetdicom_encodes(sop_instance: str) -> None:
    msg = C_STORE_RQ()
    msg.primitive_to_message(_store_rq(7, sop_instance))
    command_pdata = next(iter(msg.encode_msg(1, 0)))
    ((_, pdv),) = command_pdata.presentation_data_value_list
    assert encode_c_store_rq(7, CT, sop_instance) == pdv[1:]


@pytest.mark.parametrize(
    ("status", "sop_class", "sop_instance"),
    [
        (0x0000, CT, "1.2.3.4"),
        (0xC210, CT, None),
        (0xA700, None, None),
        (0xC211, "1.2.840.10008.5.1.4.1.1.7", LONG_UID),
    ],
)
def test_c_store_rsp_is_what_pynetdicom_encodes(status: int, sop_class: str, sop_instance: str) -> None:
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


def test_c_store_rsp_from_pynetdicom_is_decoded() -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 513
    rsp.Status = 0xA700
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = "1.2.3.45"
    rsp.ErrorComment = "disk full"
    rsp.OffendingElement = [0x00100020]
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    encoded = next(iter(msg.encode_msg(1, 0))).presentation_data_value_list[0][1][1:]
    decoded = decode_c_store_rsp(encoded)
    assert decoded is not None
    assert (decoded.MessageIDBeingRespondedTo, decoded.Status) == (513, 0xA700)
    assert decoded.AffectedSOPInstanceUID == "1.2.3.45" and decoded.ErrorComment == "disk full"
    assert decoded.OffendingElement == (0x00100020,)
    assert decode_c_store_rsp(encode_c_store_rq(1, "1.2", "1.3")) is None  # a request, not a response
    assert decode_c_store_rsp(encoded[:-3]) is None  # truncated


def test_command_set_from_pynetdicom_is_split() -> None:
    primitive = _store_rq(7, "1.2.3")
    primitive.MoveOriginatorApplicationEntityTitle = "MOVER"
    primitive.MoveOriginatorMessageID = 3
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    (command_pdata, *_rest) = message.encode_msg(1, 16384)
    ((_, pdv),) = command_pdata.presentation_data_value_list
    elements = decode_command_set(pdv[1:])
    assert elements is not None
    assert elements[0x1000].rstrip(b"\0") == b"1.2.3" and elements[0x1030].strip() == b"MOVER"
    assert elements[0x1031] == b"\x03\x00"
    assert decode_command_set(b"\x08\x00\x00\x00") is None  # truncated header
    assert decode_command_set(b"\x08\x00\x10\x00\x02\x00\x00\x00AB") is None  # not group 0000


@pytest.mark.parametrize("max_pdu", [0, 4096, 16384])
def test_pdata_framing_is_what_pynetdicom_sends(max_pdu: int) -> None:
    dataset = bytes(range(256)) * 40  # 10 KB: several fragments at 4 KB
    msg = C_STORE_RQ()
    msg.primitive_to_message(_store_rq(9, LONG_UID, dataset))
    theirs = []
    for primitive in msg.encode_msg(5, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        theirs.append(pdu.encode())
    command = encode_c_store_rq(9, CT, LONG_UID)
    ours = pdata_pdus(5, memoryview(command), command=True, max_pdu=max_pdu)
    ours += pdata_pdus(5, memoryview(dataset), command=False, max_pdu=max_pdu)
    assert b"".join(ours) == b"".join(theirs)


def test_file_meta_is_what_pydicom_writes() -> None:
    ours = encode_file_meta(CT, "1.2.3.45", "1.2.840.10008.1.2.5", "SENDER")
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = CT
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


def _with_sequences(ds: Dataset, undefined: bool) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.3"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.PurposeOfReferenceCodeSequence = Sequence([Dataset()])
    ds.ReferencedStudySequence = Sequence([item, Dataset()])
    ds.ProcedureCodeSequence = Sequence([])
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = undefined
    return ds


SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, ExplicitVRBigEndian]


def _body(tmp_path: Path, syntax: str, undefined: bool) -> bytes:
    if syntax == ExplicitVRBigEndian:
        ds = make_instance(transfer_syntax=ExplicitVRLittleEndian, pixel_bytes=2048)
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    else:
        ds = make_instance(transfer_syntax=syntax, pixel_bytes=2048)
    raw = write_dataset(_with_sequences(ds, undefined), tmp_path / "x.dcm").read_bytes()
    return raw[144 + int.from_bytes(raw[140:144], "little") :]


def _syntax(syntax: str) -> dict[str, bool]:
    return {"implicit": syntax == ImplicitVRLittleEndian, "little": syntax != ExplicitVRBigEndian}


@pytest.mark.parametrize("undefined", [True, False])
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_walker_reads_the_raw_values_pydicom_reads(tmp_path: Path, syntax: str, undefined: bool) -> None:
    body = _body(tmp_path, syntax, undefined)
    ours = ElementWalker(body, **_syntax(syntax)).values()
    ds = read_dataset(io.BytesIO(body), syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian)
    elements = {int(tag): ds.get_item(tag) for tag in ds.keys()}
    raw = {tag: e for tag, e in elements.items() if isinstance(e, RawDataElement)}  # not yet decoded
    nested = {
        tag
        for tag, e in elements.items()
        if (e.length == 0xFFFFFFFF if isinstance(e, RawDataElement) else e.is_undefined_length)
    }
    assert set(ours) | nested == set(elements)  # every element; undefined lengths are walked, not read
    assert {tag: bytes(e.value or b"") for tag, e in raw.items() if tag in ours} == {
        tag: value for tag, value in ours.items() if tag in raw
    }
    ElementWalker(body, **_syntax(syntax), deep=True).check()


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_walker_check_finds_every_truncation(tmp_path: Path, syntax: str) -> None:
    body = _body(tmp_path, syntax, undefined=True)
    for cut in (1, 2, 7, 17, len(body) // 2, len(body) - 8):
        with pytest.raises(MalformedDicomError):
            ElementWalker(body[: len(body) - cut], **_syntax(syntax), deep=True).check()


def test_walker_stops_at_the_requested_tag() -> None:
    ds = make_instance(transfer_syntax=ExplicitVRLittleEndian, pixel_bytes=64)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    body = raw[144 + int.from_bytes(raw[140:144], "little") :]
    found = ElementWalker(body, implicit=False).values({0x00080018, 0x0020000E, 0x7FE00010}, stop=0x0020000E)
    assert found[0x00080018].rstrip(b"\0").decode() == ds.SOPInstanceUID
    assert 0x7FE00010 not in found  # after the stop tag
    with pytest.raises(MalformedDicomError):
        ElementWalker(b"\xfe\xff\x00\xe0\x00\x00\x00\x00", implicit=True).values()  # item tag at top level


def test_vr_tables_and_implementation_uid_are_the_libraries() -> None:
    import pynetdicom
    from pydicom.valuerep import EXPLICIT_VR_LENGTH_16, EXPLICIT_VR_LENGTH_32

    from airflow_dicom.dimse import codec

    assert codec.LONG_LENGTH_VRS == {vr.value.encode() for vr in EXPLICIT_VR_LENGTH_32}
    assert codec.SHORT_LENGTH_VRS == {vr.value.encode() for vr in EXPLICIT_VR_LENGTH_16}
    assert codec.IMPLEMENTATION_CLASS_UID.startswith(pynetdicom.PYNETDICOM_UID_PREFIX)
