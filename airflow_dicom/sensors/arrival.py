"""``DicomArrivalSensor``: wait until studies have completely arrived at a receiver.

Shaped like Airflow's ``FileSensor``/``FileTrigger``: the sensor validates and templates its arguments,
checks once, then (deferrable, the default) hands the waiting to
:class:`~airflow_dicom.triggers.arrival.DicomArrivalTrigger`; ``mode="poke"`` and
``mode="reschedule"`` with ``deferrable=False`` work too. The decision itself comes from the arrival
records written by the receiver (:mod:`airflow_dicom.dimse.arrivals`), so the sensor may run on another
machine than the receiver when the data directory is shared storage.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_dicom.dimse.arrivals import StudyProgress, assess_studies, manifest, write_manifest
from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.storage_layout import is_valid_uid
from airflow_dicom.triggers.arrival import DicomArrivalTrigger

_STUDY_KEYS = ("StudyInstanceUID", "study_uid", "study_instance_uid")
_COUNT_KEYS = ("NumberOfStudyRelatedInstances", "expected", "instances", "expected_instances")


def _count(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    if number != number:  # NaN from pandas
        return None
    return number if number > 0 else None


def _from_row(row: Mapping[str, Any]) -> tuple[str, int | None]:
    uid = next((row[k] for k in _STUDY_KEYS if row.get(k)), None)
    if uid is None:
        raise InvalidRequestError(f"a study entry has no StudyInstanceUID (keys: {sorted(row)[:10]})")
    count = next((_count(row[k]) for k in _COUNT_KEYS if k in row), None)
    return str(uid).strip(), count


def expected_from_find_dataset(path: str) -> dict[str, int | None]:
    """Studies (and NumberOfStudyRelatedInstances when present) from a C-FIND Parquet dataset.

    :param path: a Parquet file or (hive-partitioned) dataset directory, local or a pyarrow URI.
    :raises InvalidRequestError: no StudyInstanceUID column.
    """
    # imported here: pyarrow costs ~0.3 s, and this module is imported at DAG parse and by the triggerer
    import pyarrow.dataset as pads

    dataset = pads.dataset(path, format="parquet", partitioning="hive")
    names = set(dataset.schema.names)
    if "StudyInstanceUID" not in names:
        raise InvalidRequestError(f"the find dataset at {path} has no StudyInstanceUID column")
    columns = ["StudyInstanceUID"] + (
        ["NumberOfStudyRelatedInstances"] if "NumberOfStudyRelatedInstances" in names else []
    )
    table = dataset.to_table(columns=columns).to_pylist()
    return dict(_from_row(row) for row in table)


def parse_studies(value: Any) -> dict[str, int | None]:
    """Normalise every accepted way of naming studies to ``{StudyInstanceUID: expected count or None}``.

    Accepted: a UID; several separated by commas/whitespace, or a JSON list/object as a string; a list of
    UIDs; ``{uid: count}``; a list of rows (mappings) with ``StudyInstanceUID`` and optionally
    ``NumberOfStudyRelatedInstances`` (C-FIND results); the find operator's XCom (``{"rows": [...]}`` or
    ``{"path": <parquet dataset>}``).

    :param value: the studies.
    :raises InvalidRequestError: an entry has no StudyInstanceUID.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "{")):
            return parse_studies(json.loads(text))
        return {uid: None for uid in re.split(r"[\s,;]+", text) if uid}
    if isinstance(value, Mapping):
        if "rows" in value and isinstance(value["rows"], Sequence) and not isinstance(value["rows"], str):
            return parse_studies(list(value["rows"]))
        if "path" in value and isinstance(value["path"], str):
            return expected_from_find_dataset(value["path"])
        if any(k in value for k in _STUDY_KEYS):
            return dict([_from_row(value)])
        return {str(k).strip(): _count(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        out: dict[str, int | None] = {}
        for item in value:
            if isinstance(item, Mapping):
                uid, count = _from_row(item)
                out[uid] = count
            else:
                out[str(item).strip()] = None
        return out
    raise InvalidRequestError(f"cannot read studies from a {type(value).__name__}")


class DicomArrivalSensor(BaseSensorOperator):
    """Wait until studies have completely arrived in a receiver's data directory; return a manifest.

    A study is complete when it has its expected number of instances (given here, or
    NumberOfStudyRelatedInstances from the C-FIND results it came from), or — when no count is known —
    when at least one instance arrived and none for ``quiet_period`` seconds. On timeout the task fails
    listing every incomplete study with its received/expected counts.

    Returned (XCom): ``{"data_dir", "studies": {uid: {"instances", "bytes", "expected", "last_arrival",
    "files"}}, "instances", "bytes"}``.

    :param data_dir: the receiver's data directory (templated).
    :param studies: the studies to wait for, in any form :func:`parse_studies` accepts (templated).
    :param expected_instances: expected count for every study (int) or per study (``{uid: count}``);
        overrides counts that came with ``studies`` (templated).
    :param studies_from_task: take the studies from this upstream task's XCom (templated).
    :param studies_xcom_key: the XCom key for ``studies_from_task``.
    :param studies_from_dataset: take the studies from a C-FIND Parquet dataset (templated).
    :param quiet_period: seconds without a new instance that complete a study of unknown size.
    :param include_files: list every stored file in the manifest.
    :param manifest_path: write the manifest there (JSON, templated) and return only its summary
        (``manifest_path``, ``studies``, ``instances``, ``bytes``, ``data_dir``): the XCom and the trigger
        event stay small whatever the number of studies. Studies taken from a Parquet (a ``{"path": ...}``
        XCom or ``studies_from_dataset``) are then read by the trigger, not passed in its kwargs.
    :param deferrable: wait in the triggerer (default) instead of a worker slot.
    :param poke_interval: seconds between checks (default 10).
    :param timeout: seconds before failing (default 24 h).
    """

    template_fields: Sequence[str] = (
        "data_dir",
        "studies",
        "expected_instances",
        "studies_from_task",
        "studies_from_dataset",
        "manifest_path",
    )
    ui_color = "#c9e4f5"

    def __init__(
        self,
        *,
        data_dir: str,
        studies: Any = None,
        expected_instances: int | Mapping[str, int] | None = None,
        studies_from_task: str | None = None,
        studies_xcom_key: str = "return_value",
        studies_from_dataset: str | None = None,
        quiet_period: float = 60.0,
        include_files: bool = True,
        manifest_path: str | None = None,
        deferrable: bool = True,
        poke_interval: float = 10.0,
        timeout: float = 24 * 3600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        if quiet_period < 0:
            raise ValueError("quiet_period must be >= 0")
        self.data_dir = data_dir
        self.studies = studies
        self.expected_instances = expected_instances
        self.studies_from_task = studies_from_task
        self.studies_xcom_key = studies_xcom_key
        self.studies_from_dataset = studies_from_dataset
        self.quiet_period = quiet_period
        self.include_files = include_files
        self.manifest_path = manifest_path
        self._studies_path: str | None = None
        self.deferrable = deferrable
        self._expected: dict[str, int | None] | None = None

    # -- what to wait for
    def resolve_studies(self, context: Any) -> dict[str, int | None]:
        """Collect, merge and validate the studies to wait for.

        :param context: the task context (for ``studies_from_task``).
        :raises InvalidRequestError: no studies, or an invalid StudyInstanceUID.
        """
        expected: dict[str, int | None] = {}
        expected.update(parse_studies(self.studies))
        if self.studies_from_task:
            pulled = context["ti"].xcom_pull(task_ids=self.studies_from_task, key=self.studies_xcom_key)
            if pulled is None:
                raise InvalidRequestError(
                    f"task {self.studies_from_task!r} pushed no XCom {self.studies_xcom_key!r} "
                    "to take studies from"
                )
            expected.update(parse_studies(pulled))
            if isinstance(pulled, Mapping) and isinstance(pulled.get("path"), str):
                self._studies_path = pulled["path"]
        if self.studies_from_dataset:
            self._studies_path = str(self.studies_from_dataset)
            expected.update(expected_from_find_dataset(str(self.studies_from_dataset)))
        counts = self.expected_instances
        if isinstance(counts, str) and counts.strip():
            counts = json.loads(counts) if counts.strip().startswith("{") else int(counts)
        if self.studies or counts or (self.studies_from_task and self.studies_from_dataset):
            self._studies_path = None  # several sources: the trigger gets the merged dict
        if isinstance(counts, int):
            expected = {uid: counts for uid in expected}
        elif isinstance(counts, Mapping):
            for uid, count in counts.items():
                expected[str(uid).strip()] = _count(count)
        bad = [uid for uid in expected if not is_valid_uid(uid)]
        if bad:
            raise InvalidRequestError(
                f"{len(bad)} invalid StudyInstanceUID(s) to wait for, e.g. {bad[:3]!r}: a UID is digits and "
                "dots, at most 64 characters"
            )
        if not expected:
            raise InvalidRequestError(
                "no studies to wait for: give studies=, studies_from_task= or studies_from_dataset="
            )
        return expected

    def _assess(self) -> list[StudyProgress]:
        assert self._expected is not None
        return assess_studies(
            self.data_dir, self._expected, quiet_period=self.quiet_period, include_files=self.include_files
        )

    def _log_progress(self, progress: list[StudyProgress]) -> None:
        done = sum(p.complete for p in progress)
        self.log.info(
            "%d of %d studies complete in %s (%d instances so far)",
            done,
            len(progress),
            self.data_dir,
            sum(p.received for p in progress),
        )

    # -- Airflow entry points
    def execute(self, context: Any) -> Any:
        """Resolve the studies, then wait (deferred by default)."""
        self._expected = self.resolve_studies(context)
        self.log.info("waiting for %d studies in %s", len(self._expected), self.data_dir)
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout:
                raise AirflowSensorTimeout(self._timeout_message(self._assess())) from None
        progress = self._assess()
        self._log_progress(progress)
        if all(p.complete for p in progress):
            return self._result(progress)
        timeout = float(self.timeout) if self.timeout is not None else None
        self.defer(
            trigger=DicomArrivalTrigger(
                data_dir=str(self.data_dir),
                studies={} if self.manifest_path and self._studies_path else self._expected,
                studies_path=self._studies_path if self.manifest_path else None,
                manifest_path=self.manifest_path,
                quiet_period=self.quiet_period,
                poke_interval=float(self.poke_interval),
                deadline=None if timeout is None else time.time() + timeout,
                include_files=self.include_files,
            ),
            method_name="execute_complete",
            # the trigger reports the deadline itself (with the per-study counts); this is a backstop
            timeout=None if timeout is None else timedelta(seconds=timeout + 300),
        )

    def poke(self, context: Any) -> PokeReturnValue:
        """One check (poke and reschedule modes)."""
        if self._expected is None:
            self._expected = self.resolve_studies(context)
        progress = self._assess()
        self._log_progress(progress)
        complete = all(p.complete for p in progress)
        return PokeReturnValue(is_done=complete, xcom_value=self._result(progress) if complete else None)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: return the manifest, or fail listing the incomplete studies."""
        if not event:
            raise AirflowSensorTimeout(f"{self.task_id}: the arrival trigger returned no event")
        if event.get("status") == "success":
            result = event["manifest"]
            studies = result["studies"]
            self.log.info(
                "%d studies complete: %d instances, %d bytes",
                studies if isinstance(studies, int) else len(studies),
                result["instances"],
                result["bytes"],
            )
            return result
        lines = event.get("incomplete") or []
        total = int(event.get("studies") or len(event.get("manifest", {}).get("studies", {})))
        raise AirflowSensorTimeout(self._format_timeout(lines, total))

    def _result(self, progress: list[StudyProgress]) -> dict[str, Any]:
        result = manifest(self.data_dir, progress)
        return write_manifest(self.manifest_path, result) if self.manifest_path else result

    def _timeout_message(self, progress: list[StudyProgress]) -> str:
        lines = [p.describe(self.quiet_period) for p in progress if not p.complete]
        return self._format_timeout(lines, len(progress))

    def _format_timeout(self, lines: list[str], total: int) -> str:
        head = (
            f"{len(lines)} of {total} studies did not arrive completely in {self.data_dir} "
            f"within {float(self.timeout or 0):g} s:"
        )
        return "\n  ".join([head, *lines])
