"""The Airflow UI as a person meets it, in headless Chromium against a real ``airflow standalone``.

The set-up is ``make ui``'s: pynetdicom's qrscp as the PACS (connection ``dicom_default``) holding a week of
studies (2024-01-01..07), task logs at INFO, the arrival sensor deferrable (standalone runs a triggerer).
Each test keeps a screenshot of every step in ``out/browser/<test>/`` (gitignored), which is what to look
at when one fails. Pages take seconds on a busy machine: every wait is generous, no timing is asserted.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow.dataset as pads
import pydicom
import pytest
from e2e.browser import Browser
from e2e.standalone import AirflowStandalone
from harness.ports import free_port
from harness.qrscp import QrscpPacs
from harness.synth import Corpus, make_corpus
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "out" / "browser"
WEEK = (date(2024, 1, 1), date(2024, 1, 7))
RECEIVER_AET = "AIRFLOWRCV"
DAG = "dicom_retrieve"
FIND_DAG = "dicom_find_daily"


class UI(NamedTuple):
    airflow: AirflowStandalone
    pacs: QrscpPacs
    corpus: Corpus
    data: Path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    """qrscp with a week of 8 studies and an ``airflow standalone`` set up as ``make ui`` does."""
    work = tmp_path_factory.mktemp("browser")
    corpus = make_corpus(
        n_patients=4,
        studies_per_patient=2,
        series_per_study=(1, 2),
        instances_per_series=(1, 3),
        start=WEEK[0],
        days=7,
        seed=12,
        transfer_syntaxes=(ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    )
    corpus.write(work / "source")
    receiver_port = free_port()
    home = Path(tempfile.mkdtemp(prefix="airflow-dicom-browser-"))
    try:
        with QrscpPacs(work / "pacs", aet="DEMOPACS", destinations={RECEIVER_AET: receiver_port}) as pacs:
            pacs.seed(work / "source")
            down = {"conn_type": "dicom", "host": "127.0.0.1", "port": _closed_port()}
            env = {
                "AIRFLOW_CONN_DICOM_DEFAULT": json.dumps(pacs.connection()),
                "AIRFLOW_CONN_DICOM_DOWN": json.dumps({**down, "extra": {"called_ae_title": "NOBODY"}}),
                "AIRFLOW_DICOM_DATA_DIR": str(home / "data"),
                "AIRFLOW_DICOM_RECEIVER_AET": RECEIVER_AET,
                "AIRFLOW_DICOM_RECEIVER_PORT": str(receiver_port),
                "AIRFLOW_DICOM_QUIET_PERIOD": "3",
                "AIRFLOW_DICOM_ARRIVAL_TIMEOUT": "180",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            }
            airflow = AirflowStandalone(home, ROOT / "dags", env)
            try:
                airflow.start(timeout=300)  # a loaded CI machine takes minutes to parse and start everything
                airflow.wait_for_dags({DAG}, timeout=300)
                yield UI(airflow, pacs, corpus, home / "data")
            finally:
                airflow.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def browser(ui: UI, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """A fresh headless Chromium; its step screenshots go to ``out/browser/<test name>/``."""
    shots = SHOTS / re.sub(r"[^\w.-]", "_", request.node.name)
    shutil.rmtree(shots, ignore_errors=True)
    instance = Browser(shots, ui.airflow.url)
    try:
        yield instance
    finally:
        try:
            instance.shot("end")
        finally:
            instance.close()


def _received(directory: Path) -> set[str]:
    found = set()
    for path in directory.rglob("*.dcm"):
        if not any(part.startswith(".") for part in path.relative_to(directory).parts):
            found.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return found


def _get(airflow: AirflowStandalone, path: str, attempts: int = 6) -> Any:
    """GET from the REST API, sent again when the loaded machine lets a request time out."""
    for attempt in range(1, attempts + 1):
        try:
            return airflow.api("GET", path, timeout=60)
        except (OSError, urllib.error.URLError):
            if attempt == attempts:
                raise
            time.sleep(attempt)
    raise AssertionError("unreachable")


def _run_ids(airflow: AirflowStandalone, dag_id: str = DAG) -> set[str]:
    return {r["dag_run_id"] for r in _get(airflow, f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]}


def _trigger_from_form(
    browser: Browser,
    airflow: AirflowStandalone,
    fields: dict[str, str],
    dag_id: str = DAG,
    section: str = "Studies",
) -> str:
    """Open the DAG, press Trigger, fill only ``fields`` (form element ids), submit; returns the run id.

    :param browser: the browser.
    :param airflow: the standalone Airflow.
    :param fields: form element id -> what a person types.
    :param dag_id: the DAG.
    :param section: the form's section holding the dates (folded until clicked).
    """
    before = _run_ids(airflow, dag_id)
    browser.open(f"/dags/{dag_id}")
    browser.click("button", "^Trigger$")
    browser.click("button", f"^{section}$")
    browser.find("#element_date_from")
    browser.shot("trigger-form")
    for element_id, value in fields.items():
        if browser.visible(f"#{element_id}") is None:  # the form opens one section at a time
            browser.click("button", "^Run Parameters$")
        field = browser.find(f"#{element_id}")
        browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", field)
        if field.get_attribute("value"):
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(Keys.DELETE)
        field.send_keys(value)
    browser.shot("form-filled")
    submit = browser.wait(
        lambda: [
            b
            for b in browser.driver.find_elements(
                By.XPATH, "//div[@role='dialog']//button[normalize-space()='Trigger']"
            )
            if b.is_displayed() and b.is_enabled()
        ],
        "an enabled Trigger button in the form (every field a person left empty must be optional)",
    )
    submit[-1].click()
    run_ids = browser.wait(
        lambda: _run_ids(airflow, dag_id) - before,
        "the triggered run in the REST API",
    )
    (run_id,) = run_ids
    browser.shot("triggered")
    return run_id


def _wait_for_run(
    airflow: AirflowStandalone, run_id: str, timeout: float = 300, dag_id: str = DAG
) -> tuple[str, dict]:  # type: ignore[type-arg]
    """Wait for the run's end; returns its state and ``{task_id: set of states seen}`` while it ran."""
    seen: dict[str, set[str]] = {}
    path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _get(airflow, path)["state"]
        for ti in _get(airflow, f"{path}/taskInstances?limit=1000")["task_instances"]:
            seen.setdefault(ti["task_id"], set()).add(str(ti["state"]))
        if state in ("success", "failed"):
            return state, seen
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} not finished after {timeout} s; task states seen {seen}")


