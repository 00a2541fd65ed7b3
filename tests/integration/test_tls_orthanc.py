"""DICOM TLS against Orthanc 1.10.1 (``DicomTlsEnabled``, mutual TLS): echo, find, move, get, send.

The TLS Orthanc holds the same corpus as the plain ``loaded_orthanc`` and truncates C-FIND like
``orthanc_limited``: every result over TLS is compared with the same call over plain DICOM. C-MOVE goes to
our embedded receiver serving TLS; Orthanc delivers over TLS because the destination is registered with
``"UseDicomTls": true``.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from harness.disk import sop_uids_on_disk
from harness.orthanc import OrthancServer
from harness.ports import free_port
from harness.synth import make_instance, write_dataset

from airflow_dicom.dimse.echo import echo
from airflow_dicom.dimse.errors import TlsError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.query import FindStats, build_query, find_all
from airflow_dicom.dimse.retrieve import GET, MOVE, MoveDestination, make_items, retrieve
from airflow_dicom.dimse.send import send
from airflow_dicom.dimse.tls import ServerTls

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("airflow-dicom"))
YEAR = {"date_from": "2024-01-01", "date_to": "2024-12-31"}


@pytest.fixture(scope="module")
def tls_pacs(_orthanc_pool, pki, corpus) -> OrthancServer:
    """Orthanc speaking only DICOM TLS, requiring client certificates, LimitFindResults 5, holding corpus."""
    server = OrthancServer(
        aet="TLSPACS",
        limit_find_results=5,
        limit_find_instances=5,
        extra_config={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": pki.server.cert,
            "DicomTlsPrivateKey": pki.server.key,
            "DicomTlsTrustedCertificates": pki.ca,
            "DicomTlsRemoteCertificateRequired": True,
        },
    ).start()
    _orthanc_pool.append(server)
    server.upload_files(corpus.paths[i.sop_uid] for i in corpus.instances)
    return server


def _tls_node(server: OrthancServer, pki, **changes: object) -> DicomNode:
    node = DicomNode(
        "localhost",
        server.dicom_port,
        server.aet,
        tls=True,
        tls_ca_file=pki.ca,
        tls_cert_file=pki.client.cert,
        tls_key=pki.client.key,
    )
    return node.with_changes(**changes) if changes else node


def test_echo_over_tls_and_without_our_certificate(tls_pacs, pki) -> None:
    assert echo(_tls_node(tls_pacs, pki)).round_trip >= 0
    with pytest.raises(TlsError, match="requires a client certificate") as info:
        echo(_tls_node(tls_pacs, pki, tls_cert_file=None, tls_key=None))
    assert f"TLSPACS@localhost:{tls_pacs.dicom_port}" in str(info.value)


@pytest.mark.parametrize("level", ["STUDY", "IMAGE"])
def test_find_a_year_over_tls_full_recall_same_as_plain(tls_pacs, loaded_orthanc, pki, level) -> None:
    plain_pacs, corpus = loaded_orthanc
    query = build_query(level, return_keys=["PatientID", "StudyDate", "Modality"], **YEAR)
    stats = FindStats()
    over_tls = find_all(_tls_node(tls_pacs, pki), query, stats=stats)
    plain = find_all(DicomNode("127.0.0.1", plain_pacs.dicom_port, plain_pacs.aet), query)
    key = "StudyInstanceUID" if level == "STUDY" else "SOPInstanceUID"
    truth = corpus.study_uids if level == "STUDY" else corpus.sop_uids
    assert {str(r[key].value) for r in over_tls} == truth
    assert stats.truncated > 0  # the TLS PACS truncated and the walk split, all over TLS

    def rows(found: list) -> dict[str, tuple]:
        return {str(r[key].value): (str(r.PatientID), str(r.StudyDate)) for r in found}

    assert rows(over_tls) == rows(plain)


@pytest.mark.parametrize("own_process", [False, True], ids=["receiver-in-process", "receiver-process"])
def test_move_over_tls_to_our_tls_receiver(tls_pacs, pki, corpus, tmp_path, own_process) -> None:
    studies = sorted(corpus.study_uids)[:6]
    port = free_port()
    tls_pacs.register_modality("tls-dest", "TLSDEST", "127.0.0.1", port, UseDicomTls=True)
    receiver_tls = ServerTls(pki.client.cert, pki.client.key, ca_file=pki.ca, require_client_cert=True)
    destination = MoveDestination(
        "TLSDEST",
        tmp_path / "data",
        port=port,
        host="127.0.0.1",
        tls=receiver_tls,
        receiver_process=own_process,
    )
    result = retrieve(_tls_node(tls_pacs, pki), make_items(studies), service=MOVE, destination=destination)
    assert result.ok, result.summary()
    assert sop_uids_on_disk(tmp_path / "data") == {
        i.sop_uid for s in studies for i in corpus.instances_of_study(s)
    }


def test_get_over_tls_same_as_plain(tls_pacs, loaded_orthanc, pki, tmp_path) -> None:
    plain_pacs, corpus = loaded_orthanc
    studies = sorted(corpus.study_uids)[-6:]
    over_tls = retrieve(_tls_node(tls_pacs, pki), make_items(studies), service=GET, data_dir=tmp_path / "tls")
    plain_node = DicomNode("127.0.0.1", plain_pacs.dicom_port, plain_pacs.aet)
    plain = retrieve(plain_node, make_items(studies), service=GET, data_dir=tmp_path / "plain")
    assert over_tls.ok and plain.ok, (over_tls.summary(), plain.summary())
    wanted = {i.sop_uid for s in studies for i in corpus.instances_of_study(s)}
    assert sop_uids_on_disk(tmp_path / "tls") == sop_uids_on_disk(tmp_path / "plain") == wanted
    for path in (tmp_path / "tls").rglob("*.dcm"):
        twin = tmp_path / "plain" / path.relative_to(tmp_path / "tls")
        got, plain_copy = pydicom.dcmread(path), pydicom.dcmread(twin)
        # the file meta names the sending AE (TLSPACS vs LOADED); the data sets are byte for byte the same
        assert got.file_meta.TransferSyntaxUID == plain_copy.file_meta.TransferSyntaxUID
        got.file_meta = plain_copy.file_meta = pydicom.dataset.FileMetaDataset()
        assert got == plain_copy


def test_send_over_tls_arrives_unchanged(tls_pacs, pki, tmp_path) -> None:
    files = {}
    for i in range(8):
        ds = make_instance(seed=8800 + i, patient_id="TLSSEND", study_date="20250301")
        files[str(ds.SOPInstanceUID)] = write_dataset(ds, tmp_path / f"s{i}.dcm")
    send(_tls_node(tls_pacs, pki), list(files.values()), parallel=2).raise_for_failures()
    for uid, path in files.items():
        got = pydicom.dcmread(io.BytesIO(tls_pacs.instance_file(uid)))
        want = pydicom.dcmread(path)
        got.file_meta = want.file_meta = pydicom.dataset.FileMetaDataset()
        assert got == want


def test_cli_move_over_tls_starts_a_tls_receiver_with_our_certificate(
    tls_pacs, pki, corpus, tmp_path
) -> None:
    studies = sorted(corpus.study_uids)[6:9]
    port = free_port()
    tls_pacs.register_modality("tls-cli", "TLSCLI", "127.0.0.1", port, UseDicomTls=True)
    args = [CLI, "move", "--host", "localhost", "--port", str(tls_pacs.dicom_port), "--aet", tls_pacs.aet]
    args += ["--tls-ca", pki.ca, "--tls-cert", pki.client.cert, "--tls-key", pki.client.key]
    args += ["--dest-aet", "TLSCLI", "--receive-port", str(port), "--receive-host", "127.0.0.1"]
    args += ["--data-dir", str(tmp_path / "data"), "--level", "STUDY", *studies]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sop_uids_on_disk(tmp_path / "data") == {
        i.sop_uid for s in studies for i in corpus.instances_of_study(s)
    }
