"""Pure DICOM networking on pynetdicom and pydicom. Nothing in this package imports Airflow.

The package itself exports only light names (errors, :class:`DicomNode`), so importing a light submodule
(errors, node, codec, storage layout) does not import pynetdicom and pydicom, ~0.5 s of a command's
start-up. The operations live in their submodules: ``from airflow_dicom.dimse.echo import echo``.
"""

from __future__ import annotations

from airflow_dicom.dimse.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    DicomError,
    DimseFailureError,
    InvalidNodeError,
    InvalidRequestError,
    NoAcceptedContextError,
    NodeUnreachableError,
    TlsError,
)
from airflow_dicom.dimse.node import DicomNode

__all__ = [
    "AssociationAbortedError",
    "AssociationRejectedError",
    "DicomError",
    "DicomNode",
    "DimseFailureError",
    "InvalidNodeError",
    "InvalidRequestError",
    "NoAcceptedContextError",
    "NodeUnreachableError",
    "TlsError",
]
