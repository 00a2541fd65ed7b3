"""The provider keeps pynetdicom's per-message INFO lines out of task logs, unless a level was chosen."""

from __future__ import annotations

import logging

import pytest

from airflow_dicom.hooks.task_logs import PYNETDICOM_LOGGER, quiet_pynetdicom


@pytest.fixture
def pynetdicom_logger():  # type: ignore[no-untyped-def]
    logger = logging.getLogger(PYNETDICOM_LOGGER)
    before = logger.level
    yield logger
    logger.setLevel(before)


def test_unset_level_becomes_warning_so_association_failures_still_show(pynetdicom_logger) -> None:
    pynetdicom_logger.setLevel(logging.NOTSET)
    quiet_pynetdicom()
    assert not logging.getLogger("pynetdicom.assoc").isEnabledFor(logging.INFO)
    assert logging.getLogger("pynetdicom.assoc").isEnabledFor(logging.WARNING)


def test_a_level_the_user_chose_is_kept(pynetdicom_logger) -> None:
    pynetdicom_logger.setLevel(logging.DEBUG)
    quiet_pynetdicom()
    assert pynetdicom_logger.level == logging.DEBUG
