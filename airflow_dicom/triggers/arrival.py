"""Triggers watching the receiver's arrival records.

* :class:`DicomArrivalTrigger` — fires once when given studies are complete (or at a deadline, with the
  per-study counts); the deferrable half of :class:`~airflow_dicom.sensors.arrival.DicomArrivalSensor`.
* :class:`DicomStudyArrivedTrigger` — an event trigger for ``AssetWatcher``: fires each time a study
  finishes arriving (no new instance for a quiet period), so a DAG can be scheduled on it.

Both read the records with :mod:`airflow_dicom.dimse.arrivals` in a worker thread
(``asyncio.to_thread``): file I/O on shared storage never blocks the triggerer's event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

from airflow_dicom.dimse.arrivals import (
    active_studies,
    assess_studies,
    manifest,
    study_arrivals,
    write_manifest,
)


class DicomArrivalTrigger(BaseTrigger):
    """Fire when every study is complete, or when ``deadline`` passes.

    The event payload is ``{"status": "success", "manifest": {...}}`` or
    ``{"status": "timeout", "incomplete": [lines], "manifest": {...}}``.

    :param data_dir: the receiver's data directory (as mounted on the triggerer's machine).
    :param studies: ``{StudyInstanceUID: expected instance count or None}``.
    :param quiet_period: seconds without a new instance that complete a study of unknown size.
    :param poke_interval: seconds between checks.
    :param deadline: epoch seconds after which the trigger reports a timeout (None: never).
    :param include_files: list every file in the manifest.
    :param studies_path: a Parquet of the studies (``StudyInstanceUID``, ``NumberOfStudyRelatedInstances``)
        read by the trigger, instead of ``studies``: the trigger's kwargs then stay small.
    :param manifest_path: write the manifest there (JSON) and send only its summary in the event.
    """

    def __init__(
        self,
        data_dir: str,
        studies: dict[str, int | None],
        *,
        quiet_period: float = 60.0,
        poke_interval: float = 10.0,
        deadline: float | None = None,
        include_files: bool = True,
        studies_path: str | None = None,
        manifest_path: str | None = None,
    ) -> None:
        super().__init__()
        self.data_dir = str(data_dir)
        self.studies = {str(k): (None if v is None else int(v)) for k, v in studies.items()}
        self.quiet_period = float(quiet_period)
        self.poke_interval = float(poke_interval)
        self.deadline = None if deadline is None else float(deadline)
        self.include_files = bool(include_files)
        self.studies_path = studies_path
        self.manifest_path = manifest_path

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments."""
        return (
            "airflow_dicom.triggers.arrival.DicomArrivalTrigger",
            {
                "data_dir": self.data_dir,
                "studies": self.studies,
                "quiet_period": self.quiet_period,
                "poke_interval": self.poke_interval,
                "deadline": self.deadline,
                "include_files": self.include_files,
                "studies_path": self.studies_path,
                "manifest_path": self.manifest_path,
            },
        )

    def _manifest(self, progress: list) -> dict[str, Any]:
        result = manifest(self.data_dir, progress)
        return write_manifest(self.manifest_path, result) if self.manifest_path else result

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Check the studies every ``poke_interval`` seconds until complete or past the deadline.

        A study that reached its expected instance count stays complete: later checks read only the studies
        still pending, so a check costs what is left to arrive, not every study of the run. The manifest is
        read once at the end, for every study.
        """
        if self.studies_path and not self.studies:
            # imported here: the sensor module imports this one
            from airflow_dicom.sensors.arrival import expected_from_find_dataset

            self.studies = await asyncio.to_thread(expected_from_find_dataset, self.studies_path)
        pending = dict(self.studies)
        while True:
            progress = await asyncio.to_thread(
                assess_studies, self.data_dir, pending, quiet_period=self.quiet_period, include_files=False
            )
            for p in progress:
                if p.complete and p.expected is not None:
                    del pending[p.study_uid]
            incomplete = [p for p in progress if not p.complete]
            if not incomplete:
                final = await self._assess_all()
                self.log.info(
                    "all %d studies complete (%d instances)", len(final), sum(p.received for p in final)
                )
                yield TriggerEvent({"status": "success", "manifest": self._manifest(final)})
                return
            if self.deadline is not None and time.time() >= self.deadline:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "incomplete": [p.describe(self.quiet_period) for p in incomplete],
                        "manifest": self._manifest(await self._assess_all()),
                        "studies": len(self.studies),
                    }
                )
                return
            self.log.debug("%d of %d studies incomplete", len(incomplete), len(self.studies))
            await asyncio.sleep(self._sleep_time())

    async def _assess_all(self) -> list:
        return await asyncio.to_thread(
            assess_studies,
            self.data_dir,
            self.studies,
            quiet_period=self.quiet_period,
            include_files=self.include_files,
        )

    def _sleep_time(self) -> float:
        if self.deadline is None:
            return self.poke_interval
        return max(0.0, min(self.poke_interval, self.deadline - time.time()))


class DicomStudyArrivedTrigger(BaseEventTrigger):
    """For ``AssetWatcher``: an event each time a study finishes arriving in a receiver's data directory.

    A study "finishes arriving" when it has at least ``min_instances`` instances and none arrived during
    the last ``quiet_period`` seconds. If more instances arrive later, it fires again once they stop.
    Studies whose last activity is older than ``lookback`` seconds when the trigger starts are ignored
    (a restarted triggerer does not replay the whole archive).

    The payload: ``{"study_uid", "instances", "bytes", "series", "last_arrival", "data_dir"}``.

    :param data_dir: the receiver's data directory (as mounted on the triggerer's machine).
    :param quiet_period: seconds without a new instance.
    :param poke_interval: seconds between scans.
    :param lookback: seconds of past activity considered when the trigger starts.
    :param min_instances: fire only for studies with at least this many instances.
    """

    def __init__(
        self,
        data_dir: str,
        *,
        quiet_period: float = 60.0,
        poke_interval: float = 10.0,
        lookback: float = 3600.0,
        min_instances: int = 1,
    ) -> None:
        super().__init__()
        self.data_dir = str(data_dir)
        self.quiet_period = float(quiet_period)
        self.poke_interval = float(poke_interval)
        self.lookback = float(lookback)
        self.min_instances = int(min_instances)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments."""
        return (
            "airflow_dicom.triggers.arrival.DicomStudyArrivedTrigger",
            {
                "data_dir": self.data_dir,
                "quiet_period": self.quiet_period,
                "poke_interval": self.poke_interval,
                "lookback": self.lookback,
                "min_instances": self.min_instances,
            },
        )

    def _scan(self, since: float, fired: dict[str, int]) -> list[dict[str, Any]]:
        """Studies active since ``since`` that went quiet and were not reported at their current count.

        ``fired`` (study -> instance count when last reported) is updated and pruned of studies that
        are no longer active (if they receive more instances later they are reported again).
        """
        current = time.time()
        events = []
        active = active_studies(self.data_dir, since)
        for study_uid in list(fired):
            if study_uid not in active:
                del fired[study_uid]
        for study_uid in sorted(active):
            state = study_arrivals(self.data_dir, study_uid)
            last = state.last_arrival
            if last is None or current - last < self.quiet_period or state.received < self.min_instances:
                continue
            if fired.get(study_uid) == state.received:
                continue
            fired[study_uid] = state.received
            events.append(
                {
                    "study_uid": study_uid,
                    "instances": state.received,
                    "bytes": state.bytes,
                    "series": len(state.series_uids),
                    "last_arrival": last,
                    "data_dir": self.data_dir,
                }
            )
        return events

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Scan forever; yield one event per study that finished arriving."""
        since = time.time() - self.lookback
        # a study is examined while its last activity is recent enough to be (or become) quiet now;
        # the margin covers scans slower than the poke interval
        margin = max(3 * self.poke_interval, 60.0)
        fired: dict[str, int] = {}
        while True:
            scan_started = time.time()
            events = await asyncio.to_thread(self._scan, since, fired)
            for payload in events:
                self.log.info(
                    "study %s finished arriving (%d instances)", payload["study_uid"], payload["instances"]
                )
                yield TriggerEvent(payload)
            since = scan_started - self.quiet_period - margin
            await asyncio.sleep(self.poke_interval)
