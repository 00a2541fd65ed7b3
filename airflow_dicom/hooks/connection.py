"""Airflow Connection fields -> :class:`DicomNode` (no Airflow import: shared by the hook and the CLI)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_dicom.dimse.errors import InvalidNodeError
from airflow_dicom.dimse.node import DicomNode

#: Extra fields of a ``dicom`` connection, in the order the UI shows them.
EXTRA_FIELDS = (
    "called_ae_title",
    "calling_ae_title",
    "acse_timeout",
    "dimse_timeout",
    "network_timeout",
    "max_pdu",
    "tls",
    "tls_ca_file",
    "tls_cert_file",
    "tls_verify_hostname",
    "tls_min_version",
)


def node_from_connection(
    conn_id: str | None,
    host: str | None,
    port: int | str | None,
    extra: Mapping[str, Any] | None,
    password: str | None = None,
) -> DicomNode:
    """Build a :class:`DicomNode` from a connection's host, port and extra fields.

    Accepts both the plain field names (``called_ae_title``) and the legacy prefixed form
    (``extra__dicom__called_ae_title``). Empty values fall back to the node defaults.

    :param conn_id: the connection id (used in messages).
    :param host: the connection's host.
    :param port: the connection's port.
    :param extra: the connection's extra fields (``Connection.extra_dejson``).
    :param password: the connection's password: the TLS private key (its path or PEM text), a secret.
    :raises InvalidNodeError: a setting is missing or invalid (the message names the field).
    """
    extra = dict(extra or {})
    values: dict[str, Any] = {}
    for name in EXTRA_FIELDS:
        value = extra.pop(name, None)
        prefixed = extra.pop(f"extra__dicom__{name}", None)
        if value in (None, ""):
            value = prefixed
        if value not in (None, ""):
            values[name] = value
    if "called_ae_title" not in values:
        raise InvalidNodeError(
            "called_ae_title",
            f"connection {conn_id!r} has no 'called_ae_title' extra field (the node's AE title)",
        )
    if port in (None, ""):
        raise InvalidNodeError("port", f"connection {conn_id!r} has no port")
    if password:
        values["tls_key"] = password
    return DicomNode(host=host or "", port=port, name=conn_id, **values)  # type: ignore[arg-type]
