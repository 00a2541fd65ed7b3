"""Arrival records: one line per stored instance, readable from any machine that mounts the data dir.

Format (chosen for shared storage such as NFS or SMB, where several receivers and sensors on different
machines may use the same data directory)::

    <data_dir>/.arrivals/<StudyInstanceUID>/<host>-<pid>-<token>.jsonl

* **One append-only JSON-lines file per (study, writing process).** A file has exactly one writer, so
  lines from different processes or machines can never interleave, even on NFS where ``O_APPEND`` is
  not atomic across clients. Inside a process a lock serialises the appends; each record is written
  with a single ``write()`` of one complete line and the file is closed after each append (NFS
  close-to-open consistency makes it visible to readers on other machines).
* **Cheap per-study queries.** Asking a study's state lists one small directory (one file per
  receiver process that stored something for that study) and reads those files; the image tree is
  never walked.
* **Robust readers.** A reader ignores an unterminated last line (a write in progress, or a writer
  killed mid-line) and any malformed line; a SOP instance stored twice counts once (latest record wins).

A record is appended only after the instance's file is in place under its final name, so every
recorded path exists (unless deleted since).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from airflow_dicom.dimse.storage_layout import is_valid_uid

log = logging.getLogger(__name__)

#: directory under the data directory holding the arrival records.
ARRIVALS_DIR = ".arrivals"


@dataclass(frozen=True)
class ArrivalRecord:
    """One stored instance.

    :param study_uid: StudyInstanceUID.
    :param series_uid: SeriesInstanceUID.
    :param sop_uid: SOPInstanceUID.
    :param sop_class_uid: SOPClassUID.
    :param path: the file, relative to the data directory (``/``-separated).
    :param bytes: size of the file written.
    :param calling_ae: AE title of the sender.
    :param time: when the file was in place (seconds since the epoch, UTC).
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    path: str
    bytes: int
    calling_ae: str
    time: float

    def to_line(self) -> bytes:
        """The record as one JSON line (with the trailing newline)."""
        data = {
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "sop_uid": self.sop_uid,
            "sop_class_uid": self.sop_class_uid,
            "path": self.path,
            "bytes": self.bytes,
            "calling_ae": self.calling_ae,
            "time": self.time,
        }
        data["iso_time"] = datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="milliseconds")
        return (json.dumps(data, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")

    @classmethod
    def from_json(cls, data: dict) -> ArrivalRecord:
        """Build a record from a parsed JSON line.

        :param data: the parsed line.
        :raises KeyError, TypeError, ValueError: not a complete record.
        """
        return cls(
            study_uid=str(data["study_uid"]),
            series_uid=str(data["series_uid"]),
            sop_uid=str(data["sop_uid"]),
            sop_class_uid=str(data["sop_class_uid"]),
            path=str(data["path"]),
            bytes=int(data["bytes"]),
            calling_ae=str(data["calling_ae"]),
            time=float(data["time"]),
        )


@dataclass
class StudyArrivals:
    """What has arrived for one study so far.

    :param study_uid: the StudyInstanceUID.
    :param instances: latest record per SOPInstanceUID.
    """

    study_uid: str
    instances: dict[str, ArrivalRecord] = field(default_factory=dict)

    @property
    def received(self) -> int:
        """Number of distinct instances stored."""
        return len(self.instances)

    @property
    def bytes(self) -> int:
        """Total size of the stored files."""
        return sum(r.bytes for r in self.instances.values())

    @property
    def last_arrival(self) -> float | None:
        """Time of the latest arrival (epoch seconds), None if nothing arrived."""
        return max((r.time for r in self.instances.values()), default=None)

    @property
    def first_arrival(self) -> float | None:
        """Time of the first arrival (epoch seconds), None if nothing arrived."""
        return min((r.time for r in self.instances.values()), default=None)

    @property
    def sop_uids(self) -> set[str]:
        """SOPInstanceUIDs stored."""
        return set(self.instances)

    @property
    def series_uids(self) -> set[str]:
        """SeriesInstanceUIDs seen."""
        return {r.series_uid for r in self.instances.values()}

    def paths(self, data_dir: str | os.PathLike[str]) -> list[Path]:
        """Absolute paths of the stored files as seen from this machine, sorted.

        :param data_dir: the data directory (its mount point here).
        """
        root = Path(data_dir)
        return sorted(root.joinpath(*r.path.split("/")) for r in self.instances.values())

    def summary(self, data_dir: str | os.PathLike[str]) -> dict:
        """JSON-serialisable summary: files, instances, bytes, series, first/last arrival.

        :param data_dir: the data directory (for absolute file paths).
        """
        return {
            "study_uid": self.study_uid,
            "instances": self.received,
            "bytes": self.bytes,
            "series": len(self.series_uids),
            "first_arrival": self.first_arrival,
            "last_arrival": self.last_arrival,
            "files": [str(p) for p in self.paths(data_dir)],
        }


def writer_name() -> str:
    """``<host>-<pid>-<random>``: a name no other writing process (on any machine) uses."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class ArrivalLog:
    """Appends arrival records under ``<data_dir>/.arrivals`` (thread-safe, one file per study).

    :param data_dir: the data directory.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / ARRIVALS_DIR
        self._lock = threading.Lock()
        self._writer = writer_name()
        self._writer_pid = os.getpid()
        self._made: set[str] = set()

    def append(self, record: ArrivalRecord) -> None:
        """Append ``record`` to its study's file for this process.

        :param record: the arrival (its study UID must be a valid UID).
        :raises ValueError: the study UID is not a valid UID.
        :raises OSError: the record could not be written.
        """
        if not is_valid_uid(record.study_uid):
            raise ValueError("arrival record with an invalid StudyInstanceUID")
        line = record.to_line()
        with self._lock:
            if os.getpid() != self._writer_pid:  # forked: never share a file with the parent
                self._writer, self._writer_pid = writer_name(), os.getpid()
            study_dir = self.root / record.study_uid
            if record.study_uid not in self._made:
                study_dir.mkdir(parents=True, exist_ok=True)
                self._made.add(record.study_uid)
            path = study_dir / f"{self._writer}.jsonl"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the study's directory was removed since: make it again
                study_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)
                if written != len(line):  # pragma: no cover - regular files write fully or raise
                    raise OSError(f"short write of an arrival record ({written} of {len(line)} bytes)")
            finally:
                os.close(fd)
            # the study directory's mtime marks recent activity for watchers scanning many studies
            os.utime(study_dir)


def _read_records(path: Path) -> Iterable[ArrivalRecord]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    end = data.rfind(b"\n")
    if end < 0:
        return
    for line in data[: end + 1].splitlines():
        if not line.strip():
            continue
        try:
            yield ArrivalRecord.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed arrival record in %s", path)


def study_arrivals(data_dir: str | os.PathLike[str], study_uid: str) -> StudyArrivals:
    """The arrivals recorded for one study (empty if none).

    :param data_dir: the data directory (local path or mount point of the shared storage).
    :param study_uid: the StudyInstanceUID.
    :raises ValueError: ``study_uid`` is not a valid UID.
    """
    if not is_valid_uid(study_uid):
        raise ValueError(f"{study_uid!r} is not a valid StudyInstanceUID")
    state = StudyArrivals(study_uid)
    study_dir = Path(data_dir) / ARRIVALS_DIR / study_uid
    try:
        names = sorted(os.listdir(study_dir))
    except FileNotFoundError:
        return state
    records = [r for name in names if name.endswith(".jsonl") for r in _read_records(study_dir / name)]
    for record in sorted(records, key=lambda r: r.time):
        if record.study_uid == study_uid:
            state.instances[record.sop_uid] = record
    return state


def recorded_studies(data_dir: str | os.PathLike[str]) -> list[str]:
    """StudyInstanceUIDs that have arrival records, sorted.

    :param data_dir: the data directory.
    """
    try:
        names = os.listdir(Path(data_dir) / ARRIVALS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if is_valid_uid(n))


def study_mtime(data_dir: str | os.PathLike[str], study_uid: str) -> float | None:
    """Latest modification time of a study's record files (cheap change detection), None if none.

    :param data_dir: the data directory.
    :param study_uid: the StudyInstanceUID.
    """
    study_dir = Path(data_dir) / ARRIVALS_DIR / study_uid
    try:
        with os.scandir(study_dir) as entries:
            times = [e.stat().st_mtime for e in entries if e.name.endswith(".jsonl")]
    except FileNotFoundError:
        return None
    return max(times, default=None)


def active_studies(data_dir: str | os.PathLike[str], since: float) -> dict[str, float]:
    """Studies with an arrival recorded at or after ``since``: ``{study_uid: directory mtime}``.

    Costs one ``stat`` per recorded study (each append touches its study's directory), never reads
    records; meant for watchers that poll a data directory holding many studies.

    :param data_dir: the data directory.
    :param since: epoch seconds.
    """
    out: dict[str, float] = {}
    try:
        entries = os.scandir(Path(data_dir) / ARRIVALS_DIR)
    except FileNotFoundError:
        return out
    with entries:
        for entry in entries:
            try:
                mtime = entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if mtime >= since and is_valid_uid(entry.name):
                out[entry.name] = mtime
    return out


@dataclass(frozen=True)
class StudyProgress:
    """Where one study stands against its completion rule.

    :param study_uid: the StudyInstanceUID.
    :param expected: expected instance count, None if unknown.
    :param received: distinct instances stored.
    :param bytes: total size of the stored files.
    :param last_arrival: epoch seconds of the latest arrival (None if none).
    :param complete: True when the rule is met.
    :param files: absolute paths of the stored files (empty unless asked for).
    """

    study_uid: str
    expected: int | None
    received: int
    bytes: int
    last_arrival: float | None
    complete: bool
    files: tuple[str, ...] = ()

    def describe(self, quiet_period: float) -> str:
        """One line for a timeout message: received/expected counts."""
        if self.expected is not None:
            return f"study {self.study_uid}: received {self.received} of {self.expected} expected instances"
        if self.received == 0:
            return f"study {self.study_uid}: received 0 instances (no expected count known)"
        return (
            f"study {self.study_uid}: received {self.received} instances (no expected count known), "
            f"still arriving within the last {quiet_period:g} s"
        )

    def manifest_entry(self) -> dict:
        """This study's manifest entry: files, instances, bytes, expected."""
        return {
            "instances": self.received,
            "bytes": self.bytes,
            "expected": self.expected,
            "last_arrival": self.last_arrival,
            "files": list(self.files),
        }


def assess_studies(
    data_dir: str | os.PathLike[str],
    expected: dict[str, int | None],
    *,
    quiet_period: float,
    include_files: bool = True,
    at: float | None = None,
) -> list[StudyProgress]:
    """Check each study against its completion rule.

    A study is complete when it has at least its expected number of instances, or, when no count is
    known, when it has at least one instance and none arrived during the last ``quiet_period`` seconds.

    :param data_dir: the data directory.
    :param expected: ``{StudyInstanceUID: expected count or None}``.
    :param quiet_period: seconds without a new instance that complete a study of unknown size.
    :param include_files: list the files of each study.
    :param at: the current time (epoch seconds; default now).
    """
    current = now() if at is None else at
    out = []
    for study_uid, count in expected.items():
        state = study_arrivals(data_dir, study_uid)
        last = state.last_arrival
        if count is not None:
            complete = state.received >= count
        else:
            complete = state.received > 0 and last is not None and current - last >= quiet_period
        files = tuple(str(p) for p in state.paths(data_dir)) if include_files else ()
        out.append(StudyProgress(study_uid, count, state.received, state.bytes, last, complete, files))
    return out


def manifest(data_dir: str | os.PathLike[str], progress: list[StudyProgress]) -> dict:
    """The JSON-serialisable manifest of studies: per study files, instances and bytes, plus totals.

    :param data_dir: the data directory.
    :param progress: from :func:`assess_studies`.
    """
    return {
        "data_dir": str(data_dir),
        "studies": {p.study_uid: p.manifest_entry() for p in progress},
        "instances": sum(p.received for p in progress),
        "bytes": sum(p.bytes for p in progress),
    }


def write_manifest(path: str | os.PathLike[str], result: dict) -> dict:
    """Write ``result`` (a :func:`manifest`) to ``path`` as JSON (atomically); return a small summary of it.

    The summary (``manifest_path``, ``studies``, ``instances``, ``bytes``, ``data_dir``) is what goes into an
    XCom or a trigger event: its size does not grow with the number of studies.

    :param path: the JSON file to write (its directory is created).
    :param result: the manifest.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, target)
    return {
        "manifest_path": str(target),
        "data_dir": result["data_dir"],
        "studies": len(result["studies"]),
        "instances": result["instances"],
        "bytes": result["bytes"],
    }


def read_manifest(value: dict) -> dict:
    """The full manifest behind a :func:`write_manifest` summary (or ``value`` itself if it is one).

    :param value: a summary or a manifest.
    """
    if "manifest_path" in value:
        return json.loads(Path(value["manifest_path"]).read_text(encoding="utf-8"))
    return value


def now() -> float:
    """Current time in epoch seconds (the clock arrival records use)."""
    return time.time()
