"""Our receiver against real peers: dcmtk storescu and a pynetdicom SCU (through our association layer)."""

from __future__ import annotations

import os
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from harness.dcmtk import dcmtk_tool, echoscu, storescu
from harness.hostile import HOSTILE_VALUES, make_hostile, write_hostile
from harness.ports import free_port
from harness.synth import Corpus, make_corpus, make_instance, write_dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from pynetdicom import _config

from airflow_dicom.dimse.arrivals import recorded_studies, study_arrivals
from airflow_dicom.dimse.association import open_association
from airflow_dicom.dimse.errors import AssociationRejectedError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.receiver import QUARANTINE_DIR, Receiver, StoredInstance
from airflow_dicom.dimse.status import Status
from airflow_dicom.dimse.storage_layout import patient_dir_name

pytestmark = pytest.mark.integration

CT = "1.2.840.10008.5.1.4.1.1.2"
#: explicit VR little endian, the syntax make_instance() writes (raw file sending cannot convert)
CONTEXTS = [(CT, [ExplicitVRLittleEndian])]


@pytest.fixture
def start_receiver(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    """Factory: a Receiver on 127.0.0.1 and a free port, data under ``tmp_path/work/data``."""
    started: list[Receiver] = []

    def factory(**kwargs: Any) -> Receiver:
        kwargs.setdefault("ae_title", "RECEIVER")
        data_dir = kwargs.pop("data_dir", tmp_path / "work" / "data")
        receiver = Receiver(data_dir, host="127.0.0.1", port=free_port(), **kwargs).start()
        started.append(receiver)
        return receiver

    yield factory
    for receiver in started:
        receiver.stop(grace=5)


def node_of(receiver: Receiver, calling: str = "PYSCU") -> DicomNode:
    return DicomNode(
        host="127.0.0.1", port=receiver.port, called_ae_title=receiver.ae_title, calling_ae_title=calling
    )


def dataset_bytes_of(path: Path) -> bytes:
    """The bytes after a DICOM file's preamble and file meta group."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    (group_length,) = struct.unpack("<I", data[140:144])
    return data[144 + group_length :]


def dcm_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm") if QUARANTINE_DIR not in p.parts)


def tmp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tmp"))


def expected_path(data_dir: Path, corpus: Corpus, sop_uid: str, layout: str = "patient") -> Path:
    inst = next(i for i in corpus.instances if i.sop_uid == sop_uid)
    if layout == "flat":
        return data_dir / f"{sop_uid}.dcm"
    path = data_dir / inst.study_uid / inst.series_uid / f"{sop_uid}.dcm"
    if layout == "patient":
        path = (
            data_dir / patient_dir_name(inst.patient_id) / inst.study_uid / inst.series_uid / f"{sop_uid}.dcm"
        )
    return path


def test_everything_storescu_sends_arrives_as_sent(
    start_receiver: Callable[..., Receiver], corpus: Corpus
) -> None:
    receiver = start_receiver()
    proc = storescu(
        "127.0.0.1", receiver.port, receiver.ae_title, [corpus.paths[i.sop_uid] for i in corpus.instances]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data_dir = receiver.data_dir
    stored = dcm_files(data_dir)
    assert len(stored) == len(corpus.instances)
    syntaxes = set()
    for inst in corpus.instances:
        path = expected_path(data_dir, corpus, inst.sop_uid)
        assert path.is_file(), f"missing {path}"
        received = pydicom.dcmread(path)
        source = pydicom.dcmread(corpus.paths[inst.sop_uid])
        assert received.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert received.file_meta.MediaStorageSOPInstanceUID == inst.sop_uid
        assert received.file_meta.SourceApplicationEntityTitle == "STORESCU"
        assert received == source  # every element, pixel data included
        assert dataset_bytes_of(path) == dataset_bytes_of(corpus.paths[inst.sop_uid])  # stored as sent
        syntaxes.add(str(received.file_meta.TransferSyntaxUID))
    assert RLELossless in syntaxes and ExplicitVRLittleEndian in syntaxes  # compressed kept compressed
    assert recorded_studies(data_dir) == sorted(corpus.study_uids)
    for study in corpus.studies:
        state = study_arrivals(data_dir, study.study_uid)
        assert state.sop_uids == {i.sop_uid for i in corpus.instances_of_study(study.study_uid)}
        assert state.bytes == sum(p.stat().st_size for p in state.paths(data_dir))
        assert {r.calling_ae for r in state.instances.values()} == {"STORESCU"}
    assert tmp_files(data_dir) == []


@pytest.mark.parametrize("layout", ["study", "flat"])
def test_study_and_flat_layouts(start_receiver: Callable[..., Receiver], corpus: Corpus, layout: str) -> None:
    receiver = start_receiver(layout=layout)
    sub = corpus.subset(sorted(corpus.study_uids)[:3])
    proc = storescu(
        "127.0.0.1", receiver.port, receiver.ae_title, [sub.paths[i.sop_uid] for i in sub.instances]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert dcm_files(receiver.data_dir) == sorted(
        expected_path(receiver.data_dir, sub, i.sop_uid, layout) for i in sub.instances
    )


@pytest.mark.slow
def test_eight_concurrent_senders_twice(start_receiver: Callable[..., Receiver], tmp_path: Path) -> None:
    """8 storescu x 250 instances at once, two rounds: all stored, nothing partial ever visible, no .tmp."""
    receiver = start_receiver(layout="flat", max_associations=10)
    sources = []
    for sender in range(8):
        corpus = make_corpus(
            n_patients=5,
            studies_per_patient=1,
            series_per_study=1,
            instances_per_series=50,
            pixel_bytes=4096,
            transfer_syntaxes=[ExplicitVRLittleEndian],
            modalities=("CT",),
            seed=100 + sender,
        )
        corpus.write(tmp_path / f"src{sender}")
        sources.append(corpus)
    expected = set().union(*(c.sop_uids for c in sources))
    assert len(expected) == 2000
    source_of = {uid: c.paths[uid] for c in sources for uid in c.sop_uids}

    seen_bad: list[str] = []
    checked: set[Path] = set()
    stop = threading.Event()

    def watch() -> None:  # a reader of the data directory during the run
        while not stop.is_set():
            for entry in os.scandir(receiver.data_dir):
                path = Path(entry.path)
                if entry.name.endswith(".dcm") and path not in checked:
                    try:
                        ds = pydicom.dcmread(path)
                        assert len(ds.PixelData) == ds.Rows * ds.Columns * ds.BitsAllocated // 8
                    except Exception as exc:  # a partially visible file would fail here
                        seen_bad.append(f"{entry.name}: {exc}")
                    checked.add(path)
            time.sleep(0.01)

    for _round in range(2):
        watcher = threading.Thread(target=watch)
        watcher.start()
        procs = [
            subprocess.Popen(
                [
                    dcmtk_tool("storescu"),  # not pynetdicom's console script of the same name
                    "-aet",
                    f"SENDER{n}",
                    "-aec",
                    receiver.ae_title,
                    "-to",
                    "30",
                    "+sd",
                    "127.0.0.1",
                    str(receiver.port),
                    str(tmp_path / f"src{n}"),
                ],
                env={**os.environ, "TCP_NODELAY": "1"},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for n in range(8)
        ]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        stop.set()
        watcher.join()
        stop.clear()
        assert [p.returncode for p in procs] == [0] * 8, b"\n".join(outputs)[-3000:]
        stored = {p.stem for p in dcm_files(receiver.data_dir)}
        assert stored == expected
        assert tmp_files(receiver.data_dir) == []
        assert seen_bad == []
    assert len(checked) >= 2000
    for uid in sorted(expected)[::40]:
        assert dataset_bytes_of(receiver.data_dir / f"{uid}.dcm") == dataset_bytes_of(source_of[uid])


@contextmanager
def raw_file_sending() -> Iterator[None]:
    """Make pynetdicom send a file's bytes as they are (command UIDs from its file meta, no decoding)."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old


def _send_hostile(assoc: Any, tmp: Path, field: str, value: str) -> int:
    """Send an instance whose ``field`` is ``value``; return the status.

    pynetdicom refuses to put some values in the command set (over 64 characters, a backslash): then
    the command carries a valid SOP Instance UID and only the dataset carries the hostile value.
    """
    ds = make_hostile(**{field: value})
    if field == "sop_uid" and (len(value) > 64 or "\\" in value):
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = write_hostile(ds, tmp / f"{field}-{len(value)}.dcm")
        with raw_file_sending():
            rsp = assoc.send_c_store(path)
    else:
        rsp = assoc.send_c_store(ds)
    assert "Status" in rsp, "no response (association aborted?)"
    return int(rsp.Status)


def test_hostile_identifiers(start_receiver: Callable[..., Receiver], tmp_path: Path) -> None:
    receiver = start_receiver()
    outside = [Path("/etc/x"), Path("/tmp/x"), tmp_path / "x", tmp_path / "work" / "x"]
    before = {p: p.exists() for p in outside}
    results: dict[tuple[str, str], int] = {}
    with open_association(node_of(receiver), CONTEXTS, purpose="C-STORE") as assoc:
        for field in ("sop_uid", "study_uid", "series_uid"):
            for name, value in HOSTILE_VALUES.items():
                results[(field, name)] = _send_hostile(assoc, tmp_path, field, value)
        for name, value in {"dotdot": "../x", "absolute": "/etc/x", "long": "P" * 200, "empty": ""}.items():
            results[("patient_id", name)] = _send_hostile(assoc, tmp_path, "patient_id", value)
        # still serving on the same association
        good = make_instance(patient_id="GOOD")
        assert assoc.send_c_store(good).Status == Status.SUCCESS
    for field in ("sop_uid", "study_uid", "series_uid"):
        for name in HOSTILE_VALUES:
            assert results[(field, name)] == Status.UNSAFE_IDENTIFIERS, (field, name)
    assert results[("patient_id", "long")] == Status.UNSAFE_IDENTIFIERS
    # PatientIDs are made safe, not refused: "123/45" is a real-world PatientID
    for name in ("dotdot", "absolute", "empty"):
        assert results[("patient_id", name)] == Status.SUCCESS
    data_dir = receiver.data_dir
    patient_dirs = sorted(p.name for p in data_dir.iterdir() if not p.name.startswith("."))
    assert patient_dirs == sorted(["%2E%2E%2Fx", "%2Fetc%2Fx", "_", "GOOD"])
    # nothing outside the data directory
    assert {p: p.exists() for p in outside} == before
    everything = [p for p in (tmp_path / "work").rglob("*")]
    assert all(p == data_dir or data_dir in p.parents for p in everything)
    # every refused instance is kept in quarantine with a reason
    quarantined = sorted((data_dir / QUARANTINE_DIR).glob("*.dcm"))
    assert len(quarantined) == 3 * len(HOSTILE_VALUES) + 1
    # and the receiver still serves new associations
    proc = echoscu("127.0.0.1", receiver.port, receiver.ae_title)
    assert proc.returncode == 0


def test_bytes_that_are_not_a_dataset_are_quarantined(
    start_receiver: Callable[..., Receiver], tmp_path: Path
) -> None:
    receiver = start_receiver()
    garbage = bytes(range(256)) * 40 + b"\xff\xfe\x00\x01" * 100
    ds = make_instance()
    path = write_dataset(ds, tmp_path / "valid.dcm")
    header = path.read_bytes()[: 144 + struct.unpack("<I", path.read_bytes()[140:144])[0]]
    bad = tmp_path / "garbage.dcm"
    bad.write_bytes(header + garbage)
    with open_association(node_of(receiver), CONTEXTS, purpose="C-STORE") as assoc:
        with raw_file_sending():
            rsp = assoc.send_c_store(bad)
        assert rsp.Status == Status.UNREADABLE_DATASET
        assert assoc.send_c_store(path).Status == Status.SUCCESS
    quarantined = list((receiver.data_dir / QUARANTINE_DIR).glob("*.dcm"))
    assert len(quarantined) == 1
    assert dataset_bytes_of(quarantined[0]) == garbage  # the raw bytes, nothing lost
    sidecar = quarantined[0].with_suffix(".json").read_text()
    assert "0xC211" in sidecar and "PYSCU" in sidecar
    assert [p.stem for p in dcm_files(receiver.data_dir)] == [ds.SOPInstanceUID]


def test_incomplete_request_is_answered_not_left_waiting(start_receiver: Callable[..., Receiver]) -> None:
    """A C-STORE without Affected SOP Instance UID: pynetdicom would drop it and the sender would hang."""
    receiver = start_receiver()
    node = node_of(receiver).with_changes(dimse_timeout=20)
    with open_association(node, CONTEXTS, purpose="C-STORE") as assoc:
        started = time.monotonic()
        rsp = assoc.send_c_store(make_hostile(sop_uid=""))
        assert time.monotonic() - started < 5
        assert rsp.Status == Status.UNSAFE_IDENTIFIERS
        assert assoc.send_c_store(make_instance()).Status == Status.SUCCESS


def test_disk_errors_are_out_of_resources(start_receiver: Callable[..., Receiver], tmp_path: Path) -> None:
    receiver = start_receiver()
    data_dir = receiver.data_dir
    subprocess.run(["chattr", "-R", "+i", str(data_dir)], check=True)  # read-only, even for root
    try:
        with open_association(node_of(receiver), CONTEXTS, purpose="C-STORE") as assoc:
            assert assoc.send_c_store(make_instance()).Status == Status.OUT_OF_RESOURCES
    finally:
        subprocess.run(["chattr", "-R", "-i", str(data_dir)], check=True)
    ds = make_instance()
    with open_association(node_of(receiver), CONTEXTS, purpose="C-STORE") as assoc:
        assert assoc.send_c_store(ds).Status == Status.SUCCESS
    assert [p.stem for p in dcm_files(data_dir)] == [ds.SOPInstanceUID]


def test_calling_ae_allow_list(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver(allowed_aets=["GOODAE"])
    assert echoscu("127.0.0.1", receiver.port, receiver.ae_title, calling_aet="GOODAE").returncode == 0
    assert echoscu("127.0.0.1", receiver.port, receiver.ae_title, calling_aet="BADAE").returncode != 0
    with pytest.raises(AssociationRejectedError):
        with open_association(node_of(receiver, calling="BADAE"), CONTEXTS, purpose="C-STORE"):
            pass
    with open_association(node_of(receiver, calling="GOODAE"), CONTEXTS, purpose="C-STORE") as assoc:
        assert assoc.send_c_store(make_instance()).Status == Status.SUCCESS


def test_max_associations(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver(max_associations=1)
    with open_association(node_of(receiver), CONTEXTS, purpose="C-STORE"):
        with pytest.raises(AssociationRejectedError) as info:
            with open_association(node_of(receiver), CONTEXTS, purpose="C-STORE"):
                pass
        assert info.value.transient
    assert echoscu("127.0.0.1", receiver.port, receiver.ae_title).returncode == 0


def test_callbacks_run_and_a_failing_one_never_hurts(start_receiver: Callable[..., Receiver]) -> None:
    got: list[StoredInstance] = []

    def explode(instance: StoredInstance) -> None:
        raise RuntimeError("callback bug")

    receiver = start_receiver(on_stored=[explode, got.append])
    sent = [make_instance(patient_id=f"P{i}") for i in range(5)]
    with open_association(node_of(receiver), CONTEXTS, purpose="C-STORE") as assoc:
        assert [int(assoc.send_c_store(ds).Status) for ds in sent] == [0] * 5
    receiver.writer.close()  # waits for the callbacks
    assert sorted(i.record.sop_uid for i in got) == sorted(ds.SOPInstanceUID for ds in sent)
    assert all(i.path.is_file() and i.path.stat().st_size == i.record.bytes for i in got)
    assert echoscu("127.0.0.1", receiver.port, receiver.ae_title).returncode == 0


def test_small_pdus_fragment_commands_and_datasets(
    start_receiver: Callable[..., Receiver], corpus: Corpus
) -> None:
    """With a 4 KB maximum PDU every message arrives in many fragments: still stored exactly as sent."""
    receiver = start_receiver(max_pdu=4096, layout="flat")
    sub = corpus.subset(sorted(corpus.study_uids)[:4])
    proc = storescu(
        "127.0.0.1", receiver.port, receiver.ae_title, [sub.paths[i.sop_uid] for i in sub.instances]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for inst in sub.instances:
        stored = receiver.data_dir / f"{inst.sop_uid}.dcm"
        assert dataset_bytes_of(stored) == dataset_bytes_of(sub.paths[inst.sop_uid])
    assert echoscu("127.0.0.1", receiver.port, receiver.ae_title).returncode == 0  # other messages too


@pytest.mark.slow
def test_long_repeated_runs_never_hang(start_receiver: Callable[..., Receiver], tmp_path: Path) -> None:
    """pynetdicom#875-style lost responses would leave storescu waiting for its 10 s DIMSE timeout."""
    receiver = start_receiver(layout="flat")
    corpus = make_corpus(
        n_patients=20,
        studies_per_patient=1,
        series_per_study=1,
        instances_per_series=50,
        pixel_bytes=1024,
        transfer_syntaxes=[ExplicitVRLittleEndian],
        modalities=("CT",),
        seed=875,
    )
    corpus.write(tmp_path / "src")
    for _ in range(3):
        started = time.monotonic()
        proc = storescu("127.0.0.1", receiver.port, receiver.ae_title, [tmp_path / "src"], propose="")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert time.monotonic() - started < 30
        assert "Store Failed" not in proc.stderr and "Peer Aborted" not in proc.stderr
    assert {p.stem for p in dcm_files(receiver.data_dir)} == corpus.sop_uids
    assert sum(receiver.study(s).received for s in corpus.study_uids) == 1000
