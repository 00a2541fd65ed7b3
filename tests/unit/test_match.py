"""C-FIND matches decoded key by key: value for value what pydicom decodes, over many identifiers.

Identifiers are written element by element (exact bytes: padding, NULs, backslashes, empty values,
sequences, character sets, explicit and implicit VR, big endian), read once by pydicom (what pynetdicom
gave the walk before) and once as a :class:`Match`; every key must give the same values, the same typed
table and the same Dataset. The C-FIND command sets are compared with pynetdicom's.
"""

from __future__ import annotations

import io
import random
import struct
import warnings

import pyarrow as pa
import pytest
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.filereader import read_dataset
from pynetdicom.dimse_messages import C_FIND_RQ, C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND

from airflow_dicom.dimse.codec import LONG_LENGTH_VRS, decode_c_find_rsp, encode_c_find_rq
from airflow_dicom.dimse.query.match import Match, charset_codec, element_items, value_items
from airflow_dicom.landing.table import TableBuilder

#: the keys compared, one or more per VR the decoder knows, plus VRs it hands to pydicom
KEYWORDS = [
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AcquisitionDateTime",
    "RetrieveAETitle",
    "QueryRetrieveLevel",
    "ModalitiesInStudy",
    "PatientAge",
    "StudyInstanceUID",
    "AccessionNumber",
    "StudyDescription",
    "PatientName",
    "OtherPatientNames",
    "PatientID",
    "StudyID",
    "PatientComments",
    "AdditionalPatientHistory",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "PatientWeight",
    "PatientSize",
    "ReferringPhysicianName",
    "InstitutionName",
    "PixelSpacing",
    "Rows",
    "RetrieveURL",
    "TextValue",
]
CHARSETS = [
    b"",
    b"ISO_IR 100",
    b"ISO_IR 192",
    b"ISO_IR 6",
    b"ISO_IR 144",
    b"GB18030",
    b"\\ISO 2022 IR 87",
    b"ISO 2022 IR 6\\ISO 2022 IR 100",
    b"ISO_IR 13",
    b"NOT A CHARSET",
]
#: text pieces: ASCII with the characters that matter, Latin-1, UTF-8, Japanese (ISO 2022 escapes)
PIECES = [
    "DOE",
    "Doe^John",
    "  lead",
    "trail  ",
    "a=b",
    "^^",
    "=",
    "Müller",
    "Ærøskøbing",
    "Ŝ",
    "山田^太郎",
    "Иванов",
    "",
    " ",
    "1.2.840.10008",
    "0012",
    " 12 ",
    "12.0",
    "1.5",
    "abc",
    "-3.25e2",
    "20240229",
    "2024.02.29",
    "1230",
    "12:30:45.5",
    "20240101120000+0100",
    "CT",
    "x\tTAB",
    "~",
]


def _encode_text(text: str, charset: bytes) -> bytes:
    for codec in {b"ISO_IR 192": ["utf-8"], b"GB18030": ["gb18030"], b"ISO_IR 144": ["iso8859_5"]}.get(
        charset, ["latin-1"]
    ):
        try:
            return text.encode(codec)
        except UnicodeEncodeError:
            pass
    if charset == b"\\ISO 2022 IR 87":
        try:
            return text.encode("iso2022_jp")  # escape sequences
        except UnicodeEncodeError:
            pass
    return text.encode("utf-8")  # bytes the charset may not decode: pydicom replaces, so must we


def _value(rng: random.Random, vr: str, charset: bytes) -> bytes:
    if vr == "US":
        return struct.pack("<H", rng.randrange(65536))
    if vr == "SQ":
        return b""
    count = rng.choice([1, 1, 1, 2, 3])
    parts = [rng.choice(PIECES) for _ in range(count)]
    raw = b"\\".join(_encode_text(p, charset) for p in parts)
    pad = rng.choice([b"", b" ", b"\0", b"  ", b" \0"])
    raw += pad
    if rng.random() < 0.08:
        raw = b""
    if len(raw) % 2:
        raw += b" " if vr != "UI" else b"\0"
    return raw


