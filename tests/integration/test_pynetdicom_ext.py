"""What each pynetdicom extension does, against real peers; and the stock fallback outside the range.

Replaces the old source-hash check of pynetdicom's internals: each extension is tested by its behaviour,
so an upgrade that breaks one fails here, and a reformatting upstream does not.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom
import pytest
from harness.ports import free_port
from harness.stored import data_set_bytes, stored_data_sets
from harness.synth import make_instance, write_dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.sop_class import Verification

from airflow_dicom.dimse import pynetdicom_ext
from airflow_dicom.dimse.association import accepted_context, open_association
from airflow_dicom.dimse.echo import echo
from airflow_dicom.dimse.errors import AssociationAbortedError, DicomError, DimseFailureError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.pynetdicom_ext import connect_error, make_nodelay_ae, make_requestor_ae, send_c_store
from airflow_dicom.dimse.pynetdicom_ext.compat import StockAE
from airflow_dicom.dimse.query import build_query, find_all
from airflow_dicom.dimse.receiver import Receiver, storage_contexts
from airflow_dicom.dimse.retrieve import GET, make_items, retrieve
from airflow_dicom.dimse.send import send

pytestmark = pytest.mark.integration

CT = "1.2.840.10008.5.1.4.1.1.2"


def _node(server: Any) -> DicomNode:
    return DicomNode(host=server.host, port=server.dicom_port, called_ae_title=server.aet)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tree(root: Path, n: int) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return {
        (ds := make_instance(seed=i, pixel_bytes=2048)).SOPInstanceUID: write_dataset(ds, root / f"{i}.dcm")
        for i in range(n)
    }


# ------------------------------------------------------------------------------ sockets


def test_requestor_socket_keeps_why_the_connection_failed() -> None:
    ae = make_requestor_ae("ME")
    ae.connection_timeout = ae.acse_timeout = 5
    assoc = ae.associate("127.0.0.1", _closed_port(), contexts=[pynetdicom.build_context(Verification)])
    assert not assoc.is_established
    assert isinstance(connect_error(assoc), ConnectionRefusedError)


# ------------------------------------------------------------------------------ requestor


def test_a_rejection_followed_by_a_close_is_a_rejection(orthanc_strict) -> None:
    """Orthanc sends A-ASSOCIATE-RJ and closes at once; pynetdicom alone called ~1 in 30 of these aborted."""
    node = DicomNode(orthanc_strict.host, orthanc_strict.dicom_port, "WRONGAET")
    outcomes = set()
    for _ in range(60):
        with pytest.raises(DicomError) as info:
            echo(node)
        outcomes.add(type(info.value).__name__)
    assert outcomes == {"AssociationRejectedError"}


def test_requestor_serves_raw_and_pynetdicom_requests_on_one_association(orthanc, tmp_path: Path) -> None:
    orthanc.clear()
    files = _tree(tmp_path / "in", 2)
    (raw_uid, raw_path), (own_uid, own_path) = files.items()
    contexts = [(CT, [ExplicitVRLittleEndian]), Verification]
    with open_association(_node(orthanc), contexts, purpose="test") as assoc:
        for _ in range(300):  # the reactor never takes a response meant for the sender
            assert assoc.send_c_echo().Status == 0x0000
        context = accepted_context(assoc, CT)
        assert context is not None
        rsp = send_c_store(assoc, context.context_id, 7, CT, raw_uid, data_set_bytes(raw_path), timeout=30)
        assert (rsp.Status, rsp.MessageIDBeingRespondedTo) == (0x0000, 7)
        assert assoc.send_c_store(pydicom.dcmread(own_path), msg_id=8).Status == 0x0000  # pynetdicom's own
        assert assoc.send_c_echo().Status == 0x0000
    assert orthanc.instance_uids() == {raw_uid, own_uid}
    assert data_set_bytes(raw_path) in orthanc.instance_file(raw_uid)  # the file's bytes, untouched
    orthanc.clear()


@pytest.fixture
def aborting_scp() -> Iterator[DicomNode]:
    """A pynetdicom SCP that aborts the association when it receives a C-ECHO."""

    def abort(event: Any) -> int:
        event.assoc.abort()
        return 0x0000

    ae = make_nodelay_ae("ABORTER")
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, abort)])
    yield DicomNode("127.0.0.1", server.server_address[1], "ABORTER", dimse_timeout=10)
    server.shutdown()


def test_requestor_reactor_sees_the_peers_abort(aborting_scp: DicomNode) -> None:
    with pytest.raises((AssociationAbortedError, DimseFailureError)) as info:
        echo(aborting_scp)
    assert info.value.retryable


def test_wake_pipes_and_sockets_are_closed_after_each_association(orthanc, tmp_path: Path) -> None:
    files = _tree(tmp_path / "in", 2)
    receiver = Receiver(tmp_path / "data", ae_title="FDS", host="127.0.0.1", port=free_port()).start()
    try:
        node = DicomNode("127.0.0.1", receiver.port, "FDS")
        echo(_node(orthanc)), send(node, list(files.values()))  # warm up (imports, caches)
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(15):
            echo(_node(orthanc))
            assert len(send(node, list(files.values())).sent) == 2
        # the receiver's association threads close their sockets just after the sender returns: on a
        # loaded machine give them a moment before counting
        deadline = time.monotonic() + 10
        while (after := len(os.listdir("/proc/self/fd"))) - before > 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        receiver.stop(grace=5)
    assert after - before <= 2, (before, after)


# ------------------------------------------------------------------------------ acceptor


def test_acceptor_takes_pynetdicoms_path_when_a_dimse_handler_is_bound(tmp_path: Path) -> None:
    """With an EVT_DIMSE_RECV handler bound, requests are decoded by pynetdicom; the files are the same."""
    files = _tree(tmp_path / "in", 3)
    seen: list[str] = []
    receiver = Receiver(tmp_path / "codec", ae_title="CODEC", host="127.0.0.1", port=free_port()).start()
    ae = pynetdicom_ext.make_acceptor_ae("OBSERVED")
    writer = Receiver(tmp_path / "observed", port=0).writer
    handlers = [
        (evt.EVT_C_STORE, writer.handle_store),
        (evt.EVT_DIMSE_RECV, lambda event: seen.append(type(event.message).__name__)),
    ]
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, contexts=storage_contexts(), evt_handlers=handlers
    )
    try:
        assert len(send(DicomNode("127.0.0.1", receiver.port, "CODEC"), list(files.values())).sent) == 3
        observed = DicomNode("127.0.0.1", server.server_address[1], "OBSERVED")
        assert len(send(observed, list(files.values())).sent) == 3
    finally:
        server.shutdown()
        receiver.stop(grace=5)
        writer.close()
    assert seen.count("C_STORE_RQ") == 3
    expected = {uid: data_set_bytes(path) for uid, path in files.items()}
    assert stored_data_sets(tmp_path / "codec") == expected == stored_data_sets(tmp_path / "observed")


# ------------------------------------------------------------------------------ outside the supported range


@pytest.fixture
def unsupported_pynetdicom(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pynetdicom claims to be 3.1.0: every AE made during the test is stock pynetdicom."""
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    assert not pynetdicom_ext.recheck_version()
    yield
    monkeypatch.undo()
    assert pynetdicom_ext.recheck_version()


