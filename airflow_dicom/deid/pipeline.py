"""Pseudonymise files, directories or an arrival manifest into a new data directory.

The output has the receiver's layouts and arrival records (so :class:`DicomArrivalSensor` works on it).
Each file is read with pydicom (elements decoded only where the profile acts), rewritten in place in
memory and written to a temporary file in the output directory, then renamed: a reader never sees a partial
file, a failing instance leaves nothing behind, and nothing is written outside ``out_dir``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from airflow_dicom.deid.audit import RunSummary, write_mapping
from airflow_dicom.deid.instance import InstanceRewriter
from airflow_dicom.deid.keys import PseudonymKey
from airflow_dicom.deid.options import ProfileOptions
from airflow_dicom.deid.rewrite import InstanceMapping, RewriteError
from airflow_dicom.dimse.arrivals import ARRIVALS_DIR, ArrivalRecord, now, writer_name
from airflow_dicom.dimse.storage_layout import Layout, relative_instance_path, resolve_inside

log = logging.getLogger(__name__)


#: arrival records are appended after this many files (and at the end of the run)
FLUSH_EVERY = 200


class PseudonymisationError(ValueError):
    """The run cannot start (inputs missing, output inside an input, ...)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one instance, in memory (no identifying value in ``reason``)."""

    written: Path | None
    reason: str | None = None


def input_files(sources: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Every file of ``sources``: files as given, directories walked (hidden entries such as the arrival
    records skipped), an arrival manifest (``*.json`` from :class:`DicomArrivalSensor`) by its files.

    :param sources: files, directories, manifests.
    :raises PseudonymisationError: a source does not exist.
    """
    for source in sources:
        path = Path(source)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and not name.endswith(".tmp"):
                        yield Path(root) / name
        elif path.is_file() and path.suffix == ".json":
            yield from manifest_files(json.loads(path.read_text("utf-8")))
        elif path.is_file():
            yield path
        else:
            raise PseudonymisationError(
                f"input {path} does not exist: give DICOM files, directories or a manifest"
            )


def manifest_files(manifest: dict) -> Iterator[Path]:
    """The files of an arrival manifest (``{"studies": {uid: {"files": [...]}}}``).

    :param manifest: the manifest (as the sensor returns it).
    :raises PseudonymisationError: not a manifest.
    """
    studies = manifest.get("studies") if isinstance(manifest, dict) else None
    if not isinstance(studies, dict):
        raise PseudonymisationError("not an arrival manifest: expected {'studies': {uid: {'files': [...]}}}")
    for entry in studies.values():
        for name in entry.get("files", ()):
            yield Path(name)


