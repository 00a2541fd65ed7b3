"""Which pynetdicom the extensions are written for, the run-time check, and the stock fallback.

The extensions in this package subclass pynetdicom internals (its DUL provider, association reactor,
DIMSE provider, sockets and request handler). They are written for and tested with the pynetdicom versions
in :data:`SUPPORTED_PYNETDICOM`, the range ``pyproject.toml`` pins. :func:`extensions_enabled` checks the
installed version once per process, when the first application entity is made. Outside the range nothing
of ours touches pynetdicom's internals: every AE is a :class:`StockAE` (pynetdicom's own classes, with
TCP_NODELAY set through its public ``EVT_CONN_OPEN`` event) and one warning says what falls back.

Applied in both cases (public configuration only): pynetdicom never logs request and response identifiers
(:func:`hide_identifiers_from_logs`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pynetdicom
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version
from pynetdicom import _config, evt
from pynetdicom.ae import ApplicationEntity

from airflow_dicom.dimse.pynetdicom_ext.sockets import set_nodelay

log = logging.getLogger(__name__)

#: the pynetdicom versions the extensions are written for and tested with (``pyproject.toml`` pins the same)
SUPPORTED_PYNETDICOM = ">=3.0,<3.1"
_SUPPORTED = SpecifierSet(SUPPORTED_PYNETDICOM)

#: what a user loses outside the supported range (the warning says it)
FALLBACK_CONSEQUENCES = (
    "associations use pynetdicom's own polling reactors (each message waits up to ~1 ms more, and a busy "
    "machine may lose a response to pynetdicom#875), every C-STORE is decoded and re-encoded by pydicom, "
    "the receiver deep-copies its presentation contexts per association, and a failed TCP connection is "
    "reported as an aborted negotiation, without its reason; TCP_NODELAY is still set (through EVT_CONN_OPEN)"
)

_lock = threading.Lock()
_enabled: bool | None = None


def version_supported(version: str) -> bool:
    """True when ``version`` is in :data:`SUPPORTED_PYNETDICOM` (pre-releases included).

    :param version: a pynetdicom version string.
    """
    try:
        return _SUPPORTED.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def extensions_enabled() -> bool:
    """Whether the installed pynetdicom is one the extensions support; checked once per process.

    The first call that finds an unsupported version logs one warning naming the version and what falls
    back to stock pynetdicom behaviour.
    """
    global _enabled
    with _lock:
        if _enabled is None:
            _enabled = version_supported(pynetdicom.__version__)
            if not _enabled:
                log.warning(
                    "pynetdicom %s is outside the range airflow-dicom's pynetdicom extensions are written "
                    "and tested for (%s): falling back to stock pynetdicom behaviour: %s. Install "
                    "'pynetdicom%s' for the tested behaviour.",
                    pynetdicom.__version__,
                    SUPPORTED_PYNETDICOM,
                    FALLBACK_CONSEQUENCES,
                    SUPPORTED_PYNETDICOM,
                )
        return _enabled


def recheck_version() -> bool:
    """Forget the cached check and check again (for tests that fake ``pynetdicom.__version__``)."""
    global _enabled
    with _lock:
        _enabled = None
    return extensions_enabled()


def _nodelay_on_open(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler: TCP_NODELAY on the new connection (public API only)."""
    set_nodelay(getattr(getattr(event.assoc.dul, "socket", None), "socket", None))


class StockAE(ApplicationEntity):
    """pynetdicom's ApplicationEntity, unchanged but for TCP_NODELAY (the fallback outside the range).

    Adds an ``EVT_CONN_OPEN`` handler to the handlers given to :meth:`associate` and :meth:`start_server`;
    everything else is pynetdicom's own behaviour.
    """

    def associate(self, *args: Any, evt_handlers: list[Any] | None = None, **kwargs: Any) -> Any:
        """pynetdicom's ``associate`` with the TCP_NODELAY handler bound (same parameters)."""
        handlers = [*(evt_handlers or []), (evt.EVT_CONN_OPEN, _nodelay_on_open)]
        return super().associate(*args, evt_handlers=handlers, **kwargs)

    def start_server(self, *args: Any, evt_handlers: list[Any] | None = None, **kwargs: Any) -> Any:
        """pynetdicom's ``start_server`` with the TCP_NODELAY handler bound (same parameters)."""
        handlers = [*(evt_handlers or []), (evt.EVT_CONN_OPEN, _nodelay_on_open)]
        return super().start_server(*args, evt_handlers=handlers, **kwargs)


def hide_identifiers_from_logs() -> None:
    """Stop pynetdicom from logging C-FIND/C-GET/C-MOVE identifiers (PatientName, PatientID...).

    pynetdicom logs every request and response identifier at INFO and Airflow task logs record INFO.
    ``LOG_REQUEST_IDENTIFIERS``/``LOG_RESPONSE_IDENTIFIERS`` are pynetdicom's documented switches for this;
    they are global, so this is the one process-wide setting made here (it also saves formatting every
    identifier: ~0.2 s per 600 matches).
    """
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
