"""DicomStudyArrivedTrigger (for AssetWatcher) and DicomArrivalTrigger, run on real receiver data."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from harness.dcmtk import storescu
from harness.ports import free_port
from harness.synth import make_corpus

from airflow_dicom.dimse.receiver import Receiver
from airflow_dicom.triggers.arrival import DicomArrivalTrigger, DicomStudyArrivedTrigger

pytestmark = pytest.mark.airflow


async def _collect(trigger: Any, count: int, timeout: float) -> list[dict]:
    events: list[dict] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(event.payload)
            if len(events) >= count:
                return

    try:
        await asyncio.wait_for(consume(), timeout)
    except asyncio.TimeoutError:
        pass
    return events


def test_study_arrived_trigger_fires_once_per_quiet_study_and_again_on_more(tmp_path: Path) -> None:
    corpus = make_corpus(
        n_patients=2, studies_per_patient=1, series_per_study=1, instances_per_series=4, seed=9
    )
    corpus.write(tmp_path / "src")
    first, second = corpus.studies
    late = corpus.instances_of_study(second.study_uid)[-1]
    with Receiver(tmp_path / "data", ae_title="RECEIVER", host="127.0.0.1", port=free_port()) as receiver:
        early = [corpus.paths[i.sop_uid] for i in corpus.instances if i.sop_uid != late.sop_uid]
        assert storescu("127.0.0.1", receiver.port, receiver.ae_title, early).returncode == 0
        trigger = DicomStudyArrivedTrigger(str(receiver.data_dir), quiet_period=1.0, poke_interval=0.2)
        classpath, kwargs = trigger.serialize()
        assert classpath == "airflow_dicom.triggers.arrival.DicomStudyArrivedTrigger"
        events = asyncio.run(_collect(DicomStudyArrivedTrigger(**kwargs), count=3, timeout=4))
        # one event per study, not repeated while nothing changes
        assert sorted((e["study_uid"], e["instances"]) for e in events) == sorted(
            [(first.study_uid, 4), (second.study_uid, 3)]
        )
        # the missing instance arrives later: the study is reported again with the new count
        trigger = DicomStudyArrivedTrigger(str(receiver.data_dir), quiet_period=1.0, poke_interval=0.2)

        async def scenario() -> list[dict]:
            collected: list[dict] = []
            gen = trigger.run()
            for _ in range(2):
                collected.append((await asyncio.wait_for(gen.__anext__(), 5)).payload)
            await asyncio.to_thread(
                storescu, "127.0.0.1", receiver.port, receiver.ae_title, [corpus.paths[late.sop_uid]]
            )
            collected.append((await asyncio.wait_for(gen.__anext__(), 5)).payload)
            await gen.aclose()
            return collected

        payloads = asyncio.run(scenario())
    assert (payloads[-1]["study_uid"], payloads[-1]["instances"]) == (second.study_uid, 4)
    assert payloads[-1]["bytes"] > 0 and payloads[-1]["series"] == 1


def test_arrival_trigger_does_not_block_the_event_loop_and_reports_deadline(tmp_path: Path) -> None:
    trigger = DicomArrivalTrigger(
        str(tmp_path), {"1.2.3": 2}, quiet_period=1, poke_interval=0.2, deadline=time.time() + 1.0
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    async def main() -> dict:
        task = asyncio.create_task(ticker())
        event = await asyncio.wait_for(trigger.run().__anext__(), 5)
        task.cancel()
        return event.payload

    payload = asyncio.run(main())
    assert payload["status"] == "timeout"
    assert payload["incomplete"] == ["study 1.2.3: received 0 of 2 expected instances"]
    assert ticks >= 10  # the loop kept running while the trigger waited


def test_asset_watcher_dag_parses(load_dag: Any) -> None:
    dag = load_dag("dicom_study_arrived", "dicom_arrival.py")
    (asset,) = dag.timetable.asset_condition.objects
    (watcher,) = asset.watchers
    assert isinstance(watcher.trigger, DicomStudyArrivedTrigger)
    assert watcher.trigger.serialize()[1]["quiet_period"] == 60


def test_arrival_trigger_waits_for_the_last_study_and_reports_every_study(tmp_path: Path) -> None:
    """Studies complete at different times: the trigger fires when the last one is complete (a study complete
    by its expected count is not read again meanwhile) and its manifest still lists every study and file."""
    corpus = make_corpus(
        n_patients=3, studies_per_patient=1, series_per_study=1, instances_per_series=3, seed=11
    )
    corpus.write(tmp_path / "src")
    early, late = corpus.studies[:2], corpus.studies[2]
    with Receiver(tmp_path / "data", ae_title="RECEIVER", host="127.0.0.1", port=free_port()) as receiver:
        files = [corpus.paths[i.sop_uid] for s in early for i in corpus.instances_of_study(s.study_uid)]
        assert storescu("127.0.0.1", receiver.port, receiver.ae_title, files).returncode == 0
        studies = {s.study_uid: 3 for s in corpus.studies}
        trigger = DicomArrivalTrigger(str(receiver.data_dir), studies, quiet_period=60, poke_interval=0.2)

        async def scenario() -> dict:
            run = asyncio.ensure_future(trigger.run().__anext__())
            await asyncio.sleep(1.0)  # several checks: the early studies are complete, the last is missing
            assert not run.done()
            rest = [corpus.paths[i.sop_uid] for i in corpus.instances_of_study(late.study_uid)]
            await asyncio.to_thread(storescu, "127.0.0.1", receiver.port, receiver.ae_title, rest)
            return (await asyncio.wait_for(run, 5)).payload

        payload = asyncio.run(scenario())
    assert payload["status"] == "success"
    manifest = payload["manifest"]
    assert {uid: entry["instances"] for uid, entry in manifest["studies"].items()} == studies
    listed = {Path(f).name for entry in manifest["studies"].values() for f in entry["files"]}
    assert listed == {Path(p).name for p in corpus.paths.values()}
    assert manifest["instances"] == 9
