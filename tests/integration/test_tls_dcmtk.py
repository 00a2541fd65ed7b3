"""DICOM TLS against dcmtk 3.6.7: storescu +tls into our receiver, our send into storescp +tls."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.dcmtk import storescu
from harness.disk import sop_uids_on_disk
from harness.synth import make_instance, write_dataset

from airflow_dicom.dimse.errors import TlsError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.receiver import Receiver
from airflow_dicom.dimse.send import send
from airflow_dicom.dimse.tls import ServerTls

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """12 small instances by SOPInstanceUID."""
    root = tmp_path_factory.mktemp("tls-files")
    out = {}
    for i in range(12):
        ds = make_instance(seed=7000 + i, patient_id=f"TLS{i % 3}")
        out[str(ds.SOPInstanceUID)] = write_dataset(ds, root / f"i{i}.dcm")
    return out


def _receiver(tmp_path: Path, pki, *, mutual: bool) -> Receiver:
    tls = ServerTls(pki.server.cert, pki.server.key, ca_file=pki.ca, require_client_cert=mutual)
    return Receiver(tmp_path / "data", ae_title="TLSRX", host="127.0.0.1", port=0, tls=tls, idle_timeout=5)


def test_storescu_tls_with_client_certificate_into_mutual_tls_receiver(tmp_path, pki, files) -> None:
    with _receiver(tmp_path, pki, mutual=True) as rx:
        tls = ["+tls", pki.client.key, pki.client.cert, "-pw", "+cf", pki.ca]
        done = storescu("localhost", rx.port, "TLSRX", files.values(), extra_args=tls)
        assert done.returncode == 0, done.stdout + done.stderr
        assert sop_uids_on_disk(tmp_path / "data") == set(files)
        # a client without a certificate is refused by the mutual-TLS receiver, and nothing is written
        no_cert = ["+tla", "+cf", pki.ca]
        anonymous = storescu("localhost", rx.port, "TLSRX", files.values(), extra_args=no_cert)
        assert anonymous.returncode != 0
        assert rx.refused.get("tls") == 1


def test_storescu_anonymous_tls_into_receiver_without_client_certificates(tmp_path, pki, files) -> None:
    with _receiver(tmp_path, pki, mutual=False) as rx:
        done = storescu("localhost", rx.port, "TLSRX", files.values(), extra_args=["+tla", "+cf", pki.ca])
        assert done.returncode == 0, done.stdout + done.stderr
        assert sop_uids_on_disk(tmp_path / "data") == set(files)


def test_plain_storescu_against_the_tls_receiver_is_refused_and_the_service_goes_on(
    tmp_path, pki, files
) -> None:
    with _receiver(tmp_path, pki, mutual=True) as rx:
        plain = storescu("127.0.0.1", rx.port, "TLSRX", files.values())
        assert plain.returncode != 0
        assert sop_uids_on_disk(tmp_path / "data") == set()
        assert rx.refused.get("tls") == 1
        node = DicomNode(
            "localhost",
            rx.port,
            "TLSRX",
            tls=True,
            tls_ca_file=pki.ca,
            tls_cert_file=pki.client.cert,
            tls_key=pki.client.key,
        )
        send(node, list(files.values())).raise_for_failures()
        assert sop_uids_on_disk(tmp_path / "data") == set(files)


def test_send_into_storescp_tls_requiring_our_client_certificate(dcmtk_storescp, pki, files) -> None:
    scp = dcmtk_storescp(
        "TLSSCP", extra_args=["+tls", pki.server.key, pki.server.cert, "-pw", "+cf", pki.ca, "-rc"]
    )
    node = DicomNode("localhost", scp.port, "TLSSCP", tls=True, tls_ca_file=pki.ca)
    with pytest.raises(TlsError, match="requires a client certificate"):
        send(node, list(files.values()))
    # the key given as PEM text, as the connection's password field holds it
    pem_key = Path(pki.client.key).read_text()
    report = send(node.with_changes(tls_cert_file=pki.client.cert, tls_key=pem_key), list(files.values()))
    report.raise_for_failures()
    assert scp.received_sop_uids() == set(files)
    assert pem_key not in repr(node.with_changes(tls_cert_file=pki.client.cert, tls_key=pem_key))


def test_send_into_storescp_tls_without_client_certificates(dcmtk_storescp, pki, files) -> None:
    scp = dcmtk_storescp(
        "TLSSCP", extra_args=["+tls", pki.server.key, pki.server.cert, "-pw", "+cf", pki.ca, "-ic"]
    )
    node = DicomNode("127.0.0.1", scp.port, "TLSSCP", tls=True, tls_ca_file=pki.ca)
    send(node, list(files.values()), parallel=2).raise_for_failures()
    assert scp.received_sop_uids() == set(files)
