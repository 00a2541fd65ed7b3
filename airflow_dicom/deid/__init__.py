"""Pseudonymisation for research exports: PS3.15 Annex E Basic Application Level Confidentiality Profile.

No network and no Airflow here. :mod:`.tables` holds the actions of Table E.1-1 (from dicom-anonymizer's
copy of the standard's table) and the option columns, :mod:`.keys` the keyed functions (UIDs, pseudonyms,
date shifts), :mod:`.rewrite` applies them to one data set, :mod:`.pipeline` to files and directories,
:mod:`.audit` writes the mapping and the run summary.
"""

from __future__ import annotations

from airflow_dicom.deid.keys import PseudonymKey
from airflow_dicom.deid.options import ProfileOptions

__all__ = ["ProfileOptions", "PseudonymKey"]
