"""Airflow sensors of the DICOM provider."""
