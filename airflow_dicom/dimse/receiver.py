"""The receiver: a Storage SCP that writes what it receives, as received, safely.

Two layers:

* :class:`StoreWriter` — the store core, independent of any server: read the few header tags the
  layout needs, validate every identifier that becomes a path component, write preamble + file meta +
  the received bytes to ``*.tmp`` and ``os.replace`` it into place, append an arrival record, return a
  status. :meth:`StoreWriter.handle_store` is an ``evt.EVT_C_STORE`` handler, so the same code stores
  instances for this module's server, for a C-GET requestor and for an embedded C-MOVE destination.
* :class:`Receiver` — the Storage SCP service built on it: every storage SOP class pynetdicom knows
  plus Verification, every transfer syntax (compressed ones are stored as sent), optional calling AE
  allow-list, bounded concurrent associations, one log line per association, graceful stop.

Statuses: success (0x0000) only once the file is in place and recorded; 0xC210 identifiers unsafe for a
file name; 0xC211 dataset unreadable (the raw bytes are kept in ``<data_dir>/.quarantine``, as are
refused instances: nothing is lost); 0xA700 out of resources for disk/permission errors.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

from airflow_dicom.dimse.arrivals import ArrivalLog, ArrivalRecord, StudyArrivals, now, study_arrivals
from airflow_dicom.dimse.codec import ElementWalker, decode_text, encode_file_meta
from airflow_dicom.dimse.errors import MalformedDicomError, UnreadableDatasetError, UnsafeIdentifierError
from airflow_dicom.dimse.pynetdicom_ext import make_acceptor_ae
from airflow_dicom.dimse.status import Status
from airflow_dicom.dimse.storage_layout import (
    Layout,
    is_valid_uid,
    relative_instance_path,
    resolve_inside,
)

log = logging.getLogger(__name__)

#: directory under the data directory where unreadable or refused datasets are kept.
QUARANTINE_DIR = ".quarantine"
#: directory under the data directory where files are written before being renamed into place.
INCOMING_DIR = ".incoming"

_SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
_SOP_CLASS_UID = Tag(0x0008, 0x0016)
_SOP_INSTANCE_UID = Tag(0x0008, 0x0018)
_PATIENT_ID = Tag(0x0010, 0x0020)
_STUDY_UID = Tag(0x0020, 0x000D)
_SERIES_UID = Tag(0x0020, 0x000E)
_HEADER_TAGS = [
    _SPECIFIC_CHARACTER_SET,
    _SOP_CLASS_UID,
    _SOP_INSTANCE_UID,
    _PATIENT_ID,
    _STUDY_UID,
    _SERIES_UID,
]
_WANTED = frozenset(int(tag) for tag in _HEADER_TAGS)

#: bytes of a deflated dataset inflated to find the header tags
_MAX_INFLATED_HEADER = 4 << 20


@dataclass(frozen=True)
class Identifiers:
    """The header values a layout needs, decoded (``None`` when absent)."""

    sop_uid: str | None
    study_uid: str | None
    series_uid: str | None
    patient_id: str | None
    sop_class_uid: str | None


def _patient_id(raw: bytes, charset: bytes | str | None) -> str:
    """PatientID decoded with the dataset's Specific Character Set (pydicom's decoder)."""
    text = charset.decode("ascii", "replace") if isinstance(charset, bytes) else charset or ""
    text = text.rstrip("\0 ").strip()
    encodings = convert_encodings([c.strip() for c in text.split("\\")] if text else None)
    return decode_bytes(raw, encodings, set()).rstrip("\0 ").strip()


def _from_values(values: dict[int, Any]) -> Identifiers:
    """Identifiers from ``{tag: raw value}`` (bytes from the codec; pydicom values are accepted too)."""

    def text(tag: int) -> str | None:
        value = values.get(tag)
        if value is None:
            return None
        return decode_text(value) if isinstance(value, bytes) else str(value).rstrip("\0 ").strip()

    raw_pid = values.get(int(_PATIENT_ID))
    patient_id = None
    if isinstance(raw_pid, bytes):
        patient_id = _patient_id(raw_pid, values.get(int(_SPECIFIC_CHARACTER_SET)))
    elif raw_pid is not None:
        patient_id = str(raw_pid).rstrip("\0 ").strip()
    return Identifiers(
        sop_uid=text(int(_SOP_INSTANCE_UID)),
        study_uid=text(int(_STUDY_UID)),
        series_uid=text(int(_SERIES_UID)),
        patient_id=patient_id,
        sop_class_uid=text(int(_SOP_CLASS_UID)),
    )


def _stop_after_series(tag: Any, vr: Any, length: int) -> bool:
    return tag > _SERIES_UID


def read_identifiers(data: bytes, transfer_syntax: str) -> Identifiers:
    """Read SOP/Study/Series Instance UIDs, SOP Class UID and PatientID from an encoded dataset.

    Only the top-level elements up to (0020,000E) are parsed, values are not validated by pydicom (the
    caller validates what becomes a path), pixel data is never touched. Little endian data sets are read
    with the codec's element walker; anything it cannot read (and deflated or big endian data) is read by
    pydicom, which decides.

    :param data: the dataset as received (no file meta).
    :param transfer_syntax: the transfer syntax it is encoded in.
    :raises UnreadableDatasetError: the bytes cannot be parsed as a dataset in that syntax.
    """
    ts = UID(transfer_syntax)
    if ts.is_little_endian and not ts.is_deflated:
        try:
            return _read_with_codec(data, ts.is_implicit_VR)
        except (MalformedDicomError, LookupError, ValueError):
            pass  # unusual encoding (or not a dataset): pydicom decides
    return _read_with_pydicom(data, ts)


def _read_with_codec(data: bytes, implicit: bool) -> Identifiers:
    walker = ElementWalker(data, implicit=implicit)
    return _from_values(walker.values(_WANTED, stop=int(_SERIES_UID)))


def _read_with_pydicom(data: bytes, ts: UID) -> Identifiers:
    try:
        if ts.is_deflated:  # the header is near the start: never inflate a whole (possibly hostile) stream
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, _MAX_INFLATED_HEADER)
        ds = read_dataset(
            io.BytesIO(data),
            ts.is_implicit_VR,
            ts.is_little_endian,
            stop_when=_stop_after_series,
            specific_tags=_HEADER_TAGS,
        )
        values = {}
        for tag in _HEADER_TAGS:
            element = ds.get_item(tag)
            if element is not None and element.value is not None:
                values[int(tag)] = element.value
        return _from_values(values)
    except Exception as exc:  # anything pydicom or zlib raise on garbage
        raise UnreadableDatasetError(f"{type(exc).__name__}: {exc}") from exc


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


class StoreWriter:
    """Stores received C-STORE datasets under a data directory (the receiver's core).

    Thread-safe: one instance serves every association of a server (or a C-GET requestor).

    :param data_dir: the data directory (created if missing).
    :param layout: ``patient``, ``study`` or ``flat`` (see :class:`Layout`).
    :param on_stored: callbacks called with a :class:`StoredInstance` after each stored instance, in a
        background thread; an exception in a callback is logged and never affects the receiver.
    :param fsync: ``fsync`` each file before renaming it into place (survives power loss; slower).
    :param record_arrivals: append arrival records under ``<data_dir>/.arrivals``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        layout: str | Layout = Layout.PATIENT,
        *,
        on_stored: Iterable[StoredCallback] = (),
        fsync: bool = False,
        record_arrivals: bool = True,
    ) -> None:
        self.layout = Layout.parse(layout)
        root = Path(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(os.path.realpath(root))
        self.fsync = fsync
        self.arrivals = ArrivalLog(self.data_dir) if record_arrivals else None
        self._incoming = _IncomingDir(self.data_dir / INCOMING_DIR)
        self._callbacks = _CallbackRunner(list(on_stored))
        self._made_dirs: set[Path] = set()
        self._stats: weakref.WeakKeyDictionary[Any, AssociationStats] = weakref.WeakKeyDictionary()
        self._stats_lock = threading.Lock()

    # -- pynetdicom handler
    def handle_store(self, event: Any) -> int:
        """``evt.EVT_C_STORE`` handler: store the dataset as received and return the status.

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
            target = resolve_inside(self.data_dir, relative)
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

    def _ensure_dir(self, directory: Path) -> None:
        if directory not in self._made_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(directory)

    def _write_atomically(self, target: Path, chunks: Sequence[bytes]) -> int:
        """Write ``chunks`` to ``<target>.<random>.tmp`` then rename it to ``target``; return the size."""
        self._ensure_dir(target.parent)
        tmp = self._incoming.tmp_path(target.name)
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
        """Keep the raw bytes in quarantine and answer ``status`` (0xA700 if even that fails)."""
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


class _IncomingDir:
    """This process's directory for files being written: ``<data_dir>/.incoming/<host>-<pid>-<token>/``.

    Files are written there as ``*.tmp`` and renamed into the layout (same filesystem, so the rename is
    atomic): a reader of the layout never sees a partial file. The directory holds an exclusive
    ``flock`` on its ``lock`` file while the writer lives; a new writer removes the directories whose
    lock it can take, i.e. the leftovers of receivers that were killed (SIGKILL, power loss), without
    touching those of other live receivers sharing the data directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        token = _writer_token()
        # made under a hidden name and renamed once locked, so no other writer can take it for stale
        starting = root / f".{token}.new"
        starting.mkdir()
        self._lock_fd: int | None = os.open(starting / "lock", os.O_WRONLY | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = root / token
        os.rename(starting, self.path)

    def tmp_path(self, name: str) -> Path:
        """A fresh temporary file name for ``name`` (ends with ``.tmp``)."""
        if not self.path.is_dir():  # removed under us (cleanup by hand): make it again
            self.path.mkdir(parents=True, exist_ok=True)
        return self.path / f"{name}.{secrets.token_hex(6)}.tmp"

    def _remove_stale(self) -> None:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            lock_path = Path(entry.path) / "lock"
            try:
                fd = os.open(lock_path, os.O_WRONLY)
            except FileNotFoundError:
                fd = None  # not created yet by a starting writer, or half-removed: leave it
            except OSError:
                continue
            if fd is None:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a live writer holds it
            try:
                leftovers = [p for p in Path(entry.path).iterdir() if p.name != "lock"]
                for leftover in leftovers:
                    leftover.unlink()
                lock_path.unlink()
                os.rmdir(entry.path)
                if leftovers:
                    log.info("removed %d partial file(s) left by a stopped receiver", len(leftovers))
            except OSError as exc:
                log.warning("could not remove a stale incoming directory %s: %s", entry.path, exc)
            finally:
                os.close(fd)

    def close(self) -> None:
        """Release the lock and remove the (empty) directory."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        try:
            for leftover in self.path.iterdir():
                if leftover.name != "lock":
                    leftover.unlink()
            (self.path / "lock").unlink()
            os.rmdir(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _writer_token() -> str:
    host = "".join(c if c.isalnum() or c in ".-" else "-" for c in socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def _peer_ae_title(assoc: Any) -> str:
    """The sender's AE title: the requestor for a server, the acceptor (the PACS) for a C-GET requestor."""
    user = assoc.requestor if getattr(assoc, "is_acceptor", True) else assoc.acceptor
    return str(user.ae_title or "").strip()


def _ae_for_meta(calling_ae: str) -> str:
    title = "".join(c for c in calling_ae if 32 <= ord(c) < 127 and c != "\\")
    return title[:16]


def storage_contexts() -> list[Any]:
    """Every storage SOP class pynetdicom knows plus Verification, each with every transfer syntax."""
    from pynetdicom.presentation import build_context

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
    ) -> None:
        if max_associations < 1:
            raise ValueError("max_associations must be at least 1")
        self.writer = StoreWriter(data_dir, layout, on_stored=on_stored, fsync=fsync)
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
        if self.allowed_aets:
            self._ae.require_calling_aet = self.allowed_aets
        self._server: Any = None
        self._stop_requested = threading.Event()
        self._count_lock = threading.Lock()
        self._associations = 0

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
        )
        log.info(
            "receiver %s listening on %s:%d, storing to %s (layout %s%s, at most %d associations)",
            self.ae_title,
            self.host,
            self.port,
            self.data_dir,
            self.writer.layout.value,
            f", calling AEs {','.join(self.allowed_aets)}" if self.allowed_aets else "",
            self.max_associations,
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
            _size(stats.bytes),
            seconds,
        )

    def _on_rejected(self, event: Any) -> None:
        log.warning("association from %s rejected", _peer(event.assoc))


def _peer(assoc: Any) -> str:
    try:
        title = str(assoc.requestor.ae_title or "").strip() or "?"
        return f"{title}@{assoc.requestor.address}:{assoc.requestor.port}"
    except Exception:
        return "?"


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"
