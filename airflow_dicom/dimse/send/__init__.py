"""C-STORE SCU: send DICOM files, directories and globs to a node, with an account of every file.

Rooms: :mod:`.files` (finding files, file meta, the structural check), :mod:`.planning` (contexts and
associations), :mod:`.sender` (the associations and the C-STOREs), :mod:`.report` (the per-file account).
The names below are the public API of sending.
"""

from __future__ import annotations

from airflow_dicom.dimse.errors import SendFailedError
from airflow_dicom.dimse.send.files import (
    MEDIA_STORAGE_DIRECTORY,
    DicomFileInfo,
    check_structure,
    collect_files,
    files_from_manifest,
    read_dataset_bytes,
    read_meta,
    scan,
)
from airflow_dicom.dimse.send.planning import FALLBACK_SYNTAXES, AssociationJob, plan_associations
from airflow_dicom.dimse.send.report import (
    FAILED,
    SENT,
    SKIPPED,
    WARNING,
    FileResult,
    SendReport,
    transcoding,
)
from airflow_dicom.dimse.send.sender import DEFAULT_PARALLEL, send

__all__ = [
    "DEFAULT_PARALLEL",
    "FAILED",
    "FALLBACK_SYNTAXES",
    "MEDIA_STORAGE_DIRECTORY",
    "SENT",
    "SKIPPED",
    "WARNING",
    "AssociationJob",
    "DicomFileInfo",
    "FileResult",
    "SendFailedError",
    "SendReport",
    "check_structure",
    "collect_files",
    "files_from_manifest",
    "plan_associations",
    "read_dataset_bytes",
    "read_meta",
    "scan",
    "send",
    "transcoding",
]
