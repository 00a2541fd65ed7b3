"""TLS settings: connection fields and CLI options -> node, contexts built from them, receiver limits."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from airflow_dicom.cli import CliError, build_parser, node_from_args
from airflow_dicom.dimse.errors import InvalidNodeError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.pynetdicom_ext import AdmissionLimits
from airflow_dicom.dimse.tls import ServerTls, TlsConfigError, node_client_context
from airflow_dicom.hooks.connection import node_from_connection


def test_connection_fields_and_password_key_make_a_tls_node(pki) -> None:
    key_text = Path(pki.client.key).read_text()
    extra = {
        "called_ae_title": "PACS",
        "tls": "true",
        "tls_ca_file": pki.ca,
        "tls_cert_file": pki.client.cert,
        "tls_verify_hostname": "false",
        "tls_min_version": "1.3",
    }
    node = node_from_connection("pacs_tls", "pacs.example", 2762, extra, password=key_text)
    assert (node.tls, node.tls_ca_file, node.tls_cert_file) == (True, pki.ca, pki.client.cert)
    assert (node.tls_verify_hostname, node.tls_min_version, node.tls_key) == (False, "1.3", key_text)
    assert "PRIVATE KEY" not in repr(node) and "PRIVATE KEY" not in node.describe()
    context = node_client_context(node)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.check_hostname is False and context.verify_mode == ssl.CERT_REQUIRED


def test_invalid_tls_settings_name_the_field() -> None:
    with pytest.raises(InvalidNodeError, match="tls_min_version"):
        DicomNode("h", 104, "PACS", tls=True, tls_min_version="1.0")
    with pytest.raises(InvalidNodeError, match="tls_cert_file"):
        DicomNode("h", 104, "PACS", tls=True, tls_key="/etc/key.pem")
    with pytest.raises(TlsConfigError, match="needs a CA bundle"):
        ServerTls("cert.pem", "key.pem", require_client_cert=True).context()
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not a network"):
        AdmissionLimits(allowed_networks=("10.0.0.0/33",))


def test_cli_tls_options_on_every_node_command(pki) -> None:
    parser = build_parser()
    for command in ("echo", "find", "move", "get", "send"):
        args = parser.parse_args(
            [command, "--host", "pacs", "--port", "2762", "--aet", "PACS", "--tls-ca", pki.ca]
            + ["--tls-cert", pki.client.cert, "--tls-key", pki.client.key, "--tls-no-verify-hostname"]
            + {
                "find": ["--out", "o"],
                "send": ["x.dcm"],
                "move": ["1.2.3"],
                "get": ["1.2.3", "--data-dir", "d"],
            }.get(command, [])
        )
        node = node_from_args(args)
        assert (node.tls, node.tls_ca_file, node.tls_cert_file, node.tls_key) == (
            True,
            pki.ca,
            pki.client.cert,
            pki.client.key,
        ), command
        assert node.tls_verify_hostname is False
    plain = node_from_args(parser.parse_args(["echo", "--host", "pacs", "--port", "104", "--aet", "PACS"]))
    assert plain.tls is False
    only_key = parser.parse_args(["echo", "--host", "p", "--port", "104", "--aet", "P", "--tls-key", "k.pem"])
    with pytest.raises(CliError, match="--tls-key needs --tls-cert"):
        node_from_args(only_key)


def test_storescp_options() -> None:
    args = build_parser().parse_args(
        ["storescp", "--aet", "RX", "--port", "11112", "--data-dir", "/tmp/x", "--tls-cert", "c.pem"]
        + ["--tls-key", "k.pem", "--tls-ca", "ca.pem", "--tls-require-client-cert", "--idle-timeout", "5"]
        + ["--max-per-peer", "4", "--allow-network", "10.0.0.0/8", "--allow-network", "192.168.1.0/24"]
    )
    assert (args.tls_cert, args.tls_key, args.tls_ca, args.tls_require_client_cert) == (
        "c.pem",
        "k.pem",
        "ca.pem",
        True,
    )
    assert (args.idle_timeout, args.max_per_peer, args.allow_network) == (
        5,
        4,
        ["10.0.0.0/8", "192.168.1.0/24"],
    )
