"""The distributed layout end to end: CeleryExecutor on PostgreSQL and Redis, two workers, a lost worker.

50 studies in Orthanc are retrieved by ``dicom_retrieve`` (C-MOVE to the receiver service on its own address,
batches of 5 spread over both workers) across a slow link (50 ms each way: a batch takes seconds, as on a
hospital's network, not the ~0.4 s of loopback, so a worker can be lost while it retrieves). One worker is
SIGKILLed with its task processes while it retrieves a batch (a lost machine) and comes back later; the run
must still end with every instance received exactly once, a complete report, tasks on both worker hosts,
small XComs and no task left queued or running.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from harness.synth import make_corpus

from distributed.gate import PacsGate
from distributed.scenario import (
    FIND,
    RECEIVER_AET,
    RECEIVER_HOST,
    RETRIEVE,
    XCOM_LIMIT,
    ReceiverService,
    received_files,
    stack_env,
    summarise,
    wait_running_on,
)
from distributed.stack import WORKERS, DistributedStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAGS = Path(__file__).resolve().parents[2] / "dags"
#: seconds each chunk of bytes between the PACS and the receiver service is held, either way
LINK_DELAY = 0.05


@pytest.fixture(scope="module")
def loaded(orthanc, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    corpus = make_corpus(
        n_patients=25,
        studies_per_patient=2,
        series_per_study=(1, 2),
        instances_per_series=(1, 3),
        start=date(2024, 5, 1),
        days=3,
        seed=17,
    )
    corpus.write(tmp_path_factory.mktemp("dist-corpus"))
    orthanc.clear()
    orthanc.upload_files(corpus.paths[i.sop_uid] for i in corpus.instances)
    return orthanc, corpus


def _hosts_of_every_try(airflow: DistributedStack, run_id: str, tis: list[dict]) -> set[str]:
    """The worker hosts of every try of ``tis`` (the REST API's task-instance tries)."""
    hosts = {ti["hostname"] for ti in tis if ti.get("hostname")}
    for ti in tis:
        path = (
            f"/api/v2/dags/{RETRIEVE}/dagRuns/{urllib.request.quote(run_id)}/taskInstances/"
            f"{ti['task_id']}/{ti['map_index']}/tries"
        )
        hosts |= {t["hostname"] for t in airflow.api("GET", path)["task_instances"] if t.get("hostname")}
    return hosts


@pytest.fixture(scope="module")
def stack(loaded) -> Iterator[tuple[DistributedStack, ReceiverService, Path]]:  # type: ignore[no-untyped-def]
    pacs, _ = loaded
    home = Path(tempfile.mkdtemp(prefix="airflow-dicom-dist-"))
    data = home / "data"
    received = data / "received"
    received.mkdir(parents=True)
    receiver = ReceiverService(received, home / "receiver.log").start()
    link = PacsGate(RECEIVER_HOST, (RECEIVER_HOST, receiver.port), delay=LINK_DELAY).start()
    try:
        pacs.register_modality("receiver-service", RECEIVER_AET, RECEIVER_HOST, link.port)
        with DistributedStack(home, DAGS, stack_env(pacs.host, pacs.dicom_port, pacs.aet, data)) as running:
            running.wait_for_dags({RETRIEVE, FIND})
            running.unpause(RETRIEVE)
            yield running, receiver, received
    finally:
        link.stop()
        receiver.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_lost_worker_mid_retrieval_every_instance_once_and_report_complete(loaded, stack) -> None:
    _, corpus = loaded
    airflow, _, received = stack
    first, last = min(s.study_date for s in corpus.studies), max(s.study_date for s in corpus.studies)
    started = time.monotonic()
    run_id = airflow.trigger(
        RETRIEVE, {"date_from": first.isoformat(), "date_to": last.isoformat(), "batch_size": 5}
    )
    # a lost machine: the worker and its task processes die while it retrieves a batch; it comes back later
    assert wait_running_on(airflow, run_id, WORKERS[0], "retrieve_move", timeout=240), airflow.log_tail()
    airflow.kill_worker(WORKERS[0])
    time.sleep(5)
    airflow.start_worker(WORKERS[0])
    state = airflow.wait_for_run(RETRIEVE, run_id, timeout=600)
    summary = summarise(airflow, run_id, received, time.monotonic() - started)
    assert state == "success", summary

    # every instance of the PACS, read from the files, exactly once; no partial file
    files = received_files(received)
    per_uid = Counter(uid for _, uid in files)
    assert set(per_uid) == corpus.sop_uids
    assert [uid for uid, n in per_uid.items() if n > 1] == []
    assert summary["partial_files"] == []

    report = summary["report"]
    assert report["requested"] == report["complete"] == len(corpus.studies)
    assert report["failed"] == 0 and report["instances"] == len(corpus.instances)

    moves = [ti for ti in airflow.task_instances(RETRIEVE, run_id) if ti["task_id"] == "retrieve_move"]
    assert len(moves) == 10 and {ti["state"] for ti in moves} == {"success"}
    # the hosts every try ran on (the lost worker's try is an earlier try of a batch that finished elsewhere)
    assert _hosts_of_every_try(airflow, run_id, moves) == set(WORKERS)
    assert max(ti["try_number"] for ti in moves) >= 2  # the batch of the lost worker ran again
    assert summary["unfinished"] == []
    assert summary["largest_xcom"] < XCOM_LIMIT


def test_embedded_receiver_on_a_celery_worker_fails_at_once_naming_the_service(loaded, stack) -> None:
    _, corpus = loaded
    airflow, _, received = stack
    before = received_files(received)
    study = sorted(corpus.study_uids)[0]
    run_id = airflow.trigger(RETRIEVE, {"study_uids": [study], "destination_aet": ""})
    # the run's state is the report's: the study is complete from the test above
    airflow.wait_for_run(RETRIEVE, run_id, timeout=300)
    states = {ti["task_id"]: ti for ti in airflow.task_instances(RETRIEVE, run_id)}
    choose = states["choose_service"]
    assert choose["state"] == "failed" and choose["try_number"] == 1  # not retried: retrying cannot help
    assert states["retrieve_move"]["state"] == "upstream_failed"
    log = airflow.api(
        "GET",
        f"/api/v2/dags/{RETRIEVE}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/choose_service/logs/1"
        "?full_content=true",
    )
    text = json.dumps(log)
    assert "receiver service" in text and "AIRFLOW_DICOM_DESTINATION_AET" in text
    assert received_files(received) == before  # nothing fetched, nothing lost
