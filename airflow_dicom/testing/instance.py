"""One synthetic DICOM image instance, made with pydicom: constants, builder and writers."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

__all__ = [
    "CR_IMAGE_STORAGE",
    "CT_IMAGE_STORAGE",
    "DEFAULT_TRANSFER_SYNTAXES",
    "MODALITY_SOP_CLASS",
    "MR_IMAGE_STORAGE",
    "SECONDARY_CAPTURE_STORAGE",
    "SOP_CLASSES",
    "US_IMAGE_STORAGE",
    "dataset_bytes",
    "make_instance",
    "read_uids",
    "write_dataset",
]

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
US_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.6.1")
SECONDARY_CAPTURE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")

#: SOP class used for each modality (Secondary Capture carries modality "OT").
MODALITY_SOP_CLASS: dict[str, UID] = {
    "CT": CT_IMAGE_STORAGE,
    "MR": MR_IMAGE_STORAGE,
    "CR": CR_IMAGE_STORAGE,
    "US": US_IMAGE_STORAGE,
    "OT": SECONDARY_CAPTURE_STORAGE,
}
SOP_CLASSES: tuple[UID, ...] = tuple(MODALITY_SOP_CLASS.values())
_MODALITY_OF_SOP = {v: k for k, v in MODALITY_SOP_CLASS.items()}
_BITS_OF_MODALITY = {"CT": 16, "MR": 16, "CR": 16, "US": 8, "OT": 8}

DEFAULT_TRANSFER_SYNTAXES: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless)
_SUPPORTED_TRANSFER_SYNTAXES = {
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
}


def make_instance(
    *,
    sop_class_uid: str = CT_IMAGE_STORAGE,
    modality: str | None = None,
    patient_id: str = "PAT0001",
    patient_name: str = "DOE^JOHN",
    specific_character_set: str | None = None,
    patient_birth_date: str = "19700101",
    patient_sex: str = "O",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    study_date: date | str = date(2024, 1, 1),
    study_time: str = "120000",
    accession_number: str = "",
    study_description: str = "",
    study_id: str = "1",
    series_number: int = 1,
    instance_number: int = 1,
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixel_bytes: int = 8 * 1024,
    bits_allocated: int | None = None,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Dataset:
    """Build one MONOCHROME2 image instance with file meta, encoded in ``transfer_syntax``.

    Missing UIDs are generated (``pydicom.uid.generate_uid``). Rows x Columns are chosen so the
    pixel data is about ``pixel_bytes`` long (8 KB default; 512 * 1024 for benchmarks).
    ``bits_allocated`` defaults to 16 for CT/MR/CR and 8 for US/Secondary Capture. RLE Lossless
    is encoded with pydicom's own encoder. ``extra`` sets further attributes by keyword.
    """
    sop_class_uid = UID(sop_class_uid)
    transfer_syntax = UID(transfer_syntax)
    if transfer_syntax not in _SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(f"unsupported transfer syntax {transfer_syntax}")
    modality = modality or _MODALITY_OF_SOP.get(sop_class_uid, "OT")
    bits = bits_allocated or _BITS_OF_MODALITY.get(modality, 16)
    sop_uid = sop_uid if sop_uid is not None else generate_uid()

    ds = Dataset()
    if specific_character_set:
        ds.SpecificCharacterSet = specific_character_set
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date.strftime("%Y%m%d") if isinstance(study_date, date) else study_date
    ds.SeriesDate = ds.StudyDate
    ds.StudyTime = study_time
    ds.SeriesTime = study_time
    ds.AccessionNumber = accession_number
    ds.Modality = modality
    ds.Manufacturer = "airflow-dicom synth"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description
    ds.SeriesDescription = f"{modality} series {series_number}"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = patient_birth_date
    ds.PatientSex = patient_sex
    ds.StudyInstanceUID = study_uid if study_uid is not None else generate_uid()
    ds.SeriesInstanceUID = series_uid if series_uid is not None else generate_uid()
    ds.StudyID = study_id
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    if sop_class_uid == SECONDARY_CAPTURE_STORAGE:
        ds.ConversionType = "WSD"
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationVersionName = "AIRFLOW_DICOM"

    arr = _pixels(pixel_bytes, bits, seed)
    # pydicom replaces SOPInstanceUID on set_pixel_data/compress unless told not to.
    ds.set_pixel_data(arr, "MONOCHROME2", bits, generate_instance_uid=False)
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, arr, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    return ds


def _pixels(pixel_bytes: int, bits: int, seed: int) -> np.ndarray:
    """A deterministic image of about ``pixel_bytes`` bytes: a gradient plus a little noise."""
    bytes_per_pixel = bits // 8
    n_pixels = max(1, pixel_bytes // bytes_per_pixel)
    columns = max(1, math.isqrt(n_pixels))
    rows = max(1, n_pixels // columns)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns]
    top = 4095 if bits == 16 else 255
    base = ((xx + yy) * (top // max(1, rows + columns))).astype(np.int64)
    noise = rng.integers(0, 8, size=(rows, columns))
    dtype = np.uint16 if bits == 16 else np.uint8
    return np.clip(base + noise, 0, top).astype(dtype)


def write_dataset(ds: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` as a DICOM file (preamble + file meta) in its file meta transfer syntax."""
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path


def dataset_bytes(ds: Dataset) -> bytes:
    """``ds`` encoded as a complete DICOM file, in memory."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def read_uids(path: str | os.PathLike[str]) -> tuple[str, str, str]:
    """(StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) of a file, without pixel data."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