class Pseudonymiser:
    """Pseudonymise instances into ``out_dir``.

    :param key: the key.
    :param out_dir: the output data directory (created).
    :param options: profile options.
    :param layout: ``patient``, ``study`` or ``flat``.
    :param mapping: where to write the Parquet mapping (None: no mapping).
    :param calling_ae: recorded as the sender in the arrival records.
    :param record_arrivals: write arrival records (``.arrivals``) for the sensor.
    """

    def __init__(
        self,
        key: PseudonymKey,
        out_dir: str | os.PathLike[str],
        options: ProfileOptions | None = None,
        layout: str | Layout = Layout.STUDY,
        mapping: str | os.PathLike[str] | None = None,
        calling_ae: str = "PSEUDONYMISE",
        record_arrivals: bool = True,
    ) -> None:
        self.key = key
        self.options = options or ProfileOptions()
        self.out_dir = Path(out_dir).resolve()
        self.layout = Layout.parse(layout)
        self.mapping = mapping
        self.calling_ae = calling_ae
        self.summary = RunSummary(key_id=key.fingerprint, options=self.options)
        self.rewriter = InstanceRewriter(key, self.options)
        self.rows = self.rewriter.rows
        self.record_arrivals = record_arrivals
        #: arrival records of the files written so far, appended in one write per study (see _flush)
        self._pending: list[ArrivalRecord] = []
        self._writer = writer_name()
        self._made_dirs: set[Path] = set()

    def process_file(self, path: Path) -> Outcome:
        """Pseudonymise one file into the output directory.

        :param path: the input file.
        """
        self.summary.processed += 1
        try:
            # failures name the file, not its directories: in the patient layout a directory is the
            # PatientID, and the summary is logged and returned
            data, reason = self.rewriter.rewrite_bytes(path.read_bytes(), name=path.name)
        except (RewriteError, OSError) as exc:
            # an OSError's text carries the whole path: keep only its reason
            text = f"{path.name}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
            self.summary.failed.append(text)
            return Outcome(None, text)
        if data is None:
            self.summary.hold(reason or "held back")
            return Outcome(None, reason)
        row = self.rows[-1]
        written = self._store(data, row)
        self.summary.written += 1
        self.summary.studies[row.pseudo_study_uid] = self.summary.studies.get(row.pseudo_study_uid, 0) + 1
        return Outcome(written)

    def _store(self, chunks: list[bytes | memoryview], row: InstanceMapping) -> Path:
        relative = relative_instance_path(
            self.layout,
            sop_uid=row.pseudo_sop_uid,
            study_uid=row.pseudo_study_uid,
            series_uid=row.pseudo_series_uid,
            patient_id=row.pseudo_patient_id,
        )
        target = resolve_inside(self.out_dir, relative)
        if target.parent not in self._made_dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(target.parent)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.writelines(chunks)
        os.replace(tmp, target)
        if not self.record_arrivals:
            return target
        self._pending.append(
            ArrivalRecord(
                study_uid=row.pseudo_study_uid,
                series_uid=row.pseudo_series_uid,
                sop_uid=row.pseudo_sop_uid,
                sop_class_uid=row.sop_class_uid,
                path=relative,
                bytes=sum(len(c) for c in chunks),
                calling_ae=self.calling_ae,
                time=now(),
            )
        )
        return target

    def _flush(self) -> None:
        """Append the pending arrival records: one file per study and writer (as ``ArrivalLog`` names them),
        one write each, after the files are in place."""
        by_study: dict[str, list[bytes]] = {}
        for record in self._pending:
            by_study.setdefault(record.study_uid, []).append(record.to_line())
        self._pending.clear()
        writer = self._writer
        for study_uid, lines in by_study.items():
            study_dir = self.out_dir / ARRIVALS_DIR / study_uid
            study_dir.mkdir(parents=True, exist_ok=True)
            with open(study_dir / f"{writer}.jsonl", "ab") as fh:
                fh.write(b"".join(lines))

    def run(self, sources: Iterable[str | os.PathLike[str]]) -> RunSummary:
        """Pseudonymise every instance of ``sources``; write the mapping if configured.

        :param sources: files, directories, arrival manifests (``.json``).
        :returns: the run summary (failed and held-back instances counted, not raised).
        :raises PseudonymisationError: an input is missing, or the output is inside an input directory.
        """
        out = self.out_dir.resolve()
        sources = list(sources)
        for source in sources:
            src = Path(source).resolve()
            if src.is_dir() and (out == src or src in out.parents):
                raise PseudonymisationError(
                    f"output {self.out_dir} is inside the input {source}: "
                    "choose an output directory elsewhere"
                )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            for path in input_files(sources):
                if ARRIVALS_DIR in path.parts:
                    continue
                self.process_file(path)
                if len(self._pending) >= FLUSH_EVERY:
                    self._flush()
        finally:  # files written before an error are recorded too
            self._flush()
        if self.mapping is not None and self.rows:
            self.summary.mapping_path = str(write_mapping(self.mapping, self.rows, self.summary))
        log.info(
            "pseudonymised %d of %d instances (held back %s, failed %d) with key %s",
            self.summary.written,
            self.summary.processed,
            self.summary.held_back or "none",
            len(self.summary.failed),
            self.key.fingerprint,
        )
        return self.summary