class Run(NamedTuple):
    run_id: str
    state: str
    seen: dict[str, set[str]]


@pytest.fixture(scope="module")
def form_run(ui: UI) -> Iterator[Run]:
    """``dicom_retrieve`` triggered from the form with only the two dates, waited for."""
    browser = Browser(SHOTS / "form_run", ui.airflow.url)
    try:
        run_id = _trigger_from_form(
            browser,
            ui.airflow,
            {"element_date_from": "01/01/2024", "element_date_to": "01/07/2024"},
        )
        state, seen = _wait_for_run(ui.airflow, run_id)
        browser.open(f"/dags/{DAG}/runs/{urllib.parse.quote(run_id)}")
        browser.find("body", state)
        browser.shot(f"run-{state}")
        yield Run(run_id, state, seen)
    finally:
        browser.close()


def test_trigger_form_with_only_the_dates_retrieves_the_week(ui: UI, form_run: Run) -> None:
    """(2) only the two dates filled: the run succeeds, the arrival sensor waited Deferred, all arrived."""
    assert form_run.state == "success", form_run.seen
    conf = _get(ui.airflow, f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(form_run.run_id)}")["conf"]
    assert (conf["date_from"], conf["date_to"]) == ("2024-01-01", "2024-01-07")
    assert conf["modality"] is None and conf["destination_aet"] is None and conf["window_start"] is None
    assert "deferred" in form_run.seen["arrival"], form_run.seen["arrival"]
    assert form_run.seen["run_failed"] == {"skipped"} or "skipped" in form_run.seen["run_failed"]
    assert _received(ui.data / "received") == ui.corpus.sop_uids
    report = _get(
        ui.airflow,
        f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(form_run.run_id)}/taskInstances/report/xcomEntries/"
        "return_value?deserialize=true",
    )["value"]
    if isinstance(report, str):
        report = json.loads(report)
    assert report["requested"] == report["complete"] == len(ui.corpus.studies)


def test_find_daily_triggered_from_the_form_with_a_date_range_lands_the_week(
    ui: UI, browser: Browser
) -> None:
    """``dicom_find_daily`` from its form with the two dates of the "Study dates" section: one run lands
    every study of the week in the day partitions."""
    ui.airflow.wait_for_dags({FIND_DAG}, timeout=300)
    ui.airflow.unpause(FIND_DAG)
    # unpaused, the scheduler starts the latest day's run (catchup off): let it appear before the form's run
    browser.wait(lambda: _run_ids(ui.airflow, FIND_DAG), "the scheduled run after unpausing dicom_find_daily")
    run_id = _trigger_from_form(
        browser,
        ui.airflow,
        {"element_date_from": "01/01/2024", "element_date_to": "01/07/2024"},
        dag_id=FIND_DAG,
        section="Study dates",
    )
    state, seen = _wait_for_run(ui.airflow, run_id, dag_id=FIND_DAG)
    browser.open(f"/dags/{FIND_DAG}/runs/{urllib.parse.quote(run_id)}")
    browser.find("body", state)
    browser.shot(f"run-{state}")
    assert state == "success", seen
    conf = _get(ui.airflow, f"/api/v2/dags/{FIND_DAG}/dagRuns/{urllib.parse.quote(run_id)}")["conf"]
    assert (conf["date_from"], conf["date_to"]) == ("2024-01-01", "2024-01-07")
    rows = pads.dataset(ui.data / "find" / "studies", format="parquet", partitioning="hive").to_table()
    found = sorted(rows.column("StudyInstanceUID").to_pylist())
    assert found == sorted(s.study_uid for s in ui.corpus.studies)
    assert {str(d) for d in rows.column("StudyDate").to_pylist()} == {
        s.study_date.isoformat() for s in ui.corpus.studies
    }


