"""Reading DICOM files for sending: the file meta and a structural check, never the pixel data.

A sender needs, per file, only the SOP class, SOP instance and transfer syntax (from the file meta,
group 0002) and the offset where the data set starts: the bytes after it are sent as they are.
:func:`read_meta` reads just the meta information; :func:`check_structure` walks the data set's element
headers (skipping values) to tell a complete file from a truncated one before anything is sent.

Parsing is done here with :mod:`struct` rather than pydicom: reading the meta of 1,000 files with
pydicom costs more than sending them.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from airflow_dicom.dimse.errors import MalformedDicomError, NotDicomError

#: PS3.10 7.1: 128-byte preamble then the magic bytes.
PREAMBLE_LENGTH = 128
MAGIC = b"DICM"

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
UNCOMPRESSED = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN)

#: explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_UNDEFINED = 0xFFFFFFFF
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQUENCE_END = (0xFFFE, 0xE0DD)

_META_READ = 4096


@dataclass(frozen=True)
class DicomFileInfo:
    """What a sender needs to know about one DICOM file.

    :param path: the file.
    :param sop_class_uid: (0002,0002) Media Storage SOP Class UID.
    :param sop_instance_uid: (0002,0003) Media Storage SOP Instance UID.
    :param transfer_syntax: (0002,0010) Transfer Syntax UID.
    :param dataset_offset: where the data set starts (the end of the file meta).
    :param size: the file size in bytes.
    """

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    dataset_offset: int
    size: int

    @property
    def dataset_size(self) -> int:
        """Bytes of the data set (what is sent)."""
        return self.size - self.dataset_offset


def _uid(raw: bytes) -> str:
    return raw.rstrip(b"\0 ").decode("ascii", "replace")


def read_meta(path: str | os.PathLike[str]) -> DicomFileInfo:
    """Read the file meta information of a DICOM Part 10 file.

    :param path: the file.
    :raises NotDicomError: no ``DICM`` magic after the preamble.
    :raises MalformedDicomError: the meta information is truncated or lacks a required element.
    :raises OSError: the file cannot be read.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_META_READ)
        if len(head) < PREAMBLE_LENGTH + 4 or head[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] != MAGIC:
            raise NotDicomError("no DICM prefix after the 128-byte preamble: not a DICOM Part 10 file")
        values: dict[int, bytes] = {}
        offset = PREAMBLE_LENGTH + 4
        meta_end: int | None = None
        while True:
            if offset + 8 > len(head):
                more = f.read(max(_META_READ, offset + 8 - len(head)))
                if not more:
                    break
                head += more
                continue
            group, element = struct.unpack_from("<HH", head, offset)
            if group != 0x0002 or (meta_end is not None and offset >= meta_end):
                break
            vr = head[offset + 4 : offset + 6]
            if vr in _LONG_VRS:
                if offset + 12 > len(head):
                    more = f.read(_META_READ)
                    if not more:
                        raise MalformedDicomError("file meta information is truncated")
                    head += more
                    continue
                (length,) = struct.unpack_from("<I", head, offset + 8)
                start = offset + 12
            else:
                (length,) = struct.unpack_from("<H", head, offset + 6)
                start = offset + 8
            if length == _UNDEFINED:
                raise MalformedDicomError(f"file meta element (0002,{element:04X}) has an undefined length")
            while start + length > len(head):
                more = f.read(max(_META_READ, start + length - len(head)))
                if not more:
                    raise MalformedDicomError("file meta information is truncated")
                head += more
            values[element] = head[start : start + length]
            if element == 0x0000 and length == 4:
                meta_end = start + 4 + struct.unpack("<I", values[0])[0]
            offset = start + length
    missing = [
        name
        for element, name in (
            (0x0002, "MediaStorageSOPClassUID"),
            (0x0003, "MediaStorageSOPInstanceUID"),
            (0x0010, "TransferSyntaxUID"),
        )
        if not values.get(element, b"").strip(b"\0 ")
    ]
    if missing:
        raise MalformedDicomError(f"file meta information lacks {', '.join(missing)}")
    if offset > size:
        raise MalformedDicomError("file meta information is truncated")
    return DicomFileInfo(
        path=path,
        sop_class_uid=_uid(values[0x0002]),
        sop_instance_uid=_uid(values[0x0003]),
        transfer_syntax=_uid(values[0x0010]),
        dataset_offset=offset,
        size=size,
    )


