"""Synthetic, deterministic DICOM data made with pydicom (nothing downloaded) for demos, tests, benchmarks.

Facade over :mod:`.instance` (one image: :func:`make_instance`) and :mod:`.corpus` (a whole
archive with ground truth: :func:`make_corpus`, :class:`Corpus`). The data is awkward on purpose:
names with leading digits, non-ASCII in several character sets (ISO_IR 100 and ISO_IR 192),
lower case and empty; PatientIDs with leading zeros; five modalities / SOP classes; studies
with several series; RLE Lossless next to Explicit and Implicit VR Little Endian.
"""

from __future__ import annotations

from airflow_dicom.testing.corpus import (
    AWKWARD_NAMES,
    Corpus,
    InstanceTruth,
    PatientTruth,
    SeriesTruth,
    StudyTruth,
    make_corpus,
    make_same_day_corpus,
)
from airflow_dicom.testing.instance import (
    CR_IMAGE_STORAGE,
    CT_IMAGE_STORAGE,
    DEFAULT_TRANSFER_SYNTAXES,
    MODALITY_SOP_CLASS,
    MR_IMAGE_STORAGE,
    SECONDARY_CAPTURE_STORAGE,
    SOP_CLASSES,
    US_IMAGE_STORAGE,
    dataset_bytes,
    make_instance,
    read_uids,
    write_dataset,
)

__all__ = [
    "AWKWARD_NAMES",
    "CR_IMAGE_STORAGE",
    "CT_IMAGE_STORAGE",
    "DEFAULT_TRANSFER_SYNTAXES",
    "MODALITY_SOP_CLASS",
    "MR_IMAGE_STORAGE",
    "SECONDARY_CAPTURE_STORAGE",
    "SOP_CLASSES",
    "US_IMAGE_STORAGE",
    "Corpus",
    "InstanceTruth",
    "PatientTruth",
    "SeriesTruth",
    "StudyTruth",
    "dataset_bytes",
    "make_corpus",
    "make_instance",
    "make_same_day_corpus",
    "read_uids",
    "write_dataset",
]
