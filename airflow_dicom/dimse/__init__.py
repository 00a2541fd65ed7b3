"""Pure DICOM networking on pynetdicom and pydicom. Nothing in this package imports Airflow."""

from __future__ import annotations

from airflow_dicom.dimse.echo import EchoResult, echo
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
    "EchoResult",
    "InvalidNodeError",
    "InvalidRequestError",
    "NoAcceptedContextError",
    "NodeUnreachableError",
    "TlsError",
    "echo",
]