class _Walker:
    """Walks element headers of an encoded data set, skipping values, to check it is complete."""

    def __init__(self, data: memoryview, implicit: bool, little: bool) -> None:
        self.data = data
        self.end = len(data)
        self.implicit = implicit
        fmt = "<" if little else ">"
        self.tag = struct.Struct(fmt + "HH")
        self.u16 = struct.Struct(fmt + "H")
        self.u32 = struct.Struct(fmt + "I")

    def _need(self, offset: int, count: int, what: str) -> None:
        if offset + count > self.end:
            raise MalformedDicomError(
                f"data set is truncated: {what} needs {count} bytes at offset {offset}, "
                f"only {max(0, self.end - offset)} left"
            )

    def _header(self, offset: int) -> tuple[int, int, int, int, bytes]:
        """(group, element, value length, value offset, vr) of the element at ``offset``."""
        self._need(offset, 8, "an element header")
        group, element = self.tag.unpack_from(self.data, offset)
        if group == 0xFFFE or self.implicit:
            (length,) = self.u32.unpack_from(self.data, offset + 4)
            return group, element, length, offset + 8, b""
        vr = bytes(self.data[offset + 4 : offset + 6])
        if vr in _LONG_VRS:
            self._need(offset, 12, f"element ({group:04X},{element:04X})")
            (length,) = self.u32.unpack_from(self.data, offset + 8)
            return group, element, length, offset + 12, vr
        if not vr.isalpha() or not vr.isupper():
            raise MalformedDicomError(f"invalid VR {vr!r} for element ({group:04X},{element:04X})")
        (length,) = self.u16.unpack_from(self.data, offset + 6)
        return group, element, length, offset + 8, vr

    def dataset(self, offset: int, end: int | None, depth: int = 0) -> int:
        """Walk elements from ``offset`` to ``end`` (or an item delimiter when ``end`` is None)."""
        if depth > 32:
            raise MalformedDicomError("sequences nested more than 32 levels deep")
        stop = self.end if end is None else end
        while offset < stop:
            group, element, length, value, vr = self._header(offset)
            if (group, element) == _ITEM_END and end is None:
                return value
            if length == _UNDEFINED:
                if vr == b"UN":  # a sequence whose content is implicit VR little endian (PS3.5 6.2.2)
                    offset = _Walker(self.data, True, True).items(value, depth, fragments=False)
                elif vr in (b"OB", b"OW") or (group, element) == (0x7FE0, 0x0010) and not self.implicit:
                    offset = self.items(value, depth, fragments=True)  # encapsulated pixel data
                else:  # SQ (explicit) or any undefined-length element in implicit VR
                    offset = self.items(value, depth, fragments=False)
                continue
            self._need(value, length, f"element ({group:04X},{element:04X})")
            if vr == b"SQ" and length:
                self.items(value, depth, fragments=False, end=value + length)
            offset = value + length
        if end is None and depth > 0:
            raise MalformedDicomError("data set is truncated: an item has no end")
        return offset

    def items(self, offset: int, depth: int, *, fragments: bool, end: int | None = None) -> int:
        """Walk sequence items (or pixel data fragments) until the sequence delimiter or ``end``."""
        while True:
            if end is not None and offset >= end:
                return offset
            self._need(offset, 8, "an item header")
            group, element = self.tag.unpack_from(self.data, offset)
            (length,) = self.u32.unpack_from(self.data, offset + 4)
            offset += 8
            if (group, element) == _SEQUENCE_END:
                return offset
            if (group, element) != _ITEM:
                raise MalformedDicomError(f"expected an item, found ({group:04X},{element:04X})")
            if length == _UNDEFINED and not fragments:
                offset = self.dataset(offset, None, depth + 1)
                continue
            self._need(offset, length, "an item")
            if not fragments and length:
                self.dataset(offset, offset + length, depth + 1)
            offset += length


def check_structure(data: bytes | memoryview, transfer_syntax: str) -> None:
    """Check that an encoded data set is complete, without decoding any value.

    Deflated data sets are inflated first (and must inflate completely). Other transfer syntaxes: every
    element header, sequence item and pixel data fragment must fit in ``data``.

    :param data: the encoded data set (the bytes following the file meta).
    :param transfer_syntax: its transfer syntax UID.
    :raises MalformedDicomError: the data set is truncated or malformed.
    """
    view = memoryview(data)
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            view = memoryview(inflater.decompress(bytes(view)) + inflater.flush())
        except zlib.error as exc:
            raise MalformedDicomError(f"deflated data set cannot be inflated: {exc}") from None
        if not inflater.eof:
            raise MalformedDicomError("deflated data set is truncated")
    implicit = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    little = transfer_syntax != EXPLICIT_VR_BIG_ENDIAN
    if len(view) == 0:
        raise MalformedDicomError("the file has no data set after its meta information")
    _Walker(view, implicit, little).dataset(0, len(view))


def read_dataset_bytes(info: DicomFileInfo, *, check: bool = True) -> memoryview:
    """The encoded data set of a file (the bytes after its meta), structurally checked.

    :param info: from :func:`read_meta`.
    :param check: run :func:`check_structure` on it.
    :raises MalformedDicomError: the file changed since :func:`read_meta`, or is truncated/malformed.
    :raises OSError: the file cannot be read.
    """
    raw = Path(info.path).read_bytes()
    if len(raw) != info.size:
        raise MalformedDicomError(f"the file changed while being sent ({info.size} -> {len(raw)} bytes)")
    data = memoryview(raw)[info.dataset_offset :]
    if check:
        check_structure(data, info.transfer_syntax)
    return data
