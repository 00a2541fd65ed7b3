"""Benchmark: sending to dcmtk ``storescp`` — ``airflow-dicom send`` vs dcmtk ``storescu`` in the same run.

Rows (whole commands, start-up included, best of three; the receiver's files are deleted between runs):

* 1,000 instances of ~8 KB and 200 instances of ~512 KB (Explicit VR Little Endian, CT Image Storage):
  ``airflow-dicom send DIR`` (default options) vs ``storescu`` given the file list (default proposal): the
  fastest way to run it. ``storescu +sd +r DIR`` scans the directory first and is slower, which made an
  earlier ratio look 2.5x better than it was.
  Goal (issue 11): within 2.5x of storescu for both.
* A faithful re-implementation of pacsanini's send, labelled as the **baseline**: ``dcmread`` of every
  file (pixel data decoded into memory), one association proposing uncompressed syntaxes only, plain
  pynetdicom ``AE`` (no TCP_NODELAY), ``send_c_store(dataset)``, statuses ignored. Run once (it is
  slow). Goal: ours at least 20x faster.

``storescp`` is dcmtk's (not pynetdicom's console script of the same name), started without ``--fork``,
with ``TCP_NODELAY=1`` in its environment (Debian's dcmtk honours it). Its max PDU is 16 KB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness.dcmtk import DCMTK_ENV, DcmtkStorescp, dcmtk_tool

from airflow_dicom.testing import make_instance

RUNS = 3
AET = "BENCHSCP"


def _corpus(directory: Path, count: int, pixel_bytes: int) -> Path:
    """``count`` instances with distinct UIDs (one pixel payload, re-saved with new UIDs)."""
    from pydicom.uid import generate_uid

    if directory.is_dir() and len(list(directory.iterdir())) == count:
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    ds = make_instance(pixel_bytes=pixel_bytes, seed=7)
    for n in range(count):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(directory / f"{n:05d}.dcm", enforce_file_format=True)
    return directory


def _files(directory: Path) -> list[str]:
    """The corpus as the file list ``storescu`` is given (its fastest invocation)."""
    return sorted(str(p) for p in directory.iterdir() if p.is_file())


def _timed(args: list[str], env: dict[str, str], scp: DcmtkStorescp, expected: int) -> float:
    scp.clear()
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    if not scp.wait_for_files(expected, timeout=30):
        raise RuntimeError(f"storescp received {len(scp.files())} of {expected} files")
    return elapsed


def _best(args: list[str], env: dict[str, str], scp: DcmtkStorescp, expected: int, runs: int = RUNS) -> float:
    return min(_timed(args, env, scp, expected) for _ in range(runs))


def rows(workdir: Path) -> list[dict]:
    """Measure and return the benchmark rows (see the module docstring)."""
    workdir = Path(workdir)
    small = _corpus(workdir / "send-small", 1000, 8 * 1024)
    large = _corpus(workdir / "send-large", 200, 512 * 1024)
    ours_cmd = str(Path(sys.executable).with_name("airflow-dicom"))
    storescu = dcmtk_tool("storescu")
    out: list[dict] = []
    with DcmtkStorescp(AET, directory=workdir / "send-received") as scp:
        node = ["--host", "127.0.0.1", "--port", str(scp.port), "--aet", AET]
        dcmtk_args = ["-aet", "STORESCU", "-aec", AET, "127.0.0.1", str(scp.port)]
        results = {}
        for label, directory, count, goal in (
            ("1,000 x 8 KB", small, 1000, 2.5),
            ("200 x 512 KB", large, 200, 2.5),
        ):
            ours = _best([ours_cmd, "send", str(directory), *node], dict(os.environ), scp, count)
            theirs = _best([storescu, *dcmtk_args, *_files(directory)], DCMTK_ENV, scp, count)
            results[label] = ours
            out.append(
                {
                    "name": f"send {label} to storescp",
                    "ours_s": round(ours, 3),
                    "dcmtk_s": round(theirs, 3),
                    "ratio": round(ours / theirs, 2),
                    "note": f"airflow-dicom send vs storescu; goal <= {goal}x",
                }
            )
        baseline_env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
        for label, directory, count in (("1,000 x 8 KB", small, 1000), ("200 x 512 KB", large, 200)):
            baseline = _best(
                [sys.executable, __file__, "--baseline", "127.0.0.1", str(scp.port), AET, str(directory)],
                baseline_env,
                scp,
                count,
                runs=1,
            )
            theirs = _best([storescu, *dcmtk_args, *_files(directory)], DCMTK_ENV, scp, count, runs=1)
            out.append(
                {
                    "name": f"send {label}: pacsanini-style baseline",
                    "ours_s": round(baseline, 3),
                    "dcmtk_s": round(theirs, 3),
                    "ratio": round(baseline / theirs, 2),
                    "note": f"baseline (one run) is {baseline / results[label]:.0f}x slower than "
                    "airflow-dicom send; goal >= 20x",
                }
            )
    return out


def pacsanini_style_send(host: str, port: int, aet: str, directory: str) -> None:
    """The baseline: what pacsanini's ``net.c_store`` send does (read fully, one association, no checks)."""
    from pydicom import dcmread
    from pynetdicom import AE
    from pynetdicom.presentation import StoragePresentationContexts

    ae = AE(ae_title="PACSANINI")
    ae.requested_contexts = StoragePresentationContexts[:128]  # uncompressed syntaxes only
    files = sorted(str(p) for p in Path(directory).rglob("*") if p.is_file())
    datasets = []
    assoc = ae.associate(host, port, ae_title=aet)
    if not assoc.is_established:
        raise SystemExit("association failed")
    for path in files:
        try:
            ds = dcmread(path)
            _ = ds.pixel_array  # pacsanini decodes every file
        except Exception:
            continue  # silently skipped, as pacsanini does
        assoc.send_c_store(ds)  # the status is never checked
        datasets.append(path)
    assoc.release()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--baseline":
        pacsanini_style_send(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        import json
        import tempfile

        print(
            json.dumps(rows(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())), indent=2)
        )
