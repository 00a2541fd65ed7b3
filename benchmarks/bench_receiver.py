"""Receiver benchmark: dcmtk ``storescu`` into our receiver vs into dcmtk's ``storescp``, same run.

Rows (best of three whole ``storescu`` runs, association set-up included; receivers already listening):

* 1,000 small instances (8 KB pixel data) and 200 x 512 KB instances: ours vs dcmtk ``storescp``.
* 200 x 512 KB: ours vs the pacsanini baseline (below), to check "at least 10x faster on large
  instances".
* 100 associations of one small instance each: dcmtk ``storescu`` run once per file (its default proposal,
  128 presentation contexts, as a modality sends), into our receiver vs into dcmtk's ``storescp``: the
  per-association cost (negotiation, threads, set-up), ``storescu``'s own start-up on both sides.

The **pacsanini baseline** is a faithful small re-implementation of pacsanini's storescp handler, kept
here only as a yardstick: a plain pynetdicom ``AE`` accepting the storage SOP classes with the default
(uncompressed) transfer syntaxes, whose C-STORE handler decodes the dataset (``event.dataset``),
attaches ``event.file_meta`` and re-encodes it with ``save_as`` under
``<PatientID>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm``. Like pacsanini it sets no TCP_NODELAY; a second
variant with TCP_NODELAY isolates the cost of decoding and re-encoding.

Run alone with ``python -m benchmarks.bench_receiver`` (prints the rows).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from harness.dcmtk import DCMTK_ENV, DcmtkStorescp, dcmtk_tool, storescu
from harness.ports import free_port
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, evt

from airflow_dicom.dimse.pynetdicom_ext import make_nodelay_ae
from airflow_dicom.dimse.receiver import Receiver
from airflow_dicom.testing import make_corpus

RUNS = 3
SMALL = (1000, 8 * 1024)
LARGE = (200, 512 * 1024)
#: associations (one storescu run, one small instance each) in the per-association row
ASSOCIATIONS = 100


def _corpus(workdir: Path, count: int, pixel_bytes: int) -> Path:
    out = workdir / f"corpus-{count}x{pixel_bytes}"
    if out.is_dir() and len(list(out.iterdir())) == count:
        return out
    shutil.rmtree(out, ignore_errors=True)
    per_patient = 50
    corpus = make_corpus(
        n_patients=count // per_patient,
        studies_per_patient=1,
        series_per_study=1,
        instances_per_series=per_patient,
        pixel_bytes=pixel_bytes,
        transfer_syntaxes=[ExplicitVRLittleEndian],
        modalities=("CT",),
        seed=pixel_bytes,
    )
    corpus.write(out)
    return out


def _count_files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*.dcm") if p.is_file()) + sum(
        1 for p in directory.glob("CT.*") if p.is_file()
    )


def _best_of(
    runs: int, send: Callable[[], subprocess.CompletedProcess[str]], reset: Callable[[], None]
) -> float:
    best = float("inf")
    for _ in range(runs):
        reset()
        started = time.perf_counter()
        proc = send()
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        best = min(best, elapsed)
    return best


def _clear(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)


class PacsaniniBaseline(AbstractContextManager):
    """pacsanini's storescp handler, re-implemented as the baseline (decode, re-encode, uncompressed)."""

    def __init__(self, data_dir: Path, port: int, nodelay: bool = False) -> None:
        self.data_dir = data_dir
        self.port = port
        self.nodelay = nodelay
        self._server: Any = None

    def _handle(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        folder = self.data_dir / str(ds.PatientID) / ds.StudyInstanceUID / ds.SeriesInstanceUID
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        return 0x0000

    def __enter__(self) -> PacsaniniBaseline:
        ae = make_nodelay_ae("PACSANINI") if self.nodelay else AE(ae_title="PACSANINI")
        ae.supported_contexts = StoragePresentationContexts
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._handle)]
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()


def _measure_ours(files: Path, data: Path, count: int) -> float:
    port = free_port()
    with Receiver(data, ae_title="OURS", host="127.0.0.1", port=port, layout="patient"):
        best = _best_of(
            RUNS, lambda: storescu("127.0.0.1", port, "OURS", [files], timeout=600), lambda: _clear(data)
        )
    if _count_files(data) != count:
        raise RuntimeError(f"our receiver stored {_count_files(data)} of {count}")
    return best


