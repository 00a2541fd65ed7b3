"""airflow-dicom: an Apache Airflow 3 provider for DICOM networking."""

from __future__ import annotations

__version__ = "0.1.0"
