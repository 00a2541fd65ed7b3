"""DicomStoreOperator in a real DAG run (dag.test) against dcmtk storescp."""

from __future__ import annotations

from pathlib import Path

import pynetdicom
import pytest
from harness.synth import make_instance, write_dataset

from airflow_dicom.dimse import pynetdicom_ext

pytestmark = [pytest.mark.airflow, pytest.mark.integration]


def _xcom(dag_run, task_id: str):  # type: ignore[no-untyped-def]
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key="return_value")
            .one()
        )
        return XComModel.deserialize_value(row)


def _tree(root: Path, n: int) -> dict[str, Path]:
    files = {}
    for i in range(n):
        ds = make_instance(seed=i, pixel_bytes=1024)
        files[ds.SOPInstanceUID] = write_dataset(ds, root / f"sub{i % 2}" / f"{i}.dcm")
    return files


def test_push_and_forward_manifest(tmp_path, dcmtk_storescp, dicom_connection, load_dag) -> None:
    (tmp_path / "src" / "sub0").mkdir(parents=True)
    (tmp_path / "src" / "sub1").mkdir(parents=True)
    files = _tree(tmp_path / "src", 6)
    (tmp_path / "src" / "notes.txt").write_text("not dicom")
    scp = dcmtk_storescp("DEST", fork=True)
    dicom_connection("send_dest", scp.port, "DEST")
    second = dcmtk_storescp("SECOND")
    dicom_connection("forward_dest", second.port, "SECOND")
    forwarded = [str(p) for p in list(files.values())[:2]]
    dag = load_dag("dicom_send_test")
    run = dag.test(run_conf={"source": str(tmp_path / "src"), "manifest_files": forwarded})
    assert run.state == "success"
    push = _xcom(run, "push")
    assert (push["files"], push["sent"], push["failed"], push["skipped"]) == (7, 6, 0, 1)
    assert push["skipped_files"][0]["path"].endswith("notes.txt")
    assert push["bytes"] > 6 * 1024
    forward = _xcom(run, "forward")
    assert (forward["files"], forward["sent"]) == (2, 2)
    assert scp.received_sop_uids() == set(files)
    assert second.received_sop_uids() == {uid for uid, p in files.items() if str(p) in forwarded}


def test_failed_file_fails_the_task_with_the_list(
    tmp_path, dcmtk_storescp, dicom_connection, load_dag
) -> None:
    (tmp_path / "src" / "sub0").mkdir(parents=True)
    (tmp_path / "src" / "sub1").mkdir(parents=True)
    files = _tree(tmp_path / "src", 4)
    raw = next(iter(files.values())).read_bytes()
    (tmp_path / "src" / "cut.dcm").write_bytes(raw[:-500])
    scp = dcmtk_storescp("DEST")
    dicom_connection("send_dest", scp.port, "DEST")
    run = load_dag("dicom_send_test").test(run_conf={"source": str(tmp_path / "src")})
    assert run.state == "failed"
    push = _xcom(run, "push")
    assert (push["sent"], push["failed"]) == (4, 1)
    assert push["failures"][0]["path"].endswith("cut.dcm") and "truncated" in push["failures"][0]["reason"]
    assert scp.received_sop_uids() == set(files)


def test_operator_runs_with_an_unsupported_pynetdicom(
    tmp_path, dcmtk_storescp, dicom_connection, load_dag, monkeypatch
) -> None:
    """Outside the supported pynetdicom range the operators still work, on stock pynetdicom."""
    (tmp_path / "src" / "sub0").mkdir(parents=True)
    (tmp_path / "src" / "sub1").mkdir(parents=True)
    files = _tree(tmp_path / "src", 4)
    scp = dcmtk_storescp("DEST")
    dicom_connection("send_dest", scp.port, "DEST")
    second = dcmtk_storescp("SECOND")
    dicom_connection("forward_dest", second.port, "SECOND")
    forwarded = [str(p) for p in list(files.values())[:2]]
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    assert not pynetdicom_ext.recheck_version()
    try:
        run = load_dag("dicom_send_test").test(
            run_conf={"source": str(tmp_path / "src"), "manifest_files": forwarded}
        )
    finally:
        monkeypatch.undo()
        assert pynetdicom_ext.recheck_version()
    assert run.state == "success"
    assert (_xcom(run, "push")["sent"], _xcom(run, "push")["failed"]) == (4, 0)
    assert scp.received_sop_uids() == set(files)
    assert second.received_sop_uids() == {uid for uid, p in files.items() if str(p) in forwarded}
