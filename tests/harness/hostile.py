"""Datasets with hostile identifiers, written without pydicom's validation.

Receivers build file names from SOP/Study/Series UIDs and PatientIDs; these helpers make files
whose values try to escape the data directory or break the UID grammar, so tests can check they
are refused and that nothing lands outside the data directory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from airflow_dicom.testing import CT_IMAGE_STORAGE, make_instance

__all__ = ["HOSTILE_VALUES", "hostile_bytes", "make_hostile", "validation_off", "write_hostile"]

#: Named hostile values for UIDs or PatientIDs.
HOSTILE_VALUES: dict[str, str] = {
    "dotdot": "../x",
    "deep_dotdot": "1.2/../../../tmp/x",
    "absolute": "/etc/x",
    "backslash": "..\\x",
    "long_digits": "1" * 200,
    "long_uid": "1" + ".1" * 99 + "1",
    "empty": "",
    "letters": "1.2.abc",
    "double_dot": "1.2..3",
    "space": "1.2.3 4",
}


@contextmanager
def validation_off() -> Iterator[None]:
    """Temporarily set pydicom's reading and writing validation modes to IGNORE."""
    settings = config.settings
    old = (settings.reading_validation_mode, settings.writing_validation_mode)
    settings.reading_validation_mode = config.IGNORE
    settings.writing_validation_mode = config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = old


def make_hostile(
    *,
    sop_uid: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "HOSTILE",
    sop_class_uid: str = CT_IMAGE_STORAGE,
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixel_bytes: int = 512,
) -> Dataset:
    """A small valid-looking image whose identifiers are the given (possibly hostile) values.

    UIDs left as None are generated and valid. The file meta MediaStorageSOPInstanceUID mirrors
    ``sop_uid``.
    """
    with validation_off():
        return make_instance(
            sop_class_uid=sop_class_uid,
            patient_id=patient_id,
            patient_name="HOSTILE^TEST",
            study_uid=study_uid if study_uid is not None else generate_uid(),
            series_uid=series_uid if series_uid is not None else generate_uid(),
            sop_uid=sop_uid if sop_uid is not None else generate_uid(),
            transfer_syntax=transfer_syntax,
            pixel_bytes=pixel_bytes,
        )


def hostile_bytes(ds: Dataset) -> bytes:
    """Encode ``ds`` as a DICOM file (preamble + meta) without value validation.

    The meta group gets its group length unless pydicom refuses the meta (empty SOP Instance
    UID): then it is written as is, without (0002,0000), which dcmtk warns about but reads.
    """
    with validation_off():
        ds.preamble = b"\x00" * 128
        # pydicom's file-format writer takes the meta SOP Instance UID from the dataset: when the caller
        # deliberately made them differ, write the meta as it is
        deliberate = ds.file_meta.get("MediaStorageSOPInstanceUID") != ds.get("SOPInstanceUID")
        buf = io.BytesIO()
        try:  # standard meta (with group length) whenever pydicom accepts the meta at all
            if not deliberate:
                ds.save_as(buf, enforce_file_format=True)
        except (AttributeError, ValueError):  # e.g. an empty MediaStorageSOPInstanceUID
            deliberate = True
        if deliberate:
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def write_hostile(ds: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` to ``path`` without validation (the file name is the caller's, not the UID)."""
    path = Path(path)
    path.write_bytes(hostile_bytes(ds))
    return path
