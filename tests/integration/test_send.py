"""C-STORE sending against real peers: dcmtk storescp, Orthanc and a configurable pynetdicom SCP."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from harness.dcmtk import DcmtkStorescp
from harness.send_scp import StoreSCP
from harness.synth import make_corpus, make_instance, write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import evt
from pynetdicom.sop_class import _STORAGE_CLASSES

from airflow_dicom.dimse.errors import InvalidRequestError, NodeUnreachableError, SendFailedError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.send import send
from airflow_dicom.dimse.status import Status

pytestmark = pytest.mark.integration

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
CR = "1.2.840.10008.5.1.4.1.1.1"


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A nested tree: several SOP classes, Explicit/Implicit/RLE/Deflated, plus junk files."""
    corpus = make_corpus(
        n_patients=6,
        studies_per_patient=1,
        series_per_study=(2, 2),
        instances_per_series=(2, 2),
        transfer_syntaxes=(
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
            RLELossless,
            "1.2.840.10008.1.2.1.99",
        ),
        seed=61,
    )
    root = tmp_path_factory.mktemp("mixed")
    by_uid: dict[str, Path] = {}
    for n, inst in enumerate(corpus.instances):
        sub = root / f"study {n % 3}" / ("nested" if n % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        by_uid[inst.sop_uid] = write_dataset(corpus.dataset(inst.sop_uid), sub / f"{inst.sop_uid}.dcm")
    (root / "README.txt").write_text("not dicom")
    (root / "study 0" / ".DS_Store").write_bytes(b"\0" * 300)
    return root, by_uid


def _dataset(data: bytes | Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(data if isinstance(data, Path) else pydicom.filebase.DicomBytesIO(data))
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    return ds


def _node(port: int, aet: str, **kw: object) -> DicomNode:
    return DicomNode("127.0.0.1", port, aet, **kw)  # type: ignore[arg-type]


def test_mixed_tree_reaches_storescp_unchanged(mixed_tree, dcmtk_storescp) -> None:
    root, by_uid = mixed_tree
    scp = dcmtk_storescp("STORESCP", fork=True, bit_preserving=True)
    report = send(_node(scp.port, "STORESCP"), root, parallel=2)
    report.raise_for_failures()
    assert {r.sop_instance_uid for r in report.sent} == set(by_uid)
    assert sorted(Path(r.path).name for r in report.skipped) == [".DS_Store", "README.txt"]
    assert all("not a DICOM" in r.reason for r in report.skipped)
    assert report.summary()["sent"] == len(by_uid) and report.summary()["skipped"] == 2
    received = scp.received_datasets()
    assert set(received) == set(by_uid)
    syntaxes = set()
    for uid, path in by_uid.items():
        source = pydicom.dcmread(path)
        syntaxes.add(source.file_meta.TransferSyntaxUID)
        assert received[uid].file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        got = received[uid]
        got.file_meta = source.file_meta = pydicom.dataset.FileMetaDataset()
        assert got == source, uid
    assert RLELossless in syntaxes and ImplicitVRLittleEndian in syntaxes


def test_mixed_tree_reaches_orthanc_unchanged(mixed_tree, orthanc) -> None:
    root, by_uid = mixed_tree
    orthanc.clear()
    report = send(_node(orthanc.dicom_port, orthanc.aet), [root], parallel=3)
    report.raise_for_failures()
    assert orthanc.instance_uids() == set(by_uid)
    for uid, path in list(by_uid.items())[:12]:
        assert _dataset(orthanc.instance_file(uid)) == _dataset(path)


def test_truncated_and_broken_files_fail_alone(tmp_path, dcmtk_storescp) -> None:
    good = [write_dataset(make_instance(seed=i), tmp_path / f"good{i}.dcm") for i in range(5)]
    raw = good[0].read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(raw[: len(raw) - 1000])
    no_meta_uid = tmp_path / "nometa.dcm"
    no_meta_uid.write_bytes(raw[:132] + b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01")
    scp = dcmtk_storescp("STORESCP")
    report = send(_node(scp.port, "STORESCP"), [tmp_path / "*.dcm"], parallel=1)
    failed = {Path(r.path).name: r.reason for r in report.failed}
    assert set(failed) == {"truncated.dcm", "nometa.dcm"}
    assert "truncated" in failed["truncated.dcm"]
    assert "lacks" in failed["nometa.dcm"]
    assert len(report.sent) == 5
    assert scp.received_sop_uids() == {pydicom.dcmread(p).SOPInstanceUID for p in good}
    with pytest.raises(SendFailedError, match="2 of 7 files failed") as info:
        report.raise_for_failures()
    assert "truncated.dcm" in str(info.value)
    report.raise_for_failures(max_failed=2)


def test_more_than_128_contexts_all_arrive(tmp_path, dcmtk_storescp) -> None:
    classes = sorted(uid for uid in _STORAGE_CLASSES.values() if uid.startswith("1.2.840.10008.5.1.4.1.1."))[
        :70
    ]
    expected = set()
    for n, sop_class in enumerate(classes):
        for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            ds = make_instance(
                sop_class_uid=sop_class, modality="OT", transfer_syntax=ts, pixel_bytes=256, seed=n
            )
            write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
            expected.add(ds.SOPInstanceUID)
    scp = dcmtk_storescp("STORESCP", promiscuous=True)
    report = send(_node(scp.port, "STORESCP"), tmp_path, parallel=1)
    report.raise_for_failures()
    assert report.associations == 2  # 140 contexts: two associations
    assert scp.received_sop_uids() == expected


def test_refused_sop_class_and_failure_status_are_reported(tmp_path) -> None:
    files = {}
    for n, sop_class in enumerate([CT, CT, MR, MR, CR]):
        ds = make_instance(sop_class_uid=sop_class, seed=n)
        files[ds.SOPInstanceUID] = (sop_class, write_dataset(ds, tmp_path / f"{n}.dcm"))
    with StoreSCP(refuse=[MR], fail_with={CR: int(Status.OUT_OF_RESOURCES)}) as scp:
        report = send(_node(scp.port, scp.aet), tmp_path, parallel=2)
    by_class = {r.sop_class_uid: r for r in report.failed}
    assert {r.sop_class_uid for r in report.failed} == {MR, CR}
    assert len(report.failed) == 3
    assert "refused the presentation context" in by_class[MR].reason and by_class[MR].status is None
    assert by_class[CR].status == 0xA700 and "out of resources" in by_class[CR].reason.lower()
    assert set(scp.received) == {uid for uid, (c, _) in files.items() if c == CT}
    assert {r.sop_instance_uid for r in report.sent} == set(scp.received)


def test_transcodes_when_the_peer_accepts_only_uncompressed(tmp_path) -> None:
    sources = [make_instance(sop_class_uid=CT, transfer_syntax=RLELossless, seed=n) for n in range(3)]
    for ds in sources:
        write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    with StoreSCP(uncompressed_only=[CT]) as scp:
        refused = send(_node(scp.port, scp.aet), tmp_path)
        assert len(refused.failed) == 3 and "transcoding" in refused.failed[0].reason
        report = send(_node(scp.port, scp.aet), tmp_path, transcode=True)
    report.raise_for_failures()
    assert {r.transcoded_to for r in report.sent} == {ExplicitVRLittleEndian}
    for ds in sources:
        got = scp.received[ds.SOPInstanceUID]
        assert got.transfer_syntax == ExplicitVRLittleEndian
        decoded = pydicom.dcmread(pydicom.filebase.DicomBytesIO(got.data), force=True)
        decoded.file_meta = pydicom.dataset.FileMetaDataset()
        decoded.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        assert np.array_equal(decoded.pixel_array, ds.pixel_array)


def test_lost_response_is_bounded_and_retried_on_a_fresh_association(tmp_path) -> None:
    datasets = [make_instance(seed=n) for n in range(6)]
    for ds in datasets:
        write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    lost = datasets[2].SOPInstanceUID
    with StoreSCP(hang_once=[lost], hang_seconds=4) as scp:
        report = send(_node(scp.port, scp.aet), tmp_path, parallel=1, response_timeout=1)
    report.raise_for_failures()
    assert [r.sop_instance_uid for r in report.retried] == [lost]
    assert report.retried[0].attempts == 2
    assert report.associations == 2
    assert set(scp.received) == {ds.SOPInstanceUID for ds in datasets}


@dataclass
class _AbortingSCP(StoreSCP):
    """Aborts the association, once, when it receives the C-STORE of an instance in ``abort_once``."""

    abort_once: frozenset[str] = frozenset()

    def _handle_store(self, event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in self.abort_once and uid not in self.attempts:
            self.attempts[uid] = 1
            event.assoc.abort()
            return 0xA700  # never sent: the association is gone
        return super()._handle_store(event)


def test_a_peer_abort_while_the_response_is_awaited_is_retried_on_a_fresh_association(tmp_path) -> None:
    """The sending thread reads the response itself; an A-ABORT instead goes to pynetdicom's state machine."""
    datasets = [make_instance(seed=n, pixel_bytes=4096) for n in range(8)]
    for ds in datasets:
        write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    aborted = datasets[3].SOPInstanceUID
    with _AbortingSCP(abort_once=frozenset({aborted})) as scp:
        report = send(_node(scp.port, scp.aet), tmp_path, parallel=1, response_timeout=10)
    report.raise_for_failures()
    assert [r.sop_instance_uid for r in report.retried] == [aborted]
    assert report.associations == 2
    assert {r.sop_instance_uid for r in report.sent} == {ds.SOPInstanceUID for ds in datasets}
    for ds in datasets:  # the same bytes arrived
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        raw = path.read_bytes()
        assert scp.received[ds.SOPInstanceUID].data == raw[144 + int.from_bytes(raw[140:144], "little") :]


def test_large_files_arrive_byte_for_byte(tmp_path) -> None:
    """Multi-megabyte data sets go out as many PDUs in scatter-gather writes the socket takes in parts."""
    datasets = [make_instance(seed=n, pixel_bytes=3 * 1024 * 1024 + 7) for n in range(3)]
    for ds in datasets:
        write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    with StoreSCP() as scp:
        report = send(_node(scp.port, scp.aet, max_pdu=16384), tmp_path, parallel=1)
    report.raise_for_failures()
    for ds in datasets:
        raw = (tmp_path / f"{ds.SOPInstanceUID}.dcm").read_bytes()
        assert scp.received[ds.SOPInstanceUID].data == raw[144 + int.from_bytes(raw[140:144], "little") :]


def test_repeated_large_sends_never_hang(tmp_path) -> None:
    base = make_instance(pixel_bytes=512)
    for n in range(1500):
        base.SOPInstanceUID = pydicom.uid.generate_uid()
        base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
        base.save_as(tmp_path / f"{n:05d}.dcm", enforce_file_format=True)
    with StoreSCP() as scp:
        for _ in range(3):
            report = send(_node(scp.port, scp.aet, dimse_timeout=10), tmp_path, parallel=4)
            report.raise_for_failures()
            assert len(report.sent) == 1500 and not report.retried
    assert len(scp.received) == 1500 and set(scp.attempts.values()) == {3}


def test_single_association_peer_with_parallel_sends_everything(tmp_path) -> None:
    for n in range(40):
        write_dataset(make_instance(seed=n, pixel_bytes=1024), tmp_path / f"{n}.dcm")
    with DcmtkStorescp("SERIAL", directory=tmp_path / "out") as scp:  # no --fork: one association at a time
        report = send(_node(scp.port, "SERIAL"), [str(tmp_path / "*.dcm")], parallel=3)
        report.raise_for_failures()
        assert len(scp.received_sop_uids()) == 40


def test_bad_paths_and_unreachable_node(tmp_path) -> None:
    with pytest.raises(InvalidRequestError, match="nothing to send"):
        send(_node(11112, "X"), [tmp_path / "missing"])
    write_dataset(make_instance(), tmp_path / "a.dcm")
    shutil.copy(tmp_path / "a.dcm", tmp_path / "b.dcm")
    from harness.ports import free_port

    with pytest.raises(NodeUnreachableError, match="connection refused"):
        send(_node(free_port(), "NOBODY"), tmp_path)
