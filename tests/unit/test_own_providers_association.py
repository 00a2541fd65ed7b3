"""Our associations are built as pynetdicom 3.0 builds its own, with our providers from the start."""

from __future__ import annotations

import threading

import pytest
from pynetdicom.association import Association

from airflow_dicom.dimse import pynetdicom_ext
from airflow_dicom.dimse.pynetdicom_ext.acceptor import AcceptorAssociation
from airflow_dicom.dimse.pynetdicom_ext.inbound import InboundDUL
from airflow_dicom.dimse.pynetdicom_ext.negotiation import NegotiatingACSE
from airflow_dicom.dimse.pynetdicom_ext.requestor import RequestorAssociation

_PROVIDERS = {"acse", "dul", "dimse"}


@pytest.mark.parametrize(
    ("ours_class", "mode"), [(AcceptorAssociation, "acceptor"), (RequestorAssociation, "requestor")]
)
def test_same_state_as_pynetdicoms_association(ours_class: type, mode: str) -> None:
    ae = pynetdicom_ext.make_acceptor_ae("SAME")
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout, ae.connection_timeout = 11, 22, 33, 44
    stock = Association(ae, mode)
    ours = ours_class(ae, mode)
    assert set(vars(stock)) <= set(vars(ours))  # every attribute pynetdicom sets (ours may add some)
    thread_state = set(vars(threading.Thread()))  # the Thread's own (names, locks, hooks): not compared
    for name, value in vars(stock).items():
        if name in _PROVIDERS or name in thread_state or name in {"_dul_ready", "_reactor_checkpoint"}:
            continue
        if name in {"requestor", "acceptor"}:
            assert (getattr(ours, name).mode, getattr(ours, name).assoc) == (value.mode, ours)
        elif name == "_handlers":
            assert set(getattr(ours, name)) <= set(value)  # pynetdicom's logging handlers may be unbound
        else:
            assert getattr(ours, name) == value, name
    assert ours._reactor_checkpoint.is_set() and not ours._dul_ready.is_set()
    assert (ours.acse_timeout, ours.dimse_timeout, ours.network_timeout) == (11, 22, 33)
    assert (ours.dul.artim_timer.timeout, ours.dul._idle_timer.timeout) == (11, 33)
    assert ours.dimse.dimse_timeout == 22 and ours.daemon and ours.mode == mode
    for provider in _PROVIDERS:
        assert getattr(ours, provider).assoc is ours


def test_acceptor_providers_are_ours() -> None:
    assoc = AcceptorAssociation(pynetdicom_ext.make_acceptor_ae("OURS"), "acceptor")
    assert isinstance(assoc.dul, InboundDUL) and isinstance(assoc.acse, NegotiatingACSE)
    assert type(assoc.dimse).__name__ == "StoreRequestDIMSE"