def _measure_dcmtk(files: Path, data: Path, count: int) -> float:
    data.mkdir(parents=True, exist_ok=True)
    with DcmtkStorescp("DCMTK", data) as scp:
        best = _best_of(
            RUNS,
            lambda: storescu("127.0.0.1", scp.port, "DCMTK", [files], timeout=600),
            lambda: scp.clear(),
        )
        stored = len(scp.files())
    if stored != count:
        raise RuntimeError(f"dcmtk storescp stored {stored} of {count}")
    return best


def _measure_pacsanini(files: Path, data: Path, count: int, nodelay: bool) -> float:
    port = free_port()
    with PacsaniniBaseline(data, port, nodelay=nodelay):
        best = _best_of(
            RUNS, lambda: storescu("127.0.0.1", port, "PACSANINI", [files], timeout=900), lambda: _clear(data)
        )
    if _count_files(data) != count:
        raise RuntimeError(f"pacsanini baseline stored {_count_files(data)} of {count}")
    return best


def _one_instance_per_association(port: int, aet: str, files: list[Path]) -> subprocess.CompletedProcess[str]:
    """dcmtk ``storescu`` once per file (default proposal): one association per instance."""
    proc: subprocess.CompletedProcess[str] | None = None
    for path in files:
        proc = subprocess.run(
            [dcmtk_tool("storescu"), "-aet", "STORESCU", "-aec", aet, "127.0.0.1", str(port), str(path)],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            return proc
    assert proc is not None
    return proc


def _associations_row(corpus: Path, workdir: Path) -> dict:
    """Our receiver vs dcmtk storescp, :data:`ASSOCIATIONS` associations of one small instance each."""
    files = sorted(p for p in corpus.rglob("*") if p.is_file())[:ASSOCIATIONS]
    data = workdir / "ours-associations"
    port = free_port()
    with Receiver(data, ae_title="OURS", host="127.0.0.1", port=port, layout="patient"):
        ours = _best_of(
            RUNS, lambda: _one_instance_per_association(port, "OURS", files), lambda: _clear(data)
        )
    if _count_files(data) != len(files):
        raise RuntimeError(f"our receiver stored {_count_files(data)} of {len(files)}")
    dcmtk_data = workdir / "dcmtk-associations"
    dcmtk_data.mkdir(parents=True, exist_ok=True)
    with DcmtkStorescp("DCMTK", dcmtk_data) as scp:
        dcmtk = _best_of(
            RUNS, lambda: _one_instance_per_association(scp.port, "DCMTK", files), lambda: scp.clear()
        )
        stored = len(scp.files())
    if stored != len(files):
        raise RuntimeError(f"dcmtk storescp stored {stored} of {len(files)}")
    return {
        "name": f"storescp: {len(files)} associations, one small instance each",
        "ours_s": round(ours, 3),
        "dcmtk_s": round(dcmtk, 3),
        "ratio": round(ours / dcmtk, 2),
        "goal": 1.3,
        "note": "storescu once per file (default proposal), ours vs dcmtk storescp, best of 3",
    }


def rows(workdir: Path) -> list[dict]:
    """Measure and return the benchmark rows (see the module docstring).

    :param workdir: scratch directory (corpora are cached there between calls).
    """
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    workdir = Path(workdir)
    out: list[dict] = []
    for label, (count, pixel_bytes) in (("small", SMALL), ("512 KB", LARGE)):
        files = _corpus(workdir, count, pixel_bytes)
        ours = _measure_ours(files, workdir / "ours", count)
        dcmtk = _measure_dcmtk(files, workdir / "dcmtk", count)
        out.append(
            {
                "name": f"storescp: storescu {count} x {label} instances",
                "ours_s": round(ours, 3),
                "dcmtk_s": round(dcmtk, 3),
                "ratio": round(ours / dcmtk, 2),
                "note": "dcmtk storescu into our receiver vs into dcmtk storescp, best of 3",
            }
        )
        if (count, pixel_bytes) == LARGE:
            for nodelay in (False, True):
                baseline = _measure_pacsanini(files, workdir / "pacsanini", count, nodelay)
                out.append(
                    {
                        "name": f"storescp vs pacsanini baseline{' +NODELAY' if nodelay else ''}: "
                        f"{count} x {label}",
                        "ours_s": round(ours, 3),
                        "dcmtk_s": round(baseline, 3),
                        "ratio": round(ours / baseline, 3),
                        "note": f"'dcmtk_s' is the pacsanini re-implementation here; ours is "
                        f"{baseline / ours:.1f}x faster",
                    }
                )
    out.append(_associations_row(_corpus(workdir, *SMALL), workdir))
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
        for row in rows(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp)):
            print(row)
