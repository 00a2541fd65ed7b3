"""``make distributed``: the reference production layout, loaded, exercised under faults, left running.

``python -m distributed.run up`` starts Orthanc (the PACS, known by its own address 127.0.0.2 through a gate
that can refuse associations), the receiver service (127.0.0.3), PostgreSQL, Redis and the Airflow services
with two Celery workers; loads the PACS with a synthetic corpus; backfills ``dicom_find_daily`` over its days;
runs ``dicom_retrieve`` over all of it (C-MOVE to the receiver service, an Airflow pool of 2 associations on
the PACS) with the faults asked for; prints a summary and writes ``<dir>/endpoints.json``. The stack keeps
running until ``python -m distributed.run stop`` (``make distributed-stop``), which kills the process groups
recorded in ``<dir>/pids.json`` and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from harness import orthanc as orthanc_module
from harness.orthanc import OrthancServer
from harness.synth import make_corpus

from distributed.scenario import (
    FIND,
    RECEIVER_AET,
    RECEIVER_HOST,
    RETRIEVE,
    ReceiverService,
    stack_env,
    summarise,
    wait_running_on,
)
from distributed.services import Process
from distributed.stack import WORKERS, DistributedStack
from distributed.timings import phases

PACS_HOST = "127.0.0.2"
FAULTS = ("kill-worker", "restart-redis", "restart-receiver", "pacs-refuse")
DAGS = Path(__file__).resolve().parents[2] / "dags"


class PacsAddress:
    """The gate process giving Orthanc its own address (``distributed.gate``)."""

    def __init__(self, pacs: OrthancServer, log: Path) -> None:
        from harness.ports import free_port

        self.host, self.port = PACS_HOST, free_port(PACS_HOST)
        argv = [
            sys.executable,
            "-m",
            "distributed.gate",
            self.host,
            str(self.port),
            pacs.host,
            str(pacs.dicom_port),
        ]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.process = Process(argv, log, env=env).start()

    def refuse(self, seconds: float) -> None:
        """Refuse new associations for ``seconds``."""
        self.process.kill(signal.SIGUSR1)
        time.sleep(seconds)
        self.process.kill(signal.SIGUSR2)


def load_pacs(pacs: OrthancServer, studies: int, root: Path) -> Any:
    """Write a corpus of ``studies`` studies (~5 instances each) over January 2024 and upload it.

    :param pacs: the Orthanc.
    :param studies: how many studies.
    :param root: where the files are written.
    """
    corpus = make_corpus(
        n_patients=max(1, studies // 2),
        studies_per_patient=2,
        series_per_study=(1, 3),
        instances_per_series=(1, 4),
        start=date(2024, 1, 1),
        days=31,
        seed=2024,
        pixel_bytes=4096,
    )
    corpus.write(root)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: pacs.upload(corpus.paths[i.sop_uid].read_bytes()), corpus.instances))
    return corpus


def inject(
    fault: str, stack: DistributedStack, receiver: ReceiverService, gate: PacsAddress, run_id: str
) -> str:
    """Inject ``fault`` once a retrieval task runs; return what was done.

    :param fault: one of :data:`FAULTS`.
    :param stack: the stack.
    :param receiver: the receiver service.
    :param gate: the PACS's address.
    :param run_id: the retrieval run.
    """
    if not wait_running_on(stack, run_id, WORKERS[0], "retrieve_move", timeout=600):
        return f"{fault}: no retrieval task ran on {WORKERS[0]}"
    time.sleep(5)  # each fault meets retrievals in flight, not the previous fault's aftermath
    if fault == "kill-worker":
        stack.kill_worker(WORKERS[0])
        time.sleep(10)
        stack.start_worker(WORKERS[0])
    elif fault == "restart-redis":
        stack.redis.restart()
    elif fault == "restart-receiver":
        receiver.restart()
    elif fault == "pacs-refuse":
        gate.refuse(20)
    return f"{fault} at {time.strftime('%H:%M:%S')}"


def up(args: argparse.Namespace) -> int:
    """Start, load, run, summarise; leave running."""
    state = Path(args.dir).resolve()
    if (state / "pids.json").exists():
        print(f"a stack is already recorded in {state}/pids.json: run `make distributed-stop` first")
        return 2
    state.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="airflow-dicom-distributed-"))
    data, pids = home / "data", []
    received = data / "received"
    received.mkdir(parents=True)
    pacs = OrthancServer(aet="PACS", workdir=home / "orthanc").start()
    orthanc_module._live.discard(pacs)  # left running on exit, stopped by `stop`
    pids.append(pacs.pid)
    gate = PacsAddress(pacs, home / "gate.log")
    pids.append(gate.process.popen.pid)
    receiver = ReceiverService(received, home / "receiver.log").start()
    pids.append(receiver.popen.pid)
    (state / "pids.json").write_text(json.dumps({"home": str(home), "pids": pids}))
    pacs.register_modality("receiver-service", RECEIVER_AET, RECEIVER_HOST, receiver.port)
    t0 = time.monotonic()
    corpus = load_pacs(pacs, args.studies, home / "corpus")
    loaded = time.monotonic() - t0
    print(f"PACS: {len(corpus.studies)} studies, {len(corpus.instances)} instances ({loaded:.0f} s)")
    env = stack_env(gate.host, gate.port, pacs.aet, data)
    env.update({"AIRFLOW_DICOM_RETRIEVE_POOL": "dicom_pacs", "AIRFLOW_DICOM_RETRIEVE_PARALLEL": "1"})
    # tasks mostly wait on the PACS and the API server: more slots than cores (Airflow's default is 16)
    dags = DAGS
    if args.extra_dags:  # the example DAGs and the caller's (e.g. the benchmark's floor DAG) in one folder
        dags = home / "dags"
        dags.mkdir()
        for path in [*DAGS.glob("*.py"), *Path(args.extra_dags).glob("*.py")]:
            shutil.copy2(path, dags / path.name)
    stack = DistributedStack(home / "airflow", dags, env, concurrency=8)
    stack.start()
    pids += [p.popen.pid for p in [stack.postgres, stack.redis, *stack.services.values()]]
    (state / "pids.json").write_text(json.dumps({"home": str(home), "pids": pids, "stack": True}))
    stack.api(
        "POST", "/api/v2/pools", {"name": "dicom_pacs", "slots": 2, "description": "associations on the PACS"}
    )
    stack.wait_for_dags({RETRIEVE, FIND})
    first = min(s.study_date for s in corpus.studies)
    last = max(s.study_date for s in corpus.studies)
    # find backfill: one run per day over the corpus's days
    stack.unpause(FIND)
    t0 = time.monotonic()
    # every day's run at once: their tasks wait in the broker for a free worker slot instead of waiting for
    # the scheduler to start the next runs as earlier ones end (Airflow's default is 10 runs at a time)
    backfill = stack.backfill(
        FIND,
        f"{first + timedelta(days=1)}T00:00:00Z",
        f"{last + timedelta(days=1)}T00:00:00Z",
        max_active_runs=(last - first).days + 1,
    )
    find_state = wait_backfill(stack, backfill["id"])
    find_seconds = time.monotonic() - t0
    find_phases = phases(
        stack.api("GET", f"/api/v2/dags/{FIND}/dagRuns/~/taskInstances?limit=1000")["task_instances"]
    )
    print(f"find backfill: {find_state} in {find_seconds:.1f} s; {json.dumps(find_phases)}")
    stack.unpause(RETRIEVE)
    t0 = time.monotonic()
    # a few batches per pool slot: each task costs ~1 s of orchestration, each batch of 100 studies ~1 min of
    # transfer, and a lost worker's retry still has little to redo
    batch_size = args.batch_size or max(10, len(corpus.studies) // 20)
    run_id = stack.trigger(
        RETRIEVE, {"date_from": first.isoformat(), "date_to": last.isoformat(), "batch_size": batch_size}
    )
    done: list[str] = []
    faults = [f for f in args.faults.split(",") if f] if args.faults else []
    injector = threading.Thread(
        target=lambda: [done.append(inject(f, stack, receiver, gate, run_id)) for f in faults]
    )
    injector.start()
    stack.wait_for_run(RETRIEVE, run_id, timeout=args.timeout)
    injector.join()
    summary = summarise(stack, run_id, received, time.monotonic() - t0)
    # the faults started new processes (a worker, Redis, the receiver): record the living ones
    living = [pacs.pid, gate.process, receiver, stack.postgres, stack.redis, *stack.services.values()]
    pids = [p if isinstance(p, int) else p.popen.pid for p in living if p is not None]
    (state / "pids.json").write_text(json.dumps({"home": str(home), "pids": pids, "stack": True}))
    summary.update(
        {
            "faults": done,
            "find_backfill": {"state": find_state, "seconds": round(find_seconds, 1), "phases": find_phases},
        }
    )
    summary["pacs_instances"] = len(corpus.instances)
    summary["dates"] = [first.isoformat(), last.isoformat()]
    summary["received_equals_pacs"] = {uid for _, uid in _files(received)} == corpus.sop_uids
    summary["report"] = {k: v for k, v in summary["report"].items() if k != "failed_studies"}
    print(json.dumps(summary, indent=2, default=str))
    (state / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    endpoints = {
        "api_url": stack.url,
        "api_user": "admin",
        "api_password": "",
        "orthanc_url": pacs.url,
        "orthanc_dicom": f"{pacs.host}:{pacs.dicom_port}:{pacs.aet}",
        "data_dir": str(received),
        "retrieve_dag_run_id": run_id,
    }
    (state / "endpoints.json").write_text(json.dumps(endpoints, indent=2))
    print(f"stack left running; endpoints in {state}/endpoints.json; stop it with `make distributed-stop`")
    ok = summary["received_equals_pacs"] and summary["state"] == "success" and not summary["unfinished"]
    return 0 if ok else 1


def _files(received: Path) -> list[tuple[Path, str]]:
    from distributed.scenario import received_files

    return received_files(received)


def wait_backfill(stack: DistributedStack, backfill_id: int, timeout: float = 1800) -> str:
    """Wait until every run of the backfill ended; return ``success`` or the states seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stack.api("GET", f"/api/v2/dags/{FIND}/dagRuns?limit=100")["dag_runs"]
        mine = [r for r in runs if r.get("run_type") == "backfill"]
        if mine and all(r["state"] in ("success", "failed") for r in mine):
            states = {r["state"] for r in mine}
            return "success" if states == {"success"} else f"{len(mine)} runs: {sorted(states)}"
        time.sleep(0.5)
    return "timeout"


def stop(args: argparse.Namespace) -> int:
    """Kill every recorded process group; remove the stack's directory."""
    state = Path(args.dir).resolve()
    recorded = state / "pids.json"
    if not recorded.exists():
        print("no distributed stack recorded")
        return 0
    info = json.loads(recorded.read_text())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in reversed(info["pids"]):
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        time.sleep(3)
    shutil.rmtree(info["home"], ignore_errors=True)
    recorded.unlink()
    print(f"stopped {len(info['pids'])} process groups")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``up`` or ``stop``."""
    parser = argparse.ArgumentParser(prog="distributed", description=__doc__)
    parser.add_argument("command", choices=["up", "stop"])
    parser.add_argument("--dir", default=".distributed", help="where endpoints.json and pids.json go")
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument(
        "--batch-size", type=int, default=0, help="studies per retrieval task (default: 1/20 of them, >= 10)"
    )
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--extra-dags", default="", help="a folder whose DAG files the stack also runs")
    args = parser.parse_args(argv)
    return up(args) if args.command == "up" else stop(args)


if __name__ == "__main__":
    sys.exit(main())
