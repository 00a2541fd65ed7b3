"""The only code that touches pynetdicom internals: sockets, reactors, requestor, acceptor, compatibility.

Written for the pynetdicom versions in :data:`~.compat.SUPPORTED_PYNETDICOM` (``pyproject.toml`` pins the
same range). The application entities made here are the only ones affected (subclasses, no monkeypatching
of pynetdicom's module state), so other pynetdicom users in the same process are untouched. Outside the
supported range, every factory returns pynetdicom's own behaviour (:class:`~.compat.StockAE`) after one
warning (:func:`~.compat.extensions_enabled`).

Rooms:

* :mod:`.sockets` — TCP_NODELAY everywhere, the reason a connection failed, whole-PDU writes;
* :mod:`.reactors` — the ``select()``-based DUL loop, the association base, the shared end-of-association
  step;
* :mod:`.find` — C-FIND with raw identifiers, responses reassembled by the DUL thread, read in bulk;
* :mod:`.requestor` — associations we open (a reactor that never steals responses) and the raw C-STORE;
* :mod:`.direct` — the C-STORE response read by the thread that sent the request (no DUL hand-over);
* :mod:`.acceptor` — associations our receiver serves (event-driven, C-STOREs through the codec);
* :mod:`.negotiation` — the acceptor's association negotiation, done once per distinct request per server;
* :mod:`.retrieval` — C-MOVE/C-GET responses and a C-GET's C-STOREs through the codec on our associations;
* :mod:`.admission` — the receiver's accept loop only accepts; TLS handshake and first PDU are awaited per
  connection before a deadline; limits per peer, on waiting connections, by network;
* :mod:`.compat` — the supported versions, the run-time check and the stock fallback.

The rest of :mod:`airflow_dicom.dimse` uses only the names exported here.
"""

from __future__ import annotations

from pynetdicom.ae import ApplicationEntity

from airflow_dicom.dimse.pynetdicom_ext.acceptor import AcceptorAE
from airflow_dicom.dimse.pynetdicom_ext.admission import AdmissionLimits
from airflow_dicom.dimse.pynetdicom_ext.compat import (
    SUPPORTED_PYNETDICOM,
    StockAE,
    extensions_enabled,
    hide_identifiers_from_logs,
    recheck_version,
)
from airflow_dicom.dimse.pynetdicom_ext.find import raw_find_supported, send_c_find_raw
from airflow_dicom.dimse.pynetdicom_ext.requestor import RequestorAE, send_c_store
from airflow_dicom.dimse.pynetdicom_ext.sockets import (
    NoDelayAE,
    connect_error,
    recv_error,
    set_nodelay,
    tls_handshake_began,
)

hide_identifiers_from_logs()


def make_requestor_ae(ae_title: str) -> ApplicationEntity:
    """An application entity for the associations we open (C-ECHO, C-FIND, C-MOVE, C-GET, C-STORE).

    :class:`~.requestor.RequestorAE`: TCP_NODELAY, ``select()``-based DUL, a reactor that never takes a
    response, :func:`send_c_store` without pydicom. Outside the supported pynetdicom versions: stock.

    :param ae_title: our AE title.
    """
    return RequestorAE(ae_title=ae_title) if extensions_enabled() else StockAE(ae_title=ae_title)


def make_acceptor_ae(ae_title: str) -> ApplicationEntity:
    """An application entity for our servers (the receiver): event-driven acceptors, C-STOREs via the codec.

    :param ae_title: our AE title.
    """
    return AcceptorAE(ae_title=ae_title) if extensions_enabled() else StockAE(ae_title=ae_title)


def make_nodelay_ae(ae_title: str) -> ApplicationEntity:
    """pynetdicom's own application entity with TCP_NODELAY on every socket (peers in tests, baselines).

    :param ae_title: its AE title.
    """
    return NoDelayAE(ae_title=ae_title) if extensions_enabled() else StockAE(ae_title=ae_title)


__all__ = [
    "AdmissionLimits",
    "SUPPORTED_PYNETDICOM",
    "connect_error",
    "extensions_enabled",
    "make_acceptor_ae",
    "make_nodelay_ae",
    "make_requestor_ae",
    "recheck_version",
    "raw_find_supported",
    "recv_error",
    "send_c_find_raw",
    "send_c_store",
    "set_nodelay",
    "tls_handshake_began",
]
