"""TLS benchmark: DICOM over TLS, ours vs dcmtk, and what TLS costs each, in the same run.

Rows (whole commands, start-up included, best of three; receivers already listening; mutual TLS with
RSA-2048 certificates made by ``openssl`` for the run; TLS 1.2/1.3 as negotiated):

* send 1,000 x 8 KB and 200 x 512 KB to dcmtk ``storescp +tls``: ``airflow-dicom send --tls-*`` vs
  ``storescu +tls`` (given the file list). Goal: within 2.5x.
* receive the same with ``storescu +tls``: into our receiver (TLS) vs into ``storescp +tls``. Goal: 2.5x.
* for each of the four, the TLS cost: (ours over TLS / ours plain) vs (dcmtk over TLS / dcmtk plain), both
  measured here. Goal: ours no more than dcmtk's plus 50% (ratio of the two overheads <= 1.5).

Run alone with ``python -m benchmarks.bench_tls`` (prints the rows).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.certs import TestPki, make_pki
from harness.dcmtk import DCMTK_ENV, DcmtkStorescp, dcmtk_tool

from airflow_dicom.dimse.receiver import Receiver
from airflow_dicom.dimse.tls import ServerTls
from benchmarks.bench_send import _corpus, _files

RUNS = 3
AET = "BENCHTLS"
CLI = str(Path(sys.executable).with_name("airflow-dicom"))
SIZES = (("1,000 x 8 KB", 1000, 8 * 1024), ("200 x 512 KB", 200, 512 * 1024))


def _best(args: list[str], env: dict[str, str], before: object = None) -> float:
    best = float("inf")
    for _ in range(RUNS):
        if callable(before):
            before()
        started = time.perf_counter()
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr[-2000:]}")
        best = min(best, elapsed)
    return best


def _storescu(pki: TestPki | None, port: int, files: list[str]) -> list[str]:
    tls = ["+tls", pki.client.key, pki.client.cert, "-pw", "+cf", pki.ca] if pki else []
    return [dcmtk_tool("storescu"), *tls, "-aet", "STORESCU", "-aec", AET, "localhost", str(port), *files]


def _ours_send(pki: TestPki | None, port: int, directory: Path) -> list[str]:
    tls = ["--tls-ca", pki.ca, "--tls-cert", pki.client.cert, "--tls-key", pki.client.key] if pki else []
    return [CLI, "send", str(directory), "--host", "localhost", "--port", str(port), "--aet", AET, *tls]


def _clear(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def _row(name: str, ours: float, dcmtk: float, goal: float, note: str) -> dict:
    return {
        "name": name,
        "ours_s": round(ours, 3),
        "dcmtk_s": round(dcmtk, 3),
        "ratio": round(ours / dcmtk, 2),
        "goal": goal,
        "note": note,
    }


def _overhead_row(name: str, t: dict[str, float]) -> dict:
    ours, theirs = t["ours_tls"] / t["ours_plain"], t["dcmtk_tls"] / t["dcmtk_plain"]
    return {
        "name": f"{name}: TLS cost",
        "ours_s": round(t["ours_tls"] - t["ours_plain"], 3),
        "dcmtk_s": round(t["dcmtk_tls"] - t["dcmtk_plain"], 3),
        "ratio": round(ours / theirs, 2),
        "goal": 1.5,
        "note": f"TLS/plain: ours {ours:.2f}x (plain {t['ours_plain']:.3f} s), dcmtk {theirs:.2f}x "
        f"(plain {t['dcmtk_plain']:.3f} s); ratio = ours' overhead / dcmtk's, goal <= 1.5",
    }


def _send_rows(workdir: Path, pki: TestPki, corpora: dict[str, tuple[Path, list[str]]]) -> list[dict]:
    out = []
    tls_args = ["+tls", pki.server.key, pki.server.cert, "-pw", "+cf", pki.ca, "-rc"]
    with (
        DcmtkStorescp(AET, directory=workdir / "scp-tls", extra_args=tls_args, accept=()) as tls_scp,
        DcmtkStorescp(AET, directory=workdir / "scp-plain", accept=()) as plain_scp,
    ):
        for label, (directory, files) in corpora.items():
            t = {
                "ours_tls": _best(_ours_send(pki, tls_scp.port, directory), dict(os.environ), tls_scp.clear),
                "dcmtk_tls": _best(_storescu(pki, tls_scp.port, files), DCMTK_ENV, tls_scp.clear),
                "ours_plain": _best(
                    _ours_send(None, plain_scp.port, directory), dict(os.environ), plain_scp.clear
                ),
                "dcmtk_plain": _best(_storescu(None, plain_scp.port, files), DCMTK_ENV, plain_scp.clear),
            }
            out.append(
                _row(
                    f"send {label} over TLS to storescp +tls",
                    t["ours_tls"],
                    t["dcmtk_tls"],
                    2.5,
                    "airflow-dicom send --tls-* vs storescu +tls (mutual TLS); goal <= 2.5x",
                )
            )
            out.append(_overhead_row(f"send {label}", t))
    return out


def _receive_rows(workdir: Path, pki: TestPki, corpora: dict[str, tuple[Path, list[str]]]) -> list[dict]:
    out = []
    logging.getLogger("airflow_dicom").setLevel(logging.WARNING)
    server_tls = ServerTls(pki.server.cert, pki.server.key, ca_file=pki.ca, require_client_cert=True)
    tls_args = ["+tls", pki.server.key, pki.server.cert, "-pw", "+cf", pki.ca, "-rc"]
    ours_tls_dir, ours_plain_dir = workdir / "ours-tls", workdir / "ours-plain"
    with (
        Receiver(
            ours_tls_dir, ae_title=AET, host="127.0.0.1", port=0, tls=server_tls, layout="flat"
        ) as rx_tls,
        Receiver(ours_plain_dir, ae_title=AET, host="127.0.0.1", port=0, layout="flat") as rx_plain,
        DcmtkStorescp(AET, directory=workdir / "rscp-tls", extra_args=tls_args, accept=()) as tls_scp,
        DcmtkStorescp(AET, directory=workdir / "rscp-plain", accept=()) as plain_scp,
    ):
        for label, (_, files) in corpora.items():
            t = {
                "ours_tls": _best(_storescu(pki, rx_tls.port, files), DCMTK_ENV),
                "dcmtk_tls": _best(_storescu(pki, tls_scp.port, files), DCMTK_ENV, tls_scp.clear),
                "ours_plain": _best(_storescu(None, rx_plain.port, files), DCMTK_ENV),
                "dcmtk_plain": _best(_storescu(None, plain_scp.port, files), DCMTK_ENV, plain_scp.clear),
            }
            out.append(
                _row(
                    f"receive {label} over TLS from storescu +tls",
                    t["ours_tls"],
                    t["dcmtk_tls"],
                    2.5,
                    "our receiver (TLS, mutual) vs storescp +tls; goal <= 2.5x",
                )
            )
            out.append(_overhead_row(f"receive {label}", t))
    return out


def rows(workdir: Path) -> list[dict]:
    """Measure and return the benchmark rows (see the module docstring).

    :param workdir: a scratch directory.
    """
    workdir = Path(workdir)
    pki = make_pki(workdir / "pki")
    corpora = {}
    for label, count, pixel_bytes in SIZES:
        directory = workdir / f"tls-{count}x{pixel_bytes}"
        corpora[label] = (directory, _files(_corpus(directory, count, pixel_bytes)))
    return _send_rows(workdir, pki, corpora) + _receive_rows(workdir, pki, corpora)


if __name__ == "__main__":
    import json

    print(json.dumps(rows(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())), indent=2))
