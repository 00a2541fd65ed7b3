"""``python -m airflow_dicom``: the ``airflow-dicom`` command line."""

from __future__ import annotations

import sys

from airflow_dicom.cli import console

sys.exit(console())
