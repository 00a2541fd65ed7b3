"""The ``dicomweb`` connection type of the provider's metadata (form fields, no Airflow import)."""

from __future__ import annotations

from typing import Any

_SECONDS = {"type": ["number", "null"], "exclusiveMinimum": 0}

#: the entry of ``connection-types`` in :func:`airflow_dicom.get_provider_info.get_provider_info`
DICOMWEB_CONNECTION_TYPE: dict[str, Any] = {
    "hook-class-name": "airflow_dicom.hooks.dicomweb.DicomWebHook",
    "hook-name": "DICOMweb node",
    "connection-type": "dicomweb",
    "conn-fields": {
        "qido_prefix": {
            "label": "QIDO-RS prefix",
            "schema": {"type": ["string", "null"]},
            "description": "Path of QIDO-RS under the base URL, if the server puts it elsewhere.",
        },
        "wado_prefix": {"label": "WADO-RS prefix", "schema": {"type": ["string", "null"]}},
        "stow_prefix": {"label": "STOW-RS prefix", "schema": {"type": ["string", "null"]}},
        "auth": {
            "label": "Authentication",
            "schema": {
                "type": ["string", "null"],
                "enum": ["none", "basic", "bearer", None],
                "default": "none",
            },
            "description": "basic: login + password; bearer: the token in the password field.",
        },
        "verify_tls": {
            "label": "Verify TLS certificate",
            "schema": {"type": ["boolean", "null"], "default": True},
        },
        "ca_bundle": {
            "label": "TLS CA bundle path",
            "schema": {"type": ["string", "null"]},
            "description": "PEM file of the CA that signed the server's certificate (default: system store).",
        },
        "connect_timeout": {"label": "Connect timeout (s)", "schema": {**_SECONDS, "default": 10}},
        "read_timeout": {"label": "Read timeout (s)", "schema": {**_SECONDS, "default": 120}},
        "page_size": {
            "label": "QIDO-RS page size",
            "schema": {"type": ["integer", "null"], "minimum": 1, "default": 1000},
        },
        "max_results": {
            "label": "Server result cap",
            "schema": {"type": ["integer", "null"], "minimum": 1},
            "description": "Matches the server returns at most per search (Orthanc: LimitFindResults).",
        },
        "capabilities": {
            "label": "Services offered",
            "schema": {"type": ["string", "null"], "default": "qido wado stow"},
        },
    },
    "ui-field-behaviour": {
        "hidden-fields": ["port", "schema"],
        "relabeling": {"host": "Base URL", "login": "User (basic auth)", "password": "Password or token"},
        "placeholders": {"host": "https://pacs.hospital.example/dicom-web", "auth": "none"},
    },
}
