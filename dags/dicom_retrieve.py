"""dicom_retrieve: pull studies from the PACS to our receiver, in batches, and say which ones are complete.

Trigger it from the UI ("Trigger DAG" shows a form) or the REST API with a conf such as
``{"date_from": "2024-03-01", "date_to": "2024-03-14", "modality": "CT"}`` or
``{"study_uids": ["1.2.3...", ...], "service": "get"}``.

Tasks:

1. ``find``: C-FIND (STUDY level, connection ``dicom_conn_id``, default ``dicom_default``) of
   ``date_from``..``date_to`` (and ``modality``) into ``<data>/retrieve/<run id>/find`` (Parquet).
   Skipped when ``study_uids`` are given.
2. ``make_batches``: the studies to retrieve (from the find results, keeping only ``patient_ids`` when
   given; or the given ``study_uids``) cut into batch files of ``batch_size`` UIDs (larger when there would
   be more than 400 batches) in ``<data>/retrieve/<run id>/batches``. XComs stay small whatever the number
   of studies: ``return_value`` (the batch file paths) and ``studies`` (``{"path": <run dir>/studies.parquet,
   "studies": count}``, each study with its NumberOfStudyRelatedInstances or null).
   ``choose_service`` then follows ``retrieve_move`` or ``retrieve_get`` (the other is skipped).
3. ``retrieve_move`` / ``retrieve_get``: one mapped task instance per batch (``DicomMoveOperator`` /
   ``DicomGetOperator``). Items already
   complete (from an earlier run) are skipped, so rerunning a failed run fetches only what is missing.
   With ``window_start``/``window_end`` (``"HH:MM"``, UTC) the tasks run only inside that daily window and
   wait deferred (no worker slot) outside it. Instances land in ``<data>/received``; every attempt is
   appended to the retrieval report ``<data>/reports`` (Parquet).
4. ``arrival``: in parallel with the retrieval, a deferrable ``DicomArrivalSensor`` waiting in the
   triggerer until every study has arrived in ``<data>/received`` (its expected instance count from the
   C-FIND results; without one, no new instance for ``AIRFLOW_DICOM_QUIET_PERIOD`` seconds). Returns the
   manifest (files, instances, bytes per study).
5. ``report`` (runs whatever happened upstream): per study, requested / complete / failed with the
   reason, instances and bytes; fails the run when any study is incomplete. XCom: ``{"run_id",
   "service", "requested", "complete", "failed", "failed_studies": {uid: reason}, "instances", "bytes",
   "data_dir", "report_path"}``.
6. ``run_failed`` (``trigger_rule="one_failed"``): skipped when every task did its job; otherwise it fails
   and names the failed task(s), so the DAG run ends failed (red) even though the report, which runs
   whatever happened, succeeded (e.g. when ``find`` failed there is nothing to report, but the run failed).

Every param but the dates may be left empty in the trigger form: all modalities, no window, the embedded
receiver. The modality filter works on every node: when a node returns no ``ModalitiesInStudy`` (e.g.
pynetdicom's qrscp), each study's modalities are learnt with a SERIES-level query (logged once).

Destinations (C-MOVE): with ``destination_aet`` empty the retrieval task starts our receiver itself
(AE ``AIRFLOW_DICOM_RECEIVER_AET`` on port ``AIRFLOW_DICOM_RECEIVER_PORT``; the PACS must know that AE at
this host and port); retrieval tasks then run one at a time (one port). A non-empty ``destination_aet``
names a long-running receiver (``airflow-dicom storescp --data-dir <data>/received``) the PACS knows under
that AE title. C-GET needs no destination.

If a retrieval fails, the arrival sensor keeps waiting for the missing studies until its timeout
(``AIRFLOW_DICOM_ARRIVAL_TIMEOUT``); mark it failed in the UI to get the report at once.

Configuration (environment, read when the DAG file is parsed):

* ``AIRFLOW_DICOM_DATA_DIR`` (default ``/tmp/airflow-dicom``): base directory.
* ``AIRFLOW_DICOM_RECEIVER_AET`` (default ``AIRFLOWRCV``), ``AIRFLOW_DICOM_RECEIVER_PORT`` (default
  ``11113``): the embedded receiver.
* ``AIRFLOW_DICOM_DESTINATION_AET`` (default empty): the receiver service's AE title, the default
  ``destination_aet``. Set it wherever workers run on other hosts than the receiver (CeleryExecutor): the
  PACS knows the receiver service's address, not a worker's; retrieval tasks then run in parallel.
* ``AIRFLOW_DICOM_RETRIEVE_TASK_TIMEOUT`` (default 10800, 3 h): a retrieval task running longer fails and
  is retried for what is missing; keep it below the Celery broker's visibility timeout
  (``[celery_broker_transport_options] visibility_timeout``: 24 h unless set; the reference layout sets 6 h),
  or the broker delivers the task to a second worker while the first still runs (the batch claim then makes
  the second copy wait).
* ``AIRFLOW_DICOM_RETRIEVE_POOL`` (default none): an Airflow pool the retrieval tasks take a slot of (e.g.
  as many slots as associations the PACS allows us), ``AIRFLOW_DICOM_RETRIEVE_PARALLEL`` (default 2):
  associations per retrieval task.
* ``AIRFLOW_DICOM_QUIET_PERIOD`` (default ``60``): seconds without a new instance that complete a study
  of unknown size.
* ``AIRFLOW_DICOM_ARRIVAL_TIMEOUT`` (default ``43200``, 12 h): seconds the arrival sensor waits.
* ``AIRFLOW_DICOM_ARRIVAL_MODE`` (default ``deferrable``): ``reschedule`` makes the arrival sensor poke
  from a worker slot every few seconds instead, for deployments without a triggerer (and for
  ``dag.test()``, which runs tasks one after the other: a deferred sensor would wait there before the
  retrieval could run).
* connection ``dicom_default``: the PACS (another one can be chosen in the form: ``dicom_conn_id``).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_dicom.operators.find import DicomFindOperator
from airflow_dicom.operators.retrieve import DicomGetOperator, DicomMoveOperator
from airflow_dicom.operators.watcher import fail_run_on_failure
from airflow_dicom.sensors.arrival import DicomArrivalSensor

DATA_DIR = os.environ.get("AIRFLOW_DICOM_DATA_DIR", "/tmp/airflow-dicom").rstrip("/")
log = logging.getLogger(__name__)

RECEIVED_DIR = f"{DATA_DIR}/received"
REPORTS_DIR = f"{DATA_DIR}/reports"
RECEIVER_AET = os.environ.get("AIRFLOW_DICOM_RECEIVER_AET", "AIRFLOWRCV")
RECEIVER_PORT = int(os.environ.get("AIRFLOW_DICOM_RECEIVER_PORT", "11113"))
QUIET_PERIOD = float(os.environ.get("AIRFLOW_DICOM_QUIET_PERIOD", "60"))
ARRIVAL_TIMEOUT = float(os.environ.get("AIRFLOW_DICOM_ARRIVAL_TIMEOUT", str(12 * 3600)))
ARRIVAL_MODE = os.environ.get("AIRFLOW_DICOM_ARRIVAL_MODE", "deferrable")
DESTINATION_AET = os.environ.get("AIRFLOW_DICOM_DESTINATION_AET", "")
RETRIES = int(os.environ.get("AIRFLOW_DICOM_RETRIEVE_RETRIES", "2"))
RETRY_DELAY = float(os.environ.get("AIRFLOW_DICOM_RETRY_DELAY", "30"))
#: a retrieval task longer than this fails and is retried (fetching what is missing): it must stay under the
#: Celery broker's visibility timeout (the reference layout sets 21600 s), or Redis delivers the task again
TASK_TIMEOUT = float(os.environ.get("AIRFLOW_DICOM_RETRIEVE_TASK_TIMEOUT", str(3 * 3600)))
POOL = os.environ.get("AIRFLOW_DICOM_RETRIEVE_POOL", "") or None
PARALLEL = int(os.environ.get("AIRFLOW_DICOM_RETRIEVE_PARALLEL", "2"))
#: at most this many mapped retrieval tasks per run (the batch list is an XCom)
MAX_BATCHES = 400


def _run_dir(run_id: str) -> str:
    """The run's working directory in the shared data directory (find results, batches, studies)."""
    return DATA_DIR + "/retrieve/" + run_id.replace(":", "").replace("+", "_")


