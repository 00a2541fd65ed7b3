"""One C-FIND match, kept encoded: only the keys read are decoded, to pydicom's values.

pydicom decodes a whole identifier into a Dataset, and each value again when it is read (measured: ~0.5 ms
per STUDY match of 13 keys, the bulk of a 2,000-match find). A :class:`Match` keeps the identifier's bytes,
splits its top-level elements once with the codec's walker (:meth:`ElementWalker.elements`) and decodes
a key only when asked. :func:`value_items` is THE place where raw values become text: for the common
case (printable ASCII in a VR below) it applies pydicom 3's own rules (which padding each VR strips, how
multiple values split) directly on the bytes; anything else (other characters, character sets that are
not ASCII-compatible, ISO 2022 escapes, binary VRs, a VR that differs from the dictionary's) is decoded by
pydicom itself. ``tests/unit/test_match.py`` compares the two, value for value, over many identifiers.

The result of reading a key is what the landing needs: :meth:`Match.items`, the key's values as
:func:`element_items` makes them from a pydicom value (text; pydicom's own objects on the fallback).
:meth:`Match.dataset` gives the pydicom Dataset pynetdicom would have decoded (the public
:func:`~airflow_dicom.dimse.query.find` yields those).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from io import BytesIO
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import PersonName

from airflow_dicom.dimse.codec import ElementWalker
from airflow_dicom.dimse.errors import MalformedDicomError

SPECIFIC_CHARACTER_SET = 0x00080005
QUERY_RETRIEVE_LEVEL = 0x00080052

#: VRs decoded as ``multi_string``: trailing spaces/NULs of the whole value removed, then split
_STRING_VRS = frozenset({"AS", "CS", "DA", "DT", "TM"})
#: text VRs split on backslashes, each value's trailing spaces/NULs removed (pydicom ``convert_text``)
_TEXT_VRS = frozenset({"SH", "LO", "UC"})
#: single-valued text (pydicom ``convert_single_string``): trailing spaces/NULs removed, never split
_SINGLE_VRS = frozenset({"ST", "LT", "UT"})
#: VRs pydicom decodes in its default encoding whatever the character set
_DEFAULT_ENCODING_VRS = _STRING_VRS | {"AE", "DS", "IS", "UI", "UR"}
#: VRs decoded in the identifier's character set
_CHARSET_VRS = _TEXT_VRS | _SINGLE_VRS | {"PN"}
#: every VR :func:`value_items` decodes without pydicom
FAST_VRS = _DEFAULT_ENCODING_VRS | _CHARSET_VRS
#: Python codecs whose person names survive pydicom's encode/decode round trip unchanged
_PN_CODECS = frozenset({"iso8859", "latin_1", "UTF8"})
_ESC = 0x1B
_INTEGER = re.compile(r"^ *[+-]?[0-9]+ *$")
_DECIMAL = re.compile(r"^ *[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)? *$")


def element_items(value: Any) -> list[Any]:
    """A pydicom element value as the list of its values (text, or pydicom's typed values).

    ``None`` and empty values give ``[]``; a string is split on backslashes, empty parts dropped; a
    person name is its text; a MultiValue gives the text of each non-empty value.

    :param value: a pydicom element value (or a value given in a mapping row).
    """
    if value is None:
        return []
    if isinstance(value, PersonName):
        text = str(value)
        return [text] if text else []
    if isinstance(value, (str, bytes)):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        return [part for part in text.split("\\") if part] if text else []
    if isinstance(value, (MultiValue, list, tuple)):
        return [str(v) for v in value if v is not None and str(v) != ""]
    return [value]


_DICTIONARY_VRS: dict[int, str] = {}


def _dictionary_vr(tag: int) -> str:
    vr = _DICTIONARY_VRS.get(tag)
    if vr is None:
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            vr = "UN"
        _DICTIONARY_VRS[tag] = vr
    return vr


def value_items(vr: str, raw: bytes, codec: str | None) -> list[str] | None:
    """The values of an encoded element as pydicom 3 then :func:`element_items` give them, or None.

    pydicom decodes AS, CS, DA, DT, TM, UI, IS, AE, DS and UR in its default encoding (ISO 8859-1), the
    text VRs (SH, LO, UC, ST, LT, UT, PN) with the first encoding of the character set when the value has
    no ISO 2022 escape; each VR then strips its own padding and splits on backslashes. That is done here
    with the same calls. None means "ask pydicom": another VR, an escape sequence, bytes the character
    set cannot decode, or a person name whose text pydicom may rewrite (component groups, ``=``).

    :param vr: the element's VR.
    :param raw: its encoded value.
    :param codec: the Python codec of the character set's first term (pydicom's name), or None when
        text VRs must go to pydicom.
    """
    if vr in _DEFAULT_ENCODING_VRS:
        text = raw.decode("iso8859")
        if vr in _STRING_VRS:
            return [part for part in text.rstrip(" \0").split("\\") if part]
        if vr == "UI":  # pydicom's UID strips each value
            return [kept for part in text.rstrip(" \0").split("\\") if (kept := part.strip())]
        if vr == "AE":
            return [kept for part in text.split("\\") if (kept := part.strip())]
        if vr in ("IS", "DS"):  # plain numbers only; pydicom re-reads anything else as text (SH)
            parts = (text.rstrip(" \0") if vr == "IS" else text.strip().rstrip(" \0")).split("\\")
            number = _INTEGER if vr == "IS" else _DECIMAL
            return parts if all(number.match(part) for part in parts) else None
        return [part for part in text.rstrip().split("\\") if part]  # UR
    if vr not in _CHARSET_VRS or codec is None or _ESC in raw:
        return None
    if vr == "PN":
        raw = raw.rstrip(b"\0 ")
    try:
        text = raw.decode(codec)
    except (UnicodeError, LookupError):
        return None
    if vr in _TEXT_VRS:
        return [kept for part in text.split("\\") if (kept := part.rstrip("\0 "))]
    if vr in _SINGLE_VRS:
        return [part for part in text.rstrip("\0 ").split("\\") if part]
    if "=" in text or not (text.isascii() or codec in _PN_CODECS):
        return None
    return [part for part in text.split("\\") if part]


_CODECS: dict[bytes, str | None] = {}


def charset_codec(raw: bytes | None) -> str | None:
    """The Python codec pydicom decodes text VRs with, for a raw Specific Character Set value (cached).

    :param raw: the encoded (0008,0005) value, or None when the identifier has none.
    """
    key = raw or b""
    if key not in _CODECS:
        terms: Any = None
        if raw:
            element = RawDataElement(Tag(SPECIFIC_CHARACTER_SET), "CS", len(raw), raw, 0, True, True)
            terms = Dataset({Tag(SPECIFIC_CHARACTER_SET): element}).SpecificCharacterSet
        try:
            encodings = convert_encodings(terms)
            _CODECS[key] = encodings[0] if len(encodings) == 1 else None
        except Exception:  # noqa: BLE001 - unknown terms: pydicom decides (and warns) per value
            _CODECS[key] = None
    return _CODECS[key]


class Match:
    """One match of a C-FIND (or QIDO-RS) query: its identifier, decoded one key at a time.

    Build it from the encoded identifier (:meth:`from_bytes`) or from a pydicom Dataset
    (:meth:`from_dataset`). The walk may set keys (:meth:`set`) and merge a parent row's keys
    (:meth:`merge`); readers see the set values first, then the row's, then the parent's.
    """

    __slots__ = ("_elements", "_implicit", "_little", "_raw", "_dataset", "_set", "_parent", "_charset")

    def __init__(self) -> None:
        self._elements: dict[int, tuple[bytes | None, bytes]] = {}
        self._implicit = False
        self._little = True
        self._raw: bytes | None = None
        self._dataset: Dataset | None = None
        self._set: dict[str, Any] = {}
        self._parent: Match | None = None
        self._charset: str | None = None

    @classmethod
    def from_bytes(cls, raw: bytes, *, implicit: bool, little: bool = True) -> Match:
        """A match from its encoded identifier (top-level elements split now, values decoded when read).

        :param raw: the identifier as received (the presentation context's transfer syntax).
        :param implicit: implicit VR.
        :param little: little endian.
        :raises MalformedDicomError: the identifier is malformed.
        """
        match = cls()
        match._raw = raw
        match._implicit = implicit
        match._little = little
        match._elements = ElementWalker(raw, implicit=implicit, little=little).elements()
        return match

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> Match:
        """A match holding an already decoded Dataset (stock pynetdicom, QIDO-RS).

        :param dataset: the identifier.
        """
        match = cls()
        match._dataset = dataset
        return match

    # ------------------------------------------------------------------ reading
    def _own_items(self, keyword: str, tag: int) -> list[Any] | None:
        """The row's own values of ``keyword`` (None when the row lacks it)."""
        if keyword in self._set:
            return element_items(self._set[keyword])
        if self._raw is None:
            if self._dataset is None or tag not in self._dataset:
                return None
            return element_items(self._dataset[tag].value)
        element = self._elements.get(tag)
        if element is None:
            return None
        return self._decode(tag, element, _dictionary_vr(tag))

    def _decode(self, tag: int, element: tuple[bytes | None, bytes], dictionary_vr: str) -> list[Any]:
        """The values of one element of the encoded identifier."""
        vr_bytes, raw = element
        if not raw:
            return []
        items = None
        if vr_bytes is None:
            items = value_items(dictionary_vr, raw, self._codec())
        elif vr_bytes == dictionary_vr.encode("ascii", "replace"):  # else pydicom's rules (UN replaced...)
            items = value_items(dictionary_vr, raw, self._codec())
        if items is None:
            items = element_items(self._pydicom_value(tag))
        return items

    def items_of(self, keys: Sequence[tuple[str, int, str]]) -> list[list[Any]]:
        """:meth:`items` of several keys at once (the landing's loop over a table's columns).

        :param keys: ``(keyword, tag, dictionary VR)`` per key, e.g. from :func:`key_specs`.
        """
        if self._raw is None or self._parent is not None:
            return [self.items(keyword) for keyword, _, _ in keys]
        elements, decode, overrides, out = self._elements, self._decode, self._set, []
        for keyword, tag, vr in keys:
            if keyword in overrides:
                out.append(element_items(overrides[keyword]))
                continue
            element = elements.get(tag)
            out.append([] if element is None else decode(tag, element, vr))
        return out

    def items(self, keyword: str) -> list[Any]:
        """The values of ``keyword`` (``[]`` when absent or empty), as :func:`element_items` gives them.

        :param keyword: a DICOM keyword.
        """
        tag = keyword_dict[keyword]
        row: Match | None = self
        while row is not None:
            found = row._own_items(keyword, tag)
            if found is not None:
                return found
            row = row._parent if keyword != "QueryRetrieveLevel" else None
        return []

    def text(self, keyword: str) -> str:
        """A single-valued key as text (``""`` when absent or empty; several values joined by ``\\``).

        :param keyword: a DICOM keyword (UIDs, dates, codes).
        """
        return "\\".join(str(v) for v in self.items(keyword))

    def __contains__(self, keyword: str) -> bool:
        tag = keyword_dict[keyword]
        row: Match | None = self
        while row is not None:
            if keyword in row._set:
                return True
            if tag in row._elements if row._raw is not None else tag in (row._dataset or ()):
                return True
            row = row._parent if keyword != "QueryRetrieveLevel" else None
        return False

    # ------------------------------------------------------------------ changing
    def set(self, keyword: str, value: Any) -> None:
        """Set a key (as ``setattr`` on a Dataset would).

        :param keyword: a DICOM keyword.
        :param value: its value (text, list of text...).
        """
        self._set[keyword] = value

    def merge(self, parent: Match) -> Match:
        """Take the keys this row lacks from ``parent`` (its study or series); return self.

        :param parent: the parent row.
        """
        self._parent = parent
        return self

    # ------------------------------------------------------------------ pydicom
    def _codec(self) -> str | None:
        if self._charset is None:
            element = self._elements.get(SPECIFIC_CHARACTER_SET)
            self._charset = charset_codec(element[1] if element else None) or ""
        return self._charset or None

    def _pydicom_value(self, tag: int) -> Any:
        """pydicom's value of one element of the encoded identifier (with its character set)."""
        elements = {
            Tag(t): self._raw_element(t) for t in (SPECIFIC_CHARACTER_SET, tag) if t in self._elements
        }
        return Dataset(elements)[tag].value

    def _raw_element(self, tag: int) -> RawDataElement:
        vr_bytes, raw = self._elements[tag]
        vr = None if vr_bytes is None else vr_bytes.decode("ascii", "replace")
        return RawDataElement(Tag(tag), vr, len(raw), raw, 0, self._implicit, self._little)  # type: ignore[arg-type]

    def dataset(self) -> Dataset:
        """The match as the pydicom Dataset pynetdicom decodes (set keys applied, parent keys merged)."""
        if self._raw is not None:
            ds = read_dataset(BytesIO(self._raw), self._implicit, self._little)
        else:
            ds = self._dataset if self._dataset is not None else Dataset()
        for keyword, value in self._set.items():
            setattr(ds, keyword, value)
        if self._parent is not None:
            for element in self._parent.dataset():
                if element.tag not in ds and element.keyword != "QueryRetrieveLevel":
                    ds.add(element)
        return ds

    def __getattr__(self, keyword: str) -> Any:
        """``match.StudyInstanceUID``: the value pydicom gives (for code written against Datasets)."""
        if keyword.startswith("_") or keyword not in keyword_dict:
            raise AttributeError(keyword)
        return getattr(self.dataset(), keyword)


def key_specs(keywords: Iterable[str]) -> tuple[tuple[str, int, str], ...]:
    """``(keyword, tag, dictionary VR)`` of each keyword, for :meth:`Match.items_of`.

    :param keywords: DICOM keywords.
    """
    return tuple((k, keyword_dict[k], _dictionary_vr(keyword_dict[k])) for k in keywords)


def matches_from(rows: Iterable[Dataset | Match]) -> list[Match]:
    """Wrap Datasets as :class:`Match` (matches pass through).

    :param rows: Datasets or matches.
    """
    return [row if isinstance(row, Match) else Match.from_dataset(row) for row in rows]


__all__ = [
    "FAST_VRS",
    "Match",
    "MalformedDicomError",
    "element_items",
    "key_specs",
    "matches_from",
    "value_items",
]
