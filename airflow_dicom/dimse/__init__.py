"""Pure DICOM networking on pynetdicom and pydicom. Nothing in this package imports Airflow.

The package itself exports only light names (errors, :class:`DicomNode`), so importing a light submodule
(errors, node, codec, storage layout) does not import pynetdicom and pydicom, ~0.5 s of a command's
start-up. The operations live in their submodules: ``from airflow_dicom.dimse.echo import echo``.

Importing this package also installs :mod:`.deferred_imports` (before any of its modules imports pydicom): the
optional modules pydicom imports eagerly (numpy, requests, ...) run when first used, not at every start.
"""

from __future__ import annotations

from airflow_dicom.dimse import deferred_imports
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

deferred_imports.install()

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
