"""The store core: write what was received, as received, safely; record its arrival; answer a status.

:class:`StoreWriter` is independent of any server: it reads the few header tags the layout needs, validates
every identifier that becomes a path component, writes preamble + file meta + the received bytes to
``*.tmp`` and ``os.replace``-s it into place, appends an arrival record and returns a status.
:meth:`StoreWriter.handle_store` is an ``evt.EVT_C_STORE`` handler, so the same code stores instances for
the receiver's server, for a C-GET requestor and for an embedded C-MOVE destination.

Statuses: success (0x0000) only once the file is in place and recorded; 0xC210 identifiers unsafe for a
file name; 0xC211 dataset unreadable (the raw bytes are kept in ``<data_dir>/.quarantine``, as are
refused instances: nothing is lost); 0xA700 out of resources for disk/permission errors.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from airflow_dicom.dimse.arrivals import ArrivalLog, ArrivalRecord, StudyArrivals, now, study_arrivals
from airflow_dicom.dimse.codec import encode_file_meta
from airflow_dicom.dimse.errors import UnreadableDatasetError, UnsafeIdentifierError
from airflow_dicom.dimse.pynetdicom_ext.inbound import reader_safe
from airflow_dicom.dimse.receiver.identifiers import read_identifiers
from airflow_dicom.dimse.receiver.incoming import IncomingDir
from airflow_dicom.dimse.status import Status
from airflow_dicom.dimse.storage_layout import Layout, is_valid_uid, relative_instance_path, resolve_inside

log = logging.getLogger(__name__)

#: directory under the data directory where unreadable or refused datasets are kept.
QUARANTINE_DIR = ".quarantine"
#: directory under the data directory where files are written before being renamed into place.
INCOMING_DIR = ".incoming"
#: directories remembered as made / resolved at most (then forgotten and checked again)
_DIRECTORIES_REMEMBERED = 4096


@dataclass(frozen=True)
class StoredInstance:
    """An instance that was stored: its arrival record plus where the file is on this machine.

    :param record: the arrival record (relative path, sizes, UIDs, calling AE, time).
    :param path: absolute path of the file.
    :param transfer_syntax: the transfer syntax it was received (and stored) in.
    """

    record: ArrivalRecord
    path: Path
    transfer_syntax: str


@dataclass(frozen=True)
class StoreOutcome:
    """The result of one store: the status to send and what happened.

    :param status: the C-STORE status.
    :param instance: the stored instance (success only).
    :param reason: why it was refused (failures only; no PHI).
    :param quarantined: where the raw bytes were kept, if they were.
    """

    status: int
    instance: StoredInstance | None = None
    reason: str = ""
    quarantined: Path | None = None


@dataclass
class AssociationStats:
    """Counters for one association (for the per-association log line)."""

    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    failed: int = 0
    bytes: int = 0


StoredCallback = Callable[[StoredInstance], object]


class _CallbackRunner:
    """Runs user callbacks in one background thread; an exception is logged, never propagated."""

    def __init__(self, callbacks: Sequence[StoredCallback]) -> None:
        self.callbacks = list(callbacks)
        self._queue: queue.Queue[StoredInstance | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, instance: StoredInstance) -> None:
        if not self.callbacks:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="receiver-callbacks", daemon=True)
                self._thread.start()
        self._queue.put(instance)

    def _run(self) -> None:
        while True:
            instance = self._queue.get()
            try:
                if instance is None:
                    return
                for callback in self.callbacks:
                    try:
                        callback(instance)
                    except Exception:
                        log.exception(
                            "callback %r failed for SOP instance %s (the instance is stored)",
                            getattr(callback, "__name__", callback),
                            instance.record.sop_uid,
                        )
            finally:
                self._queue.task_done()

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every submitted callback ran, then stop the thread."""
        with self._lock:
            thread = self._thread
            self._thread = None
        if thread is None:
            return
        self._queue.put(None)
        thread.join(timeout)


class DatasetTransform(Protocol):
    """Rewrites a received data set before it is stored (see :class:`StoreWriter`)."""

    def __call__(
        self, data: bytes, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str
    ) -> tuple[bytes, str]: ...