#: the window as one string ("20:00,06:00"), empty when no window was asked for
WINDOW = "{{ (params.window_start ~ ',' ~ params.window_end) if params.window_start else '' }}"


def _find_needed(context: Any) -> None:
    """``find``'s pre-execute hook: skip it when study UIDs were given; insist on a date range otherwise."""
    from airflow.sdk.exceptions import AirflowSkipException

    from airflow_dicom.dimse.errors import InvalidRequestError

    params = context["params"]
    if bool(params.get("window_start")) != bool(params.get("window_end")):
        raise InvalidRequestError("give both window_start and window_end (HH:MM, UTC), or neither")
    if params.get("study_uids"):
        raise AirflowSkipException("study_uids given: nothing to find")
    if not params.get("date_from") or not params.get("date_to"):
        raise InvalidRequestError(
            "give the first and the last study date (date_from and date_to, YYYY-MM-DD), or study_uids"
        )


def _receiver_reachable(context: Any) -> None:
    """Refuse the embedded receiver where workers are on several hosts (``choose_service`` calls this).

    The embedded receiver listens on the worker that runs the task, but the PACS knows one address for its AE
    title: with CeleryExecutor or KubernetesExecutor the PACS would send to a host that is not listening.
    """
    from airflow.configuration import conf
    from airflow.sdk.exceptions import AirflowFailException

    if context["params"].get("destination_aet"):
        return
    executor = conf.get("core", "executor", fallback="")
    if "Celery" in executor or "Kubernetes" in executor:
        raise AirflowFailException(
            f"the embedded receiver ({RECEIVER_AET}, port {RECEIVER_PORT}) would listen on this worker, "
            f"whose address the PACS does not know ({executor} runs tasks on several hosts): run the "
            "receiver service (airflow-dicom storescp) where the PACS can reach it, with the data directory "
            "on shared storage, and set AIRFLOW_DICOM_DESTINATION_AET (or the destination_aet param) to "
            "its AE title"
        )


