"""The one DICOM codec of the fast paths: element walker, VR table, command sets, PDV framing, file meta.

pydicom decodes and encodes whole datasets; the fast paths need much less and need it per message:

* :class:`ElementWalker` walks element headers without decoding values. The file reader checks with it
  that a file's data set is complete before sending it (:meth:`ElementWalker.check`), the receiver reads
  the few identifiers a storage layout needs (:meth:`ElementWalker.values`), C-FIND matches are split
  into their elements (:meth:`ElementWalker.elements`, for :mod:`airflow_dicom.dimse.query.match`), and
  both DIMSE providers split command sets with it (:func:`decode_command_set`).
* Command sets are encoded directly (:func:`encode_c_store_rq`, :func:`encode_c_store_rsp`,
  :func:`encode_c_find_rq`; :func:`decode_c_store_rsp`, :func:`decode_c_find_rsp`), byte for
  byte what pynetdicom encodes (tests compare them), for a fraction of pydicom's cost: per message,
  pydicom's encoding and decoding of the small command sets was ~70% of the receiver's CPU.
* :func:`pdata_pdus` frames an encoded message into P-DATA-TF PDUs (PS3.8 9.3.5) for the raw send path.
* :func:`encode_file_meta` writes the preamble and File Meta Information of a received instance, the same
  bytes as pydicom's ``write_file_meta_info`` (and pynetdicom's ``encode_file_meta``, which calls it) in
  ~4 µs instead of ~420 µs (measured here: both need a validated ``FileMetaDataset`` first).

The VR tables and the Implementation Class UID are pydicom's and pynetdicom's values, written out here so
that importing the codec imports neither (pydicom's import alone costs ~0.4 s of a command's start-up);
``tests/unit/test_codec.py`` checks them against the libraries. Everything here is pure: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass

from airflow_dicom.dimse.errors import MalformedDicomError

#: explicit VRs with a 2-byte reserved field and a 4-byte value length (PS3.5 7.1.2): pydicom's
#: ``valuerep.EXPLICIT_VR_LENGTH_32``.
LONG_LENGTH_VRS: frozenset[bytes] = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
#: explicit VRs with a 2-byte value length: pydicom's ``valuerep.EXPLICIT_VR_LENGTH_16``.
SHORT_LENGTH_VRS: frozenset[bytes] = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split()
)
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
#: deepest sequence nesting the walker follows
MAX_DEPTH = 32

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
#: (explicit VR header: group, element, VR, 2-byte length; implicit VR header: group, element, length; u32)
_LITTLE_ENDIAN = (struct.Struct("<HH2sH"), struct.Struct("<HHI"), _U32)
_BIG_ENDIAN = (struct.Struct(">HH2sH"), struct.Struct(">HHI"), struct.Struct(">I"))
_COMMAND_ELEMENT = struct.Struct("<HHI")


def decode_text(raw: bytes) -> str:
    """An ASCII value (UI, AE, CS...) as text: trailing NULs and surrounding spaces removed.

    :param raw: the encoded value.
    """
    return raw.decode("ascii", "replace").rstrip("\0 ").strip()


def tag_text(tag: int) -> str:
    """``(GGGG,EEEE)`` for a tag given as one integer.

    :param tag: ``group << 16 | element``.
    """
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# ---------------------------------------------------------------------------- the element walker


class ElementWalker:
    """Walks the element headers of an encoded data set, never decoding a value.

    Undefined-length values are walked to their delimiter: sequences item by item, UN sequences as
    implicit VR little endian (PS3.5 6.2.2), encapsulated pixel data fragment by fragment. Anything that
    does not fit in the data raises :class:`~airflow_dicom.dimse.errors.MalformedDicomError`.

    :param data: the encoded data set (or command set).
    :param implicit: implicit VR (else explicit).
    :param little: little endian (else big endian; explicit VR only).
    :param deep: also walk the items of defined-length sequences (a complete structural check).
    """

    __slots__ = ("data", "deep", "end", "implicit", "_explicit", "_implicit", "_item", "_u32")

    def __init__(
        self, data: bytes | bytearray | memoryview, *, implicit: bool, little: bool = True, deep: bool = False
    ) -> None:
        self.data = data
        self.end = len(data)
        self.implicit = implicit
        self.deep = deep
        structs = _LITTLE_ENDIAN if little else _BIG_ENDIAN
        self._explicit, self._implicit, self._u32 = structs
        self._item = self._implicit  # item and delimiter headers: tag and a 4-byte length, in any VR

    def _need(self, pos: int, count: int, what: str) -> None:
        if pos + count > self.end:
            raise MalformedDicomError(
                f"data set is truncated: {what} needs {count} bytes at offset {pos}, "
                f"only {max(0, self.end - pos)} left"
            )

    def header(self, pos: int) -> tuple[int, bytes | None, int, int]:
        """``(tag, VR, value length, value offset)`` of the element at ``pos``.

        The VR is None in implicit VR and for item and delimiter tags.

        :param pos: offset of the element's tag.
        """
        if pos + 8 > self.end:
            self._need(pos, 8, "an element header")
        if self.implicit:
            group, element, length = self._implicit.unpack_from(self.data, pos)
            return group << 16 | element, None, length, pos + 8
        group, element, vr, length = self._explicit.unpack_from(self.data, pos)
        tag = group << 16 | element
        if group == 0xFFFE:  # items and delimiters have no VR
            return tag, None, self._u32.unpack_from(self.data, pos + 4)[0], pos + 8
        if vr in SHORT_LENGTH_VRS:
            return tag, vr, length, pos + 8
        if vr in LONG_LENGTH_VRS:
            self._need(pos, 12, f"element {tag_text(tag)}")
            return tag, vr, self._u32.unpack_from(self.data, pos + 8)[0], pos + 12
        if not (vr.isalpha() and vr.isupper()):
            raise MalformedDicomError(f"invalid VR {vr!r} for element {tag_text(tag)}")
        return tag, vr, length, pos + 8  # a VR this table does not know yet: the short form

    def skip(self, tag: int, vr: bytes | None, length: int, value: int, depth: int = 0) -> int:
        """The offset after an element's value (walking it when its length is undefined).

        :param tag: the element's tag.
        :param vr: its VR (None in implicit VR).
        :param length: its value length.
        :param value: the offset of its value.
        :param depth: sequence nesting depth of the element.
        """
        if length == UNDEFINED_LENGTH:
            if vr == b"UN":  # a sequence encoded in implicit VR little endian
                inner = ElementWalker(self.data, implicit=True, deep=self.deep)
                return inner._items(value, depth, fragments=False)
            if vr in (b"OB", b"OW") or (tag == PIXEL_DATA and not self.implicit):
                return self._items(value, depth, fragments=True)  # encapsulated pixel data
            return self._items(value, depth, fragments=False)  # SQ, or any undefined length in implicit VR
        if value + length > self.end:
            self._need(value, length, f"element {tag_text(tag)}")
        if self.deep and vr == b"SQ" and length:
            self._items(value, depth, fragments=False, end=value + length)
        return value + length

    def _dataset(self, pos: int, end: int | None, depth: int) -> int:
        """Walk elements from ``pos`` to ``end`` (or to an item delimiter when ``end`` is None)."""
        if depth > MAX_DEPTH:
            raise MalformedDicomError(f"sequences nested more than {MAX_DEPTH} levels deep")
        stop = self.end if end is None else end
        while pos < stop:
            tag, vr, length, value = self.header(pos)
            if tag == ITEM_DELIMITER and end is None:
                return value
            pos = self.skip(tag, vr, length, value, depth)
        if end is None and depth > 0:
            raise MalformedDicomError("data set is truncated: an item has no end")
        return pos

    def _items(self, pos: int, depth: int, *, fragments: bool, end: int | None = None) -> int:
        """Walk sequence items (or pixel data fragments) to the sequence delimiter or ``end``."""
        while True:
            if end is not None and pos >= end:
                return pos
            self._need(pos, 8, "an item header")
            group, element, length = self._item.unpack_from(self.data, pos)
            tag = group << 16 | element
            pos += 8
            if tag == SEQUENCE_DELIMITER:
                return pos
            if tag != ITEM:
                raise MalformedDicomError(f"expected an item, found {tag_text(tag)}")
            if length == UNDEFINED_LENGTH and not fragments:
                pos = self._dataset(pos, None, depth + 1)
                continue
            self._need(pos, length, "an item")
            if self.deep and not fragments and length:
                self._dataset(pos, pos + length, depth + 1)
            pos += length

    def check(self) -> None:
        """Check that every element, item and fragment fits in the data (use ``deep=True``).

        :raises MalformedDicomError: the data set is truncated or malformed.
        """
        if self.end == 0:
            raise MalformedDicomError("the data set is empty")
        self._dataset(0, self.end, 0)

    def values(self, wanted: Container[int] | None = None, stop: int = 0xFFFFFFFF) -> dict[int, bytes]:
        """Raw values of the top-level elements (those in ``wanted``), reading up to tag ``stop``.

        :param wanted: tags to collect (None: every element of defined length).
        :param stop: the last tag of interest; the walk ends at the first element after it.
        :raises MalformedDicomError: malformed before ``stop`` (or an item tag at the top level).
        """
        found: dict[int, bytes] = {}
        data, end, pos = self.data, self.end, 0
        if self.implicit:  # fast lane for plain elements (command sets); anything else goes the long way
            unpack = self._implicit.unpack_from
            while pos + 8 <= end:
                group, element, length = unpack(data, pos)
                tag, value = group << 16 | element, pos + 8
                if tag > stop:
                    return found
                if group == 0xFFFE or length == UNDEFINED_LENGTH or value + length > end:
                    break
                if wanted is None or tag in wanted:
                    found[tag] = data[value : value + length]
                pos = value + length
        header = self.header
        while pos < end:
            tag, vr, length, value = header(pos)
            if tag > stop:
                break
            if tag >> 16 == 0xFFFE:
                raise MalformedDicomError(f"item tag {tag_text(tag)} outside a sequence")
            if length == UNDEFINED_LENGTH or value + length > end:
                pos = self.skip(tag, vr, length, value)
                continue
            if wanted is None or tag in wanted:
                found[tag] = data[value : value + length]
            pos = value + length
        return found

    def elements(self, stop: int = 0xFFFFFFFF) -> dict[int, tuple[bytes | None, bytes]]:
        """``{tag: (VR, raw value)}`` of the top-level elements of defined length, up to tag ``stop``.

        Sequences and other undefined-length values are walked over and left out; the VR is None in
        implicit VR. (A C-FIND identifier's values, for :mod:`airflow_dicom.dimse.query.match`.)

        :param stop: the last tag of interest; the walk ends at the first element after it.
        :raises MalformedDicomError: malformed before ``stop`` (or an item tag at the top level).
        """
        found: dict[int, tuple[bytes | None, bytes]] = {}
        data, end, pos = self.data, self.end, 0
        header = self.header
        while pos < end:
            tag, vr, length, value = header(pos)
            if tag > stop:
                break
            if tag >> 16 == 0xFFFE:
                raise MalformedDicomError(f"item tag {tag_text(tag)} outside a sequence")
            if length == UNDEFINED_LENGTH or value + length > end or vr == b"SQ":
                pos = self.skip(tag, vr, length, value)
                continue
            found[tag] = (vr, bytes(data[value : value + length]))
            pos = value + length
        return found


# ---------------------------------------------------------------------------- command sets

#: Command Field values (PS3.7 E.1)
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
#: Command Data Set Type: a data set follows (as pynetdicom writes it)
DATASET_PRESENT = 0x0001
#: Command Data Set Type: no data set follows
NO_DATASET = 0x0101
#: PDV message control header: a command's last (or only) fragment (PS3.8 E.2)
COMMAND_LAST_FRAGMENT = 0x03


def uid_value(uid: str) -> bytes:
    """A UID encoded as a value: ASCII, padded with one NUL to an even length.

    :param uid: the UID.
    """
    raw = str(uid).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def command_element(element: int, value: bytes) -> bytes:
    """One implicit VR little endian element of command group 0000.

    :param element: the element number (``0x0100`` for CommandField...).
    :param value: the encoded value.
    """
    return _COMMAND_ELEMENT.pack(0x0000, element, len(value)) + value


def encode_command_set(elements: list[bytes]) -> bytes:
    """Encoded elements prefixed with their CommandGroupLength (0000,0000).

    :param elements: the command's elements from :func:`command_element`, in tag order.
    """
    body = b"".join(elements)
    return command_element(0x0000, _U32.pack(len(body))) + body


def encode_c_store_rq(msg_id: int, sop_class_uid: str, sop_instance_uid: str, priority: int = 2) -> bytes:
    """The C-STORE-RQ command set (PS3.7 9.3.1.1), as pynetdicom encodes it for the same primitive.

    :param msg_id: the Message ID (1-65535).
    :param sop_class_uid: the Affected SOP Class UID.
    :param sop_instance_uid: the Affected SOP Instance UID.
    :param priority: 0 medium, 1 high, 2 low.
    """
    return encode_command_set(
        [
            command_element(0x0002, uid_value(sop_class_uid)),
            command_element(0x0100, _U16.pack(C_STORE_RQ)),
            command_element(0x0110, _U16.pack(msg_id)),
            command_element(0x0700, _U16.pack(priority)),
            command_element(0x0800, b"\x01\x00"),  # CommandDataSetType: a data set follows
            command_element(0x1000, uid_value(sop_instance_uid)),
        ]
    )


def encode_c_store_rsp(
    message_id: int, status: int, sop_class_uid: str | None, sop_instance_uid: str | None
) -> bytes:
    """The C-STORE-RSP command set (PS3.7 9.3.1.2), as pynetdicom encodes it for the same primitive.

    :param message_id: Message ID Being Responded To.
    :param status: the status.
    :param sop_class_uid: Affected SOP Class UID (omitted if None).
    :param sop_instance_uid: Affected SOP Instance UID (omitted if None).
    """
    elements = []
    if sop_class_uid:
        elements.append(command_element(0x0002, uid_value(sop_class_uid)))
    elements.append(command_element(0x0100, _U16.pack(C_STORE_RSP)))
    elements.append(command_element(0x0120, _U16.pack(message_id)))
    elements.append(command_element(0x0800, _U16.pack(NO_DATASET)))
    elements.append(command_element(0x0900, _U16.pack(status)))
    if sop_instance_uid:
        elements.append(command_element(0x1000, uid_value(sop_instance_uid)))
    return encode_command_set(elements)


def encode_c_find_rq(msg_id: int, sop_class_uid: str, priority: int = 2) -> bytes:
    """The C-FIND-RQ command set (PS3.7 9.3.2.1), as pynetdicom encodes it for the same primitive.

    :param msg_id: the Message ID (1-65535).
    :param sop_class_uid: the Affected SOP Class UID (the query/retrieve information model).
    :param priority: 0 medium, 1 high, 2 low.
    """
    return encode_command_set(
        [
            command_element(0x0002, uid_value(sop_class_uid)),
            command_element(0x0100, _U16.pack(C_FIND_RQ)),
            command_element(0x0110, _U16.pack(msg_id)),
            command_element(0x0700, _U16.pack(priority)),
            command_element(0x0800, _U16.pack(DATASET_PRESENT)),
        ]
    )


@dataclass(frozen=True)
class FindResponse:
    """A decoded C-FIND-RSP command set; attribute names follow pynetdicom's ``C_FIND`` primitive.

    :ivar has_identifier: a data set (the identifier) follows the command.
    """

    MessageIDBeingRespondedTo: int | None
    Status: int | None
    has_identifier: bool
    ErrorComment: str | None = None
    OffendingElement: tuple[int, ...] | None = None


def decode_c_find_rsp(command: bytes) -> FindResponse | None:
    """Decode a command set if it is a C-FIND-RSP, else return None.

    :param command: the encoded command set.
    """
    values = decode_command_set(command)
    if values is None or values.get(0x0100) != _U16.pack(C_FIND_RSP):
        return None
    offending, comment = values.get(0x0901), values.get(0x0902)
    return FindResponse(
        MessageIDBeingRespondedTo=us_value(values.get(0x0120)),
        Status=us_value(values.get(0x0900)),
        has_identifier=us_value(values.get(0x0800)) != NO_DATASET,
        ErrorComment=decode_text(comment) if comment is not None else None,
        OffendingElement=_at_values(offending) if offending else None,
    )


def decode_command_set(data: bytes) -> dict[int, bytes] | None:
    """Split an implicit VR little endian command set into ``{element number: raw value}``.

    :param data: the encoded command set.
    :returns: None when it is not a well-formed group 0000 set.
    """
    try:
        values = ElementWalker(data, implicit=True).values()
    except MalformedDicomError:
        return None
    if values and max(values) > 0xFFFF:
        return None
    return values  # group 0000: the tag is the element number


def us_value(raw: bytes | None) -> int | None:
    """An unsigned short (US) value, or None when absent or not 2 bytes long.

    :param raw: the encoded value.
    """
    return _U16.unpack(raw)[0] if raw is not None and len(raw) == 2 else None


def _at_values(raw: bytes) -> tuple[int, ...]:
    """Attribute Tag (AT) values: each a group then an element number, as ``group << 16 | element``."""
    pairs = struct.unpack(f"<{len(raw) // 4 * 2}H", raw[: len(raw) // 4 * 4])
    return tuple(group << 16 | element for group, element in zip(pairs[::2], pairs[1::2], strict=True))


@dataclass(frozen=True)
class StoreResponse:
    """A decoded C-STORE-RSP; attribute names follow pynetdicom's ``C_STORE`` primitive."""

    MessageIDBeingRespondedTo: int | None
    Status: int | None
    AffectedSOPInstanceUID: str | None
    ErrorComment: str | None = None
    OffendingElement: tuple[int, ...] | None = None


def decode_c_store_rsp(command: bytes) -> StoreResponse | None:
    """Decode a command set if it is a complete C-STORE-RSP, else return None.

    :param command: the encoded command set.
    """
    values = decode_command_set(command)
    if values is None or values.get(0x0100) != b"\x01\x80":  # CommandField C-STORE-RSP
        return None
    offending = values.get(0x0901)
    instance, comment = values.get(0x1000), values.get(0x0902)
    return StoreResponse(
        MessageIDBeingRespondedTo=us_value(values.get(0x0120)),
        Status=us_value(values.get(0x0900)),
        AffectedSOPInstanceUID=decode_text(instance) if instance is not None else None,
        ErrorComment=decode_text(comment) if comment is not None else None,
        OffendingElement=_at_values(offending) if offending else None,
    )


# ---------------------------------------------------------------------------- PDV framing

_PDU_HEADER = struct.Struct(">BBI")
_PDV_HEADER = struct.Struct(">IBB")


def pdata_pdus(context_id: int, data: memoryview, *, command: bool, max_pdu: int) -> list[bytes | memoryview]:
    """P-DATA-TF PDUs carrying ``data`` as one command or data set, one PDV per PDU (PS3.8 9.3.5).

    Returns the PDUs as alternating headers and slices of ``data`` (join or ``sendmsg`` them).

    :param context_id: the presentation context ID.
    :param data: the encoded command set or data set.
    :param command: True for a command set, False for a data set.
    :param max_pdu: the peer's maximum PDU length (0: unlimited).
    """
    step = len(data) if max_pdu == 0 else max_pdu - 6
    out: list[bytes | memoryview] = []
    total = len(data)
    pos = 0
    while True:
        fragment = data[pos : pos + step]
        pos += len(fragment)
        last = pos >= total
        control = (0x01 if command else 0x00) | (0x02 if last else 0x00)
        pdv_length = len(fragment) + 2
        out.append(
            _PDU_HEADER.pack(0x04, 0, pdv_length + 4) + _PDV_HEADER.pack(pdv_length, context_id, control)
        )
        out.append(fragment)
        if last:
            return out


# ---------------------------------------------------------------------------- file meta

#: our Implementation Class UID / Version Name in files we write (pynetdicom's
#: ``PYNETDICOM_IMPLEMENTATION_UID`` for the pinned 3.0 line, as a storescp would).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.9.3811.3.0.4"
IMPLEMENTATION_VERSION_NAME = "AIRFLOW_DICOM"
PREAMBLE_LENGTH = 128
MAGIC = b"DICM"


def _padded(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in LONG_LENGTH_VRS:
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def encode_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    source_ae_title: str = "",
) -> bytes:
    """The 128-byte preamble, ``DICM`` and the File Meta Information group (PS3.10 7.1).

    :param sop_class_uid: Media Storage SOP Class UID (the C-STORE's Affected SOP Class UID).
    :param sop_instance_uid: Media Storage SOP Instance UID.
    :param transfer_syntax: the transfer syntax the data set is encoded in.
    :param source_ae_title: Source Application Entity Title (the sender), optional.
    """
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", uid_value(sop_class_uid)),
        _meta_element(0x0003, b"UI", uid_value(sop_instance_uid)),
        _meta_element(0x0010, b"UI", uid_value(transfer_syntax)),
        _meta_element(0x0012, b"UI", uid_value(IMPLEMENTATION_CLASS_UID)),
        _meta_element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" ")),
    ]
    if source_ae_title:
        elements.append(_meta_element(0x0016, b"AE", _padded(source_ae_title.encode("ascii"), b" ")))
    body = b"".join(elements)
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\x00" * PREAMBLE_LENGTH + MAGIC + group_length + body
