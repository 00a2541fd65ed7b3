"""The receiver: a Storage SCP that writes what it receives, as received, safely.

Rooms: :mod:`.identifiers` (the header values a layout needs), :mod:`.incoming` (where files are
written before their rename), and two layers:

* :class:`StoreWriter` — the store core, independent of any server: read the few header tags the
  layout needs, validate every identifier that becomes a path component, write preamble + file meta +
  the received bytes to ``*.tmp`` and ``os.replace`` it into place, append an arrival record, return a
  status. :meth:`StoreWriter.handle_store` is an ``evt.EVT_C_STORE`` handler, so the same code stores
  instances for the server, for a C-GET requestor and for an embedded C-MOVE destination.
* :class:`Receiver` — the Storage SCP service built on it: every storage SOP class pynetdicom knows
  plus Verification, every transfer syntax (compressed ones are stored as sent), optional calling AE
  allow-list, bounded concurrent associations, one log line per association, graceful stop.

Statuses: success (0x0000) only once the file is in place and recorded; 0xC210 identifiers unsafe for a
file name; 0xC211 dataset unreadable (the raw bytes are kept in ``<data_dir>/.quarantine``, as are
refused instances: nothing is lost); 0xA700 out of resources for disk/permission errors.
"""

from __future__ import annotations

from airflow_dicom.dimse.errors import UnreadableDatasetError
from airflow_dicom.dimse.receiver.identifiers import Identifiers, read_identifiers
from airflow_dicom.dimse.receiver.server import Receiver, storage_contexts
from airflow_dicom.dimse.receiver.store import (
    INCOMING_DIR,
    QUARANTINE_DIR,
    AssociationStats,
    StoredCallback,
    StoredInstance,
    StoreOutcome,
    StoreWriter,
)

__all__ = [
    "INCOMING_DIR",
    "QUARANTINE_DIR",
    "AssociationStats",
    "Identifiers",
    "Receiver",
    "StoreOutcome",
    "StoreWriter",
    "StoredCallback",
    "StoredInstance",
    "UnreadableDatasetError",
    "read_identifiers",
    "storage_contexts",
]
