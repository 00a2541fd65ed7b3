"""The embedded C-MOVE receiver in a process of its own, against a real Orthanc: what arrives, its log lines
in ours, a taken port named, a receiver process that dies mid-run stopping the run, no process left behind."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from harness.ports import free_port

from airflow_dicom.dimse import DicomNode
from airflow_dicom.dimse.errors import ReceiverStartError
from airflow_dicom.dimse.receiver.process import PROCESS_MIN_ITEMS, use_receiver_process
from airflow_dicom.dimse.retrieve import (
    COMPLETE,
    FAILED,
    MOVE,
    MoveDestination,
    RetrieveOptions,
    make_items,
    retrieve,
)

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("airflow-dicom"))
CHILD = "airflow_dicom.dimse.receiver.process"


def _node(server) -> DicomNode:
    return DicomNode(host=server.host, port=server.dicom_port, called_ae_title=server.aet)


def _arrived(directory: Path) -> set[str]:
    """SOP instance UIDs stored under ``directory`` (file names of the patient layout)."""
    return {
        p.name.removesuffix(".dcm")
        for p in directory.rglob("*.dcm")
        if not any(part.startswith(".") for part in p.relative_to(directory).parts)
    }


def _sops(corpus, study_uids) -> set[str]:
    return {i.sop_uid for uid in study_uids for i in corpus.instances_of_study(uid)}


def _receiver_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if CHILD in " ".join(p.cmdline())]


def _listening(port: int) -> bool:
    return any(c.laddr.port == port and c.status == "LISTEN" for c in psutil.net_connections(kind="tcp"))


def test_auto_uses_a_process_for_long_retrievals_on_two_cores() -> None:
    two_cores = (os.cpu_count() or 1) >= 2
    assert use_receiver_process(None, PROCESS_MIN_ITEMS) is two_cores
    assert use_receiver_process(None, PROCESS_MIN_ITEMS - 1) is False
    assert use_receiver_process(True, 1) is True and use_receiver_process(False, 10_000) is False


def test_move_into_a_receiver_process_every_instance_arrives_and_its_log_is_ours(
    loaded_orthanc, tmp_path, caplog
) -> None:
    server, corpus = loaded_orthanc
    studies = sorted(corpus.study_uids)[:10]
    port = free_port()
    server.register_modality("receiver-process", "RPROC", "127.0.0.1", port)
    destination = MoveDestination(
        "RPROC", tmp_path / "data", port=port, host="127.0.0.1", receiver_process=True
    )
    caplog.set_level(logging.INFO, logger="airflow_dicom")
    result = retrieve(_node(server), make_items(studies), service=MOVE, destination=destination)

    assert result.ok, (result.summary(), [a.reason for a in result.final.values() if a.status != COMPLETE])
    assert _arrived(tmp_path / "data") == _sops(corpus, studies)
    for attempt in result.final.values():  # counted by the PACS and read back from the receiver's records
        n = corpus.study(attempt.item.uid).n_instances
        assert (attempt.completed, attempt.received, attempt.failed) == (n, n, 0)
    # the child's per-association lines are logged here, under the receiver's own logger
    lines = [r for r in caplog.records if r.name == "airflow_dicom.dimse.receiver.server"]
    stored = sum(
        int(r.getMessage().split(": ")[1].split(" stored")[0]) for r in lines if "released" in r.getMessage()
    )
    assert stored == len(_sops(corpus, studies))
    assert any(f"listening on 127.0.0.1:{port}" in r.getMessage() for r in lines)
    assert not _receiver_children() and not _listening(port)  # stopped with the run


def test_a_taken_port_is_named_for_either_kind_of_embedded_receiver(loaded_orthanc, tmp_path) -> None:
    server, corpus = loaded_orthanc
    with socket.socket() as holder:  # another program listening on the port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for own_process in (False, True):
            destination = MoveDestination(
                "RPROC", tmp_path / "data", port=port, host="127.0.0.1", receiver_process=own_process
            )
            with pytest.raises(ReceiverStartError) as caught:
                retrieve(
                    _node(server),
                    make_items(sorted(corpus.study_uids)[:2]),
                    service=MOVE,
                    destination=destination,
                )
            message = str(caught.value)
            assert f"port {port}" in message and "Address already in use" in message, message
            assert "choose another receive port" in message
            assert not _receiver_children()
    assert not _arrived(tmp_path)


def test_a_receiver_process_that_dies_stops_the_run_and_is_named(loaded_orthanc, tmp_path) -> None:
    server, corpus = loaded_orthanc
    studies = sorted(corpus.study_uids)[:12]
    port = free_port()
    server.register_modality("receiver-process", "RPROC", "127.0.0.1", port)
    destination = MoveDestination(
        "RPROC", tmp_path / "data", port=port, host="127.0.0.1", receiver_process=True
    )
    killed: list[int] = []
    completed: list[str] = []

    def kill_after_the_third(attempt) -> None:
        if attempt.status == COMPLETE:
            completed.append(attempt.item.uid)
        if len(completed) == 3 and not killed:
            for child in _receiver_children():
                child.send_signal(signal.SIGKILL)
                killed.append(child.pid)

    started = time.monotonic()
    result = retrieve(
        _node(server),
        make_items(studies),
        service=MOVE,
        destination=destination,
        options=RetrieveOptions(parallel=1, max_attempts=1),
        on_attempt=kill_after_the_third,
    )
    assert killed and time.monotonic() - started < 60
    statuses = [result.final[item.key].status for item in make_items(studies)]
    complete = [uid for uid, s in zip(studies, statuses, strict=True) if s == COMPLETE]
    assert len(complete) >= 3 and FAILED in statuses and set(statuses) <= {COMPLETE, FAILED}
    # what arrived before the receiver died is kept; the studies never requested say why
    assert _sops(corpus, complete) <= _arrived(tmp_path / "data")
    unrequested = [a for a in result.final.values() if a.reason.startswith("not requested")]
    assert unrequested and all(
        "embedded receiver's process ended unexpectedly" in a.reason for a in unrequested
    )
    assert not _receiver_children()


def test_the_receiver_process_ends_with_its_parent(tmp_path) -> None:
    port = free_port()
    script = (
        "import os, sys\n"
        "from airflow_dicom.dimse.receiver.process import ReceiverProcess\n"
        f"r = ReceiverProcess(data_dir={str(tmp_path)!r}, ae_title='ORPHAN', host='127.0.0.1', port={port})\n"
        "r.start()\n"
        "print(r._proc.pid, flush=True)\n"
        "os._exit(0)\n"  # dies without stopping it
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    child = int(out.stdout.split()[0])
    deadline = time.monotonic() + 30
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the receiver process outlived its parent"
        time.sleep(0.1)
    assert not _listening(port)


def test_cli_move_with_a_receiver_process(loaded_orthanc, tmp_path) -> None:
    server, corpus = loaded_orthanc
    studies = sorted(corpus.study_uids)[10:14]
    port = free_port()
    server.register_modality("receiver-process-cli", "RPROCCLI", "127.0.0.1", port)
    node = ["--host", server.host, "--port", str(server.dicom_port), "--aet", server.aet]
    done = subprocess.run(
        [
            CLI,
            "move",
            *node,
            "--dest-aet",
            "RPROCCLI",
            "--receive-port",
            str(port),
            "--receive-host",
            "127.0.0.1",
            "--data-dir",
            str(tmp_path / "data"),
            "--receiver-process",
            "yes",
            *studies,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(studies)} requested, {len(studies)} complete" in done.stdout
    assert _arrived(tmp_path / "data") == _sops(corpus, studies)
