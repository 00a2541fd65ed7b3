"""The synthetic corpus generator for the tests: :mod:`airflow_dicom.testing`, re-exported whole."""

from __future__ import annotations

from airflow_dicom.testing import *  # noqa: F403
from airflow_dicom.testing import __all__  # noqa: F401