def _studies_to_wait_for(context: Any) -> None:
    """``arrival``'s pre-execute hook: skip it when there is nothing to retrieve."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not (context["ti"].xcom_pull(task_ids="make_batches", key="studies") or {}).get("studies"):
        raise AirflowSkipException("no studies to wait for")


with DAG(
    dag_id="dicom_retrieve",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["dicom", "example"],
    doc_md=__doc__,
    params={
        "date_from": Param(
            None, type=["null", "string"], format="date", title="First study date", section="Studies"
        ),
        "date_to": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Last study date",
            description="Inclusive.",
            section="Studies",
        ),
        "modality": Param(
            None,
            type=["null", "string"],
            title="Modality",
            description="Only studies with this modality (ModalitiesInStudy), e.g. CT. Empty: all.",
            section="Studies",
        ),
        "modality_match": Param(
            "local",
            type="string",
            enum=["local", "node"],
            title="Who matches the modality",
            description="local (default, works on every PACS): we read ModalitiesInStudy, or ask each "
            "study's series when the PACS does not return it. node: the PACS matches it (fewer answers; "
            "only for a PACS that matches ModalitiesInStudy before its result limit).",
            section="Studies",
        ),
        "study_uids": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            title="Study Instance UIDs",
            description="Retrieve exactly these studies (no search by date; modality is ignored). Empty: "
            "search by date.",
            section="Studies",
        ),
        "patient_ids": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            title="Patient IDs",
            description="Keep only the studies of these patients (applies to the date search). Empty: all.",
            section="Studies",
        ),
        "service": Param("move", type="string", enum=["move", "get"], title="C-MOVE or C-GET"),
        "destination_aet": Param(
            DESTINATION_AET or None,
            type=["null", "string"],
            maxLength=16,
            title="C-MOVE destination AE title",
            description="A receiver the PACS knows under this AE title (e.g. the airflow-dicom storescp "
            f"service). Empty: the task starts its own receiver {RECEIVER_AET} on port {RECEIVER_PORT}.",
        ),
        "window_start": Param(
            None,
            type=["null", "string"],
            pattern=r"^$|^([01]\d|2[0-3]):[0-5]\d$",
            title="Window start (HH:MM, UTC)",
            description="Retrieve only inside this daily window. Empty: any time.",
        ),
        "window_end": Param(
            None,
            type=["null", "string"],
            pattern=r"^$|^([01]\d|2[0-3]):[0-5]\d$",
            title="Window end (HH:MM, UTC)",
            description="End of the daily window (give both or neither).",
        ),
        "batch_size": Param(10, type="integer", minimum=1, title="Studies per retrieval task"),
        "dicom_conn_id": Param(
            "dicom_default",
            type="string",
            minLength=1,
            title="PACS connection",
            description="The Airflow connection (type DICOM node) of the PACS to search and retrieve from.",
        ),
    },
) as dag:
    find = DicomFindOperator(
        task_id="find",
        dicom_conn_id="{{ params.dicom_conn_id }}",
        level="STUDY",
        return_keys=["PatientID", "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"],
        date_from="{{ params.date_from or '' }}",
        date_to="{{ params.date_to or '' }}",
        modality="{{ params.modality or '' }}",
        modality_match="{{ params.modality_match }}",
        output_path=DATA_DIR + "/retrieve/{{ run_id | replace(':', '') | replace('+', '_') }}/find",
        pre_execute=_find_needed,
    )

    @task(trigger_rule="none_failed")
    def make_batches(**context: Any) -> list[str]:
        """The studies to retrieve cut into batch files; XCom ``studies``: the path of a Parquet of them.

        XComs stay small whatever the number of studies: the batches (one UID per line, with its expected
        instance count when known) and the studies with their expected instance counts are files in the shared
        data directory; the XComs hold their paths (at most ``MAX_BATCHES`` batch files: larger runs get
        larger batches).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        from airflow_dicom.landing.claims import write_batch

        params, run_dir = context["params"], _run_dir(context["run_id"])
        studies: dict[str, int | None] = {}
        if params.get("study_uids"):
            studies = {str(uid).strip(): None for uid in params["study_uids"] if str(uid).strip()}
        else:
            found = context["ti"].xcom_pull(task_ids="find")
            if found and found.get("rows"):
                import pyarrow.dataset as pads

                table = pads.dataset(found["path"], format="parquet", partitioning="hive").to_table()
                wanted = {str(p) for p in params.get("patient_ids") or []}
                for row in table.to_pylist():
                    if wanted and str(row.get("PatientID") or "") not in wanted:
                        continue
                    count = row.get("NumberOfStudyRelatedInstances")
                    studies[row["StudyInstanceUID"]] = int(count) if count else None
        uids = sorted(studies)
        size = max(int(params["batch_size"]), -(-len(uids) // MAX_BATCHES))
        batch_dir = os.path.join(run_dir, "batches")
        os.makedirs(batch_dir, exist_ok=True)
        batches = []
        for number, start in enumerate(range(0, len(uids), size)):
            path = os.path.join(batch_dir, f"{number:05d}.txt")
            # with each study's expected count: a retry skips what the receiver already holds completely
            write_batch(path, {uid: studies[uid] for uid in uids[start : start + size]})
            batches.append(path)
        studies_path = os.path.join(run_dir, "studies.parquet")
        counts = pa.array([studies[uid] for uid in uids], type=pa.int64())
        pq.write_table(
            pa.table({"StudyInstanceUID": uids, "NumberOfStudyRelatedInstances": counts}), studies_path
        )
        log.info("%d studies to retrieve in %d batch(es) of %d", len(uids), len(batches), size)
        context["ti"].xcom_push(key="studies", value={"path": studies_path, "studies": len(uids)})
        return batches

    @task.branch
    def choose_service(**context: Any) -> str:
        """``retrieve_move`` or ``retrieve_get``, as the ``service`` param says."""
        if context["params"]["service"] == "move":
            _receiver_reachable(context)
        return f"retrieve_{context['params']['service']}"

    plan = make_batches()
    service = choose_service()
    find >> plan >> service

    common = {
        "dicom_conn_id": "{{ params.dicom_conn_id }}",
        "level": "STUDY",
        "data_dir": RECEIVED_DIR,
        "report_path": REPORTS_DIR,
        "window": WINDOW,
        # the operators retry transient failures themselves (max_attempts, backoff); task retries cover a lost
        # worker (its tasks fail after the scheduler's heartbeat timeout): the batch is claimed by one task at
        # a time and a retry fetches only what is still missing
        "retries": RETRIES,
        "retry_delay": timedelta(seconds=RETRY_DELAY),
        "parallel": PARALLEL,
        "execution_timeout": timedelta(seconds=TASK_TIMEOUT),
        **({"pool": POOL} if POOL else {}),
    }
    move = DicomMoveOperator.partial(
        task_id="retrieve_move",
        move_destination="{{ params.destination_aet or '" + RECEIVER_AET + "' }}",
        receive_port="{{ '' if params.destination_aet else " + str(RECEIVER_PORT) + " }}",
        # the embedded receiver listens on one port: one task at a time; a receiver service takes them all
        max_active_tis_per_dag=None if DESTINATION_AET else 1,
        **common,
    ).expand(uids_file=plan)
    get = DicomGetOperator.partial(task_id="retrieve_get", **common).expand(uids_file=plan)
    service >> [move, get]

    arrival = DicomArrivalSensor(
        task_id="arrival",
        data_dir=RECEIVED_DIR,
        studies_from_task="make_batches",
        studies_xcom_key="studies",
        quiet_period=QUIET_PERIOD,
        poke_interval=3,
        include_files=False,
        # the manifest goes to a file; the XCom and the trigger event carry its summary
        manifest_path=DATA_DIR
        + "/retrieve/{{ run_id | replace(':', '') | replace('+', '_') }}/arrivals.json",
        timeout=ARRIVAL_TIMEOUT,
        deferrable=ARRIVAL_MODE != "reschedule",
        mode="reschedule" if ARRIVAL_MODE == "reschedule" else "poke",
        pre_execute=_studies_to_wait_for,
    )
    plan >> arrival

    @task(trigger_rule="all_done")
    def report(**context: Any) -> dict[str, Any]:
        """Per study: retrieved and arrived completely, or why not; fail the run if any study is missing."""
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_dicom.dimse.arrivals import assess_studies, read_manifest
        from airflow_dicom.dimse.arrivals import manifest as arrival_manifest
        from airflow_dicom.landing.report import latest_rows

        ti, run_id = context["ti"], context["run_id"]
        from airflow_dicom.sensors.arrival import parse_studies

        planned = ti.xcom_pull(task_ids="make_batches", key="studies") or {}
        studies: dict[str, int | None] = parse_studies(planned) if planned.get("studies") else {}
        service = context["params"]["service"]
        attempts: dict[str, dict[str, Any]] = {}
        if studies:
            attempts = {uid: row for (_, uid), row in latest_rows(REPORTS_DIR).items() if uid in studies}
        arrived = ti.xcom_pull(task_ids="arrival")
        if arrived:
            arrived = read_manifest(arrived)
        if not arrived and studies:  # the sensor failed or was stopped: look at the arrivals directly
            arrived = arrival_manifest(
                RECEIVED_DIR,
                assess_studies(RECEIVED_DIR, studies, quiet_period=QUIET_PERIOD, include_files=False),
            )
        arrivals = (arrived or {}).get("studies", {})
        failed: dict[str, str] = {}
        for uid, expected in studies.items():
            attempt = attempts.get(uid)
            got = int((arrivals.get(uid) or {}).get("instances") or 0)
            if attempt is None or attempt["status"] not in ("complete", "skipped"):
                reason = attempt["reason"] if attempt is not None else "no retrieval attempt recorded"
                failed[uid] = f"retrieval {attempt['status'] if attempt else 'not run'}: {reason}"
            elif expected is not None and got < expected:
                failed[uid] = f"arrived {got} of {expected} instances"
            elif got == 0:
                failed[uid] = "no instance arrived"
        summary = {
            "run_id": run_id,
            "service": service,
            "requested": len(studies),
            "complete": len(studies) - len(failed),
            "failed": len(failed),
            "failed_studies": failed,
            "instances": sum(int(v.get("instances") or 0) for k, v in arrivals.items() if k in studies),
            "bytes": sum(int(v.get("bytes") or 0) for k, v in arrivals.items() if k in studies),
            "data_dir": RECEIVED_DIR,
            "report_path": REPORTS_DIR,
        }
        log.info(
            "%d studies requested, %d complete, %d failed; %d instances, %d bytes",
            summary["requested"],
            summary["complete"],
            summary["failed"],
            summary["instances"],
            summary["bytes"],
        )
        for uid, reason in failed.items():
            log.error("incomplete study %s: %s", uid, reason)
        if len(failed) > 100:  # the XCom stays small: the log lists them all
            summary["failed_studies"] = dict(list(failed.items())[:100])
        if failed:
            ti.xcom_push(key="return_value", value=summary)
            raise AirflowFailException(
                f"{len(failed)} of {len(studies)} studies incomplete (see the log and {REPORTS_DIR})"
            )
        return summary

    [move, get, arrival] >> report()
    # the report runs whatever happened (it is the audit); the run still ends failed when any task failed
    fail_run_on_failure(dag)
