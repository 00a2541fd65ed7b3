"""Subcommands of ``airflow-dicom``: one module each, registered with :func:`airflow_dicom.cli.command`.

Every module here is imported when the console script starts (to build the parser), so each imports the
DICOM services and the Parquet layer inside the function that runs its command: ``airflow-dicom echo`` does
not pay for C-FIND, retrieval or pyarrow (importing them all costs ~50 ms, pyarrow ~0.3 s; the whole
``echo`` command takes ~0.35 s).
"""
