"""``airflow-dicom pseudonymize`` as a user runs it (subprocesses), its output checked by pydicom, dcmtk
(dcmdump, storescp), dicom3tools (dciodvfy) and Orthanc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from airflow_dicom.deid.keys import PseudonymKey
from airflow_dicom.testing.identified import patient, write_study

pytestmark = pytest.mark.integration

CLI = [str(Path(sys.executable).with_name("airflow-dicom"))]
SECRET = b"integration-key-0123456789abcdef"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*.dcm"))
        if ".arrivals" not in p.parts
    }


def _errors(path: Path) -> set[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return {line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def test_two_processes_same_output_and_valid_dicom(tmp_path: Path, key_file: Path) -> None:
    studies = [write_study(tmp_path / "in", patient(n), series=2, instances=2, seed=n) for n in range(2)]
    first = _run(
        "pseudonymize",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "a"),
        "--key-file",
        str(key_file),
        "--mapping",
        str(tmp_path / "audit" / "map.parquet"),
    )
    second = _run(
        "pseudonymize", str(tmp_path / "in"), "--out", str(tmp_path / "b"), "--key-file", str(key_file)
    )
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 8 and a == b  # same names, byte-identical content
    summary = json.loads(first.stdout)
    assert summary["written"] == 8 and summary["key_id"] == PseudonymKey(SECRET).fingerprint
    assert SECRET.decode() not in first.stdout + first.stderr
    other_key = tmp_path / "key2"
    other_key.write_bytes(b"a-different-key-0123456789abcdef")
    third = _run(
        "pseudonymize", str(tmp_path / "in"), "--out", str(tmp_path / "c"), "--key-file", str(other_key)
    )
    assert third.returncode == 0
    assert not set(_files(tmp_path / "c")) & set(a)  # different UIDs, so different paths

    blob = b"".join(a.values())
    for study in studies:
        for secret in study.secrets():
            assert secret.encode() not in blob, secret
    mapping = pd.read_parquet(tmp_path / "audit" / "map.parquet")
    assert len(mapping) == 4  # two patients x two series
    assert set(mapping["patient_id"]) == {s.patient.patient_id for s in studies}
    assert set(mapping["pseudo_study_uid"]) == {PseudonymKey(SECRET).uid(s.study_uid) for s in studies}
    assert set(mapping["key_id"]) == {summary["key_id"]}
    assert (tmp_path / "audit" / "map.parquet").stat().st_mode & 0o077 == 0

    original = studies[0].files[-1]
    output = next(p for p in (tmp_path / "a").rglob("*.dcm") if pydicom.dcmread(p).InstanceNumber == 2)
    dump = subprocess.run(["dcmdump", str(output)], capture_output=True, text=True, check=True).stdout
    assert "PatientIdentityRemoved" in dump and "2.25." in dump
    assert _errors(output) <= _errors(original)  # dciodvfy: no new errors


def test_relative_paths_and_a_start_without_the_network_stack(tmp_path: Path, key_file: Path) -> None:
    """Relative SRC/--out work as a shell user types them; the command imports neither pydicom nor
    pynetdicom (their import is most of a short run)."""
    study = write_study(tmp_path / "in", patient(1), series=1, instances=3, seed=1)
    probe = (
        "import sys\n"
        "from airflow_dicom.cli import main\n"
        "code = main(['pseudonymize', 'in', '--out', 'out', '--key-file', 'key'])\n"
        "loaded = sorted(m for m in ('pydicom', 'pynetdicom', 'pandas') if m in sys.modules)\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["written"] == 3
    assert "LOADED []" in result.stderr
    written = sorted(p for p in (tmp_path / "out").rglob("*.dcm") if ".arrivals" not in p.parts)
    assert len(written) == 3
    pseudo_study = PseudonymKey(SECRET).uid(study.study_uid)
    assert {pydicom.dcmread(p).StudyInstanceUID for p in written} == {pseudo_study}


def test_series_sent_separately_join_one_study_in_orthanc(tmp_path: Path, key_file: Path, orthanc) -> None:
    orthanc.clear()
    study = write_study(tmp_path / "in", patient(3), series=2, instances=3)
    by_series: dict[str, list[Path]] = {}
    for path in study.files:
        by_series.setdefault(
            str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID), []
        ).append(path)
    for n, files in enumerate(by_series.values()):  # "next month": another run, another process
        out = tmp_path / f"out{n}"
        done = _run(
            "pseudonymize",
            *map(str, files),
            "--out",
            str(out),
            "--key-file",
            str(key_file),
            "--layout",
            "patient",
        )
        assert done.returncode == 0, done.stderr
        sent = _run(
            "send", str(out), "--host", "127.0.0.1", "--port", str(orthanc.dicom_port), "--aet", orthanc.aet
        )
        assert sent.returncode == 0, sent.stderr
    key = PseudonymKey(SECRET)
    assert orthanc.study_uids() == {key.uid(study.study_uid)}
    assert orthanc.series_uids() == {key.uid(u) for u in study.series_uids}
    assert orthanc.instance_uids() == {key.uid(u) for u in study.sop_uids}
    assert orthanc.patient_ids() == {key.pseudonym("patient", study.patient.patient_id)}
    blob = b"".join(orthanc.request("GET", f"/instances/{i}/file") for i in orthanc.get_json("/instances"))
    for secret in study.secrets():
        assert secret.encode() not in blob, secret


def test_sent_to_dcmtk_storescp(tmp_path: Path, key_file: Path, dcmtk_storescp) -> None:
    study = write_study(tmp_path / "in", patient(4), series=1, instances=3, burned_in=1)
    done = _run(
        "pseudonymize", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--key-file", str(key_file)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["held_back"] == {"burned-in annotation": 1}
    scp = dcmtk_storescp("DEST")
    sent = _run(
        "send", str(tmp_path / "out"), "--host", "127.0.0.1", "--port", str(scp.port), "--aet", "DEST"
    )
    assert sent.returncode == 0, sent.stderr
    key = PseudonymKey(SECRET)
    assert scp.received_sop_uids() == {
        key.uid(u) for u in study.sop_uids if u not in study.burned_in_sop_uids
    }
    blob = b"".join(p.read_bytes() for p in scp.files())
    for secret in study.secrets():
        assert secret.encode() not in blob, secret


def test_cli_errors(tmp_path: Path, key_file: Path) -> None:
    write_study(tmp_path / "in", patient(5), series=1, instances=1)
    (tmp_path / "short").write_text("tiny")
    short = _run(
        "pseudonymize",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "o"),
        "--key-file",
        str(tmp_path / "short"),
    )
    assert short.returncode == 1 and "at least 16" in short.stderr
    bad_option = _run(
        "pseudonymize",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "o"),
        "--key-file",
        str(key_file),
        "--profile-option",
        "keep-everything",
    )
    assert bad_option.returncode == 2 and "unknown profile option" in bad_option.stderr
    (tmp_path / "in" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    broken = _run(
        "pseudonymize", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--key-file", str(key_file)
    )
    assert broken.returncode == 1 and json.loads(broken.stdout)["written"] == 1
    assert "broken.dcm" in json.loads(broken.stdout)["failed"][0]
