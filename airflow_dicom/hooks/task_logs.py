"""What DICOM tasks write to their Airflow task log.

pynetdicom logs every PDU and DIMSE message at INFO on stdlib loggers ("Requesting Association", "Move SCP
Response: 3 - 0xFF00 (Pending)", empty lines from its dumps). In a task log pane at Airflow's default INFO
they bury the lines a person reads (``[3/10] C-MOVE STUDY ...: complete, 4/4 instances``), and Airflow's
``[logging] namespace_levels`` does not reach stdlib loggers in the task process. So the ``pynetdicom``
logger is set to WARNING (its failures still show) unless someone already chose its level.
"""

from __future__ import annotations

import logging

PYNETDICOM_LOGGER = "pynetdicom"


def quiet_pynetdicom(level: int = logging.WARNING) -> None:
    """Set the ``pynetdicom`` logger to ``level`` when its level was never set (``NOTSET``).

    :param level: the level to use (default WARNING: association failures and aborts still show).
    """
    logger = logging.getLogger(PYNETDICOM_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(level)
