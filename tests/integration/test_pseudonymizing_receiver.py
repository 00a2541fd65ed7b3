"""``airflow-dicom storescp --pseudonymize-key-file``: the receiver writes only pseudonymised instances.

dcmtk storescu sends identified instances (one flagged burned-in, one truncated); nothing identifying may
reach the data directory (layout, arrival records, temporary and quarantine directories included)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from harness.dcmtk import storescu
from harness.receiver_proc import ReceiverProcess

from airflow_dicom.deid.keys import PseudonymKey
from airflow_dicom.dimse.arrivals import study_arrivals
from airflow_dicom.testing.identified import patient, write_study

pytestmark = pytest.mark.integration

SECRET = b"receiver-key-0123456789abcdef0123"


def test_receiver_writes_only_pseudonymised(tmp_path: Path) -> None:
    study = write_study(tmp_path / "src", patient(21), series=2, instances=2, burned_in=1)
    key_file = tmp_path / "key"
    key_file.write_bytes(SECRET)
    data_dir = tmp_path / "data"
    receiver = ReceiverProcess(
        data_dir,
        "PSEUDO",
        extra_args=["--pseudonymize-key-file", str(key_file), "--profile-option", "patient-characteristics"],
    ).start()
    try:
        sent = storescu("127.0.0.1", receiver.port, "PSEUDO", [tmp_path / "src"], extra_args=["-nh"])
        responses = [line for line in sent.stderr.splitlines() if "Store Response" in line]
        assert len(responses) == len(study.sop_uids), sent.stderr
        assert sum("Success" in line for line in responses) == len(study.sop_uids) - 1, responses
    finally:
        receiver.stop()
    key = PseudonymKey(SECRET)
    kept = {u for u in study.sop_uids if u not in study.burned_in_sop_uids}
    arrivals = study_arrivals(data_dir, key.uid(study.study_uid))
    assert arrivals.sop_uids == {key.uid(u) for u in kept}
    stored = [p for p in data_dir.rglob("*.dcm")]
    assert len(stored) == len(kept)
    for path in stored:
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientAge == "054Y"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PatientID == key.pseudonym("patient", study.patient.patient_id)
    blob = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
    for secret in study.secrets():
        assert secret.encode() not in blob, secret
    assert "held back" in receiver.log() and study.patient.patient_id not in receiver.log()
