"""Pure logic of the send path: file meta and structure checks, planning, manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.synth import make_instance, write_dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from airflow_dicom.dimse.errors import MalformedDicomError, NotDicomError
from airflow_dicom.dimse.send import (
    DicomFileInfo,
    check_structure,
    files_from_manifest,
    plan_associations,
    read_dataset_bytes,
    read_meta,
)


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, RLELossless, "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99"]
)
def test_meta_and_structure_checks(tmp_path: Path, ts: str) -> None:
    ds = make_instance(transfer_syntax=ts, pixel_bytes=2048)
    path = write_dataset(ds, tmp_path / "a.dcm")
    info = read_meta(path)
    assert (info.sop_instance_uid, info.transfer_syntax) == (ds.SOPInstanceUID, ts)
    data = read_dataset_bytes(info)
    assert len(data) == info.dataset_size
    raw = path.read_bytes()
    for cut in (2, 17, len(data) // 2):  # (deflated data may end with one padding byte)
        with pytest.raises(MalformedDicomError):
            check_structure(memoryview(raw)[info.dataset_offset : len(raw) - cut], ts)
    (tmp_path / "b.txt").write_bytes(b"hello" * 100)
    with pytest.raises(NotDicomError):
        read_meta(tmp_path / "b.txt")


def test_plan_splits_over_128_contexts_and_stripes(tmp_path: Path) -> None:
    infos = [
        DicomFileInfo(f"/f{n}", f"1.2.3.{n % 100}", f"9.{n}", ExplicitVRLittleEndian, 200, 1000)
        for n in range(300)
    ]
    jobs = plan_associations(infos, parallel=3, transcode=True)
    assert all(len(job.contexts) <= 128 for job in jobs)
    assert sorted(i.path for job in jobs for i in job.files) == sorted(i.path for i in infos)
    assert len(jobs) == 2 * 3  # 200 contexts with fallbacks -> 2 groups, each striped 3 ways


def test_manifest_shapes() -> None:
    manifest = {"studies": {"1.2": {"files": ["/a", "/b"], "instances": 2, "bytes": 10}}, "run_id": "x"}
    assert files_from_manifest(manifest) == ["/a", "/b"]
    assert files_from_manifest({"files": ["/c"]}) == ["/c"]
    with pytest.raises(ValueError, match="studies"):
        files_from_manifest({"other": 1})
