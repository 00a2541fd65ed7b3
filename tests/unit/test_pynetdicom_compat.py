"""The supported pynetdicom range: checked once, and outside it stock pynetdicom with one warning."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pynetdicom
import pytest

from airflow_dicom.dimse import pynetdicom_ext
from airflow_dicom.dimse.pynetdicom_ext.acceptor import AcceptorAE
from airflow_dicom.dimse.pynetdicom_ext.compat import SUPPORTED_PYNETDICOM, StockAE, version_supported
from airflow_dicom.dimse.pynetdicom_ext.requestor import RequestorAE
from airflow_dicom.dimse.pynetdicom_ext.sockets import NoDelayAE


@pytest.fixture
def fake_version(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pynetdicom claims to be 3.1.0 for the test; the real check is redone afterwards."""
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    yield
    monkeypatch.undo()
    assert pynetdicom_ext.recheck_version()


def test_supported_range_is_what_pyproject_pins() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"pynetdicom{SUPPORTED_PYNETDICOM}"' in pyproject
    assert version_supported("3.0.0") and version_supported("3.0.4") and version_supported("3.0.5rc1")
    assert not version_supported("3.1.0") and not version_supported("2.1.2") and not version_supported("x")
    assert version_supported(pynetdicom.__version__)  # the installed one (the test suite runs it)


def test_factories_use_the_extensions_in_range() -> None:
    assert pynetdicom_ext.recheck_version()
    assert type(pynetdicom_ext.make_requestor_ae("A")) is RequestorAE
    assert type(pynetdicom_ext.make_acceptor_ae("A")) is AcceptorAE
    assert type(pynetdicom_ext.make_nodelay_ae("A")) is NoDelayAE


def test_outside_the_range_every_factory_falls_back_with_one_warning(
    fake_version: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_dicom.dimse.pynetdicom_ext")
    assert not pynetdicom_ext.recheck_version()
    made = [
        pynetdicom_ext.make_requestor_ae("A"),
        pynetdicom_ext.make_acceptor_ae("B"),
        pynetdicom_ext.make_nodelay_ae("C"),
        pynetdicom_ext.make_requestor_ae("D"),
    ]
    assert all(type(ae) is StockAE for ae in made)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "pynetdicom 3.1.0" in text and ">=3.0,<3.1" in text and "stock pynetdicom" in text
    assert "decoded and re-encoded" in text and "TCP_NODELAY" in text