def test_task_log_pane_shows_retrieval_progress(ui: UI, form_run: Run, browser: Browser) -> None:
    """(4) the log pane of a retrieval task shows its progress lines at INFO."""
    run = urllib.parse.quote(form_run.run_id)
    browser.open(f"/dags/{DAG}/runs/{run}/tasks/retrieve_move/mapped/0")
    line = browser.find("body", r"\[\d+/\d+\] C-MOVE STUDY")
    browser.shot("log-pane")
    progress = re.findall(r"\[(\d+)/(\d+)\] C-MOVE STUDY [^\n]*complete", browser.page_text())
    assert progress, line.text[-2000:]
    assert int(progress[-1][0]) == int(progress[-1][1]) == len(ui.corpus.studies)


def test_unreachable_pacs_ends_red_with_the_reason_in_the_log(ui: UI, browser: Browser) -> None:
    """(3) a run against a PACS nobody answers for ends failed, and find's log pane says why."""
    run_id = _trigger_from_form(
        browser,
        ui.airflow,
        {
            "element_date_from": "01/01/2024",
            "element_date_to": "01/07/2024",
            "element_dicom_conn_id": "dicom_down",
        },
    )
    state, seen = _wait_for_run(ui.airflow, run_id)
    assert state == "failed", seen
    assert "failed" in seen["find"] and "failed" in seen["run_failed"]
    run = urllib.parse.quote(run_id)
    browser.open(f"/dags/{DAG}/runs/{run}")
    browser.find("body", "failed")
    browser.shot("run-failed")
    browser.open(f"/dags/{DAG}/runs/{run}/tasks/find")
    reason = browser.find("body", r"127\.0\.0\.1:\d+")
    browser.shot("find-log")
    text = browser.page_text()
    assert re.search(r"NOBODY@127\.0\.0\.1:\d+", text), reason.text[-2000:]
    assert re.search(r"refused|unreachable|could not|not reach|connect", text, re.IGNORECASE), text[-2000:]
    assert "Success" not in text


def _reveal(browser: Browser, css: str, section: str) -> Any:
    """The field ``css``, unfolding its form section first when it is folded."""
    if browser.wait(lambda: browser.visible(css) or browser.visible("button", f"^{section}$"), section):
        if browser.visible(css) is None:
            browser.click("button", f"^{section}$")
    return browser.find(css)


def test_connection_form_requires_called_ae_and_test_succeeds(ui: UI, browser: Browser) -> None:
    """(1) add a DICOM node through the form: Called AE is required; the saved node's Test succeeds."""
    browser.open("/connections")
    browser.click("button", "^Add Connection$")
    browser.find("input[name=connection_id]").send_keys("pacs_from_form")
    kind = browser.find("input[role=combobox]")
    kind.send_keys("DICOM node")
    kind.send_keys(Keys.ENTER)
    _reveal(browser, "input[name=host]", "Standard Fields").send_keys("127.0.0.1")
    _reveal(browser, "input[name=port]", "Standard Fields").send_keys(str(ui.pacs.port))
    called = _reveal(browser, "#element_called_ae_title", "Extra Fields")
    assert called.get_attribute("required") is not None
    browser.find("label", r"Called AE title\s*\*")
    browser.find("body", "This field is required")
    browser.shot("called-ae-missing")
    save = browser.find("button", "^Save$")
    assert not save.is_enabled()  # nothing saves a node without the AE title it answers to
    called.send_keys(ui.pacs.aet)
    browser.shot("filled")
    browser.click("button", "^Save$")
    row = browser.find("tr", "pacs_from_form")
    browser.shot("saved")
    saved = _get(ui.airflow, "/api/v2/connections/pacs_from_form")
    assert json.loads(saved["extra"])["called_ae_title"] == ui.pacs.aet
    # the result is a toast that may come and go between two polls: record every text the page adds
    browser.driver.execute_script(
        "window.__added = []; new MutationObserver(ms => ms.forEach(m => m.addedNodes.forEach("
        "n => window.__added.push(n.textContent || '')))).observe(document.body, "
        "{childList: true, subtree: true});"
    )
    row.find_element(By.CSS_SELECTOR, "button[aria-label='Test Connection']").click()
    pattern = re.compile(r"C-ECHO to DEMOPACS@127\.0\.0\.1:\d+[^\n]*? succeeded[^\n]*")
    message = browser.wait(
        lambda: pattern.search(
            browser.page_text() + "\n".join(browser.driver.execute_script("return window.__added"))
        ),
        "the Test Connection result",
    ).group(0)
    browser.shot("tested")
    assert re.search(r"succeeded: round trip [\d.]+ ms", message), message
