"""A DICOMweb node (PS3.18): base URL, service prefixes, authentication, TLS, timeouts, capabilities.

No Airflow import: shared by the ``dicomweb`` hook and the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from airflow_dicom.dimse.errors import InvalidNodeError

AUTH_MODES = ("none", "basic", "bearer")

#: Services a DICOMweb node is assumed to offer unless its connection says otherwise.
DEFAULT_CAPABILITIES = ("qido", "wado", "stow")


def _positive_int(value: object, field_name: str) -> int:
    """``value`` as an integer of at least 1.

    :param value: the setting as given (int or text).
    :param field_name: the connection field, for the error.
    :raises InvalidNodeError: not an integer, or below 1.
    """
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InvalidNodeError(field_name, f"{value!r} is not an integer") from None
    if number < 1:
        raise InvalidNodeError(field_name, f"{number} must be at least 1")
    return number


def _timeout(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidNodeError(name, f"{value!r} is not a number of seconds") from None
    if number <= 0:
        raise InvalidNodeError(name, f"{number} must be positive")
    return number


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise InvalidNodeError(name, f"{value!r} is not true or false")


@dataclass(frozen=True)
class DicomWebNode:
    """A DICOMweb origin server and how to talk to it.

    :param url: base URL of the DICOMweb service, e.g. ``https://pacs.example.org/dicom-web``.
    :param qido_prefix: optional path prefix of QIDO-RS under ``url``.
    :param wado_prefix: optional path prefix of WADO-RS under ``url``.
    :param stow_prefix: optional path prefix of STOW-RS under ``url``.
    :param auth: ``none``, ``basic`` (``username`` + ``secret``) or ``bearer`` (``secret`` is the token).
    :param username: user name for basic authentication.
    :param secret: password or bearer token (never logged, never shown by :meth:`describe`).
    :param verify_tls: verify the server's certificate.
    :param ca_bundle: CA bundle file to verify it with (default: the system trust store).
    :param connect_timeout: seconds to establish the TCP/TLS connection.
    :param read_timeout: seconds to wait for data from the server.
    :param page_size: QIDO-RS ``limit`` per request (results are paged with ``offset``).
    :param max_results: the server's cap on one search's total (Orthanc: ``LimitFindResults``); a search
        reaching it is treated as truncated and split (``None``: the server does not cap).
    :param max_results: the server's result cap per search, if it has one (Orthanc's ``LimitFindResults``
        / ``LimitFindInstances``: its DICOMweb plugin then answers at most that many matches, plus one,
        to every search whatever ``limit``/``offset`` ask, without any sign of truncation). A search
        returning this many matches or more is treated as truncated and split like a capped C-FIND.
    :param capabilities: services offered: ``qido``, ``wado``, ``stow``.
    :param name: a label for messages (e.g. the Airflow connection id).
    """

    url: str
    qido_prefix: str | None = None
    wado_prefix: str | None = None
    stow_prefix: str | None = None
    auth: str = "none"
    username: str | None = None
    secret: str | None = field(default=None, repr=False)
    verify_tls: bool = True
    ca_bundle: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    page_size: int = 1000
    max_results: int | None = None
    max_results: int | None = None
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        url = (self.url or "").strip().rstrip("/") if isinstance(self.url, str) else ""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidNodeError(
                "url",
                f"{self.url!r} is not an http(s) URL; give the DICOMweb base URL, e.g. http://host/dicom-web",
            )
        object.__setattr__(self, "url", url)
        auth = str(self.auth or "none").strip().lower()
        if auth not in AUTH_MODES:
            raise InvalidNodeError("auth", f"{self.auth!r} is not one of {', '.join(AUTH_MODES)}")
        if auth != "none" and not self.secret:
            raise InvalidNodeError(
                "password", f"auth {auth!r} needs the password/token in the connection's password"
            )
        if auth == "basic" and not self.username:
            raise InvalidNodeError("login", "basic authentication needs a user name (the connection's login)")
        object.__setattr__(self, "auth", auth)
        object.__setattr__(self, "verify_tls", _bool(self.verify_tls, "verify_tls"))
        object.__setattr__(self, "connect_timeout", _timeout(self.connect_timeout, "connect_timeout"))
        object.__setattr__(self, "read_timeout", _timeout(self.read_timeout, "read_timeout"))
        object.__setattr__(self, "page_size", _positive_int(self.page_size, "page_size"))
        cap = None if self.max_results in (None, "") else _positive_int(self.max_results, "max_results")
        object.__setattr__(self, "max_results", cap)
        caps = self.capabilities
        if isinstance(caps, str):
            caps = tuple(c for c in caps.replace(",", " ").split() if c)
        caps = tuple(str(c).strip().lower() for c in caps)
        unknown = set(caps) - set(DEFAULT_CAPABILITIES)
        if unknown:
            raise InvalidNodeError("capabilities", f"unknown DICOMweb services {sorted(unknown)}")
        object.__setattr__(self, "capabilities", caps)

    def describe(self) -> str:
        """A short identification for messages: the URL (never credentials) and the connection id."""
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        text = f"DICOMweb {parts.scheme}://{parts.hostname}{port}{parts.path}"
        return f"{text} (connection {self.name!r})" if self.name else text

    def with_changes(self, **changes: Any) -> DicomWebNode:
        """A copy with some settings changed (validated again).

        :param changes: settings to change.
        """
        return replace(self, **changes)

    def offers(self, service: str) -> bool:
        """Whether the node offers ``service`` (``qido``, ``wado`` or ``stow``).

        :param service: the service name.
        """
        return service in self.capabilities


#: Extra fields of a ``dicomweb`` connection (the secret is the connection's password).
EXTRA_FIELDS = (
    "qido_prefix",
    "wado_prefix",
    "stow_prefix",
    "auth",
    "verify_tls",
    "ca_bundle",
    "connect_timeout",
    "read_timeout",
    "page_size",
    "max_results",
    "capabilities",
)


def web_node_from_connection(
    conn_id: str | None,
    host: str | None,
    extra: Mapping[str, Any] | None,
    *,
    login: str | None = None,
    password: str | None = None,
    port: int | str | None = None,
    schema: str | None = None,
) -> DicomWebNode:
    """Build a :class:`DicomWebNode` from a ``dicomweb`` connection.

    The base URL is the ``url`` extra field, else the host when it is a full URL, else
    ``http://host:port/schema``.

    :param conn_id: the connection id (messages).
    :param host: the connection's host (a URL or a host name).
    :param extra: extra fields (``Connection.extra_dejson``).
    :param login: user name for basic authentication.
    :param password: password or bearer token.
    :param port: the connection's port (when host is a bare host name).
    :param schema: path of the DICOMweb root (when host is a bare host name).
    :raises InvalidNodeError: a setting is missing or invalid.
    """
    extra = dict(extra or {})
    values: dict[str, Any] = {}
    for name in EXTRA_FIELDS:
        value = extra.get(name, extra.get(f"extra__dicomweb__{name}"))
        if value not in (None, ""):
            values[name] = value
    url = extra.get("url") or host or ""
    if url and "://" not in url:
        url = f"http://{url}{':' + str(port) if port else ''}/{(schema or '').lstrip('/')}"
    if not url:
        raise InvalidNodeError("url", f"connection {conn_id!r} has no host/url (the DICOMweb base URL)")
    if password and "auth" not in values:
        values["auth"] = "basic" if login else "bearer"
    return DicomWebNode(url=url, username=login or None, secret=password or None, name=conn_id, **values)
