"""DicomNode: where a DICOM application entity lives and how to talk to it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from airflow_dicom.dimse.errors import InvalidNodeError

#: PS3.5 6.2: AE titles use the default character repertoire without backslash or control characters.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
DEFAULT_CALLING_AE_TITLE = "AIRFLOW"
DEFAULT_MAX_PDU = 16384 * 16  # 256 KiB: fewer PDUs per large instance; the peer may still limit us


def validate_ae_title(value: Any, field_name: str) -> str:
    """Return ``value`` as a valid AE title or raise :class:`InvalidNodeError` naming ``field_name``.

    :param value: the candidate AE title.
    :param field_name: the setting's name, used in the error message.
    """
    if not isinstance(value, str):
        raise InvalidNodeError(field_name, f"an AE title must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidNodeError(field_name, "an AE title must not be empty or only spaces")
    if len(value) > 16:
        raise InvalidNodeError(field_name, f"{value!r} has {len(value)} characters; AE titles have 1 to 16")
    if not _AE_TITLE.match(value):
        raise InvalidNodeError(
            field_name, f"{value!r} contains characters outside the DICOM default repertoire (or a backslash)"
        )
    return value.strip()


def _positive(value: Any, field_name: str, *, allow_none: bool = True) -> float | None:
    if value is None or value == "":
        if allow_none:
            return None
        raise InvalidNodeError(field_name, "a value is required")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidNodeError(field_name, f"{value!r} is not a number of seconds") from None
    if number <= 0:
        raise InvalidNodeError(field_name, f"{value!r} must be greater than zero")
    return number


@dataclass(frozen=True)
class DicomNode:
    """A remote DICOM application entity and the settings used to associate with it.

    :param host: host name or IP address of the node.
    :param port: TCP port (1-65535).
    :param called_ae_title: the node's AE title (always sent as the Called AE Title).
    :param calling_ae_title: our AE title (the Calling AE Title).
    :param acse_timeout: seconds to wait for association negotiation and release.
    :param dimse_timeout: seconds to wait for a DIMSE response message.
    :param network_timeout: seconds without any network traffic before the association is aborted;
        also bounds the TCP connection attempt.
    :param max_pdu: the maximum PDU length we are willing to receive (0 means unlimited).
    :param tls: wrap the connection in TLS (system trust store; see ``tls_ca_file``).
    :param tls_ca_file: CA bundle to verify the node's certificate with.
    :param tls_cert_file: our client certificate (PEM), for nodes that require mutual TLS.
    :param tls_key: our private key: its path or the PEM text (a secret: kept out of ``repr``).
    :param tls_verify_hostname: check that the node's certificate names ``host`` (default True).
    :param tls_min_version: minimum TLS version, ``"1.2"`` (default) or ``"1.3"``.
    :param name: an optional label used in messages (e.g. the Airflow connection id).
    """

    host: str
    port: int
    called_ae_title: str
    calling_ae_title: str = DEFAULT_CALLING_AE_TITLE
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    max_pdu: int = DEFAULT_MAX_PDU
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key: str | None = field(default=None, repr=False)
    tls_verify_hostname: bool = True
    tls_min_version: str = "1.2"
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        host = self.host
        if not isinstance(host, str) or not host.strip():
            raise InvalidNodeError("host", "a host name or IP address is required")
        object.__setattr__(self, "host", host.strip())
        port = self.port
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int):
            raise InvalidNodeError("port", f"{self.port!r} is not a port number")
        if not 1 <= port <= 65535:
            raise InvalidNodeError("port", f"{port} is outside 1-65535")
        object.__setattr__(self, "port", port)
        object.__setattr__(
            self, "called_ae_title", validate_ae_title(self.called_ae_title, "called_ae_title")
        )
        object.__setattr__(
            self, "calling_ae_title", validate_ae_title(self.calling_ae_title, "calling_ae_title")
        )
        for name in ("acse_timeout", "dimse_timeout", "network_timeout"):
            object.__setattr__(self, name, _positive(getattr(self, name), name, allow_none=False))
        try:
            max_pdu = int(self.max_pdu)
        except (TypeError, ValueError):
            raise InvalidNodeError("max_pdu", f"{self.max_pdu!r} is not an integer") from None
        if max_pdu != 0 and not 4096 <= max_pdu <= 2**32 - 1:
            raise InvalidNodeError("max_pdu", f"{max_pdu} must be 0 (unlimited) or between 4096 and 2^32-1")
        object.__setattr__(self, "max_pdu", max_pdu)
        object.__setattr__(self, "tls", _as_bool(self.tls, "tls"))
        object.__setattr__(
            self, "tls_verify_hostname", _as_bool(self.tls_verify_hostname, "tls_verify_hostname")
        )
        if str(self.tls_min_version).strip().lower() not in {"1.2", "1.3", "tlsv1.2", "tlsv1.3"}:
            raise InvalidNodeError("tls_min_version", f"{self.tls_min_version!r} is not one of 1.2, 1.3")
        if self.tls_key and not self.tls_cert_file:
            raise InvalidNodeError("tls_cert_file", "a TLS private key was given without its certificate")

    def describe(self) -> str:
        """A short identification for messages, e.g. ``PACS@10.0.0.5:104 (conn pacs_main)``."""
        text = f"{self.called_ae_title}@{self.host}:{self.port}"
        return f"{text} (connection {self.name!r})" if self.name else text

    def with_changes(self, **changes: Any) -> DicomNode:
        """A copy of this node with some settings changed (validated again).

        :param changes: settings to change, e.g. ``calling_ae_title="OTHER"``.
        """
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DicomNode:
        """Build a node from :meth:`to_dict` output or a similar mapping.

        :param data: mapping with at least ``host``, ``port`` and ``called_ae_title``.
        """
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise InvalidNodeError(sorted(unknown)[0], f"unknown node setting(s): {sorted(unknown)}")
        return cls(**data)


def _as_bool(value: Any, field_name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {
        "true",
        "1",
        "yes",
        "on",
        "false",
        "0",
        "no",
        "off",
        "",
    }:
        return value.strip().lower() in {"true", "1", "yes", "on"}
    if isinstance(value, int):
        return bool(value)
    raise InvalidNodeError(field_name, f"{value!r} is not a boolean")
