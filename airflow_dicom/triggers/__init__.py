"""Airflow triggers of the DICOM provider (run in the triggerer; never block its event loop)."""
