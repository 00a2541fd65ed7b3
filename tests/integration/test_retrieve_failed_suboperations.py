"""A C-GET whose sub-operations partly fail: the final response's identifier names the failed instances.

Pending responses and the C-STOREs of a C-GET are decoded by the codec (pynetdicom_ext.retrieval); a final
response carrying a data set (Failed SOP Instance UID List) takes pynetdicom's path. Both must give the
report what happened: which instances arrived, which failed and why the item is not complete.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from harness.hostile import make_hostile, write_hostile
from harness.retrieve_scp import BusyGetSCP
from harness.synth import make_instance, write_dataset
from pydicom.uid import generate_uid

from airflow_dicom.dimse import DicomNode
from airflow_dicom.dimse.receiver import QUARANTINE_DIR
from airflow_dicom.dimse.retrieve import FAILED, GET, RetrieveOptions, make_items, retrieve

pytestmark = pytest.mark.integration


def test_a_refused_instance_is_named_and_the_others_are_stored(tmp_path: Path) -> None:
    study = generate_uid()
    good = [make_instance(seed=n, study_uid=study, patient_id="P1") for n in range(3)]
    refused = make_hostile(study_uid=study, series_uid="1.2.3 4", patient_id="P1")  # not a UID: 0xC210
    (tmp_path / "in").mkdir()
    files = [write_dataset(ds, tmp_path / "in" / f"{n}.dcm") for n, ds in enumerate(good)]
    files.append(write_hostile(refused, tmp_path / "in" / "refused.dcm"))
    data = tmp_path / "data"
    with BusyGetSCP(files) as scp:
        node = DicomNode(host="127.0.0.1", port=scp.port, called_ae_title=scp.aet)
        options = RetrieveOptions(parallel=1, max_attempts=1)
        result = retrieve(node, make_items([study]), service=GET, data_dir=data, options=options)
    (attempt,) = result.final.values()
    assert attempt.status == FAILED
    assert (attempt.completed, attempt.failed, attempt.dimse_status) == (3, 1, 0xB000)
    assert attempt.failed_sop_uids == [refused.SOPInstanceUID]
    assert "1 of 4 sub-operations failed" in attempt.reason and refused.SOPInstanceUID in attempt.reason
    stored = {
        str(pydicom.dcmread(p).SOPInstanceUID)
        for p in data.rglob("*.dcm")
        if not p.relative_to(data).parts[0].startswith(".")
    }
    assert stored == {ds.SOPInstanceUID for ds in good}
    assert attempt.received == 3
    assert list((data / QUARANTINE_DIR).glob("*.dcm"))  # the refused bytes are kept, not lost
