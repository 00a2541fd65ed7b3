"""C-FIND with a modality filter against pynetdicom's qrscp (the demo PACS), which returns no
ModalitiesInStudy: the filter is matched with a SERIES-level query per study, never a contradictory error."""

from __future__ import annotations

import logging
from datetime import date

import pytest
from harness.qrscp import QrscpPacs
from harness.synth import Corpus

from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.query import FindStats, build_query, find_all, multi_values

pytestmark = pytest.mark.integration

WEEK = {"date_from": "2024-01-01", "date_to": "2024-01-07"}


def _node(pacs: QrscpPacs) -> DicomNode:
    return DicomNode("127.0.0.1", pacs.port, pacs.aet)


def test_modality_filter_on_a_node_without_modalities_in_study(
    qrscp: tuple[QrscpPacs, Corpus], caplog: pytest.LogCaptureFixture
) -> None:
    pacs, corpus = qrscp
    modality = corpus.studies[0].modalities[0]
    expected = {
        s.study_uid
        for s in corpus.studies_between(date(2024, 1, 1), date(2024, 1, 7))
        if modality in s.modalities
    }
    assert 0 < len(expected) < len(corpus.studies)  # the filter must really filter
    caplog.set_level(logging.INFO, logger="airflow_dicom")
    rows = find_all(_node(pacs), build_query("STUDY", modality=modality, **WEEK))
    assert {str(r.StudyInstanceUID) for r in rows} == expected
    for row in rows:  # what the SERIES queries learnt is in the result
        assert modality in multi_values(row.ModalitiesInStudy)
    assert "SERIES-level query (Modality) per study" in caplog.text
    assert "Success" not in caplog.text


def test_without_a_filter_unique_studies_from_per_instance_answers(
    qrscp: tuple[QrscpPacs, Corpus], caplog: pytest.LogCaptureFixture
) -> None:
    pacs, corpus = qrscp
    caplog.set_level(logging.INFO, logger="airflow_dicom")
    stats = FindStats()
    rows = find_all(_node(pacs), build_query("STUDY", **WEEK), stats=stats)
    assert {str(r.StudyInstanceUID) for r in rows} == corpus.study_uids
    assert stats.queries == 1  # no SERIES queries without a modality filter
    assert f"{len(corpus.study_uids)} unique STUDY results from {stats.matches} responses" in caplog.text