def test_stock_fallback_still_echoes_finds_sends_receives_and_gets(
    unsupported_pynetdicom: None, loaded_orthanc, tmp_path: Path
) -> None:
    pacs, corpus = loaded_orthanc
    assert type(make_requestor_ae("X")) is StockAE
    assert echo(_node(pacs)).round_trip > 0
    rows = find_all(_node(pacs), build_query("STUDY", date_from="2024-01-01", date_to="2024-12-31"))
    assert {str(r.StudyInstanceUID) for r in rows} == corpus.study_uids
    files = _tree(tmp_path / "in", 4)
    with Receiver(tmp_path / "data", ae_title="STOCK", host="127.0.0.1", port=free_port()) as receiver:
        report = send(DicomNode("127.0.0.1", receiver.port, "STOCK"), list(files.values()))
    assert len(report.sent) == 4 and not report.failed
    assert set(stored_data_sets(tmp_path / "data")) == set(
        files
    )  # decoded and re-encoded by pydicom, then stored
    study = sorted(corpus.study_uids)[0]
    got = retrieve(_node(pacs), make_items([study]), service=GET, data_dir=tmp_path / "get")
    assert got.ok and set(stored_data_sets(tmp_path / "get")) == {
        i.sop_uid for i in corpus.instances_of_study(study)
    }


#: the console script with pynetdicom claiming an unsupported version
_FAKED_CLI = (
    "import sys, pynetdicom; pynetdicom.__version__ = '3.1.0'; "
    "from airflow_dicom.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_cli_with_an_unsupported_pynetdicom_works_and_warns_once(
    orthanc, dcmtk_storescp, tmp_path: Path
) -> None:
    files = _tree(tmp_path / "in", 3)
    scp = dcmtk_storescp("FALLBACK")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _FAKED_CLI, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    node = ["--host", orthanc.host, "--port", str(orthanc.dicom_port), "--aet", orthanc.aet]
    echoed = cli("echo", *node)
    assert echoed.returncode == 0, echoed.stderr
    sent = cli(
        "send",
        str(tmp_path / "in"),
        "--host",
        "127.0.0.1",
        "--port",
        str(scp.port),
        "--aet",
        "FALLBACK",
        "--json",
    )
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["sent"] == 3
    assert scp.received_sop_uids() == set(files)
    for result in (echoed, sent):
        warnings = [line for line in result.stderr.splitlines() if "pynetdicom 3.1.0" in line]
        assert len(warnings) == 1 and "falling back to stock pynetdicom" in warnings[0], result.stderr
