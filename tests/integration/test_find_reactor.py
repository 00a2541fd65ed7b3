"""Regression: pynetdicom's reactor must not steal C-FIND responses on a busy machine.

With pynetdicom's own reactor 7 to 9 of 2,000 C-FINDs on one association lost a match here while two
CPU-bound processes ran (pynetdicom logged "Received unexpected C-FIND service message" and dropped the
response); our requestor's reactor never takes a response (``pynetdicom_ext.requestor``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from harness.orthanc import OrthancServer
from harness.synth import dataset_bytes, make_corpus

from airflow_dicom.dimse.association import open_association
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.query import FindSession, FindStats, build_query

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Two CPU-bound child processes for the duration of the test (stopped by their PIDs)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(2)
    ]
    yield
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def test_no_match_is_lost_over_many_queries_on_one_association(
    orthanc: OrthancServer, cpu_load: None
) -> None:
    orthanc.clear()
    corpus = make_corpus(
        n_patients=6, studies_per_patient=1, series_per_study=1, instances_per_series=1, seed=7
    )
    for ds in corpus.datasets():
        orthanc.upload(dataset_bytes(ds))
    node = DicomNode("127.0.0.1", orthanc.dicom_port, orthanc.aet)
    query = build_query("STUDY", date_from="2024-01-01", date_to="2024-12-31")
    incomplete = 0
    with open_association(node, ["1.2.840.10008.5.1.4.1.2.2.1"], purpose="C-FIND") as assoc:
        session = FindSession(node, assoc, query, None, FindStats())
        for _ in range(2000):
            answer = session.ask("STUDY", {"StudyInstanceUID": "", "StudyDate": "20240101-20241231"}, "year")
            if {str(r.StudyInstanceUID) for r in answer.rows} != corpus.study_uids:
                incomplete += 1
    orthanc.clear()
    assert incomplete == 0