def _element(tag: int, vr: str, value: bytes, implicit: bool, little: bool) -> bytes:
    end = "<" if little else ">"
    head = struct.pack(f"{end}HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack(f"{end}I", len(value)) + value
    if vr.encode() in LONG_LENGTH_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack(f"{end}I", len(value)) + value
    return head + vr.encode() + struct.pack(f"{end}H", len(value)) + value


def _sequence(implicit: bool, little: bool) -> bytes:
    """ReferencedStudySequence (0008,1110), undefined length, one item holding a UID: to be skipped."""
    end = "<" if little else ">"
    uid = _element(0x00081155, "UI", b"1.2.3.4\0", implicit, little)
    item = (
        struct.pack(f"{end}HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + uid
        + struct.pack(f"{end}HHI", 0xFFFE, 0xE00D, 0)
    )
    seq_end = struct.pack(f"{end}HHI", 0xFFFE, 0xE0DD, 0)
    head = struct.pack(f"{end}HH", 0x0008, 0x1110)
    length = struct.pack(f"{end}I", 0xFFFFFFFF)
    return head + (length if implicit else b"SQ\0\0" + length) + item + seq_end


def _identifier(rng: random.Random, implicit: bool, little: bool) -> bytes:
    charset = rng.choice(CHARSETS)
    elements: dict[int, bytes] = {}
    if charset:
        value = charset + (b" " if len(charset) % 2 else b"")
        elements[keyword_dict["SpecificCharacterSet"]] = _element(0x00080005, "CS", value, implicit, little)
    for keyword in rng.sample(KEYWORDS[1:], k=rng.randrange(4, len(KEYWORDS) - 1)):
        tag = keyword_dict[keyword]
        vr = str(dictionary_VR(tag))
        if not implicit and rng.random() < 0.03:
            vr = "UN"  # pydicom replaces UN by the dictionary VR: the fallback must do the same
        elements[tag] = _element(tag, vr, _value(rng, vr, charset), implicit, little)
    if rng.random() < 0.3:
        elements[0x00081110] = _sequence(implicit, little)
    return b"".join(elements[tag] for tag in sorted(elements))


def _pydicom(raw: bytes, implicit: bool, little: bool):  # noqa: ANN202 - a pydicom Dataset
    return read_dataset(io.BytesIO(raw), implicit, little)


SYNTAXES = [(False, True), (True, True), (False, False)]


@pytest.mark.parametrize(("implicit", "little"), SYNTAXES)
def test_every_key_decodes_to_pydicoms_values(implicit: bool, little: bool) -> None:
    rng = random.Random(f"match-{implicit}-{little}")
    fast = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values on purpose
        for _ in range(250):
            raw = _identifier(rng, implicit, little)
            theirs = _pydicom(raw, implicit, little)
            match = Match.from_bytes(raw, implicit=implicit, little=little)
            for keyword in KEYWORDS + ["ReferencedStudySequence", "PatientBirthDate"]:
                if keyword == "ReferencedStudySequence":
                    continue  # sequences are never keys; the walker steps over them
                expected = element_items(theirs[keyword].value) if keyword in theirs else []
                got = match.items(keyword)
                assert (keyword in match) == (keyword in theirs), keyword
                vr = str(dictionary_VR(keyword_dict[keyword]))
                if vr in ("IS", "DS"):  # pydicom gives numbers, the fast path text: compared as landed below
                    continue
                assert got == [str(v) if not isinstance(v, (int, float)) else v for v in expected], (
                    keyword,
                    raw,
                )
            fast += sum(1 for k in KEYWORDS if k in match)
            assert match.dataset() == theirs
    assert fast > 1000


@pytest.mark.parametrize(("implicit", "little"), SYNTAXES)
def test_matches_land_the_same_table_as_pydicom_datasets(implicit: bool, little: bool) -> None:
    rng = random.Random(f"table-{implicit}-{little}")
    columns = [k for k in KEYWORDS if k not in ("SpecificCharacterSet",)]
    theirs = TableBuilder(columns, source_node="n", level="STUDY", interval=None)
    ours = TableBuilder(columns, source_node="n", level="STUDY", interval=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(250):
            raw = _identifier(rng, implicit, little)
            dataset = _pydicom(raw, implicit, little)
            try:
                row = TableBuilder(columns, source_node="n", level="STUDY", interval=None)
                row.add(dataset)
                row.table()
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                continue  # a value its column cannot hold: this row could not be landed before either
            theirs.add(dataset)
            ours.add(Match.from_bytes(raw, implicit=implicit, little=little))
    assert theirs.rows > 100
    assert ours.table().equals(theirs.table())
    assert ours.invalid == theirs.invalid


def test_fast_path_rules_by_vr() -> None:
    assert value_items("CS", b" CT\\MR \\\\ ", "iso8859") == [" CT", "MR "]
    assert value_items("UI", b"1.2\0", None) == ["1.2"]
    assert value_items("AE", b" A \\ B ", None) == ["A", "B"]
    assert value_items("LO", "Müller \\x".encode(), "UTF8") == ["Müller", "x"]
    assert value_items("LT", b" a\\b \0", "iso8859") == [" a", "b"]
    assert value_items("PN", b"Doe^John=", "iso8859") is None  # component groups: pydicom's PersonName
    assert value_items("PN", b"\x1b$B", "iso2022_jp") is None  # ISO 2022 escapes: pydicom
    assert value_items("SH", b"\xff\xfe", "UTF8") is None  # not UTF-8: pydicom (replacement characters)
    assert value_items("US", b"\x01\x00", "iso8859") is None  # binary: pydicom
    assert value_items("IS", b" 12\\-3 ", None) == [" 12", "-3"]
    assert value_items("IS", b"1.5 ", None) is None  # pydicom's ISfloat (landed as 1, as before)
    assert value_items("DS", b" 1.5\\-2e3", None) == ["1.5", "-2e3"]
    assert charset_codec(None) == "iso8859"
    assert charset_codec(b"ISO_IR 192") == "UTF8"
    assert charset_codec(b"\\ISO 2022 IR 87") is None


def test_walk_keys_set_and_merged_like_datasets() -> None:
    study_raw = _element(0x0020000D, "UI", b"1.2.3\0", False, True) + _element(
        0x00080061, "CS", b"CT\\MR ", False, True
    )
    series_raw = _element(0x0020000E, "UI", b"1.2.3.4\0", False, True)
    study = Match.from_bytes(study_raw, implicit=False, little=True)
    series = Match.from_bytes(series_raw, implicit=False, little=True).merge(study)
    series.set("QueryRetrieveLevel", "SERIES")
    study.set("QueryRetrieveLevel", "STUDY")
    assert series.text("StudyInstanceUID") == "1.2.3" and series.items("ModalitiesInStudy") == ["CT", "MR"]
    assert series.text("QueryRetrieveLevel") == "SERIES"
    ds = series.dataset()
    assert (
        ds.StudyInstanceUID == "1.2.3"
        and ds.SeriesInstanceUID == "1.2.3.4"
        and ds.QueryRetrieveLevel == "SERIES"
    )
    assert series.StudyInstanceUID == "1.2.3"  # attribute access, as on a Dataset


@pytest.mark.parametrize("msg_id", [1, 513])
def test_c_find_rq_is_what_pynetdicom_encodes(msg_id: int) -> None:
    req = C_FIND()
    req.MessageID = msg_id
    req.Priority = 2
    req.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    req.Identifier = io.BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    msg = C_FIND_RQ()
    msg.primitive_to_message(req)
    command_pdata = next(iter(msg.encode_msg(1, 0)))
    ((_, pdv),) = command_pdata.presentation_data_value_list
    assert encode_c_find_rq(msg_id, "1.2.840.10008.5.1.4.1.2.2.1") == pdv[1:]


@pytest.mark.parametrize(("status", "identifier"), [(0xFF00, True), (0x0000, False), (0xA700, False)])
def test_c_find_rsp_from_pynetdicom_is_decoded(status: int, identifier: bool) -> None:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 513
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    rsp.Status = status
    if identifier:
        rsp.Identifier = io.BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    if status == 0xA700:
        rsp.ErrorComment = "no room"
    msg = C_FIND_RSP()
    msg.primitive_to_message(rsp)
    encoded = next(iter(msg.encode_msg(1, 0))).presentation_data_value_list[0][1][1:]
    decoded = decode_c_find_rsp(encoded)
    assert decoded is not None
    assert (decoded.MessageIDBeingRespondedTo, decoded.Status, decoded.has_identifier) == (
        513,
        status,
        identifier,
    )
    assert decoded.ErrorComment == ("no room" if status == 0xA700 else None)
    assert decode_c_find_rsp(encode_c_find_rq(1, "1.2")) is None  # a request, not a response
