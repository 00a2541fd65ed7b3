"""Fixtures shared by the integration tests of C-FIND."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness.qrscp import QrscpPacs
from harness.synth import Corpus, make_corpus
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian


@pytest.fixture(scope="module")
def qrscp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[QrscpPacs, Corpus]]:
    """qrscp holding a week of 12 studies (uncompressed)."""
    work = tmp_path_factory.mktemp("qrscp")
    corpus = make_corpus(
        n_patients=6,
        studies_per_patient=2,
        series_per_study=(1, 2),
        instances_per_series=(1, 3),
        days=7,
        seed=12,
        transfer_syntaxes=(ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    )
    corpus.write(work / "source")
    with QrscpPacs(work / "pacs") as pacs:
        pacs.seed(work / "source")
        yield pacs, corpus
