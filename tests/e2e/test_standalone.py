"""End to end on a real ``airflow standalone``: the example DAGs, the connection form, connection tests.

The scratch Orthanc is loaded with a small corpus packed into a few days (so that three consecutive days hold
studies); the standalone gets the PACS as ``dicom_default``, a temporary ``AIRFLOW_DICOM_DATA_DIR`` and a free
port for the embedded receiver, which the Orthanc knows as a C-MOVE destination.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow.dataset as pads
import pydicom
import pytest
from e2e.standalone import AirflowStandalone
from harness.ports import free_port
from harness.synth import Corpus, make_corpus

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAGS = Path(__file__).resolve().parents[2] / "dags"
EXAMPLE_DAGS = {"dicom_echo", "dicom_find_daily", "dicom_retrieve", "dicom_send", "dicom_on_arrival"}
RECEIVER_AET = "AIRFLOWRCV"


class E2E(NamedTuple):
    airflow: AirflowStandalone
    corpus: Corpus
    data: Path


@pytest.fixture(scope="module")
def e2e(orthanc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    corpus = make_corpus(
        n_patients=6,
        studies_per_patient=2,
        series_per_study=(1, 2),
        instances_per_series=(1, 3),
        start=date(2024, 3, 1),
        days=4,
        seed=7,
    )
    corpus.write(tmp_path_factory.mktemp("e2e-corpus"))
    orthanc.clear()
    orthanc.upload_files(corpus.paths[i.sop_uid] for i in corpus.instances)
    receiver_port = free_port()
    orthanc.register_modality("airflow-receiver", RECEIVER_AET, "127.0.0.1", receiver_port)
    conn = {
        "conn_type": "dicom",
        "host": orthanc.host,
        "port": orthanc.dicom_port,
        "extra": {"called_ae_title": orthanc.aet},
    }
    home = Path(tempfile.mkdtemp(prefix="airflow-dicom-e2e-"))
    data = home / "data"
    env = {
        "AIRFLOW_CONN_DICOM_DEFAULT": json.dumps(conn),
        "AIRFLOW_CONN_DICOM_WRONG": json.dumps({**conn, "extra": {"called_ae_title": "NOBODY"}, "port": 1}),
        "AIRFLOW_DICOM_DATA_DIR": str(data),
        "AIRFLOW_DICOM_RECEIVER_AET": RECEIVER_AET,
        "AIRFLOW_DICOM_RECEIVER_PORT": str(receiver_port),
        "AIRFLOW_DICOM_QUIET_PERIOD": "5",
        "AIRFLOW_DICOM_ARRIVAL_TIMEOUT": "180",
    }
    with AirflowStandalone(home, DAGS, env) as instance:
        yield E2E(instance, corpus, data)


@pytest.fixture(scope="module")
def airflow(e2e: E2E) -> AirflowStandalone:
    return e2e.airflow


def test_example_dags_import_without_errors(airflow: AirflowStandalone) -> None:
    dags = airflow.wait_for_dags(EXAMPLE_DAGS)
    assert EXAMPLE_DAGS <= set(dags)
    errors = airflow.api("GET", "/api/v2/importErrors")
    assert errors["total_entries"] == 0, errors


def test_connection_form_fields_are_served(airflow: AirflowStandalone) -> None:
    hooks = {h["connection_type"]: h for h in airflow.api("GET", "/ui/connections/hook_meta")}
    dicom = hooks["dicom"]
    assert dicom["hook_name"] == "DICOM node"
    assert {"called_ae_title", "calling_ae_title", "acse_timeout", "dimse_timeout", "max_pdu"} <= set(
        dicom["extra_fields"]
    )
    assert dicom["standard_fields"]["login"]["hidden"] is True
    assert dicom["standard_fields"]["port"]["placeholder"] == "104 or 11112"


def test_airflow_connections_test(airflow: AirflowStandalone) -> None:
    ok = airflow.cli("connections", "test", "dicom_default")
    assert ok.returncode == 0 and "Connection success!" in ok.stdout, ok.stdout + ok.stderr
    bad = airflow.cli("connections", "test", "dicom_wrong")
    assert "Connection failed!" in bad.stdout
    assert "unreachable" in bad.stdout


def test_echo_dag_runs_in_the_real_scheduler(airflow: AirflowStandalone) -> None:
    airflow.wait_for_dags({"dicom_echo"})
    airflow.unpause("dicom_echo")
    run_id = airflow.trigger("dicom_echo")
    assert airflow.wait_for_run("dicom_echo", run_id, timeout=180) == "success", airflow.log_tail()
    (ti,) = airflow.task_instances("dicom_echo", run_id)
    assert ti["state"] == "success"


def _received_sop_uids(directory: Path) -> set[str]:
    found = set()
    for path in directory.rglob("*.dcm"):
        if not any(part.startswith(".") for part in path.relative_to(directory).parts):
            found.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return found


def _ti_path(dag_id: str, run_id: str, task_id: str) -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}"


def test_retrieve_dag_from_the_api_waits_deferred_and_everything_arrives(e2e: E2E) -> None:
    airflow, corpus, data = e2e
    airflow.wait_for_dags({"dicom_retrieve"})
    airflow.unpause("dicom_retrieve")
    first = min(s.study_date for s in corpus.studies)
    last = first + timedelta(days=13)  # two weeks
    studies = corpus.studies_between(first, last)
    conf = {"date_from": first.isoformat(), "date_to": last.isoformat(), "batch_size": 2}
    run_id = airflow.trigger("dicom_retrieve", conf)

    # watch the arrival sensor while the retrieval runs: it must wait deferred, in the triggerer
    sensor_states: list[str] = []
    deadline = time.monotonic() + 200
    state = "queued"
    while time.monotonic() < deadline:
        sensor = airflow.api("GET", _ti_path("dicom_retrieve", run_id, "arrival"))
        if not sensor_states or sensor_states[-1] != sensor["state"]:
            sensor_states.append(sensor["state"])
        state = airflow.api("GET", f"/api/v2/dags/dicom_retrieve/dagRuns/{urllib.parse.quote(run_id)}")
        state = state["state"]
        if state in ("success", "failed"):
            break
        time.sleep(0.5)
    tis = airflow.task_instances("dicom_retrieve", run_id)
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis}
    assert state == "success", (states, airflow.log_tail())
    assert "deferred" in sensor_states, sensor_states
    moves = [s for (task, _), s in states.items() if task == "retrieve_move"]
    assert moves == ["success"] * -(-len(studies) // 2)
    assert states[("retrieve_get", -1)] == "skipped"

    wanted = {i.sop_uid for s in studies for i in corpus.instances_of_study(s.study_uid)}
    assert _received_sop_uids(data / "received") == wanted
    entry = airflow.api("GET", _ti_path("dicom_retrieve", run_id, "report") + "/xcomEntries/return_value")
    report = entry["value"] if isinstance(entry["value"], dict) else json.loads(entry["value"])
    assert (report["requested"], report["complete"], report["failed"]) == (len(studies), len(studies), 0)
    assert report["instances"] == len(wanted)


def _three_busy_days(corpus: Corpus) -> list[date]:
    days = sorted({s.study_date for s in corpus.studies})
    for day in days:
        run = [day + timedelta(days=n) for n in range(3)]
        if all(corpus.studies_between(d, d) for d in run):
            return run
    raise AssertionError(f"the e2e corpus has no three consecutive days with studies: {days}")


def _backfill_runs(airflow: AirflowStandalone) -> list[dict[str, Any]]:
    runs = airflow.api("GET", "/api/v2/dags/dicom_find_daily/dagRuns?limit=100")["dag_runs"]
    return [r for r in runs if r["run_type"] == "backfill"]


def test_backfill_of_three_days_lands_exactly_their_partitions(e2e: E2E) -> None:
    airflow, corpus, data = e2e
    airflow.wait_for_dags({"dicom_find_daily"})
    days = _three_busy_days(corpus)
    airflow.unpause("dicom_find_daily")  # the scheduler runs no task of a paused DAG, backfills included
    airflow.backfill(
        "dicom_find_daily", f"{days[0].isoformat()}T00:00:00Z", f"{days[-1].isoformat()}T00:00:00Z"
    )
    deadline = time.monotonic() + 150
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = _backfill_runs(airflow)
        if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(1)
    assert sorted(r["state"] for r in runs) == ["success"] * 3, (runs, airflow.log_tail())
    assert sorted(r["data_interval_start"][:10] for r in runs) == [d.isoformat() for d in days]

    studies = data / "find" / "studies"
    assert sorted(p.name for p in studies.iterdir() if p.is_dir()) == [f"StudyDate={d}" for d in days]
    rows = pads.dataset(studies, format="parquet", partitioning="hive").to_table().to_pylist()
    expected = [s for d in days for s in corpus.studies_between(d, d)]
    assert sorted(r["StudyInstanceUID"] for r in rows) == sorted(s.study_uid for s in expected)
