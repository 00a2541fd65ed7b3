"""DicomArrivalSensor in real DAG runs (``dag.test()``, the trigger runs inline) with our receiver."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness.dcmtk import storescu
from harness.ports import free_port
from harness.synth import Corpus, make_corpus

from airflow_dicom.dimse.receiver import Receiver

pytestmark = pytest.mark.airflow


@pytest.fixture
def studies(tmp_path: Path) -> Corpus:
    corpus = make_corpus(
        n_patients=2, studies_per_patient=1, series_per_study=2, instances_per_series=3, seed=42
    )
    corpus.write(tmp_path / "src")
    return corpus


@pytest.fixture
def receiver(tmp_path: Path):
    with Receiver(tmp_path / "data", ae_title="RECEIVER", host="127.0.0.1", port=free_port()) as running:
        yield running


def _send_later(receiver: Receiver, files: list[Path], delay: float) -> threading.Thread:
    def send() -> None:
        time.sleep(delay)
        proc = storescu("127.0.0.1", receiver.port, receiver.ae_title, files)
        assert proc.returncode == 0, proc.stderr[-2000:]

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_sensor_succeeds_when_studies_complete(
    receiver: Receiver, studies: Corpus, tmp_path: Path, load_dag: Any
) -> None:
    out = tmp_path / "manifest.json"
    rows = [
        {"StudyInstanceUID": s.study_uid, "NumberOfStudyRelatedInstances": s.n_instances}
        for s in studies.studies
    ]
    # the studies arrive while the sensor is deferred
    sender = _send_later(receiver, [studies.paths[i.sop_uid] for i in studies.instances], delay=2)
    dag = load_dag("dicom_arrival_from_find", "dicom_arrival.py")
    run = dag.test(run_conf={"data_dir": str(receiver.data_dir), "rows": rows, "out": str(out)})
    sender.join()
    assert run.state == "success"
    manifest = json.loads(out.read_text())
    assert set(manifest["studies"]) == studies.study_uids
    for study in studies.studies:
        entry = manifest["studies"][study.study_uid]
        assert entry["instances"] == entry["expected"] == study.n_instances
        assert {Path(f).stem for f in entry["files"]} == {
            i.sop_uid for i in studies.instances_of_study(study.study_uid)
        }
        assert all(Path(f).is_file() for f in entry["files"])
    assert manifest["instances"] == len(studies.instances)
    assert manifest["bytes"] == sum(
        Path(f).stat().st_size for e in manifest["studies"].values() for f in e["files"]
    )


def test_sensor_times_out_listing_incomplete_studies(
    receiver: Receiver, studies: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str], load_dag: Any
) -> None:
    complete, partial = studies.studies
    missing = studies.instances_of_study(partial.study_uid)[-1]
    files = [studies.paths[i.sop_uid] for i in studies.instances if i.sop_uid != missing.sop_uid]
    proc = storescu("127.0.0.1", receiver.port, receiver.ae_title, files)
    assert proc.returncode == 0
    dag = load_dag("dicom_arrival_timeout", "dicom_arrival.py")
    conf = {
        "data_dir": str(receiver.data_dir),
        "studies": [complete.study_uid, partial.study_uid],
        "expected": {complete.study_uid: complete.n_instances, partial.study_uid: partial.n_instances},
    }
    run = dag.test(run_conf=conf)
    assert run.state == "failed"
    ti = run.get_task_instance("wait")
    assert ti.state == "failed"
    text = capsys.readouterr().out  # the task log (the failure message with the per-study list)
    assert "1 of 2 studies did not arrive completely" in text
    assert (
        f"study {partial.study_uid}: received {partial.n_instances - 1} of {partial.n_instances} expected"
        in text
    )
    assert f"study {complete.study_uid}:" not in text.split("did not arrive completely", 1)[1]


def test_poke_mode_completes_on_quiet_period(
    receiver: Receiver, studies: Corpus, tmp_path: Path, load_dag: Any
) -> None:
    out = tmp_path / "manifest.json"
    study = studies.studies[0]
    sender = _send_later(receiver, studies.files_of_study(study.study_uid), delay=1)
    dag = load_dag("dicom_arrival_poke", "dicom_arrival.py")
    run = dag.test(
        run_conf={"data_dir": str(receiver.data_dir), "studies": [study.study_uid], "out": str(out)}
    )
    sender.join()
    assert run.state == "success"
    manifest = json.loads(out.read_text())
    entry = manifest["studies"][study.study_uid]
    assert entry["expected"] is None and entry["instances"] == study.n_instances


def test_reschedule_mode(receiver: Receiver, studies: Corpus, tmp_path: Path, load_dag: Any) -> None:
    out = tmp_path / "manifest.json"
    study = studies.studies[1]
    files = studies.files_of_study(study.study_uid)[:3]
    sender = _send_later(receiver, files, delay=2)
    dag = load_dag("dicom_arrival_reschedule", "dicom_arrival.py")
    run = dag.test(
        run_conf={"data_dir": str(receiver.data_dir), "studies": [study.study_uid], "out": str(out)}
    )
    sender.join()
    assert run.state == "success"
    entry = json.loads(out.read_text())["studies"][study.study_uid]
    assert entry["expected"] == 3 and {Path(f).stem for f in entry["files"]} == {p.stem for p in files}
