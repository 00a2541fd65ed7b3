"""C-MOVE and C-GET against a real Orthanc: what arrives (SOP sets), failures named, resume, third node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pydicom
import pytest
from harness.ports import free_port

from airflow_dicom.dimse import DicomNode
from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.receiver import Receiver
from airflow_dicom.dimse.retrieve import (
    COMPLETE,
    FAILED,
    GET,
    MOVE,
    NOT_STARTED,
    SKIPPED,
    MoveDestination,
    RetrieveItem,
    RetrieveOptions,
    make_items,
    retrieve,
)
from airflow_dicom.landing.report import completed_items, read_report

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("airflow-dicom"))


def _node(server) -> DicomNode:
    return DicomNode(host=server.host, port=server.dicom_port, called_ae_title=server.aet)


def sop_uids_on_disk(directory: Path) -> set[str]:
    """SOPInstanceUIDs of the DICOM files under ``directory`` (hidden dirs such as .arrivals excluded)."""
    found = set()
    for path in directory.rglob("*.dcm"):
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        found.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return found


def _sops(corpus, study_uids) -> set[str]:
    return {i.sop_uid for uid in study_uids for i in corpus.instances_of_study(uid)}


def _listening_ports() -> set[int]:
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.status == "LISTEN"}


@pytest.fixture
def pacs(orthanc, corpus):
    """The scratch Orthanc holding the first 10 studies of the corpus (cleared first)."""
    orthanc.clear()
    studies = sorted(corpus.study_uids)[:10]
    orthanc.upload_files(p for uid in studies for p in corpus.files_of_study(uid))
    return orthanc, studies


def test_move_to_embedded_receiver_every_instance_arrives(loaded_orthanc, tmp_path) -> None:
    server, corpus = loaded_orthanc
    studies = sorted(corpus.study_uids)[:12]
    port = free_port()
    server.register_modality("retrieve-embedded", "RTEMBED", "127.0.0.1", port)
    before = _listening_ports()
    result = retrieve(
        _node(server),
        make_items(studies),
        service=MOVE,
        destination=MoveDestination("RTEMBED", tmp_path / "data", port=port, host="127.0.0.1"),
    )
    assert result.ok, (result.summary(), [a for a in result.final.values() if a.status != "complete"])
    assert sop_uids_on_disk(tmp_path / "data") == _sops(corpus, studies)
    for attempt in result.final.values():
        study = corpus.study(attempt.item.uid)
        assert (attempt.completed, attempt.received, attempt.failed) == (study.n_instances,) * 2 + (0,)
    assert _listening_ports() == before  # the embedded receiver is gone after the run


def test_get_every_instance_arrives_in_its_stored_transfer_syntax(loaded_orthanc, tmp_path) -> None:
    server, corpus = loaded_orthanc
    studies = sorted(corpus.study_uids)[-12:]
    result = retrieve(_node(server), make_items(studies), service=GET, data_dir=tmp_path / "data")
    assert result.ok, (result.summary(), [a for a in result.final.values() if a.status != "complete"])
    assert sop_uids_on_disk(tmp_path / "data") == _sops(corpus, studies)
    # raw bytes, no transcoding: every file keeps the transfer syntax it was uploaded in (RLE included)
    wanted = {i.sop_uid: str(i.transfer_syntax) for i in corpus.instances if i.study_uid in set(studies)}
    got = {}
    for path in (tmp_path / "data").rglob("*.dcm"):
        if ".arrivals" not in path.parts:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            got[str(ds.SOPInstanceUID)] = str(ds.file_meta.TransferSyntaxUID)
    assert got == wanted
    assert "1.2.840.10008.1.2.5" in set(got.values())


def test_series_and_image_levels(loaded_orthanc, tmp_path) -> None:
    server, corpus = loaded_orthanc
    series = [s for s in corpus.series if s.n_instances >= 2][:3]
    image = corpus.instances_of_study(corpus.studies[0].study_uid)[0]
    items = [RetrieveItem("SERIES", s.series_uid, study_uid=s.study_uid) for s in series]
    items.append(RetrieveItem("IMAGE", image.sop_uid, study_uid=image.study_uid, series_uid=image.series_uid))
    result = retrieve(_node(server), items, service=GET, data_dir=tmp_path / "get")
    assert result.ok, (result.summary(), [a for a in result.final.values() if a.status != "complete"])
    wanted = {i.sop_uid for s in series for i in corpus.instances if i.series_uid == s.series_uid}
    assert sop_uids_on_disk(tmp_path / "get") == wanted | {image.sop_uid}
    assert [a.received for a in result.final.values()] == [s.n_instances for s in series] + [1]


def test_patient_level_move_and_get(loaded_orthanc, tmp_path) -> None:
    server, corpus = loaded_orthanc
    patient = corpus.patients[3]
    studies = [s.study_uid for s in corpus.studies if s.patient_id == patient.patient_id]
    item = RetrieveItem("PATIENT", patient.patient_id)
    got = retrieve(_node(server), [item], service=GET, data_dir=tmp_path / "get")
    assert got.ok, got.summary()
    assert sop_uids_on_disk(tmp_path / "get") == _sops(corpus, studies)
    assert patient.patient_id not in got.final[item.key].progress_line()  # no PHI in progress lines


def test_unknown_uid_fails_after_the_rest_and_a_rerun_fetches_only_what_was_missing(
    pacs, corpus, tmp_path
) -> None:
    server, held = pacs
    missing = sorted(corpus.study_uids)[10]  # not on the PACS yet
    port = free_port()
    server.register_modality("retrieve-cli", "RTCLI", "127.0.0.1", port)
    data, report = tmp_path / "data", tmp_path / "report"
    args = [CLI, "move", "--host", server.host, "--port", str(server.dicom_port), "--aet", server.aet]
    args += ["--dest-aet", "RTCLI", "--receive-port", str(port), "--receive-host", "127.0.0.1"]
    args += ["--data-dir", str(data), "--report", str(report), "--level", "STUDY"]
    env = {**os.environ, "TCP_NODELAY": "1"}
    first = subprocess.run(
        [*args, "--run-id", "first", *held[:5], missing, *held[5:]], capture_output=True, text=True, env=env
    )
    assert first.returncode == 1, first.stderr
    assert missing in first.stderr and "0xC000" in first.stderr
    assert sop_uids_on_disk(data) == _sops(corpus, held)  # everything else was retrieved
    rows = read_report(str(report))
    assert set(rows.loc[rows.status == FAILED, "uid"]) == {missing}
    assert set(rows.loc[rows.status == COMPLETE, "uid"]) == set(held)

    server.upload_files(corpus.files_of_study(missing))  # fix the cause
    second = subprocess.run(
        [*args, "--run-id", "second", *held, missing], capture_output=True, text=True, env=env
    )
    assert second.returncode == 0, second.stderr
    rows = read_report(str(report))
    rerun = rows[rows.run_id == "second"]
    assert set(rerun.loc[rerun.status == COMPLETE, "uid"]) == {missing}  # only the missing one was moved
    assert set(rerun.loc[rerun.status == SKIPPED, "uid"]) == set(held)
    assert sop_uids_on_disk(data) == _sops(corpus, [*held, missing])
    assert set(completed_items(str(report))) == {("STUDY", uid) for uid in [*held, missing]}


def test_destination_down_fails_naming_the_uids_and_a_rerun_completes(pacs, corpus, tmp_path) -> None:
    server, held = pacs
    studies = held[:4]
    port = free_port()  # our receiver *service* is registered but not running yet
    server.register_modality("retrieve-service", "RTSERVICE", "127.0.0.1", port)
    destination = MoveDestination("RTSERVICE", tmp_path / "data")
    first = retrieve(_node(server), make_items(studies), service=MOVE, destination=destination)
    assert {a.item.uid for a in first.failed} == set(studies)
    assert all("move destination" in a.reason and a.dimse_status == 0xC000 for a in first.failed)

    with Receiver(tmp_path / "data", ae_title="RTSERVICE", host="127.0.0.1", port=port):
        second = retrieve(_node(server), make_items(studies), service=MOVE, destination=destination)
    assert second.ok and {a.status for a in second.final.values()} == {COMPLETE}
    assert sop_uids_on_disk(tmp_path / "data") == _sops(corpus, studies)
    # with the expected counts known (from a find), held studies are skipped from the arrival records:
    # nothing is requested (the destination is down again, a request would fail)
    expected = [RetrieveItem("STUDY", uid, expected=corpus.study(uid).n_instances) for uid in studies]
    fourth = retrieve(_node(server), expected, service=MOVE, destination=destination)
    assert {a.status for a in fourth.final.values()} == {SKIPPED}


def test_move_to_a_third_node_starts_nothing_locally(loaded_orthanc, dcmtk_storescp, tmp_path) -> None:
    server, corpus = loaded_orthanc
    scp = dcmtk_storescp("THIRDNODE")
    server.register_modality("retrieve-third", "THIRDNODE", "127.0.0.1", scp.port)
    studies = sorted(corpus.study_uids)[12:20]
    before = _listening_ports()
    seen_listening: list[set[int]] = []
    result = retrieve(
        _node(server),
        make_items(studies),
        service=MOVE,
        destination=MoveDestination("THIRDNODE"),
        on_attempt=lambda a: seen_listening.append(_listening_ports()),
    )
    assert result.ok, (result.summary(), [a for a in result.final.values() if a.status != "complete"])
    assert all(ports == before for ports in seen_listening)  # no receiver of ours while moving
    assert all(a.received is None for a in result.final.values())  # nothing of ours to cross-check
    assert scp.received_sop_uids() == _sops(corpus, studies)


def test_parallel_associations_give_the_same_complete_result(loaded_orthanc, tmp_path) -> None:
    server, corpus = loaded_orthanc
    studies = sorted(corpus.study_uids)[5:25]
    one = retrieve(
        _node(server), make_items(studies), service=GET, data_dir=tmp_path / "one", options=RetrieveOptions(1)
    )
    port = free_port()
    server.register_modality("retrieve-parallel", "RTPAR", "127.0.0.1", port)
    three = retrieve(
        _node(server),
        make_items(studies),
        service=MOVE,
        destination=MoveDestination("RTPAR", tmp_path / "three", port=port, host="127.0.0.1"),
        options=RetrieveOptions(parallel=3),
    )
    assert one.ok and three.ok
    assert (
        sop_uids_on_disk(tmp_path / "one") == sop_uids_on_disk(tmp_path / "three") == _sops(corpus, studies)
    )


def test_more_expected_than_the_pacs_sends_is_a_failure(loaded_orthanc, tmp_path) -> None:
    server, corpus = loaded_orthanc
    study = corpus.studies[7]
    item = RetrieveItem("STUDY", study.study_uid, expected=study.n_instances + 2)
    result = retrieve(_node(server), [item], service=GET, data_dir=tmp_path)
    (attempt,) = result.final.values()
    assert attempt.status == FAILED
    assert (
        attempt.reason
        == f"only {study.n_instances} of {study.n_instances + 2} expected instances were transferred"
    )


def test_time_budget_cancels_the_request(orthanc, tmp_path) -> None:
    from harness.synth import make_corpus

    # 60 MB: a C-GET of 40 x 512 KB (20 MB) sometimes ended within the 0.05 s budget once the receiving path
    # got faster; this one takes several times the budget
    INSTANCES = 120  # noqa: N806

    orthanc.clear()
    big = make_corpus(
        n_patients=1,
        studies_per_patient=1,
        series_per_study=1,
        instances_per_series=INSTANCES,
        pixel_bytes=512 * 1024,
    )
    big.write(tmp_path / "corpus")
    orthanc.upload_files(big.paths.values())
    (study,) = big.study_uids
    result = retrieve(
        _node(orthanc),
        make_items([study]),
        service=GET,
        data_dir=tmp_path / "data",
        options=RetrieveOptions(time_budget=0.05, max_attempts=1),
    )
    (attempt,) = result.final.values()
    assert attempt.status == FAILED and attempt.dimse_status == 0xFE00
    assert "time budget of 0.05 s" in attempt.reason
    assert 0 < attempt.completed < INSTANCES


def test_interruption_stops_new_requests_and_keeps_the_rest_not_started(loaded_orthanc, tmp_path) -> None:
    server, corpus = loaded_orthanc
    studies = sorted(corpus.study_uids)[:6]
    calls = {"n": 0}

    def should_continue() -> bool:
        calls["n"] += 1
        return calls["n"] <= 2

    result = retrieve(
        _node(server),
        make_items(studies),
        service=GET,
        data_dir=tmp_path,
        options=RetrieveOptions(parallel=1),
        should_continue=should_continue,
    )
    assert result.interrupted
    statuses = [a.status for a in result.final.values()]
    assert statuses.count(COMPLETE) == 2 and statuses.count(NOT_STARTED) == 4
    assert sop_uids_on_disk(tmp_path) == _sops(corpus, studies[:2])


def test_bad_uids_are_refused_before_any_association() -> None:
    with pytest.raises(InvalidRequestError, match="is not a DICOM UID"):
        make_items(["1.2.3", "../../etc/passwd"])


# ---------------------------------------------------------------- transient and permanent refusals


def _busy_node(scp) -> DicomNode:
    return DicomNode(host="127.0.0.1", port=scp.port, called_ae_title=scp.aet)


def test_out_of_resources_is_retried_with_backoff(corpus, tmp_path) -> None:
    from harness.retrieve_scp import BusyGetSCP

    studies = sorted(corpus.study_uids)[:2]
    files = [p for uid in studies for p in corpus.files_of_study(uid)]
    with BusyGetSCP(files, busy_answers=2) as scp:
        options = RetrieveOptions(parallel=1, backoff=0.1, max_attempts=3)
        result = retrieve(
            _busy_node(scp), make_items(studies), service=GET, data_dir=tmp_path, options=options
        )
    assert result.ok, (result.summary(), [a for a in result.final.values() if a.status != "complete"])
    first = [a for a in result.attempts if a.item.uid == studies[0]]
    assert [(a.attempt, a.status, a.dimse_status) for a in first] == [
        (1, FAILED, 0xA702),
        (2, FAILED, 0xA702),
        (3, COMPLETE, 0),
    ]
    assert "out of resources" in first[0].reason and "retrying in 0.1 s" in first[0].reason
    assert scp.requests == 4
    assert sop_uids_on_disk(tmp_path) == _sops(corpus, studies)


def test_out_of_resources_gives_up_after_max_attempts(corpus, tmp_path) -> None:
    from harness.retrieve_scp import BusyGetSCP

    study = sorted(corpus.study_uids)[0]
    with BusyGetSCP(corpus.files_of_study(study), busy_answers=100) as scp:
        options = RetrieveOptions(parallel=1, backoff=0.05, max_attempts=2)
        result = retrieve(
            _busy_node(scp), make_items([study]), service=GET, data_dir=tmp_path, options=options
        )
    (final,) = result.final.values()
    assert (final.status, final.attempt, final.dimse_status) == (FAILED, 2, 0xA702)
    assert scp.requests == 2


def test_transient_association_rejection_is_retried(corpus, tmp_path) -> None:
    import threading

    from harness.retrieve_scp import BusyGetSCP
    from pynetdicom.sop_class import Verification

    from airflow_dicom.dimse.association import open_association

    study = sorted(corpus.study_uids)[1]
    with BusyGetSCP(corpus.files_of_study(study), max_associations=1) as scp:
        holder = open_association(
            _busy_node(scp).with_changes(calling_ae_title="HOLDER"), [Verification], purpose="x"
        )
        holder.__enter__()  # occupies the only association slot
        released = threading.Event()

        def release_after_first_attempt(attempt) -> None:
            # free the slot only once the first attempt was refused (a timer raced a loaded machine)
            if not released.is_set():
                released.set()
                holder.__exit__(None, None, None)

        options = RetrieveOptions(parallel=1, backoff=0.3, max_attempts=5)
        result = retrieve(
            _busy_node(scp),
            make_items([study]),
            service=GET,
            data_dir=tmp_path,
            options=options,
            on_attempt=release_after_first_attempt,
        )
    assert result.ok, (result.summary(), [a for a in result.final.values() if a.status != "complete"])
    assert "rejected transiently" in result.attempts[0].reason
    assert result.attempts[-1].status == COMPLETE and result.attempts[-1].attempt >= 2
    assert sop_uids_on_disk(tmp_path) == _sops(corpus, [study])


def test_permanent_rejection_is_not_retried_and_fails_every_item(orthanc_strict, tmp_path) -> None:
    node = DicomNode(host=orthanc_strict.host, port=orthanc_strict.dicom_port, called_ae_title="NOTSTRICT")
    result = retrieve(
        node,
        make_items(["1.2.3.1", "1.2.3.2", "1.2.3.3"]),
        service=GET,
        data_dir=tmp_path,
        options=RetrieveOptions(parallel=1, backoff=0.01),
    )
    assert len(result.attempts) == 1  # one association attempt, no retry, no further requests
    assert all(a.status == FAILED and "rejected permanently" in a.reason for a in result.final.values())
    assert "called AE title not recognised" in result.final[("STUDY", "1.2.3.3")].reason
