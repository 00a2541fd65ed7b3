"""The audit of a pseudonymisation run, readable by a data-protection officer.

* The **mapping** (original -> pseudonym for patient, study and series, with when, key id, profile and
  options) is identifying: it is written only where the caller configures a path, as Parquet, with
  owner-only permissions (0600), never next to the pseudonymised output by default.
* The **summary** holds no identifying value: counts of instances processed, written, held back (and
  why), failed, the key id (fingerprint), profile and options. It is returned and may be logged.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from airflow_dicom.deid.options import ProfileOptions
from airflow_dicom.deid.rewrite import InstanceMapping

PROFILE = "PS3.15 E.1-1 Basic Application Level Confidentiality Profile"


@dataclass
class RunSummary:
    """What one run did, without identifying values.

    :param key_id: the key's fingerprint.
    :param options: the profile options in effect.
    """

    key_id: str
    options: ProfileOptions
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    processed: int = 0
    written: int = 0
    held_back: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    studies: dict[str, int] = field(default_factory=dict)
    mapping_path: str | None = None

    def hold(self, reason: str) -> None:
        """Count one instance held back for ``reason``.

        :param reason: e.g. ``"burned-in annotation"``.
        """
        self.held_back[reason] = self.held_back.get(reason, 0) + 1

    def as_dict(self) -> dict:
        """The summary as JSON data (``studies``: pseudonymous study UID -> instances written)."""
        return {
            "profile": PROFILE,
            "options": self.options.names(),
            "keep_private": list(self.options.keep_private),
            "key_id": self.key_id,
            "started": self.started,
            "processed": self.processed,
            "written": self.written,
            "held_back": dict(self.held_back),
            "failed": list(self.failed),
            "studies": dict(sorted(self.studies.items())),
            "mapping": self.mapping_path,
        }


def write_mapping(path: str | os.PathLike[str], rows: list[InstanceMapping], summary: RunSummary) -> Path:
    """Write (or extend) the Parquet mapping at ``path``: one row per (patient, study, series).

    Rows already in the file are kept; the file is replaced atomically and made owner-only.

    :param path: the mapping file (``.parquet``).
    :param rows: the instances of this run.
    :param summary: the run (key id, options, start time).
    """
    import pandas as pd  # the mapping is optional: pandas only when one is written

    target = Path(path)
    seen: dict[tuple[str, str, str], InstanceMapping] = {}
    for row in rows:
        seen.setdefault((row.patient_id, row.study_uid, row.series_uid), row)
    frame = pd.DataFrame(
        [
            {
                "patient_id": r.patient_id,
                "pseudo_patient_id": r.pseudo_patient_id,
                "study_uid": r.study_uid,
                "pseudo_study_uid": r.pseudo_study_uid,
                "series_uid": r.series_uid,
                "pseudo_series_uid": r.pseudo_series_uid,
                "date_shift_days": r.date_shift_days,
                "time": summary.started,
                "key_id": summary.key_id,
                "profile": PROFILE,
                "options": ",".join(summary.options.names()),
            }
            for r in seen.values()
        ],
        columns=[
            "patient_id",
            "pseudo_patient_id",
            "study_uid",
            "pseudo_study_uid",
            "series_uid",
            "pseudo_series_uid",
            "date_shift_days",
            "time",
            "key_id",
            "profile",
            "options",
        ],
    ).astype({"date_shift_days": "Int64"})
    if target.exists():
        frame = pd.concat([pd.read_parquet(target), frame], ignore_index=True).drop_duplicates(
            subset=["patient_id", "study_uid", "series_uid", "key_id"], keep="first"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".mapping-", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o600)
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
