"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_dicom import __version__
from airflow_dicom.dicomweb.form import DICOMWEB_CONNECTION_TYPE

_TIMEOUT = {"type": ["number", "null"], "minimum": 0}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata: hooks, operators, sensors, triggers and the ``dicom`` connection."""
    integration = "DICOM"
    return {
        "package-name": "airflow-dicom",
        "name": "DICOM",
        "description": "DICOM networking for Airflow: C-ECHO, C-FIND to Parquet, C-MOVE/C-GET, C-STORE, "
        "a storescp receiver and a deferrable arrival sensor.",
        "versions": [__version__],
        "integrations": [{"integration-name": integration, "tags": ["protocol"]}],
        "hooks": [
            {
                "integration-name": integration,
                "python-modules": [
                    "airflow_dicom.hooks.dicom",
                    "airflow_dicom.hooks.dicomweb",
                    "airflow_dicom.hooks.pseudonym",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": integration,
                "python-modules": [
                    "airflow_dicom.operators.echo",
                    "airflow_dicom.operators.find",
                    "airflow_dicom.operators.pseudonymize",
                    "airflow_dicom.operators.retrieve",
                    "airflow_dicom.operators.store",
                ],
            }
        ],
        "sensors": [{"integration-name": integration, "python-modules": ["airflow_dicom.sensors.arrival"]}],
        "triggers": [{"integration-name": integration, "python-modules": ["airflow_dicom.triggers.arrival"]}],
        "connection-types": [
            {
                "hook-class-name": "airflow_dicom.hooks.dicom.DicomHook",
                "hook-name": "DICOM node",
                "connection-type": "dicom",
                "conn-fields": {
                    "called_ae_title": {
                        "label": "Called AE title",
                        # required: a type without "null" is what Airflow's form marks with "*" and insists on
                        "schema": {"type": "string", "minLength": 1, "maxLength": 16},
                        "description": "Required. The node's AE title (1-16 characters, as configured on the "
                        "PACS); always sent.",
                    },
                    "calling_ae_title": {
                        "label": "Calling AE title",
                        "schema": {"type": ["string", "null"], "maxLength": 16, "default": "AIRFLOW"},
                        "description": "Our AE title, as registered on the node (default AIRFLOW).",
                    },
                    "acse_timeout": {
                        "label": "ACSE timeout (s)",
                        "schema": {**_TIMEOUT, "default": 30},
                        "description": "Seconds to wait for association set-up and release.",
                    },
                    "dimse_timeout": {
                        "label": "DIMSE timeout (s)",
                        "schema": {**_TIMEOUT, "default": 60},
                        "description": "Seconds to wait for a DIMSE response.",
                    },
                    "network_timeout": {
                        "label": "Network timeout (s)",
                        "schema": {**_TIMEOUT, "default": 60},
                        "description": "Seconds of network silence before the association is aborted.",
                    },
                    "max_pdu": {
                        "label": "Maximum PDU size (bytes)",
                        "schema": {"type": ["integer", "null"], "default": 262144},
                        "description": "Largest PDU we accept; 0 means unlimited (default 262144).",
                    },
                    "tls": {
                        "label": "Use TLS",
                        "schema": {"type": ["boolean", "null"], "default": False},
                        "description": "Open the association over TLS (DICOM TLS, often port 2762).",
                    },
                    "tls_ca_file": {
                        "label": "TLS CA bundle path",
                        "schema": {"type": ["string", "null"]},
                        "description": "PEM file of the CA(s) that signed the node's certificate, on the "
                        "workers; empty: the system's trusted CAs.",
                    },
                    "tls_cert_file": {
                        "label": "TLS client certificate path",
                        "schema": {"type": ["string", "null"]},
                        "description": "Our certificate (PEM) for nodes that require mutual TLS; its "
                        "private key goes in the password field.",
                    },
                    "tls_verify_hostname": {
                        "label": "TLS: verify host name",
                        "schema": {"type": ["boolean", "null"], "default": True},
                        "description": "Check that the node's certificate names the host above.",
                    },
                    "tls_min_version": {
                        "label": "TLS minimum version",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["1.2", "1.3", None],
                            "default": "1.2",
                        },
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login"],
                    "relabeling": {
                        "host": "Host (PACS address)",
                        "password": "TLS private key (path or PEM text; secret)",
                    },
                    "placeholders": {
                        "host": "pacs.hospital.example",
                        "port": "104 or 11112",
                        "called_ae_title": "PACS",
                        "calling_ae_title": "AIRFLOW",
                        "tls_ca_file": "/etc/ssl/certs/pacs-ca.pem",
                    },
                },
            },
            DICOMWEB_CONNECTION_TYPE,
        ],
    }
