"""Subcommands of ``airflow-dicom``: one module each, registered with :func:`airflow_dicom.cli.command`."""
