"""``make demo``: the example pipeline end to end on an embedded PACS, in under three minutes.

1. generates a week of synthetic studies (awkward patient names included) with pydicom;
2. starts pynetdicom's own ``qrscp`` app as the PACS and seeds it with ``airflow-dicom send``;
3. starts our receiver as a service (``airflow-dicom storescp``) registered as the PACS's move destination;
4. runs the example DAG ``dicom_find_daily`` day by day (``dag.test()`` for each logical date) into a Parquet
   dataset partitioned by StudyDate;
5. runs ``dicom_retrieve`` over the week (C-MOVE to the receiver, arrival sensor, retrieval report);
6. prints a summary and stops everything it started.

``python -m demo.demo ui`` does steps 1-3 and then serves the same set-up in ``airflow standalone`` (UI on
http://localhost:8080, every user an admin) until Ctrl-C: task logs at INFO (the progress lines of every
retrieval), the arrival sensor deferrable (it waits Deferred in standalone's triggerer), the connections
``dicom_default`` and ``dicom_forward`` created through the REST API (so the Connections page lists them),
and what to type in the trigger form printed at start.

The PACS knows two C-MOVE destinations: ``DEMORCV``, the long-running receiver service, and ``AIRFLOWRCV``,
the receiver each retrieval task starts itself when the form's destination AE is left empty.

Everything lives under ``.demo/`` in the repository (removed at the start of each run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from airflow_dicom.dimse.arrivals import recorded_studies, study_arrivals
from airflow_dicom.testing import make_corpus

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
DATA = WORK / "data"
BIN = Path(sys.executable).parent
FIRST_DAY = date(2024, 1, 1)
DAYS = 7
PACS_AET = "DEMOPACS"
RECEIVER_AET = "DEMORCV"
EMBEDDED_AET = "AIRFLOWRCV"
UI_PORT = 8080


def say(text: str) -> None:
    """Print a progress line with the elapsed time."""
    print(f"[{time.monotonic() - STARTED:6.1f} s] {text}", flush=True)


STARTED = time.monotonic()


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    """Wait until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def service(name: str, cmd: list[str], port: int, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Run ``cmd`` in the background while the block runs; stop it (SIGTERM, then SIGKILL) afterwards."""
    log = (WORK / f"{name}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or os.environ.copy(), cwd=WORK)
    try:
        wait_port(port)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def make_studies() -> Path:
    """Write a week of synthetic studies (uncompressed: qrscp stores only what it can decode)."""
    corpus = make_corpus(
        n_patients=10,
        studies_per_patient=2,
        series_per_study=(1, 2),
        instances_per_series=(2, 4),
        start=FIRST_DAY,
        days=DAYS,
        seed=7,
        transfer_syntaxes=(ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    )
    corpus.write(WORK / "source")
    say(f"generated {len(corpus.studies)} studies, {len(corpus.instances)} instances over {DAYS} days")
    return WORK / "source"


def qrscp_config(pacs_port: int, receiver_port: int, embedded_port: int) -> Path:
    """pynetdicom's qrscp configuration: its AE title and port, the two receivers as move destinations."""
    path = WORK / "qrscp.ini"
    path.write_text(
        f"""[DEFAULT]
    ae_title: {PACS_AET}
    port: {pacs_port}
    max_pdu: 16382
    acse_timeout: 30
    dimse_timeout: 30
    network_timeout: 30
    bind_address: 127.0.0.1
    instance_location: {WORK / "pacs" / "instances"}
    database_location: {WORK / "pacs" / "instances.sqlite"}
    log_identifier: False

[{RECEIVER_AET}]
    address: 127.0.0.1
    port: {receiver_port}

[{EMBEDDED_AET}]
    address: 127.0.0.1
    port: {embedded_port}
"""
    )
    (WORK / "pacs" / "instances").mkdir(parents=True, exist_ok=True)
    return path


def pacs_connection(pacs_port: int) -> dict[str, Any]:
    """The demo PACS as an Airflow connection (``conn_type`` dicom)."""
    extra = {"called_ae_title": PACS_AET}
    return {"conn_type": "dicom", "host": "127.0.0.1", "port": pacs_port, "extra": extra}


def airflow_env(pacs_port: int, embedded_port: int, ui: bool = False) -> dict[str, str]:
    """The environment of the demo's Airflow: private home, the example DAGs, the connections.

    :param pacs_port: the PACS's port.
    :param embedded_port: the port of the receiver a retrieval task starts itself (AE ``AIRFLOWRCV``).
    :param ui: for ``airflow standalone``: INFO task logs, a deferrable arrival sensor, connections left to
        the REST API (so that the UI lists them); otherwise for ``dag.test()``.
    """
    pacs = pacs_connection(pacs_port)
    connections = (
        {}
        if ui
        else {
            "AIRFLOW_CONN_DICOM_DEFAULT": json.dumps(pacs),
            "AIRFLOW_CONN_DICOM_FORWARD": json.dumps(pacs),
        }
    )
    return {
        "AIRFLOW_HOME": str(WORK / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__PARALLELISM": "4",
        # task logs at INFO carry the progress lines ("[1/3] C-MOVE STUDY ...: complete, 4/4 instances");
        # `make demo` prints its own summary instead
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO" if ui else "WARNING",
        **connections,
        "AIRFLOW_DICOM_DATA_DIR": str(DATA),
        "AIRFLOW_DICOM_RECEIVER_AET": EMBEDDED_AET,
        "AIRFLOW_DICOM_RECEIVER_PORT": str(embedded_port),
        "AIRFLOW_DICOM_QUIET_PERIOD": "5",
        # standalone runs a triggerer: the sensor waits Deferred there; dag.test() runs tasks one after the
        # other, so there the sensor must not wait deferred before the retrieval could run
        "AIRFLOW_DICOM_ARRIVAL_MODE": "deferrable" if ui else "reschedule",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TCP_NODELAY": "1",
    }


def check(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """Run a command; fail the demo with its output if it fails."""
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd[:3])}... failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def start_everything(stack: ExitStack, ui: bool = False) -> dict[str, str]:
    """Steps 1-3: studies, the PACS (seeded) and the receiver service; returns the Airflow environment.

    :param ui: prepare for ``airflow standalone`` rather than ``dag.test()`` (see :func:`airflow_env`).
    """
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "airflow").mkdir(parents=True)
    source = make_studies()
    pacs_port, receiver_port, embedded_port = free_port(), free_port(), free_port()
    config = qrscp_config(pacs_port, receiver_port, embedded_port)
    stack.enter_context(
        service("pacs", [str(BIN / "python"), "-m", "pynetdicom", "qrscp", "-c", str(config)], pacs_port)
    )
    say(f"embedded PACS (pynetdicom qrscp) {PACS_AET}@127.0.0.1:{pacs_port}")
    node = ["--host", "127.0.0.1", "--port", str(pacs_port), "--aet", PACS_AET]
    out = check([str(BIN / "airflow-dicom"), "send", str(source), *node, "--parallel", "1"])
    say(f"seeded the PACS with airflow-dicom send: {out.strip().splitlines()[-1] if out.strip() else 'ok'}")
    receiver = [
        str(BIN / "airflow-dicom"), "storescp", "--aet", RECEIVER_AET, "--port", str(receiver_port),
        "--data-dir", str(DATA / "received"), "--host", "127.0.0.1",
    ]  # fmt: skip
    stack.enter_context(service("receiver", receiver, receiver_port))
    say(f"receiver service {RECEIVER_AET}@127.0.0.1:{receiver_port} -> {DATA / 'received'}")
    env = airflow_env(pacs_port, embedded_port, ui=ui)
    os.environ.update(env)
    check([str(BIN / "airflow"), "db", "migrate"], env={**os.environ})
    say(f"Airflow metadata DB ready in {WORK / 'airflow'}")
    PORTS.update(pacs=pacs_port, receiver=receiver_port, embedded=embedded_port)
    return env


