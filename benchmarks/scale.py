"""The scale set: a PACS (Orthanc) holding 2,000 studies / ~10,000 small instances over one year.

Issue 11 measures per-match and per-study costs here, where fixed costs decide everything. Generating
and uploading the set takes about a minute, so Orthanc's storage is kept in a cache directory
(``benchmarks/.cache/scale-<studies>`` by default, ``AIRFLOW_DICOM_SCALE_CACHE`` to move it) and reused
while its instance count matches the plan; delete the directory to rebuild.

Use::

    with scale_pacs() as (pacs, corpus):
        ...  # pacs: a running harness OrthancServer; corpus: the planned Corpus (UIDs, counts)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from benchmarks.common import ROOT

#: number of studies in the scale set (1,000 patients x 2 studies, ~5 instances each)
STUDIES = int(os.environ.get("AIRFLOW_DICOM_SCALE_STUDIES", "2000"))
#: the year the studies are spread over
YEAR = 2024


def plan(studies: int = STUDIES):  # noqa: ANN201 - returns airflow_dicom.testing.Corpus
    """The scale corpus for ``studies`` studies (deterministic: same UIDs on every machine).

    :param studies: how many studies (two per patient).
    """
    from pydicom.uid import ExplicitVRLittleEndian

    from airflow_dicom.testing import make_corpus

    return make_corpus(
        n_patients=max(1, studies // 2),
        studies_per_patient=2,
        series_per_study=(1, 3),
        instances_per_series=(1, 4),
        start=date(YEAR, 1, 1),
        days=366,
        seed=11_2000,
        pixel_bytes=1024,
        transfer_syntaxes=[ExplicitVRLittleEndian],
    )


def cache_dir(studies: int = STUDIES) -> Path:
    """Where the Orthanc storage of the scale set is kept.

    :param studies: how many studies the set has.
    """
    base = os.environ.get("AIRFLOW_DICOM_SCALE_CACHE")
    return Path(base) if base else ROOT / "benchmarks" / ".cache" / f"scale-{studies}"


@contextmanager
def scale_pacs(studies: int = STUDIES, aet: str = "PACS") -> Iterator[tuple[object, object]]:
    """Start an Orthanc holding the scale set (loading it once into the cache); yield ``(pacs, corpus)``.

    :param studies: how many studies.
    :param aet: the PACS's AE title.
    """
    from harness.orthanc import OrthancServer

    corpus = plan(studies)
    workdir = cache_dir(studies)
    marker = workdir / "loaded"
    expected = f"{len(corpus.studies)} {len(corpus.instances)}"
    if marker.exists() and marker.read_text().strip() != expected:
        shutil.rmtree(workdir)
    pacs = OrthancServer(aet=aet, workdir=workdir, startup_timeout=120.0)
    pacs.start()
    try:
        if not marker.exists():
            pacs.clear()
            files = workdir.parent / f"scale-{studies}-files"
            corpus.write(files)
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i: pacs.upload(corpus.paths[i.sop_uid].read_bytes()), corpus.instances))
            shutil.rmtree(files, ignore_errors=True)
            if pacs.count_instances() != len(corpus.instances):
                held, planned = pacs.count_instances(), len(corpus.instances)
                raise RuntimeError(f"scale set: Orthanc holds {held} instances, planned {planned}")
            marker.write_text(expected)
        yield pacs, corpus
    finally:
        pacs.stop()


if __name__ == "__main__":
    with scale_pacs() as (_pacs, _corpus):
        print(f"scale set: {len(_corpus.studies)} studies, {len(_corpus.instances)} instances")  # type: ignore[attr-defined]
