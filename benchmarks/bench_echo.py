"""C-ECHO latency: ours vs dcmtk ``echoscu`` against the same Orthanc, in the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import CLI, DCMTK_ENV, best_of, row, run


def rows(workdir: Path) -> list[dict[str, Any]]:
    """Measure C-ECHO as a whole command and as 50 echoes on one association.

    :param workdir: scratch directory for this benchmark.
    """
    from harness.orthanc import OrthancServer
    from pynetdicom.sop_class import Verification

    from airflow_dicom.dimse.association import open_association
    from airflow_dicom.dimse.node import DicomNode

    with OrthancServer(aet="BENCH", workdir=workdir / "orthanc") as pacs:
        node_args = ["--host", pacs.host, "--port", str(pacs.dicom_port), "--aet", pacs.aet]
        ours_cmd = best_of(5, lambda: run([CLI, "echo", *node_args]))
        dcmtk_cmd = best_of(
            5,
            lambda: run(
                ["/usr/bin/echoscu", "-aec", pacs.aet, pacs.host, str(pacs.dicom_port)], env=DCMTK_ENV
            ),
        )

        node = DicomNode(host=pacs.host, port=pacs.dicom_port, called_ae_title=pacs.aet)

        def ours_50() -> None:
            with open_association(node, [Verification], purpose="benchmark") as assoc:
                for _ in range(50):
                    assert assoc.send_c_echo().Status == 0

        ours_repeat = best_of(3, ours_50)
        dcmtk_repeat = best_of(
            3,
            lambda: run(
                ["/usr/bin/echoscu", "--repeat", "50", "-aec", pacs.aet, pacs.host, str(pacs.dicom_port)],
                env=DCMTK_ENV,
            ),
        )
    return [
        row("C-ECHO, whole command (`airflow-dicom echo` vs `echoscu`)", ours_cmd, dcmtk_cmd),
        row(
            "50 C-ECHO on one association (ours in-process vs `echoscu --repeat 50` whole command)",
            ours_repeat,
            dcmtk_repeat,
        ),
    ]