class StoreWriter:
    """Stores received C-STORE datasets under a data directory (the receiver's core).

    Thread-safe: one instance serves every association of a server (or a C-GET requestor).

    :param data_dir: the data directory (created if missing).
    :param layout: ``patient``, ``study`` or ``flat`` (see :class:`Layout`).
    :param on_stored: callbacks called with a :class:`StoredInstance` after each stored instance, in a
        background thread; an exception in a callback is logged and never affects the receiver.
    :param fsync: ``fsync`` each file before renaming it into place (survives power loss; slower).
    :param record_arrivals: append arrival records under ``<data_dir>/.arrivals``.
    :param transform: rewrites each data set before anything is written (the pseudonymising receiver:
        ``airflow_dicom.deid.instance.InstanceRewriter.rewrite_dataset``); called with the data set and
        the keywords ``sop_class_uid``, ``sop_instance_uid``, ``transfer_syntax``, returns the new data set
        and its SOP Instance UID, raises ``ValueError`` (reason without identifying values) to refuse it.
        With a transform, refused instances are **not** quarantined: nothing received in clear reaches
        the disk.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        layout: str | Layout = Layout.PATIENT,
        *,
        on_stored: Iterable[StoredCallback] = (),
        fsync: bool = False,
        record_arrivals: bool = True,
        transform: DatasetTransform | None = None,
    ) -> None:
        self.layout = Layout.parse(layout)
        self.transform = transform
        root = Path(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(os.path.realpath(root))
        self.fsync = fsync
        self.arrivals = ArrivalLog(self.data_dir) if record_arrivals else None
        self._incoming = IncomingDir(self.data_dir / INCOMING_DIR)
        self._callbacks = _CallbackRunner(list(on_stored))
        self._made_dirs: set[Path] = set()
        #: resolved, checked parent directories by relative parent path (see :meth:`_inside`)
        self._resolved: dict[str, Path] = {}
        self._stats: weakref.WeakKeyDictionary[Any, AssociationStats] = weakref.WeakKeyDictionary()
        self._stats_lock = threading.Lock()

    # -- pynetdicom handler
    @reader_safe
    def handle_store(self, event: Any) -> int:
        """``evt.EVT_C_STORE`` handler: store the dataset as received and return the status.

        Thread-safe and never waits on the association: our acceptor runs it in the thread that read the
        request (:func:`~airflow_dicom.dimse.pynetdicom_ext.inbound.reader_safe`).

        :param event: the pynetdicom C-STORE event.
        """
        request = event.request
        stream = request.DataSet
        data = stream.getvalue() if isinstance(stream, io.BytesIO) else event.encoded_dataset(False)
        assoc = event.assoc
        outcome = self.store(
            data,
            sop_class_uid=str(request.AffectedSOPClassUID or ""),
            sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            transfer_syntax=str(event.context.transfer_syntax),
            calling_ae=_peer_ae_title(assoc),
        )
        stats = self.stats_for(assoc)
        if outcome.instance is not None:
            stats.stored += 1
            stats.bytes += outcome.instance.record.bytes
        else:
            stats.failed += 1
        return outcome.status

    def study(self, study_uid: str) -> StudyArrivals:
        """What has arrived for ``study_uid`` (from the arrival records of every writer of this data dir).

        :param study_uid: the StudyInstanceUID.
        """
        return study_arrivals(self.data_dir, study_uid)

    def stats_for(self, assoc: Any) -> AssociationStats:
        """The counters of an association (created on first use).

        :param assoc: a pynetdicom association.
        """
        with self._stats_lock:
            stats = self._stats.get(assoc)
            if stats is None:
                stats = self._stats[assoc] = AssociationStats()
            return stats

    # -- the store core
    def store(
        self,
        data: bytes,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        calling_ae: str = "",
    ) -> StoreOutcome:
        """Store one encoded dataset; never raises for bad input or disk errors (see the status).

        :param data: the dataset as received (without file meta).
        :param sop_class_uid: the C-STORE's Affected SOP Class UID.
        :param sop_instance_uid: the C-STORE's Affected SOP Instance UID.
        :param transfer_syntax: the presentation context's transfer syntax.
        :param calling_ae: the sender's AE title (logged and recorded).
        """
        if self.transform is not None:
            try:
                data, sop_instance_uid = self.transform(
                    data,
                    sop_class_uid=sop_class_uid,
                    sop_instance_uid=sop_instance_uid,
                    transfer_syntax=transfer_syntax,
                )
            except ValueError as exc:
                held = getattr(exc, "held_back", False)  # deid's HeldBackError (burned-in text)
                status = Status.HELD_BACK if held else Status.UNREADABLE_DATASET
                return self._refuse(status, str(exc), data, sop_class_uid, "", transfer_syntax, calling_ae)
        try:
            ids = read_identifiers(data, transfer_syntax)
            if ids.sop_uid is None:
                raise UnreadableDatasetError("no SOPInstanceUID in the dataset")
        except UnreadableDatasetError as exc:
            return self._refuse(
                Status.UNREADABLE_DATASET,
                f"dataset could not be read ({exc})",
                data,
                sop_class_uid,
                sop_instance_uid,
                transfer_syntax,
                calling_ae,
            )
        try:
            relative = relative_instance_path(
                self.layout,
                sop_uid=ids.sop_uid,
                study_uid=ids.study_uid,
                series_uid=ids.series_uid,
                patient_id=ids.patient_id,
            )
            if ids.sop_uid != sop_instance_uid.rstrip("\0 "):
                raise UnsafeIdentifierError(
                    "SOPInstanceUID", "in the dataset differs from the C-STORE's Affected SOP Instance UID"
                )
            # records need the study even for the flat layout
            if ids.study_uid is None or not is_valid_uid(ids.study_uid):
                raise UnsafeIdentifierError("StudyInstanceUID", "is missing or not a UID")
            if ids.series_uid is None or not is_valid_uid(ids.series_uid):
                raise UnsafeIdentifierError("SeriesInstanceUID", "is missing or not a UID")
            target = self._inside(relative)
        except UnsafeIdentifierError as exc:
            return self._refuse(
                Status.UNSAFE_IDENTIFIERS,
                f"refused: {exc}",
                data,
                sop_class_uid,
                sop_instance_uid,
                transfer_syntax,
                calling_ae,
            )
        meta = encode_file_meta(sop_class_uid, ids.sop_uid, transfer_syntax, _ae_for_meta(calling_ae))
        try:
            size = self._write_atomically(target, (meta, data))
            record = ArrivalRecord(
                study_uid=ids.study_uid,
                series_uid=ids.series_uid,
                sop_uid=ids.sop_uid,
                sop_class_uid=sop_class_uid,
                path=relative,
                bytes=size,
                calling_ae=calling_ae,
                time=now(),
            )
            if self.arrivals is not None:
                self.arrivals.append(record)
        except OSError as exc:
            log.error(
                "cannot store SOP instance %s from %s in %s: %s (answered out of resources 0xA700)",
                ids.sop_uid,
                calling_ae or "?",
                self.data_dir,
                exc.strerror or exc,
            )
            return StoreOutcome(Status.OUT_OF_RESOURCES, reason=f"cannot write: {exc.strerror or exc}")
        instance = StoredInstance(record, target, str(transfer_syntax))
        self._callbacks.submit(instance)
        return StoreOutcome(Status.SUCCESS, instance=instance)

    def _inside(self, relative: str) -> Path:
        """:func:`resolve_inside` once per directory: one ``realpath`` per new series, not per instance.

        ``relative`` comes from :func:`relative_instance_path` (every component a checked UID or an
        escaped patient ID); its directory is resolved and checked the first time, then remembered until
        a write finds it gone (:meth:`_write_atomically` forgets them all).
        """
        parent, _, name = relative.rpartition("/")
        known = self._resolved.get(parent)
        if known is not None:
            return known / name
        target = resolve_inside(self.data_dir, relative)
        if len(self._resolved) >= _DIRECTORIES_REMEMBERED:
            self._resolved.clear()
        self._resolved[parent] = target.parent
        return target

    def _ensure_dir(self, directory: Path) -> None:
        if directory not in self._made_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            if len(self._made_dirs) >= _DIRECTORIES_REMEMBERED:
                self._made_dirs.clear()
            self._made_dirs.add(directory)

    def _write_atomically(self, target: Path, chunks: Sequence[bytes]) -> int:
        """Write ``chunks`` to ``<target>.<random>.tmp`` then rename it to ``target``; return the size."""
        self._ensure_dir(target.parent)
        tmp = self._incoming.tmp_path(target.name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:  # our incoming directory was removed under us: make it again
            self._incoming.ensure()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        total = sum(len(c) for c in chunks)
        try:
            try:
                pending = [memoryview(c) for c in chunks]
                while pending:
                    written = os.writev(fd, pending)
                    while pending and written >= len(pending[0]):
                        written -= len(pending[0])
                        pending.pop(0)
                    if pending and written:
                        pending[0] = pending[0][written:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, target)
            except FileNotFoundError:  # the target directory was removed since cached: make it again
                self._made_dirs.discard(target.parent)
                self._resolved.clear()
                try:  # check it again: whatever replaced it must still be inside the data directory
                    resolve_inside(self.data_dir, target.relative_to(self.data_dir).as_posix())
                except UnsafeIdentifierError as exc:
                    raise OSError(f"{target.parent} is no longer inside the data directory") from exc
                self._ensure_dir(target.parent)
                os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return total

    def _refuse(
        self,
        status: int,
        reason: str,
        data: bytes,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        calling_ae: str,
    ) -> StoreOutcome:
        """Keep the raw bytes in quarantine and answer ``status`` (0xA700 if even that fails).

        With a transform (pseudonymising receiver) nothing is kept: the bytes may identify the patient.
        """
        if self.transform is not None:
            log.warning(
                "refused an instance from %s with status 0x%04X: %s", calling_ae or "?", status, reason
            )
            return StoreOutcome(status, reason=reason)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{secrets.token_hex(6)}"
        target = self.data_dir / QUARANTINE_DIR / f"{name}.dcm"
        clean_class = sop_class_uid if is_valid_uid(sop_class_uid) else ""
        clean_sop = sop_instance_uid if is_valid_uid(sop_instance_uid) else ""
        meta = encode_file_meta(clean_class, clean_sop, transfer_syntax, _ae_for_meta(calling_ae))
        info = {
            "status": f"0x{status:04X}",
            "reason": reason,
            "calling_ae": calling_ae,
            "sop_class_uid": clean_class,
            "affected_sop_instance_uid": clean_sop,
            "transfer_syntax": str(transfer_syntax),
            "bytes": len(data),
            "time": now(),
        }
        try:
            self._write_atomically(target, (meta, data))
            sidecar = json.dumps(info, indent=1).encode("utf-8")
            self._write_atomically(target.with_suffix(".json"), (sidecar,))
        except OSError as exc:
            log.error(
                "refused an instance from %s (%s) and could not quarantine it: %s",
                calling_ae or "?",
                reason,
                exc.strerror or exc,
            )
            return StoreOutcome(Status.OUT_OF_RESOURCES, reason=f"{reason}; quarantine failed: {exc}")
        log.warning(
            "refused an instance from %s with status 0x%04X: %s; raw bytes kept in %s",
            calling_ae or "?",
            status,
            reason,
            target,
        )
        return StoreOutcome(status, reason=reason, quarantined=target)

    def close(self, timeout: float | None = 30.0) -> None:
        """Wait for pending callbacks to run and release the incoming directory.

        :param timeout: seconds to wait at most for callbacks.
        """
        self._callbacks.drain(timeout)
        self._incoming.close()


def _peer_ae_title(assoc: Any) -> str:
    """The sender's AE title: the requestor for a server, the acceptor (the PACS) for a C-GET requestor."""
    user = assoc.requestor if getattr(assoc, "is_acceptor", True) else assoc.acceptor
    return str(user.ae_title or "").strip()


def _ae_for_meta(calling_ae: str) -> str:
    title = "".join(c for c in calling_ae if 32 <= ord(c) < 127 and c != "\\")
    return title[:16]
