"""``hostname_callable`` of the stack's Celery workers: each names the host it stands for."""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    """The host this process stands for (``AIRFLOW_DICOM_HOSTNAME``), else the machine's FQDN."""
    return os.environ.get("AIRFLOW_DICOM_HOSTNAME") or socket.getfqdn()
