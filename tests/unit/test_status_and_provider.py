"""Status meanings and provider metadata."""

from __future__ import annotations

from airflow_dicom.dimse.status import Status, category, describe_status
from airflow_dicom.get_provider_info import get_provider_info


def test_status_descriptions_are_named() -> None:
    assert describe_status("C-MOVE", 0xA702) == (
        "status 0xA702 Failure: Refused: Out of resources, unable to perform sub-operations"
    )
    assert category(Status.CANCEL) == "Cancel"
    assert category(Status.SUB_OPERATIONS_WARNING) == "Warning"
    assert category(Status.UNREADABLE_DATASET) == "Failure"
    assert "unknown" in describe_status("C-FIND", 0x1234)


def test_provider_info_declares_the_dicom_connection() -> None:
    info = get_provider_info()
    conn, web = info["connection-types"]
    assert conn["connection-type"] == "dicom"
    assert web["connection-type"] == "dicomweb"
    assert web["hook-class-name"] == "airflow_dicom.hooks.dicomweb.DicomWebHook"
    assert {"auth", "verify_tls", "ca_bundle", "qido_prefix", "max_results"} <= set(web["conn-fields"])
    assert "password" not in web["ui-field-behaviour"]["hidden-fields"]  # the secret (password or token)
    assert conn["hook-class-name"] == "airflow_dicom.hooks.dicom.DicomHook"
    assert {"called_ae_title", "calling_ae_title", "acse_timeout", "dimse_timeout", "network_timeout"} <= set(
        conn["conn-fields"]
    )
    assert "max_pdu" in conn["conn-fields"]
    # the password field holds the TLS private key (path or PEM), a secret
    assert set(conn["ui-field-behaviour"]["hidden-fields"]) == {"schema", "login"}
    assert "TLS private key" in conn["ui-field-behaviour"]["relabeling"]["password"]
    assert {"tls", "tls_ca_file", "tls_cert_file", "tls_verify_hostname", "tls_min_version"} <= set(
        conn["conn-fields"]
    )
