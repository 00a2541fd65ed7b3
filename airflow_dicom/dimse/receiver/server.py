"""The receiver service: a Storage SCP on :class:`~.store.StoreWriter`, embeddable or run as a service.

Every storage SOP class pynetdicom knows plus Verification, every transfer syntax (compressed ones are stored
as sent), an optional calling AE allow-list, bounded concurrent associations, one log line per association
(no PHI), graceful stop. Its application entity is :mod:`airflow_dicom.dimse.pynetdicom_ext`'s acceptor.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts, build_context
from pynetdicom.sop_class import Verification

from airflow_dicom.dimse.arrivals import StudyArrivals
from airflow_dicom.dimse.pynetdicom_ext import AdmissionLimits, make_acceptor_ae
from airflow_dicom.dimse.receiver.store import DatasetTransform, StoredCallback, StoreWriter
from airflow_dicom.dimse.storage_layout import Layout
from airflow_dicom.dimse.tls import ServerTls
from airflow_dicom.dimse.units import size_text

log = logging.getLogger(__name__)


def storage_contexts() -> list[Any]:
    """Every storage SOP class pynetdicom knows plus Verification, each with every transfer syntax."""
    uids = [cx.abstract_syntax for cx in AllStoragePresentationContexts]
    return [build_context(uid, ALL_TRANSFER_SYNTAXES) for uid in [Verification, *uids]]


class Receiver:
    """A Storage SCP built on :class:`StoreWriter`, embeddable or run as a service.

    Use as a context manager (serves in background threads), call :meth:`start`/:meth:`stop`, or
    :meth:`serve_forever` (blocks until :meth:`request_stop`, e.g. from a SIGTERM handler).

    :param data_dir: where instances are stored.
    :param ae_title: our AE title.
    :param host: address to listen on.
    :param port: TCP port (0 picks a free one; see :attr:`port`).
    :param layout: ``patient``, ``study`` or ``flat``.
    :param allowed_aets: if given, only these calling AE titles may associate (others are rejected).
    :param max_associations: concurrent associations at most (more are rejected, transient).
    :param on_stored: callbacks, see :class:`StoreWriter`.
    :param fsync: ``fsync`` each file before it is renamed into place.
    :param acse_timeout: seconds for association negotiation.
    :param dimse_timeout: seconds to wait for a DIMSE message.
    :param network_timeout: seconds of silence before an association is aborted.
    :param max_pdu: largest PDU we accept (0 = unlimited).
    :param tls: serve DICOM over TLS with these settings (mutual TLS with ``require_client_cert``).
    :param idle_timeout: seconds a new connection gets for its TLS handshake and association request
        together; silent connections are dropped after it (they never hold up others).
    :param max_per_peer: connections at most from one peer address (None: no limit).
    :param max_pending: connections at most that are open but have not yet asked to associate.
    :param allowed_networks: if given, only peers in these networks (CIDR strings) may connect.
    :param transform: rewrites each data set before it is stored (pseudonymising receiver), see
        :class:`StoreWriter`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        ae_title: str = "AIRFLOW",
        host: str = "0.0.0.0",
        port: int = 11112,
        layout: str | Layout = Layout.PATIENT,
        allowed_aets: Iterable[str] | None = None,
        max_associations: int = 10,
        on_stored: Iterable[StoredCallback] = (),
        fsync: bool = False,
        acse_timeout: float = 30,
        dimse_timeout: float = 60,
        network_timeout: float = 60,
        max_pdu: int = 262144,
        tls: ServerTls | None = None,
        idle_timeout: float = 10.0,
        max_per_peer: int | None = None,
        max_pending: int = 64,
        allowed_networks: Iterable[str] = (),
        transform: DatasetTransform | None = None,
    ) -> None:
        if max_associations < 1:
            raise ValueError("max_associations must be at least 1")
        self.tls = tls
        self._ssl_context = tls.context() if tls is not None else None
        self.limits = AdmissionLimits(
            idle_timeout=idle_timeout,
            max_pending=max_pending,
            max_per_peer=max_per_peer,
            allowed_networks=tuple(allowed_networks or ()),
        )
        self.writer = StoreWriter(data_dir, layout, on_stored=on_stored, fsync=fsync, transform=transform)
        self.ae_title = ae_title
        self.host = host
        self._requested_port = port
        self.allowed_aets = [a.strip() for a in allowed_aets] if allowed_aets else None
        self.max_associations = max_associations
        self._ae = make_acceptor_ae(ae_title)
        self._ae.acse_timeout = acse_timeout
        self._ae.dimse_timeout = dimse_timeout
        self._ae.network_timeout = network_timeout
        self._ae.maximum_pdu_size = max_pdu
        self._ae.maximum_associations = max_associations
        self._ae.admission = self.limits  # read by the acceptor's server (pynetdicom_ext.admission)
        if self.allowed_aets:
            self._ae.require_calling_aet = self.allowed_aets
        self._server: Any = None
        self._last_server: Any = None
        self._stop_requested = threading.Event()
        self._count_lock = threading.Lock()
        self._associations = 0
        self._rejected = 0

    @property
    def data_dir(self) -> Path:
        """The (resolved) data directory."""
        return self.writer.data_dir

    def study(self, study_uid: str) -> StudyArrivals:
        """What has arrived for ``study_uid`` (received count, bytes, last arrival, SOP UIDs, paths).

        :param study_uid: the StudyInstanceUID.
        """
        return self.writer.study(study_uid)

    @property
    def port(self) -> int:
        """The TCP port actually listened on."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def refused(self) -> dict[str, int]:
        """Connections refused or dropped, by reason: before associating (``idle``, ``tls``, ``per_peer``,
        ``network``, ``pending``, ``tls_on_plain``, ``closed``) and association requests rejected
        (``rejected``: calling AE not allowed, or too many associations)."""
        server = self._server or self._last_server
        counts = dict(getattr(server, "refused", {}) or {})
        with self._count_lock:
            if self._rejected:
                counts["rejected"] = self._rejected
        return counts

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    def start(self) -> Receiver:
        """Start listening and serving in background threads; returns self."""
        if self._server is not None:
            return self
        handlers = [
            (evt.EVT_C_STORE, self.writer.handle_store),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_finished, ["released"]),
            (evt.EVT_ABORTED, self._on_finished, ["aborted"]),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        self._server = self._ae.start_server(
            (self.host, self._requested_port),
            block=False,
            contexts=storage_contexts(),
            evt_handlers=handlers,
            ssl_context=self._ssl_context,
        )
        log.info(
            "receiver %s listening on %s:%d%s, storing to %s (layout %s%s, at most %d associations, "
            "idle timeout %g s%s%s)",
            self.ae_title,
            self.host,
            self.port,
            _tls_text(self.tls),
            self.data_dir,
            self.writer.layout.value,
            f", calling AEs {','.join(self.allowed_aets)}" if self.allowed_aets else "",
            self.max_associations,
            self.limits.idle_timeout,
            f", {self.limits.max_per_peer} per peer" if self.limits.max_per_peer else "",
            f", networks {','.join(map(str, self.limits.allowed_networks))}"
            if self.limits.allowed_networks
            else "",
        )
        return self

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop (safe from a signal handler)."""
        self._stop_requested.set()

    def serve_forever(self, grace: float = 60.0) -> None:
        """Serve until :meth:`request_stop` is called, then stop gracefully.

        :param grace: seconds to let in-flight associations finish after the stop request.
        """
        self.start()
        while not self._stop_requested.wait(0.5):
            pass
        self.stop(grace)

    def stop(self, grace: float = 60.0) -> None:
        """Stop accepting associations, let in-flight ones finish (up to ``grace`` s), then abort the rest.

        :param grace: seconds to wait for in-flight associations.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._last_server = server
        # stop accepting: end the accept loop and close the listening socket; in-flight associations go on
        server.shutdown()
        deadline = time.monotonic() + grace
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in server.active_associations:
            log.warning("aborting association from %s still running after %.0f s", _peer(assoc), grace)
            assoc.abort()
        self.writer.close()
        log.info("receiver %s on port %d stopped", self.ae_title, self.port)

    def __enter__(self) -> Receiver:
        """Start serving in the background."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop (in-flight associations get 10 s to finish)."""
        self.stop(grace=10.0)

    # -- association events (one log line each, no PHI)
    def _on_established(self, event: Any) -> None:
        self.writer.stats_for(event.assoc)

    def _on_finished(self, event: Any, how: str) -> None:
        stats = self.writer.stats_for(event.assoc)
        seconds = time.monotonic() - stats.started
        log.info(
            "association from %s %s: %d stored, %d failed, %s in %.2f s",
            _peer(event.assoc),
            how,
            stats.stored,
            stats.failed,
            size_text(stats.bytes),
            seconds,
        )

    def _on_rejected(self, event: Any) -> None:
        with self._count_lock:
            self._rejected += 1
        log.warning("association from %s rejected", _peer(event.assoc))


def _tls_text(tls: ServerTls | None) -> str:
    if tls is None:
        return ""
    return " with TLS (client certificates required)" if tls.require_client_cert else " with TLS"


def _peer(assoc: Any) -> str:
    try:
        title = str(assoc.requestor.ae_title or "").strip() or "?"
        return f"{title}@{assoc.requestor.address}:{assoc.requestor.port}"
    except Exception:
        return "?"
