"""``send --transcode`` against real peers that refuse compressed syntaxes (dcmtk storescp, Orthanc).

What a user cares about: every instance is stored under its own SOP Instance UID (not a fresh one made by
the decoder), every other attribute as in the source, the pixels equal after decoding, and the per-file
account says what was converted from what to what.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from harness.orthanc import OrthancServer
from harness.synth import make_instance, write_dataset
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.send import send

pytestmark = pytest.mark.integration

CLI = [str(Path(sys.executable).with_name("airflow-dicom"))]
UNCOMPRESSED = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
#: every compressed syntax pydicom can both encode (to make the sources) and decode here
COMPRESSED = [RLELossless, JPEG2000Lossless, JPEGLSLossless]


def _sources(root: Path, per_syntax: int = 2) -> dict[str, Dataset]:
    """CT and MR instances in each compressed syntax plus deflated ones, written under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Dataset] = {}
    n = 0
    for syntax in [*COMPRESSED, DeflatedExplicitVRLittleEndian]:
        for k in range(per_syntax):
            sop_class = "1.2.840.10008.5.1.4.1.1.2" if k % 2 == 0 else "1.2.840.10008.5.1.4.1.1.4"
            ds = make_instance(sop_class_uid=sop_class, seed=n, patient_name="Müller^Jörg", pixel_bytes=4096)
            if syntax in COMPRESSED:
                # the harness makes the identity explicit: no new UID from the encoder either
                ds.compress(syntax, ds.pixel_array, generate_instance_uid=False)
            else:
                ds.file_meta.TransferSyntaxUID = syntax
            write_dataset(ds, root / f"{n:02d}.dcm")
            sources[str(ds.SOPInstanceUID)] = pydicom.dcmread(root / f"{n:02d}.dcm")
            n += 1
    return sources


def _assert_same_instance(stored: Dataset, source: Dataset) -> None:
    """Same identity and attributes; pixel data equal once decoded; stored uncompressed."""
    assert stored.file_meta.TransferSyntaxUID in UNCOMPRESSED
    assert stored.SOPInstanceUID == source.SOPInstanceUID
    assert stored.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    for element in source:
        if element.keyword in ("PixelData",):
            continue
        assert element.tag in stored, element.keyword
        assert stored[element.tag].value == element.value, element.keyword
    assert np.array_equal(stored.pixel_array, source.pixel_array)


def test_transcoded_send_to_storescp_keeps_every_instance_identity(tmp_path: Path, dcmtk_storescp) -> None:
    sources = _sources(tmp_path / "in")
    scp = dcmtk_storescp("PLAIN", accept=(), bit_preserving=True)  # storescp's default: uncompressed only
    node = DicomNode("127.0.0.1", scp.port, "PLAIN")

    refused = send(node, tmp_path / "in")
    # compressed and deflated data sets are refused as they are
    compressed = {uid for uid, ds in sources.items() if ds.file_meta.TransferSyntaxUID not in UNCOMPRESSED}
    assert compressed == set(sources)
    assert {r.sop_instance_uid for r in refused.failed} == compressed
    assert all("transcoding" in r.reason for r in refused.failed)
    scp.clear()

    report = send(node, tmp_path / "in", transcode=True)
    report.raise_for_failures()
    assert {r.sop_instance_uid for r in report.sent} == set(sources)
    assert {r.sop_instance_uid for r in report.transcoded} == compressed
    summary = report.summary()
    assert summary["transcoded"] == len(report.transcoded)
    by_uid = {f["sop_instance_uid"]: f for f in summary["transcoded_files"]}
    for uid in compressed:
        assert by_uid[uid]["from"] == sources[uid].file_meta.TransferSyntaxUID
        assert by_uid[uid]["to"] in UNCOMPRESSED
    stored = scp.received_datasets()
    assert set(stored) == set(sources)  # the UIDs dcmtk wrote are the sources', nothing else
    for uid, source in sources.items():
        _assert_same_instance(stored[uid], source)


@pytest.fixture(scope="module")
def orthanc_uncompressed() -> OrthancServer:
    """An Orthanc that accepts only Implicit/Explicit VR Little Endian (RLE, JPEG and deflated refused)."""
    with OrthancServer(
        aet="PLAINPACS",
        extra_config={"AcceptedTransferSyntaxes": list(UNCOMPRESSED), "RleTransferSyntaxAccepted": False},
    ) as server:
        yield server


def test_transcoded_send_to_orthanc_through_the_cli(tmp_path: Path, orthanc_uncompressed) -> None:
    sources = _sources(tmp_path / "in")
    pacs = orthanc_uncompressed
    node = ["--host", "127.0.0.1", "--port", str(pacs.dicom_port), "--aet", pacs.aet]
    refused = subprocess.run(
        [*CLI, "send", str(tmp_path / "in"), *node], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and "transcoding" in refused.stderr
    assert pacs.instance_uids() == set()

    done = subprocess.run(
        [*CLI, "send", str(tmp_path / "in"), *node, "--transcode"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(sources)} sent" in done.stdout and "0 failed" in done.stdout
    for name in (s.name for s in (*COMPRESSED, DeflatedExplicitVRLittleEndian)):
        assert f"{name} -> " in done.stdout
    assert pacs.instance_uids() == set(sources)
    for uid, source in sources.items():
        stored = pydicom.dcmread(pydicom.filebase.DicomBytesIO(pacs.instance_file(uid)))
        _assert_same_instance(stored, source)

    as_json = subprocess.run(
        [*CLI, "send", str(tmp_path / "in"), *node, "--transcode", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = json.loads(as_json.stdout)
    assert summary["sent"] == len(sources) and summary["transcoded"] == len(sources)
