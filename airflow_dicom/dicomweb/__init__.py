"""DICOMweb (PS3.18) transport on ``dicomweb-client``: QIDO-RS find, WADO-RS retrieve, STOW-RS send.

No Airflow import. The node model is :class:`DicomWebNode`; errors are :class:`DicomWebError` subclasses of
:class:`~airflow_dicom.dimse.errors.DicomError` (retryable vs permanent like every other failure).
"""

from __future__ import annotations

from airflow_dicom.dicomweb.client import (
    DicomWebAuthError,
    DicomWebError,
    DicomWebHttpError,
    DicomWebTlsError,
    DicomWebUnreachableError,
)
from airflow_dicom.dicomweb.node import DicomWebNode, web_node_from_connection

__all__ = [
    "DicomWebAuthError",
    "DicomWebError",
    "DicomWebHttpError",
    "DicomWebNode",
    "DicomWebTlsError",
    "DicomWebUnreachableError",
    "web_node_from_connection",
]
