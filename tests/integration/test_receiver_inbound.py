"""The acceptor's one-thread C-STORE path (pynetdicom_ext.inbound) against real peers.

dcmtk ``storescu`` and pynetdicom requestors send into our acceptor; what is checked is what a user of the
receiver sees: every instance stored byte for byte and recorded, the statuses their handlers return (or
pynetdicom's for a failing handler) reaching the sender, their own handlers running where pynetdicom runs
them, and PDU observers still seeing pynetdicom's PDUs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.dcmtk import storescu
from harness.stored import data_set_bytes, stored_data_sets
from harness.synth import make_instance, write_dataset
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import evt

from airflow_dicom.dimse import pynetdicom_ext
from airflow_dicom.dimse.pynetdicom_ext.inbound import reader_safe
from airflow_dicom.dimse.receiver import Receiver, StoreWriter, storage_contexts

pytestmark = pytest.mark.integration

CT = "1.2.840.10008.5.1.4.1.1.2"


def _tree(root: Path, n: int, study_uid: str | None = None) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(n):
        ds = make_instance(seed=i, pixel_bytes=2048, study_uid=study_uid)
        files[str(ds.SOPInstanceUID)] = write_dataset(ds, root / f"{i}.dcm")
    return files


@pytest.fixture
def acceptor() -> Iterator[Any]:
    """Start an acceptor-AE server with the given handlers; shut down at the end."""
    servers: list[Any] = []

    def start(handlers: list[tuple[Any, ...]]) -> int:
        ae = pynetdicom_ext.make_acceptor_ae("INBOUND")
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, contexts=storage_contexts(), evt_handlers=handlers
        )
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()


def test_storescu_into_the_receiver_every_instance_stored_and_recorded(tmp_path: Path) -> None:
    """dcmtk storescu, 40 instances of one study on one association: stored as sent, 40 arrival records."""
    study = "1.2.826.0.1.3680043.8.498.4242"
    files = _tree(tmp_path / "in", 40, study_uid=study)
    with Receiver(tmp_path / "data", ae_title="OURS", host="127.0.0.1", port=0) as receiver:
        proc = storescu("127.0.0.1", receiver.port, "OURS", [tmp_path / "in"])
        assert proc.returncode == 0, proc.stderr[-2000:]
        arrivals = receiver.study(study)
    assert stored_data_sets(tmp_path / "data") == {uid: data_set_bytes(path) for uid, path in files.items()}
    assert arrivals.received == 40 and set(arrivals.sop_uids) == set(files)


def test_reader_safe_handler_runs_in_the_reading_thread_others_in_the_association_thread(
    tmp_path: Path, acceptor: Any
) -> None:
    """A marked handler is served by the DUL thread, an unmarked one where pynetdicom serves it.

    The association's first requests may be read before the association thread has marked it established
    (the sender writes as soon as it has the A-ASSOCIATE-AC; on a busy machine it can win): those are served
    by the association thread, in order, as pynetdicom would. The rest are the DUL thread's.
    """
    files = _tree(tmp_path / "in", 20)
    writer = StoreWriter(tmp_path / "marked")
    threads: dict[str, list[str]] = {"marked": [], "unmarked": []}

    def where(event: Any) -> str:
        current = threading.current_thread()
        return "dul" if current is event.assoc.dul else "association" if current is event.assoc else "other"

    @reader_safe
    def marked(event: Any) -> int:
        threads["marked"].append(where(event))
        return writer.handle_store(event)

    received: dict[str, bytes] = {}

    def unmarked(event: Any) -> int:
        threads["unmarked"].append(where(event))
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    try:
        for handler in (marked, unmarked):
            port = acceptor([(evt.EVT_C_STORE, handler)])
            proc = storescu("127.0.0.1", port, "INBOUND", [tmp_path / "in"])
            assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        writer.close()
    assert threads["unmarked"] == ["association"] * len(files)
    marked_threads = threads["marked"]
    assert len(marked_threads) == len(files) and set(marked_threads) <= {"dul", "association"}
    served_by_dul = marked_threads.index("dul") if "dul" in marked_threads else len(files)
    # once the DUL thread serves, it serves the rest (one sender, one request at a time)
    assert served_by_dul < len(files) and set(marked_threads[served_by_dul:]) == {"dul"}, marked_threads
    expected = {uid: data_set_bytes(path) for uid, path in files.items()}
    assert stored_data_sets(tmp_path / "marked") == expected == received


def test_statuses_of_a_reader_safe_handler_reach_the_sender(acceptor: Any) -> None:
    """int statuses (known or not), a status data set with a comment, an exception (0xC211): as pynetdicom."""
    answers: dict[str, Any] = {"1.2.3.1": 0x0000, "1.2.3.2": 0xB007, "1.2.3.3": 0x1234}
    comment = Dataset()
    comment.Status = 0xA700
    comment.ErrorComment = "disk quota"
    answers["1.2.3.4"] = comment

    @reader_safe
    def handler(event: Any) -> Any:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid == "1.2.3.5":
            raise RuntimeError("handler failed")
        return answers[uid]

    port = acceptor([(evt.EVT_C_STORE, handler)])
    ae = pynetdicom_ext.make_nodelay_ae("SENDER")
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="INBOUND")
    assert assoc.is_established
    got: dict[str, tuple[int, str | None]] = {}
    try:
        for uid in ("1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4", "1.2.3.5", "1.2.3.1"):
            ds = make_instance(seed=1, sop_uid=uid)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            status = assoc.send_c_store(ds)
            got[uid] = (int(status.Status), status.get("ErrorComment"))
        assert assoc.is_established  # the failing handler did not end the association
    finally:
        assoc.release()
    assert got == {
        "1.2.3.1": (0x0000, None),
        "1.2.3.2": (0xB007, None),
        "1.2.3.3": (0x1234, None),
        "1.2.3.4": (0xA700, "disk quota"),
        "1.2.3.5": (0xC211, None),
    }


def test_pdu_observers_see_pynetdicoms_pdus_and_every_instance_isstored_data_sets(
    tmp_path: Path, acceptor: Any
) -> None:
    """With an EVT_PDU_RECV handler bound the acceptor reads through pynetdicom; the files are the same."""
    files = _tree(tmp_path / "in", 4)
    writer = StoreWriter(tmp_path / "observed")
    pdus: list[str] = []
    try:
        port = acceptor(
            [
                (evt.EVT_C_STORE, writer.handle_store),
                (evt.EVT_PDU_RECV, lambda event: pdus.append(type(event.pdu).__name__)),
            ]
        )
        proc = storescu("127.0.0.1", port, "INBOUND", [tmp_path / "in"])
        assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        writer.close()
    assert pdus.count("P_DATA_TF") >= 8  # a command and a data set for each instance
    assert pdus[0] == "A_ASSOCIATE_RQ" and "A_RELEASE_RQ" in pdus
    assert stored_data_sets(tmp_path / "observed") == {
        uid: data_set_bytes(path) for uid, path in files.items()
    }