#: the ports of this run: ``pacs``, ``receiver`` (the service) and ``embedded`` (a retrieval task's own)
PORTS: dict[str, int] = {}


def run_pipeline() -> int:
    """Steps 4-6 with ``dag.test()``."""
    # imported here: Airflow reads its configuration (AIRFLOW_HOME set above) when it is first imported
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")

    find = bag.get_dag("dicom_find_daily")
    for offset in range(DAYS):
        day = FIRST_DAY + timedelta(days=offset)
        # a manual run of a CronDataIntervalTimetable DAG covers the last whole interval before it, as the
        # scheduler's run for `day` starts when that day is over
        run_after = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
        run = find.test(logical_date=run_after)
        if run.state != "success":
            raise SystemExit(f"dicom_find_daily failed for {day}: see {WORK / 'airflow'}")
    say(f"dicom_find_daily ran for {DAYS} days")

    retrieve = bag.get_dag("dicom_retrieve")
    last = FIRST_DAY + timedelta(days=DAYS - 1)
    conf: dict[str, Any] = {
        "date_from": FIRST_DAY.isoformat(),
        "date_to": last.isoformat(),
        "destination_aet": RECEIVER_AET,
    }
    run = retrieve.test(run_conf=conf)
    say(f"dicom_retrieve over {FIRST_DAY}..{last} (C-MOVE to {RECEIVER_AET}): {run.state}")
    summary()
    return 0 if run.state == "success" else 1


