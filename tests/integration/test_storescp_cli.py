"""``airflow-dicom storescp`` as a service: SIGKILL mid-association and restart, SIGTERM drains, log lines."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from harness.dcmtk import DCMTK_ENV, dcmtk_tool, storescu
from harness.receiver_proc import CLI, ReceiverProcess, listening
from harness.synth import Corpus, make_corpus
from pydicom.uid import ExplicitVRLittleEndian

from airflow_dicom.dimse.arrivals import study_arrivals
from airflow_dicom.dimse.receiver import INCOMING_DIR

pytestmark = pytest.mark.integration


def _corpus(directory: Path, count: int, pixel_bytes: int, seed: int) -> Corpus:
    corpus = make_corpus(
        n_patients=count // 50,
        studies_per_patient=1,
        series_per_study=1,
        instances_per_series=50,
        pixel_bytes=pixel_bytes,
        transfer_syntaxes=[ExplicitVRLittleEndian],
        modalities=("CT",),
        seed=seed,
    )
    corpus.write(directory)
    return corpus


def _storescu_process(port: int, aet: str, directory: Path) -> subprocess.Popen[str]:
    args = [dcmtk_tool("storescu"), "-aet", "SENDER", "-aec", aet, "-to", "20", "+sd", "127.0.0.1", str(port)]
    return subprocess.Popen(
        [*args, str(directory)], env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _stored(data_dir: Path) -> list[Path]:
    hidden = (data_dir / ".incoming", data_dir / ".quarantine")
    return sorted(p for p in data_dir.rglob("*.dcm") if not any(h in p.parents for h in hidden))


def _wait_for_files(data_dir: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(_stored(data_dir)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} files arrived"
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkill_mid_association_then_restart_and_resend(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "src", 300, 128 * 1024, seed=7)
    data_dir = tmp_path / "data"
    receiver = ReceiverProcess(data_dir, "RECEIVER").start()
    try:
        sender = _storescu_process(receiver.port, "RECEIVER", tmp_path / "src")
        _wait_for_files(data_dir, 30)
        receiver.kill()  # SIGKILL in the middle of the association
        sender.communicate(timeout=60)
        assert sender.returncode != 0  # the sender saw the association die
        partial_run = _stored(data_dir)
        assert 30 <= len(partial_run) < 300
        for path in partial_run:  # no partial file under a final name
            ds = pydicom.dcmread(path)
            assert len(ds.PixelData) == ds.Rows * ds.Columns * 2

        receiver = ReceiverProcess(data_dir, "RECEIVER", port=receiver.port).start()  # same port
        # the dead receiver's partial files are gone: only the new process's (empty) incoming dir remains
        assert sorted(p.name for p in (data_dir / INCOMING_DIR).rglob("*") if p.is_file()) == ["lock"]
        proc = storescu("127.0.0.1", receiver.port, "RECEIVER", [tmp_path / "src"], propose="")
        assert proc.returncode == 0, proc.stderr[-3000:]  # the sender retries everything
        assert {p.stem for p in _stored(data_dir)} == corpus.sop_uids
        assert list(data_dir.rglob("*.tmp")) == []
        for study in corpus.studies:
            assert study_arrivals(data_dir, study.study_uid).received == study.n_instances
        for inst in corpus.instances[::25]:
            stored = pydicom.dcmread(next(p for p in _stored(data_dir) if p.stem == inst.sop_uid))
            assert stored == pydicom.dcmread(corpus.paths[inst.sop_uid])
    finally:
        receiver.stop()


@pytest.mark.slow
def test_sigterm_finishes_the_association_in_flight_and_exits_0(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "src", 1000, 8 * 1024, seed=8)
    data_dir = tmp_path / "data"
    receiver = ReceiverProcess(data_dir, "RECEIVER").start()
    try:
        sender = _storescu_process(receiver.port, "RECEIVER", tmp_path / "src")
        _wait_for_files(data_dir, 50)
        assert len(_stored(data_dir)) < 1000  # the association is in flight
        receiver.signal(signal.SIGTERM)
        output, _ = sender.communicate(timeout=120)
        assert sender.returncode == 0, output[-3000:]
        assert receiver.wait(60) == 0
    finally:
        receiver.stop()
    assert {p.stem for p in _stored(data_dir)} == corpus.sop_uids
    assert not listening(receiver.port)
    log = receiver.log()
    assert "association from SENDER@127.0.0.1" in log and "released: 1000 stored, 0 failed" in log
    for patient in corpus.patients:  # no patient data in the service's log
        assert patient.patient_id not in log
        if patient.patient_name:
            assert patient.patient_name not in log


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    base = ["storescp", "--aet", "R", "--data-dir", str(tmp_path)]
    bad = (["--port", "0"], ["--port", "104", "--max-associations", "0"], ["--port", "104", "--layout", "x"])
    for extra in bad:
        proc = subprocess.run(
            [*CLI, *base, *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
