"""A configurable pynetdicom Storage SCP for send tests: refuses SOP classes, fails or delays some stores.

Built with :func:`airflow_dicom.dimse.pynetdicom_ext.make_nodelay_ae` (pynetdicom's own acceptor with
TCP_NODELAY). Received data sets are kept in memory as raw bytes with their transfer syntax, keyed by SOP
Instance UID.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from airflow_dicom.dimse.pynetdicom_ext import make_nodelay_ae

from .ports import free_port

__all__ = ["Received", "StoreSCP"]

_UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
#: every transfer syntax pynetdicom knows, so compressed files are accepted as they are.
ALL_SYNTAXES = list(ALL_TRANSFER_SYNTAXES)


@dataclass(frozen=True)
class Received:
    """One stored instance: its SOP class, the transfer syntax it came in, and the data set bytes."""

    sop_class_uid: str
    transfer_syntax: str
    data: bytes


@dataclass
class StoreSCP:
    """pynetdicom Storage SCP on a free loopback port.

    :param aet: its AE title.
    :param refuse: SOP classes whose presentation contexts are rejected.
    :param uncompressed_only: SOP classes accepted only in uncompressed syntaxes (others: any syntax).
    :param fail_with: SOP class -> failure status returned for every store of that class.
    :param hang_once: SOP instance UIDs whose first C-STORE is answered only after ``hang_seconds``
        (simulates a lost response; the second attempt is answered at once).
    :param hang_seconds: the delay for ``hang_once`` instances.
    """

    aet: str = "PYSCP"
    refuse: Iterable[str] = ()
    uncompressed_only: Iterable[str] = ()
    fail_with: Mapping[str, int] = field(default_factory=dict)
    hang_once: Iterable[str] = ()
    hang_seconds: float = 5.0
    port: int = field(default_factory=free_port)
    received: dict[str, Received] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = None
        self._hang = set(self.hang_once)

    def _handle_store(self, event: evt.Event) -> int:
        req = event.request
        sop_uid = str(req.AffectedSOPInstanceUID)
        sop_class = str(req.AffectedSOPClassUID)
        with self._lock:
            self.attempts[sop_uid] = self.attempts.get(sop_uid, 0) + 1
            first = self.attempts[sop_uid] == 1
        if sop_uid in self._hang and first:
            time.sleep(self.hang_seconds)
            return 0xA700  # whatever comes after the sender gave up is never read
        if sop_class in self.fail_with:
            return int(self.fail_with[sop_class])
        # as dcmtk and Orthanc do: the data set must be the instance the request names
        ds = event.dataset
        if str(ds.get("SOPInstanceUID", "")) != sop_uid or str(ds.get("SOPClassUID", "")) != sop_class:
            return 0xA900
        with self._lock:
            self.received[sop_uid] = Received(
                sop_class, str(event.context.transfer_syntax), req.DataSet.getvalue()
            )
        return 0x0000

    def start(self) -> StoreSCP:
        """Start serving (threaded server)."""
        ae = make_nodelay_ae(self.aet)
        refused = set(self.refuse)
        uncompressed = set(self.uncompressed_only)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax in refused:
                continue
            if context.abstract_syntax in uncompressed:
                ae.add_supported_context(context.abstract_syntax, _UNCOMPRESSED)
            else:
                ae.add_supported_context(context.abstract_syntax, ALL_SYNTAXES)
        ae.maximum_associations = 16
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._handle_store)]
        )
        return self

    def stop(self) -> None:
        """Stop the server."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> StoreSCP:
        """Start and return the SCP."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the SCP."""
        self.stop()
