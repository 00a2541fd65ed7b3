"""Apply the Basic Profile, its options and the keyed mapping to one data set, in place.

Only the elements the profile touches are decoded: every other element stays a raw element and is written
back byte for byte (pixel data included). UIDs are remapped wherever they occur (sequences, file meta),
except the well-known ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from airflow_dicom.deid import tables
from airflow_dicom.deid.keys import PseudonymKey
from airflow_dicom.deid.options import ProfileOptions

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
PATIENT_BIRTH_DATE = 0x00100030
PATIENT_BIRTH_TIME = 0x00100032
ACCESSION_NUMBER = 0x00080050
STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
SOP_UID = 0x00080018
PIXEL_DATA = 0x7FE00010
#: set by this step: never taken from the input
OWN_TAGS = (0x00120062, 0x00120063, 0x00120064, 0x00280303)
_STRING_DUMMY = {
    "AE": "ANONYMOUS",
    "CS": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "LO": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "DS": "0",
    "IS": "0",
    "AS": "000Y",
    "TM": "000000",
    "DA": "19000101",
    "DT": "19000101000000",
    "UR": "",
}
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"})


class RewriteError(ValueError):
    """A data set the profile cannot be applied to (unparseable element, broken sequence)."""


@dataclass(frozen=True)
class InstanceMapping:
    """Original and pseudonymous identifiers of one rewritten instance (for the audit only)."""

    patient_id: str
    pseudo_patient_id: str
    study_uid: str
    pseudo_study_uid: str
    series_uid: str
    pseudo_series_uid: str
    sop_uid: str
    pseudo_sop_uid: str
    sop_class_uid: str
    date_shift_days: int | None


class _Context:
    __slots__ = ("key", "options", "shift", "safe_private", "scrub")

    def __init__(
        self, key: PseudonymKey, options: ProfileOptions, shift: int | None, scrub: re.Pattern[str] | None
    ) -> None:
        self.key = key
        self.options = options
        self.shift = shift
        self.safe_private = options.private_safe_list()
        self.scrub = scrub


def _text(ds: Dataset, tag: int) -> str:
    elem = ds.get(tag)
    if elem is None or elem.value is None:
        return ""
    return str(elem.value)


def _scrub_pattern(ds: Dataset) -> re.Pattern[str] | None:
    words = {_text(ds, PATIENT_ID), _text(ds, ACCESSION_NUMBER)}
    for part in re.split(r"[\^= ,]+", _text(ds, PATIENT_NAME)):
        words.add(part)
    words = {w for w in words if len(w.strip()) >= 2}
    if not words:
        return None
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)


def pseudonymise(ds: Dataset, key: PseudonymKey, options: ProfileOptions) -> InstanceMapping:
    """Pseudonymise ``ds`` (and its file meta) in place.

    :param ds: the data set, as read by pydicom (raw elements are decoded only where needed).
    :param key: the pseudonymisation key.
    :param options: profile options.
    :returns: the identifiers before and after, for the audit.
    :raises RewriteError: an element the profile must change cannot be decoded.
    """
    try:
        patient_id = _text(ds, PATIENT_ID).strip()
        study, series, sop = _text(ds, STUDY_UID), _text(ds, SERIES_UID), _text(ds, SOP_UID)
        sop_class = _text(ds, 0x00080016)
        shift = key.date_shift_days(patient_id) if options.retain_modified_dates else None
        ctx = _Context(key, options, shift, _scrub_pattern(ds) if options.clean_descriptors else None)
        accession = _text(ds, ACCESSION_NUMBER).strip()
        pseudo_patient = key.pseudonym("patient", patient_id)
        _walk(ds, ctx, top=True)
        ds[PATIENT_ID] = DataElement(PATIENT_ID, "LO", pseudo_patient)
        ds[PATIENT_NAME] = DataElement(PATIENT_NAME, "PN", pseudo_patient)
        ds[ACCESSION_NUMBER] = DataElement(
            ACCESSION_NUMBER, "SH", key.pseudonym("accession", accession) if accession else ""
        )
        _mark(ds, options)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            _rewrite_meta(meta, key)
    except RewriteError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise RewriteError(f"cannot pseudonymise this data set: {type(exc).__name__}: {exc}") from exc
    return InstanceMapping(
        patient_id=patient_id,
        pseudo_patient_id=pseudo_patient,
        study_uid=study,
        pseudo_study_uid=key.uid(study),
        series_uid=series,
        pseudo_series_uid=key.uid(series),
        sop_uid=sop,
        pseudo_sop_uid=key.uid(sop),
        sop_class_uid=sop_class,
        date_shift_days=shift,
    )


def _vr_of(ds: Dataset, tag: int) -> str:
    vr = ds.get_item(tag).VR
    if vr and vr != "UN" and len(vr) == 2:
        return vr
    try:
        known = dictionary_VR(tag)
    except KeyError:
        return vr or "UN"
    return known if len(known) == 2 else (vr or "UN")


def _private_keep(ds: Dataset, tag: int, ctx: _Context) -> bool:
    if not ctx.safe_private:
        return False
    element = tag & 0xFFFF
    if element < 0x10:
        return False
    creators = {c for c, _ in ctx.safe_private}
    if element <= 0xFF:
        return _text(ds, tag).strip() in creators
    creator_tag = (tag & 0xFFFF0000) | (element >> 8)
    return (_text(ds, creator_tag).strip(), element & 0xFF) in ctx.safe_private


def _action(tag: int, ctx: _Context) -> str | None:
    options = ctx.options
    if options.retain_patient_characteristics and tag in tables.PATIENT_CHARACTERISTICS:
        return tables.KEEP_REMAP
    if options.retain_device_identity and tag in tables.DEVICE_IDENTITY:
        return tables.KEEP_REMAP
    if options.clean_descriptors and tag in tables.DESCRIPTORS:
        return tables.CLEAN
    return tables.basic_action(tag)


def _walk(ds: Dataset, ctx: _Context, top: bool) -> None:
    for tag in list(ds.keys()):
        tag = int(tag)
        group = tag >> 16
        if tag & 0xFFFF == 0 or (group & 1 and not _private_keep(ds, tag, ctx)) or (top and tag in OWN_TAGS):
            del ds[tag]
            continue
        if tag == PIXEL_DATA:
            continue
        action = _action(tag, ctx)
        if action is None or action == tables.KEEP_REMAP:
            vr = _vr_of(ds, tag)
            if vr == "SQ":
                _walk_sequence(ds, tag, ctx)
            elif vr == "UI":
                _remap_uids(ds, tag, ctx)
            continue
        vr = _vr_of(ds, tag)
        if action == tables.UID:
            if vr == "SQ":
                _walk_sequence(ds, tag, ctx)
            else:
                _remap_uids(ds, tag, ctx)
        elif action == tables.CLEAN:
            _clean(ds, tag, vr, ctx)
        elif ctx.shift is not None and vr in ("DA", "DT") and tag != PATIENT_BIRTH_DATE:
            _shift(ds, tag, vr, ctx.shift)
        elif ctx.shift is not None and vr == "TM" and tag != PATIENT_BIRTH_TIME:
            continue  # whole-day shifts keep the times of day
        elif action == tables.REMOVE:
            del ds[tag]
        elif action == tables.EMPTY or vr == "SQ":
            ds[tag] = DataElement(tag, vr, Sequence() if vr == "SQ" else None)
        else:  # DUMMY
            ds[tag] = DataElement(tag, vr, _dummy(vr))


def _walk_sequence(ds: Dataset, tag: int, ctx: _Context) -> None:
    value = ds[tag].value
    if not isinstance(value, Sequence):
        raise RewriteError(f"element {tag:08X} should be a sequence")
    for item in value:
        _walk(item, ctx, top=False)


def _remap_uids(ds: Dataset, tag: int, ctx: _Context) -> None:
    elem = ds[tag]
    value = elem.value
    if value is None or value == "":
        return
    if isinstance(value, str):
        new: object = ctx.key.uid(value)
    else:
        new = [ctx.key.uid(str(v)) for v in value]
    ds[tag] = DataElement(tag, "UI", new)


def _dummy(vr: str) -> object:
    if vr in _NUMBER_VRS:
        return 0
    if vr in _STRING_DUMMY:
        return _STRING_DUMMY[vr]
    return b""  # OB, OW, UN, ...


def _clean(ds: Dataset, tag: int, vr: str, ctx: _Context) -> None:
    elem = ds[tag]
    if vr == "SQ":
        _walk_sequence(ds, tag, ctx)
        return
    if ctx.scrub is None or not isinstance(elem.value, str):
        return
    ds[tag] = DataElement(tag, vr, ctx.scrub.sub("", elem.value))


def _shift_date(text: str, days: int) -> str:
    text = text.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    shifted = date(int(text[:4]), int(text[4:6]), int(text[6:8])) + timedelta(days=days)
    return shifted.strftime("%Y%m%d") + text[8:]


def _shift(ds: Dataset, tag: int, vr: str, days: int) -> None:
    value = ds[tag].value
    if value is None or value == "":
        return
    values = (
        [str(value)] if isinstance(value, str) or not hasattr(value, "__iter__") else [str(v) for v in value]
    )
    out = []
    for v in values:
        out.append(
            "-".join(_shift_date(part, days) if part else "" for part in v.split("-"))
            if vr == "DA"
            else _shift_date(v, days)
        )
    ds[tag] = DataElement(tag, vr, out[0] if len(out) == 1 else out)


def _mark(ds: Dataset, options: ProfileOptions) -> None:
    ds[0x00120062] = DataElement(0x00120062, "CS", "YES")
    ds[0x00120063] = DataElement(0x00120063, "LO", options.describe())
    items = []
    for code, meaning in options.method_codes():
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds[0x00120064] = DataElement(0x00120064, "SQ", Sequence(items))
    ds[0x00280303] = DataElement(0x00280303, "CS", "MODIFIED" if options.retain_modified_dates else "REMOVED")


def _rewrite_meta(meta: Dataset, key: PseudonymKey) -> None:
    for tag in (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102):  # AE titles, private info
        if tag in meta:
            del meta[tag]
    if 0x00020003 in meta:
        meta.MediaStorageSOPInstanceUID = key.uid(str(meta.MediaStorageSOPInstanceUID))
