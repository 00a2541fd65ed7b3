"""Each TLS failure a person meets has its own message naming the node and what to do (no SSLError trace)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.receiver_proc import CLI

from airflow_dicom.dimse.echo import echo
from airflow_dicom.dimse.errors import AssociationAbortedError, NodeUnreachableError, TlsError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.receiver import Receiver
from airflow_dicom.dimse.tls import ServerTls

pytestmark = pytest.mark.integration


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Factory: a receiver serving TLS with the given certificate; all stopped at teardown."""
    started: list[Receiver] = []

    def start(pair, *, mutual: bool = False, ca: str | None = None, tls: bool = True) -> Receiver:
        server_tls = ServerTls(pair.cert, pair.key, ca_file=ca, require_client_cert=mutual) if tls else None
        rx = Receiver(tmp_path / f"rx{len(started)}", ae_title="RX", host="127.0.0.1", port=0, tls=server_tls)
        started.append(rx.start())
        return rx

    yield start
    for rx in started:
        rx.stop(grace=1)


def _node(port: int, pki, **kw: object) -> DicomNode:
    settings: dict[str, object] = {"tls": True, "tls_ca_file": pki.ca, "name": "pacs_tls", **kw}
    return DicomNode(str(settings.pop("host", "localhost")), port, "RX", **settings)  # type: ignore[arg-type]


def _fails(node: DicomNode, match: str) -> str:
    with pytest.raises(TlsError, match=match) as info:
        echo(node)
    text = str(info.value)
    assert "connection 'pacs_tls'" in text and f":{node.port}" in text  # names the node
    assert "Traceback" not in text and "_ssl.c" not in text
    return text


def test_expired_certificate(serve, pki) -> None:
    rx = serve(pki.expired)
    _fails(_node(rx.port, pki), "certificate has expired; ask its administrators to renew it")


def test_unknown_ca(serve, pki) -> None:
    rx = serve(pki.rogue)
    text = _fails(_node(rx.port, pki), r"unknown CA\); set the CA bundle")
    assert pki.ca in text


def test_hostname_mismatch_and_turning_verification_off(serve, pki) -> None:
    rx = serve(pki.wrong_host)
    _fails(_node(rx.port, pki), "does not name host 'localhost' \\(hostname mismatch\\)")
    assert echo(_node(rx.port, pki, tls_verify_hostname=False)).round_trip >= 0


def test_peer_requires_a_client_certificate(serve, pki) -> None:
    rx = serve(pki.server, mutual=True, ca=pki.ca)
    _fails(_node(rx.port, pki), "requires a client certificate")
    # a certificate from a CA the receiver does not trust is refused with its own message
    rogue = _node(rx.port, pki, tls_cert_file=pki.rogue.cert, tls_key=pki.rogue.key)
    _fails(rogue, "refused our client certificate")
    assert echo(_node(rx.port, pki, tls_cert_file=pki.client.cert, tls_key=pki.client.key)).round_trip >= 0
    assert rx.refused == {"tls": 2}


def test_plain_client_on_a_tls_port(serve, pki) -> None:
    rx = serve(pki.server)
    with pytest.raises(AssociationAbortedError, match="if that port expects DICOM over TLS, turn TLS on"):
        echo(DicomNode("127.0.0.1", rx.port, "RX", acse_timeout=10))
    # the client sees the reset before the receiver's screening thread has counted the refusal
    deadline = time.monotonic() + 10
    while rx.refused != {"tls": 1} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rx.refused == {"tls": 1}


def test_tls_client_on_a_plain_port(serve, pki) -> None:
    rx = serve(pki.server, tls=False)
    _fails(
        _node(rx.port, pki), "closed the connection during the TLS handshake: the port may speak plain DICOM"
    )
    assert rx.refused == {"tls_on_plain": 1}


def test_unusable_settings_name_the_file_and_never_echo_the_key(pki, tmp_path) -> None:
    node = _node(104, pki, tls_ca_file=str(tmp_path / "missing-ca.pem"))
    _fails(node, "missing-ca.pem' does not exist")
    key_text = Path(pki.rogue.key).read_text()  # not the key of client.pem
    text = _fails(_node(104, pki, tls_cert_file=pki.client.cert, tls_key=key_text), "cannot be loaded")
    assert "PRIVATE KEY" not in text
    assert "PRIVATE KEY" not in repr(_node(104, pki, tls_cert_file=pki.client.cert, tls_key=key_text))


def test_cli_prints_one_line_not_a_trace(serve, pki) -> None:
    rx = serve(pki.rogue)
    args = [*CLI, "echo", "--host", "localhost", "--port", str(rx.port), "--aet", "RX", "--tls-ca", pki.ca]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "unknown CA" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_port_that_accepts_but_never_answers_the_handshake(pki) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody ever answers
        port = silent.getsockname()[1]
        with pytest.raises(NodeUnreachableError, match="TLS handshake got no answer within 2 s"):
            echo(_node(port, pki, host="127.0.0.1", acse_timeout=2))
