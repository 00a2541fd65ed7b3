"""C-ECHO against a real Orthanc: success, rejection with its reason, unreachable nodes, the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import evt
from pynetdicom.sop_class import Verification

from airflow_dicom.dimse import (
    AssociationRejectedError,
    DicomNode,
    NodeUnreachableError,
)
from airflow_dicom.dimse.association import open_association
from airflow_dicom.dimse.echo import echo
from airflow_dicom.dimse.pynetdicom_ext import make_acceptor_ae, make_nodelay_ae

CLI = str(Path(sys.executable).with_name("airflow-dicom"))


def _node(server, **kw) -> DicomNode:
    return DicomNode(host=server.host, port=server.dicom_port, called_ae_title=server.aet, **kw)


def test_echo_orthanc(orthanc) -> None:
    result = echo(_node(orthanc))
    assert result.node.port == orthanc.dicom_port
    assert 0 < result.round_trip <= result.total


def test_wrong_called_aet_is_rejected_with_its_reason(orthanc_strict) -> None:
    node = DicomNode(host=orthanc_strict.host, port=orthanc_strict.dicom_port, called_ae_title="NOTTHEPACS")
    with pytest.raises(AssociationRejectedError) as info:
        echo(node)
    assert info.value.reason_text == "called AE title not recognised"
    assert "NOTTHEPACS@" in str(info.value)
    assert "called AE title not recognised" in str(info.value)
    # the right AE title is accepted by the same strict server
    assert echo(_node(orthanc_strict)).round_trip > 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_closed_port_is_unreachable_not_a_hang() -> None:
    node = DicomNode(host="127.0.0.1", port=_closed_port(), called_ae_title="PACS", acse_timeout=3)
    started = time.monotonic()
    with pytest.raises(NodeUnreachableError, match="connection refused"):
        echo(node)
    assert time.monotonic() - started < 3 + 5  # bounded by the configured timeout (generous margin)


def test_silent_node_times_out_within_the_configured_timeout() -> None:
    # A listener whose accept queue is full: SYNs are dropped, as with a firewall that drops packets.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.settimeout(0.3)
            try:
                filler.connect(("127.0.0.1", port))
            except OSError:
                filler.close()
                break
            fillers.append(filler)
        node = DicomNode(host="127.0.0.1", port=port, called_ae_title="PACS", acse_timeout=1.5)
        started = time.monotonic()
        with pytest.raises(NodeUnreachableError, match="timed out"):
            echo(node)
        assert time.monotonic() - started < 1.5 + 5
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_our_sockets_have_tcp_nodelay(orthanc) -> None:
    with open_association(_node(orthanc), [Verification], purpose="test") as assoc:
        sock = assoc.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


@pytest.mark.parametrize("factory", [make_acceptor_ae, make_nodelay_ae])
def test_our_servers_set_tcp_nodelay_on_accepted_connections(factory: Callable[[str], Any]) -> None:
    seen: list[int] = []

    def on_open(event: Any) -> None:
        seen.append(event.assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    ae = factory("OURSCP")
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_CONN_OPEN, on_open)])
    try:
        port = server.server_address[1]
        echo(DicomNode(host="127.0.0.1", port=port, called_ae_title="OURSCP"))
    finally:
        server.shutdown()
    assert seen == [1]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cli_echo(orthanc) -> None:
    ok = _cli("echo", "--host", orthanc.host, "--port", str(orthanc.dicom_port), "--aet", orthanc.aet)
    assert ok.returncode == 0, ok.stderr
    assert f"C-ECHO {orthanc.aet}@{orthanc.host}:{orthanc.dicom_port}: ok" in ok.stdout


def test_cli_echo_failures_are_one_line(orthanc_strict) -> None:
    wrong = _cli("echo", "--host", "127.0.0.1", "--port", str(orthanc_strict.dicom_port), "--aet", "WRONG")
    assert wrong.returncode == 1, wrong.stderr
    assert wrong.stderr.strip().count("\n") == 0, wrong.stderr
    assert "called AE title not recognised" in wrong.stderr, wrong.stderr
    missing = _cli("echo", "--host", "127.0.0.1")
    assert missing.returncode == 2, missing.stderr
    assert "missing --port, --aet" in missing.stderr
    invalid = _cli("echo", "--host", "127.0.0.1", "--port", "104", "--aet", "X" * 17)
    assert invalid.returncode == 1, invalid.stderr
    assert "'called_ae_title'" in invalid.stderr


def test_cli_echo_with_conn_id_from_env(orthanc, tmp_path) -> None:
    env = {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW_CONN_PACS_URI": f"dicom://{orthanc.host}:{orthanc.dicom_port}?called_ae_title={orthanc.aet}",
    }
    result = _cli("echo", "--conn-id", "pacs_uri", env=env)
    assert result.returncode == 0, result.stderr
    assert "(connection 'pacs_uri'): ok" in result.stdout
    unknown = _cli("echo", "--conn-id", "nope", env=env)
    assert unknown.returncode == 2
    assert "nope" in unknown.stderr
