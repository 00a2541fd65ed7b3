"""The receiver is not held hostage: silent clients and half-done TLS hellos cost a slot, not the service.

Silent connections are opened first and held while a real sender (dcmtk storescu) sends 100 instances; the
sender is done while every silent connection is still open (they are dropped only at the idle timeout), so
the sender never waited for them. Then the silent ones are closed by the receiver and counted, and nothing
they did is on disk.
"""

from __future__ import annotations

import socket
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pydicom
import pytest
from harness.dcmtk import storescu
from harness.disk import sop_uids_on_disk
from harness.receiver_proc import CLI, ReceiverProcess
from harness.synth import make_instance, write_dataset

from airflow_dicom.dimse.echo import echo
from airflow_dicom.dimse.errors import AssociationAbortedError, AssociationRejectedError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.receiver import Receiver
from airflow_dicom.dimse.tls import ServerTls

pytestmark = pytest.mark.integration

#: long enough for 100 small instances on a heavily loaded 2-core machine (15 s was not, once, at load
#: ~20), short enough for the test
IDLE = 25.0
#: the first bytes of a TLS ClientHello, and then nothing
HALF_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


@pytest.fixture(scope="module")
def hundred(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """100 small instances by SOPInstanceUID."""
    root = tmp_path_factory.mktemp("hundred")
    out = {}
    for i in range(100):
        ds = make_instance(seed=9000 + i, patient_id=f"HOST{i % 5}", pixel_bytes=2048)
        out[str(ds.SOPInstanceUID)] = write_dataset(ds, root / f"i{i:03}.dcm")
    return out


def _silent(port: int, count: int, stack: ExitStack, first_bytes: bytes = b"") -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        if first_bytes:
            sock.sendall(first_bytes)
        socks.append(sock)
    return socks


def _closed_by_peer(sock: socket.socket, wait: float) -> bool:
    """True once the receiver has closed ``sock`` (EOF or reset) within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_fifty_idle_plain_connections_do_not_stop_a_real_sender(tmp_path, hundred) -> None:
    with (
        Receiver(tmp_path / "data", ae_title="RX", host="127.0.0.1", port=0, idle_timeout=IDLE) as rx,
        ExitStack() as stack,
    ):
        idle = _silent(rx.port, 50, stack)
        done = storescu("127.0.0.1", rx.port, "RX", hundred.values(), timeout=IDLE * 3)
        assert done.returncode == 0, done.stdout + done.stderr
        assert sop_uids_on_disk(tmp_path / "data") == set(hundred)
        assert rx.refused.get("idle", 0) == 0  # the sender finished while all 50 were still held
        assert all(_closed_by_peer(sock, IDLE * 3) for sock in idle)
        assert rx.refused == {"idle": 50}
    assert sop_uids_on_disk(tmp_path / "data") == set(hundred)  # nothing from the idle ones


def test_silent_tcp_and_half_tls_hello_do_not_stop_a_tls_sender(tmp_path, pki, hundred) -> None:
    tls = ServerTls(pki.server.cert, pki.server.key, ca_file=pki.ca, require_client_cert=True)
    rx = Receiver(tmp_path / "data", ae_title="RX", host="127.0.0.1", port=0, tls=tls, idle_timeout=IDLE)
    with rx, ExitStack() as stack:
        silent = _silent(rx.port, 1, stack) + _silent(rx.port, 1, stack, HALF_HELLO)
        client = ["+tls", pki.client.key, pki.client.cert, "-pw", "+cf", pki.ca]
        done = storescu("localhost", rx.port, "RX", hundred.values(), extra_args=client, timeout=IDLE * 3)
        assert done.returncode == 0, done.stdout + done.stderr
        assert sop_uids_on_disk(tmp_path / "data") == set(hundred)
        assert rx.refused.get("idle", 0) == 0
        assert all(_closed_by_peer(sock, IDLE * 3) for sock in silent)
        assert rx.refused == {"idle": 2}


def test_per_peer_limit_and_allowed_networks_refuse_and_count(tmp_path) -> None:
    rx = Receiver(tmp_path / "a", ae_title="RX", host="127.0.0.1", port=0, max_per_peer=2, idle_timeout=30)
    with rx, ExitStack() as stack:
        _silent(rx.port, 2, stack)
        third = _silent(rx.port, 1, stack)[0]
        assert _closed_by_peer(third, 10)
        assert rx.refused == {"per_peer": 1}
    with Receiver(
        tmp_path / "b", ae_title="RX", host="127.0.0.1", port=0, allowed_networks=["10.0.0.0/8"]
    ) as rx:
        with pytest.raises(AssociationAbortedError):
            echo(DicomNode("127.0.0.1", rx.port, "RX", acse_timeout=5))
        assert rx.refused == {"network": 1}
    with Receiver(
        tmp_path / "c", ae_title="RX", host="127.0.0.1", port=0, allowed_networks=["127.0.0.0/8"]
    ) as rx:
        assert echo(DicomNode("127.0.0.1", rx.port, "RX")).round_trip >= 0
        assert rx.refused == {}
    with Receiver(tmp_path / "d", ae_title="RX", host="127.0.0.1", port=0, allowed_aets=["ONLYPACS"]) as rx:
        with pytest.raises(AssociationRejectedError):
            echo(DicomNode("127.0.0.1", rx.port, "RX", calling_ae_title="STRANGER"))
        assert rx.refused == {"rejected": 1}


def test_storescp_service_with_tls_and_limits_from_the_command_line(tmp_path, pki, hundred) -> None:
    args = ["--tls-cert", pki.server.cert, "--tls-key", pki.server.key, "--tls-ca", pki.ca]
    args += ["--tls-require-client-cert", "--idle-timeout", "3", "--max-per-peer", "20"]
    args += ["--allow-network", "127.0.0.0/8"]
    with ReceiverProcess(tmp_path / "data", "SVC", extra_args=args) as svc, ExitStack() as stack:
        silent = _silent(svc.port, 1, stack)
        send = [*CLI, "send", "--host", "localhost", "--port", str(svc.port), "--aet", "SVC"]
        send += ["--tls-ca", pki.ca, "--tls-cert", pki.client.cert, "--tls-key", pki.client.key]
        files = sorted(map(str, hundred.values()))[:20]
        done = subprocess.run([*send, *files], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        plain = [*CLI, "echo", "--host", "127.0.0.1", "--port", str(svc.port), "--aet", "SVC"]
        plain += ["--timeout", "5"]
        refused = subprocess.run(plain, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert "turn TLS on" in refused.stderr
        assert _closed_by_peer(silent[0], 20)
    assert sop_uids_on_disk(tmp_path / "data") == {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files
    }
    log = svc.log()
    assert "with TLS (client certificates required)" in log
    assert "plain (not TLS) connection on the TLS port" in log
    assert "no TLS handshake within 3 s" in log