def summary() -> None:
    """Print studies per day, instances retrieved and where everything is."""
    dataset = DATA / "find" / "studies"
    table = pd.read_parquet(dataset)
    per_day = table.groupby(table["StudyDate"].astype(str)).size()
    days = [(FIRST_DAY + timedelta(days=offset)).isoformat() for offset in range(DAYS)]
    print("\nStudies found per day (dicom_find_daily, Parquet partitioned by StudyDate):")
    for day, count in per_day.reindex(days, fill_value=0).items():
        print(f"  {day}  {count:3d}  {'#' * int(count)}")
    studies = list(recorded_studies(DATA / "received"))
    arrivals = [study_arrivals(DATA / "received", uid) for uid in studies]
    instances = sum(a.received for a in arrivals)
    size = sum(a.bytes for a in arrivals)
    print(f"\nRetrieved: {len(studies)} of {len(table)} studies, {instances} instances, {size / 1e6:.1f} MB")
    print(f"  find dataset     {dataset}")
    print(f"  received files   {DATA / 'received'}  (arrival records in .arrivals/)")
    print(f"  retrieval report {DATA / 'reports'}")
    print(f"  Airflow home     {WORK / 'airflow'}  (logs of every task)")
    print(
        f"\nDone in {time.monotonic() - STARTED:.0f} s. `make ui` serves the same set-up in the Airflow UI."
    )


def api(method: str, path: str, body: Any = None) -> Any:
    """Call the demo Airflow's REST API (every user is an admin: no token needed).

    :param method: HTTP method.
    :param path: path starting with ``/api/v2``.
    :param body: JSON body.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{UI_PORT}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def wait_healthy(proc: subprocess.Popen, timeout: float = 180) -> None:  # type: ignore[type-arg]
    """Wait until standalone's API server, scheduler, triggerer and DAG processor report healthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"airflow standalone exited with {proc.returncode}")
        try:
            health = api("GET", "/api/v2/monitor/health")
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if all(health.get(part, {}).get("status") == "healthy" for part in parts):
                return
        except (OSError, ValueError):
            pass
        time.sleep(2)
    raise SystemExit(f"airflow standalone not healthy after {timeout} s")


def add_connections() -> list[str]:
    """Create ``dicom_default`` and ``dicom_forward`` (the demo PACS) through the REST API."""
    pacs = pacs_connection(PORTS["pacs"])
    names = ["dicom_default", "dicom_forward"]
    for conn_id in names:
        body = {**pacs, "connection_id": conn_id, "extra": json.dumps(pacs["extra"])}
        body["description"] = f"the demo PACS (pynetdicom qrscp, AE {PACS_AET})"
        try:
            api("POST", "/api/v2/connections", body)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: it exists already
                raise
    return names


def ui_guide(connections: list[str]) -> str:
    """What a person needs in front of the UI: where, which dates, which nodes, which connections."""
    last = FIRST_DAY + timedelta(days=DAYS - 1)
    return f"""
Airflow UI: http://localhost:{UI_PORT}  (every user is an admin; Ctrl-C stops everything)

  Demo data: studies dated {FIRST_DAY.isoformat()} .. {last.isoformat()} (StudyDate); others find nothing.
  PACS:      {PACS_AET} @ 127.0.0.1:{PORTS["pacs"]}  (pynetdicom qrscp; returns no ModalitiesInStudy, so a
             modality filter is matched with one SERIES-level query per study)
  Receivers: {RECEIVER_AET} @ 127.0.0.1:{PORTS["receiver"]}  the receiver service (already running), and
             {EMBEDDED_AET} @ 127.0.0.1:{PORTS["embedded"]}  started by each retrieval task when the form's
             "C-MOVE destination AE title" is empty; both write to {DATA / "received"}
  Connections: {", ".join(connections)} (Admin > Connections; press Test to C-ECHO the PACS)

  Try: DAGs > dicom_retrieve > Trigger, set "First study date" {FIRST_DAY.isoformat()} and "Last study date"
  {last.isoformat()}, leave everything else empty, Trigger. The arrival sensor waits Deferred while the
  retrieval runs; each retrieve_move log shows one progress line per study.
"""


def serve_ui(env: dict[str, str]) -> int:
    """Run ``airflow standalone`` with the demo's environment until Ctrl-C (UI on port 8080)."""
    say(f"starting airflow standalone on http://localhost:{UI_PORT} (takes a minute)")
    proc = subprocess.Popen(
        ["setsid", str(BIN / "airflow"), "standalone"],
        env={**os.environ, **env, "AIRFLOW__API__PORT": str(UI_PORT)},
        stdout=(WORK / "standalone.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(proc)
        print(ui_guide(add_connections()), flush=True)
        say(f"airflow standalone's own output: {WORK / 'standalone.log'}")
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    """``python -m demo.demo [run|ui]``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", choices=("run", "ui"), default="run")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. `kill` of make) stops everything as Ctrl-C does: standalone runs in its own session
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        env = start_everything(stack, ui=args.mode == "ui")
        if args.mode == "ui":
            return serve_ui(env)
        return run_pipeline()


if __name__ == "__main__":
    sys.exit(main())
